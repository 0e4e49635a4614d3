# Sourced by the scripts: the one installer of the project's Python
# environment. `ensure_requirements FILE [VENV]` installs FILE into VENV (the
# project's .local/venv by default) unless it already did for this content.
ensure_requirements() {
  local root venv file marker wanted
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  venv="${2:-$root/.local/venv}"
  file="$1"
  marker="$venv/.installed-$(basename "$file")"
  wanted="$(sha256sum "$file" | cut -c1-16)"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  if [ "$(cat "$marker" 2>/dev/null)" != "$wanted" ]; then
    echo "[setup] installing $(basename "$file") into .local/venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$file"
    echo "$wanted" > "$marker"
  fi
}
