#!/usr/bin/env bash
# Checks template.yaml offline with cfn-lint, which validates the SAM resources
# too (`sam validate --lint` in SAM CLI 1.170 skips them). First it makes sure
# the linter still catches the mistakes in lint-canary/broken.yaml: some
# cfn-lint releases pass SAM templates without checking them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck disable=SC1091
. "$ROOT/infra/deploy/python-env.sh"
ensure_requirements "$ROOT/infra/deploy/requirements-lint.txt"
lint="$ROOT/.local/venv/bin/cfn-lint"

canary="$("$lint" "$ROOT/infra/deploy/lint-canary/broken.yaml" 2>&1 || true)"
for expected in E1020 E3030; do
  if ! grep -q "$expected" <<<"$canary"; then
    echo "cfn-lint did not report $expected on the known-broken template: it is not checking SAM templates" >&2
    echo "$canary" >&2
    exit 1
  fi
done

# Informational checks too (I3011: stateful resources say what deletion does).
"$lint" --include-checks I -- "$ROOT/template.yaml"
echo "cfn-lint $("$lint" --version | awk '{print $2}'): template.yaml is clean, informational checks included (and the canary was caught)"

# checkov: every finding is fixed, or suppressed in the template (Metadata:
# checkov: skip) with a one-line reason. Offline: it must not call home.
checkov="$ROOT/.local/venv/bin/checkov"
report="$("$checkov" -f "$ROOT/template.yaml" --framework cloudformation --compact --quiet --skip-download 2>&1)" || true
summary="$(grep -E '^Passed checks:' <<<"$report" || true)"
if [ -z "$summary" ] || ! grep -qE 'Failed checks: 0, Skipped checks: [0-9]+$' <<<"$summary" \
    || grep -qE 'Parsing errors: [1-9]' <<<"$report"; then
  echo "checkov found what the template neither fixes nor explains:" >&2
  echo "$report" >&2
  exit 1
fi
echo "checkov $("$checkov" --version): $summary"
