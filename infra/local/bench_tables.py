"""The mapped-table benchmark behind `make bench` (after bench.py): the demo's eleven-column `orders`
table (infra/local/demo/), a composite key, a 38-digit numeric, a float, text, a boolean, a date, a
timestamp, a variant, binary and a smallint, at --rows (default 1,000,000), as ratios against baselines
measured in the same run on the same local stack:

  copy         binary COPY of the rows straight into the Postgres table (the limit; `bench-table copy`)
  ours-write   the table run's write stage on the same rows (`bench-table ours`: chunks of BATCH_SIZE
               through the isolating writer, COPY first)
  ours-run     the whole replicator (the release `countries replicate` with TABLES_FILE, `case` empty):
               the table prepared (both catalogs read), count, snapshot with row hashes, paged Arrow
               read decoded per column, typed write, join delete on key and hash, drop; with its peak RSS
  together     the same invocation with --rows `case` rows as well: both tables' runs at once, as
               deployed; its seconds and peak RSS
  python-run   the same job as a typical script would do it: snowflake-connector-python fetchall, psycopg
               executemany upsert, DELETE … WHERE (REGION, ORDER_NO) IN (…) in chunks of 5,000

`case` itself runs through the same table run (its built-in mapping): bench.py's figures are its own.

copy and ours-write take turns, --reps times each; the runs once each (they are slow at 1M rows).
Results go to bench/tables-latest.json and bench/tables-latest.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from bench import RELEASE, ROOT, postgres, sf_connect, summary
from bench import reset as reset_case

TABLES_FILE = ROOT / "infra" / "local" / "demo" / "tables.toml"
POSTGRES_SQL = ROOT / "infra" / "local" / "demo" / "orders.postgres.sql"
COLUMNS = ["REGION", "ORDER_NO", "AMOUNT", "RATE", "NOTE", "PAID", "SHIPPED_ON", "PLACED_AT", "PAYLOAD",
           "SIGNATURE", "QTY"]
GENERATED = (
    "SELECT CASE MOD(SEQ4(), 4) WHEN 0 THEN 'eu' WHEN 1 THEN 'us' WHEN 2 THEN 'ap' ELSE 'sa' END, "
    "SEQ4(), (SEQ4() * 100 + 37) / 100, SEQ4() * 0.5, 'note ' || MOD(SEQ4(), 1000), MOD(SEQ4(), 2) = 0, "
    "DATEADD(day, MOD(SEQ4(), 365), '2026-01-01'::DATE), '2026-01-01 00:00:00.123456789'::TIMESTAMP_NTZ, "
    "PARSE_JSON('{{\"i\":' || SEQ4() || '}}'), TO_BINARY('00FF', 'HEX'), MOD(SEQ4(), 100) "
    "FROM TABLE(GENERATOR(ROWCOUNT => {rows}))"
)


def set_up() -> None:
    """The two tables, as the demo makes them (the product never creates a target)."""
    with postgres() as pg:
        pg.execute(POSTGRES_SQL.read_text())
    sf = sf_connect()
    sf.cursor().execute(
        "CREATE TABLE IF NOT EXISTS ORDERS (REGION VARCHAR, ORDER_NO NUMBER(18,0), AMOUNT NUMBER(38,9), "
        "RATE FLOAT, NOTE VARCHAR, PAID BOOLEAN, SHIPPED_ON DATE, PLACED_AT TIMESTAMP_NTZ, PAYLOAD VARIANT, "
        "SIGNATURE BINARY, QTY NUMBER(4,0))")
    sf.close()


def reset(rows: int, case_rows: int = 0) -> None:
    """Empty Postgres tables, `rows` fresh rows in Snowflake's ORDERS and `case_rows` in its `case` (bench.py's reset)."""
    with postgres() as pg:
        pg.execute("TRUNCATE orders")
        pg.execute("VACUUM ANALYZE orders")
    sf = sf_connect()
    cur = sf.cursor()
    cur.execute("DELETE FROM ORDERS")
    cur.execute("INSERT INTO ORDERS " + GENERATED.format(rows=rows))
    sf.close()
    reset_case(case_rows)


def check_moved(rows: int, label: str) -> None:
    with postgres() as pg:
        in_pg = pg.execute("SELECT count(*) FROM orders").fetchone()[0]
    sf = sf_connect()
    left = sf.cursor().execute("SELECT count(*) FROM ORDERS").fetchone()[0]
    sf.close()
    if in_pg != rows or left != 0:
        sys.exit(f"{label}: expected {rows} rows in Postgres and none in Snowflake, got {in_pg} and {left}")


def write_stage(mode: str, rows: int) -> float:
    out = subprocess.run([str(RELEASE / "bench-table"), mode, str(rows)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench-table {mode} {rows} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def replicate(env: dict) -> tuple[float, float, dict]:
    """The release `countries replicate` as its own process: (seconds, peak RSS in MB, its response)."""
    # A wrapper whose only child is the replicator: RUSAGE_CHILDREN is its peak RSS.
    wrapper = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "with open(sys.argv[1], 'w') as out:\n"
        "    r = subprocess.run(sys.argv[2:], stdout=out)\n"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)\n"
    )
    summary_file = ROOT / ".local" / "bench-tables-summary.json"
    out = subprocess.run([sys.executable, "-c", wrapper, str(summary_file), str(RELEASE / "countries"), "replicate"],
                         env=env, capture_output=True, text=True)
    seconds, rss_kb, code = out.stdout.split()
    if code != "0":
        sys.exit(f"countries replicate failed ({code}):\n{out.stderr[-2000:]}")
    return float(seconds), int(rss_kb) / 1024, json.loads(summary_file.read_text())


def ours_run(rows: int, case_rows: int = 0) -> tuple[float, float, dict]:
    """The release replicator as its own process: (seconds, peak RSS in MB, the table's run summary)."""
    reset(rows, case_rows)
    env = dict(os.environ, MAX_ROWS_PER_RUN=str(rows), TABLES_FILE=str(TABLES_FILE), RUST_LOG="warn")
    seconds, rss_mb, response = replicate(env)
    check_moved(rows, "ours-run")
    if response.get("rows_written", 0) != case_rows:
        sys.exit(f"ours-run: case wrote {response.get('rows_written')} rows, expected {case_rows}")
    return seconds, rss_mb, response["tables"][0]


def python_run(rows: int) -> float:
    """The job as a typical Python script would do it, generalised to the table's columns."""
    reset(rows)
    start = time.perf_counter()
    sf = sf_connect()
    cur = sf.cursor()
    cur.execute(f"SELECT {', '.join(COLUMNS)} FROM ORDERS LIMIT {rows}")
    batch = cur.fetchall()
    names = [c.lower() for c in COLUMNS]
    updates = ", ".join(f"{n} = EXCLUDED.{n}" for n in names[2:])
    values = ", ".join("%s::jsonb" if n == "payload" else "%s" for n in names)
    with psycopg.connect() as pg, pg.cursor() as pcur:
        pcur.executemany(
            f"INSERT INTO orders ({', '.join(names)}) VALUES ({values}) "
            f"ON CONFLICT (region, order_no) DO UPDATE SET {updates}",
            batch,
        )
        pg.commit()
    keys = [f"('{r[0]}', {int(r[1])})" for r in batch]
    for k in range(0, len(keys), 5000):
        cur.execute("DELETE FROM ORDERS WHERE (REGION, ORDER_NO) IN (" + ", ".join(keys[k:k + 5000]) + ")")
    sf.close()
    seconds = time.perf_counter() - start
    check_moved(rows, "python-run")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each write-stage measurement")
    args = parser.parse_args()
    rows = args.rows
    set_up()
    copy, ours = [], []
    for _ in range(args.reps):
        copy.append(write_stage("copy", rows))
        ours.append(write_stage("ours", rows))
        print(f"write stage: copy {copy[-1]:.2f} s, ours {ours[-1]:.2f} s", flush=True)
    run_seconds, rss_mb, run_summary = ours_run(rows)
    print(f"ours-run {run_seconds:.2f} s, peak RSS {rss_mb:.0f} MB", flush=True)
    both_seconds, both_rss_mb, _ = ours_run(rows, case_rows=rows)
    print(f"together (case too) {both_seconds:.2f} s, peak RSS {both_rss_mb:.0f} MB", flush=True)
    python_seconds = python_run(rows)
    print(f"python-run {python_seconds:.2f} s", flush=True)
    copy_s, ours_s = summary(copy, rows), summary(ours, rows)
    results = {
        "bench_run_id": os.environ.get("BENCH_RUN_ID", ""),
        "postgres_sslmode": os.environ.get("PGSSLMODE", ""),
        "rows": rows,
        "copy": copy_s,
        "ours-write": ours_s,
        "ours-run": {"seconds": run_seconds, "rows_per_s": rows / run_seconds, "peak_rss_mb": rss_mb,
                     "snowflake_statements": run_summary["snowflake_statements"]},
        "together": {"seconds": both_seconds, "case_rows": rows, "peak_rss_mb": both_rss_mb},
        "python-run": {"seconds": python_seconds, "rows_per_s": rows / python_seconds},
        "write_vs_copy": copy_s["median_s"] / ours_s["median_s"],
        "run_vs_python": python_seconds / run_seconds,
    }
    out = ROOT / "bench"
    (out / "tables-latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "tables-latest.md").write_text(
        f"# Mapped table benchmark ({results['bench_run_id']}, Postgres sslmode {results['postgres_sslmode']})\n\n"
        f"The demo's eleven-column `orders` table, {rows:,} rows.\n\n"
        "| line | seconds (median of write stages) | rows/s |\n|---|---|---|\n"
        f"| copy (the limit) | {copy_s['median_s']:.2f} ({copy_s['min_s']:.2f}–{copy_s['max_s']:.2f}) | "
        f"{copy_s['rows_per_s']:,.0f} |\n"
        f"| ours-write | {ours_s['median_s']:.2f} ({ours_s['min_s']:.2f}–{ours_s['max_s']:.2f}) | "
        f"{ours_s['rows_per_s']:,.0f} |\n"
        f"| ours-run (whole run) | {run_seconds:.2f} | {rows / run_seconds:,.0f} |\n"
        f"| together: orders and {rows:,} `case` rows in one invocation | {both_seconds:.2f} | "
        f"{2 * rows / both_seconds:,.0f} |\n"
        f"| python-run | {python_seconds:.2f} | {rows / python_seconds:,.0f} |\n\n"
        f"- write stage ÷ COPY: **{results['write_vs_copy']:.2f} ×** (target ≥ 0.9)\n"
        f"- whole run ÷ Python job: **{results['run_vs_python']:.1f} ×** (target ≥ 20)\n"
        f"- whole run's peak RSS: **{rss_mb:.0f} MB** (target ≤ 150); "
        f"{run_summary['snowflake_statements']} Snowflake statements\n"
        f"- both tables at once: peak RSS **{both_rss_mb:.0f} MB**\n"
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
