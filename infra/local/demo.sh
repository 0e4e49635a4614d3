#!/usr/bin/env bash
# The whole pipeline on the local stack: start the stack (installing what is
# missing), load rows into the Snowflake emulator (`case`, and a second,
# eleven-column table `ORDERS` replicated beside it through TABLES_FILE), run
# the replicator through its Lambda handler with an EventBridge scheduled
# event (both tables at once), retry the failed rows
# until the retry queue is empty (poison rows reach the dead-letter queue),
# report the dead letters, and print the digest email as the local SES got it.
#
#
# MODE=stream (make demo MODE=stream) runs stream mode instead of the
# replicator: the publisher takes the same run snapshot and publishes the
# valid rows to the FIFO changes queue, then N writers (WRITERS, default 4)
# are fed from it the way the event source mapping does, in parallel.
#
#   infra/local/demo.sh            load the sample rows (some of them invalid)
#   infra/local/demo.sh rows.csv   load your own rows (country_id,country per line)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
CSV="${1:-}"
MODE="${MODE:-batch}"
WRITERS="${WRITERS:-4}"
case "$MODE" in
  batch|stream) ;;
  *) echo "demo.sh: MODE must be batch or stream, got '$MODE'" >&2; exit 2 ;;
esac

echo; echo "==> building the countries CLI"
cargo build --quiet --locked -p countries-cli
countries="${CARGO_TARGET_DIR:-$ROOT/target}/debug/countries"

COUNTRIES_BIN="$countries" infra/local/stack.sh up
# shellcheck disable=SC1091
. "$ROOT/.local/stack/stack.env"

echo; echo "==> loading rows into the Snowflake emulator"
if [ -n "$CSV" ]; then "$countries" load-csv "$CSV"; else "$countries" load-sample; fi

if [ "$MODE" = batch ]; then
  echo; echo "==> a second table, replicated beside case: ORDERS (eleven columns, a composite key; infra/local/demo/)"
  psql -q -f infra/local/demo/orders.postgres.sql
  "$ROOT/.local/venv/bin/python" - <<'PY'
import os, snowflake.connector
port = int(os.environ["SNOWFLAKE_ENDPOINT_URL"].rsplit(":", 1)[1])
c = snowflake.connector.connect(host="127.0.0.1", port=port, protocol="http", account="fakesnow",
                                user="demo", password="x", database="COUNTRIES", schema="PUBLIC")
c.execute_string(open("infra/local/demo/orders.snowflake.sql").read())
n = c.cursor().execute("SELECT COUNT(*) FROM ORDERS").fetchone()[0]
print(f"  {n} rows in ORDERS")
PY
  export TABLES_FILE="$ROOT/infra/local/demo/tables.toml"
  echo "==> the mapping, checked against both databases (countries tables $TABLES_FILE)"
  "$countries" tables "$TABLES_FILE"
fi

status=0
if [ "$MODE" = stream ]; then
  echo; echo "==> stream mode: the publisher handler with an EventBridge scheduled event (snapshot -> changes queue)"
  "$countries" publish || status=$?
  echo; echo "==> changes queue: one FIFO message group per bucket of ids (blocks of CHANGE_BLOCK_IDS ids round CHANGE_BUCKETS groups)"
  "$ROOT/.local/venv/bin/python" - <<'PY'
import json, os, boto3
sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
url = os.environ["CHANGES_QUEUE_URL"]
n = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"]
print(f"{n} batches on {url}")
PY
  echo; echo "==> $WRITERS writers fed from the changes queue like the event source mapping (MaximumConcurrency=$WRITERS)"
  LOG_FORMAT=text RUST_LOG=warn "$countries" drive-writers --writers "$WRITERS" 2>/dev/null || status=$?
else
  echo; echo "==> running the replicator handler with an EventBridge scheduled event"
  "$countries" replicate || status=$?
fi

echo; echo "==> Postgres table \"case\" (first 10 rows of $(psql -Atc 'SELECT count(*) FROM "case"'))"
psql -c 'SELECT country_id, country FROM "case" ORDER BY country_id LIMIT 10'
if [ "$MODE" = batch ]; then
  echo "==> Postgres table orders (the second table)"
  psql -c 'SELECT region, order_no, amount, rate, note, paid, shipped_on, placed_at, payload, signature, qty FROM orders ORDER BY region, order_no'
fi
echo "==> run ledger (one row per table and run)"
psql -c 'SELECT started_at, table_name, sink, outcome, rows_read, rows_written, rows_enqueued, rows_deferred, rows_deleted, snowflake_statements FROM replication_run ORDER BY started_at DESC LIMIT 6'
echo "==> retry queue (failed rows, one message each)"
"$ROOT/.local/venv/bin/python" - <<'PY'
import json, os, boto3
sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
url = os.environ["RETRY_QUEUE_URL"]
n = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"]
print(f"{n} messages on {url}")
# Peek without consuming: a visibility timeout of 0 leaves them on the queue.
for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages", []):
    body = json.loads(m["Body"])
    # Version 1: a case row; version 2: a row of a mapped table.
    row = body.get("record") or {body.get("table"): body.get("row")}
    print(f"  {json.dumps(row)[:160]}  {body['error']['class']}: {body['error']['message']}")
PY
echo "==> left in Snowflake (held back for the next run)"
"$ROOT/.local/venv/bin/python" - <<'PY'
import os, snowflake.connector
port = int(os.environ["SNOWFLAKE_ENDPOINT_URL"].rsplit(":", 1)[1])
c = snowflake.connector.connect(host="127.0.0.1", port=port, protocol="http", account="fakesnow",
                                user="demo", password="x", database="COUNTRIES", schema="PUBLIC")
rows = c.cursor().execute('SELECT "COUNTRY_ID", "COUNTRY" FROM "case" ORDER BY 1').fetchall()
print(f"  {len(rows)} rows: {rows[:10]}")
PY

echo; echo "==> retrier: fed from the retry queue like Lambda's event source mapping, until the queue is empty"
echo "    (a record that keeps failing is moved to the dead-letter queue after maxReceiveCount=5 receives)"
LOG_FORMAT=text RUST_LOG=warn "$countries" drive-retrier 2>/dev/null || status=$?

echo; echo "==> dlq-reporter: dead-letter queue -> failure report (Postgres) -> one digest email (SES)"
RUST_LOG=warn "$countries" report || status=$?

echo; echo "==> the failure report"
"$countries" failures

echo; echo "==> the digest email, as the local SES received it"
"$ROOT/.local/venv/bin/python" - <<'PY'
import email, email.policy, json, os, urllib.request
data = json.load(urllib.request.urlopen(os.environ["AWS_ENDPOINT_URL"] + "/moto-api/data.json"))
raw = [m for m in data["ses"]["RawMessage"]]
if not raw:
    print("  (no email: the dead-letter queue was empty)")
else:
    msg = email.message_from_string(raw[-1]["raw_data"], policy=email.policy.default)
    print(f"  From: {msg['From']}\n  To: {msg['To']}\n  Subject: {msg['Subject']}\n")
    body = msg.get_body(preferencelist=("plain",))
    print("  " + body.get_content().replace("\n", "\n  "))
    attachments = [p.get_filename() for p in msg.iter_attachments()]
    if attachments:
        print(f"  Attachments: {attachments}")
PY
echo; echo "==> countries status: what on-call sees (DEGRADED while the failures wait for a replay)"
"$countries" status || true

cat <<TXT

Look around yourself:  source .local/stack/stack.env   (then psql, the aws CLI, .local/venv/bin/python)
Operator commands:  target/debug/countries --help   (status, failures, replay, redrive, ...)
Stop the stack:  make stack-down
TXT
exit "$status"
