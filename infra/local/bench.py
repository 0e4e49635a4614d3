"""The benchmark behind `make bench`: rows/s and peak memory, as ratios against
baselines measured in the same run on the same local stack.

Measured for each size (default 100,000 and 1,000,000 rows of int + 3 letters):
  copy            binary COPY of the rows straight into the Postgres table (the limit)
  ours-fresh      our Postgres write stage into an empty table (COPY first)
  ours-replay     our write stage when every row exists already
  unnest-replay   a plain INSERT … SELECT FROM UNNEST … ON CONFLICT DO UPDATE of the same rows
  ours-run        the whole replicator (the release `countries replicate`): count, snapshot,
                  paged read from the Snowflake emulator, write, join delete, drop; with its
                  peak RSS and the Snowflake statements it sent (from its run summary)
  limit-run       the same data path as a bare script, nothing else: the same snapshot, one
                  Arrow read, one CSV COPY, one join delete; no validation, no bookkeeping
  python-run      the same job written the way a typical user would: snowflake-connector-python
                  fetchall, psycopg executemany, DELETE … IN (ids) in chunks of 5,000

And, for the memory target, the whole run alone at --rss-sizes (default 5,000,000 rows, one
repetition): its peak RSS against the one at the largest regular size.

And at a real warehouse's latency: the whole run, the limit script and the Python job at
--latency-rows (1,000,000) with the protocol fake adding --latencies (0, 100, 250, 500 ms) to
every request it serves (login, statement, result poll, chunk), the same fake and delay for all
three; each with the statements it sent and the time it spent waiting on Snowflake (the sum of
its statements' times, chunk downloads included).

Timings are medians over the repetitions, with min and max. Results go to
bench/latest.json and bench/latest.md. Usage: see infra/local/bench.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import snowflake.connector

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "target" / "release"
CODES = "CASE MOD(SEQ4(), 8) WHEN 0 THEN 'USA' WHEN 1 THEN 'FRA' WHEN 2 THEN 'DEU' WHEN 3 THEN 'BRA' " \
        "WHEN 4 THEN 'IND' WHEN 5 THEN 'JPN' WHEN 6 THEN 'NGA' ELSE 'AUS' END"


def sf_connect() -> snowflake.connector.SnowflakeConnection:
    port = int(os.environ["SNOWFLAKE_ENDPOINT_URL"].rsplit(":", 1)[1])
    return snowflake.connector.connect(
        host="127.0.0.1", port=port, protocol="http", account="fakesnow", user="bench",
        password="x", database=os.environ["SNOWFLAKE_DATABASE"], schema=os.environ["SNOWFLAKE_SCHEMA"],
    )


def set_latency(ms: int) -> None:
    """The delay the protocol fake adds to every Snowflake request it serves."""
    request = urllib.request.Request(
        os.environ["SNOWFLAKE_ENDPOINT_URL"].rstrip("/") + "/fake/settings",
        data=json.dumps({"latency_ms": ms}).encode(), headers={"content-type": "application/json"}, method="POST")
    urllib.request.urlopen(request, timeout=10).read()


class Waits:
    """A Python job's statements to Snowflake and the time it spent in them (results fetched included)."""

    def __init__(self) -> None:
        self.statements = 0
        self.seconds = 0.0

    def execute(self, cur, sql: str):  # noqa: ANN001, ANN201 (the connector's cursor)
        self.statements += 1
        return self.timed(cur.execute, sql)

    def timed(self, fn, *args):  # noqa: ANN001, ANN201
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - start


def postgres() -> psycopg.Connection:
    return psycopg.connect(autocommit=True)  # PG* variables


def reset(rows: int) -> None:
    """Empty Postgres table, and `rows` fresh rows in Snowflake (loaded with Snowflake's own GENERATOR)."""
    with postgres() as pg:
        pg.execute('TRUNCATE "case"')
        pg.execute('VACUUM ANALYZE "case"')
    sf = sf_connect()
    cur = sf.cursor()
    cur.execute('DELETE FROM "case"')
    cur.execute(f'INSERT INTO "case" SELECT SEQ4(), {CODES} FROM TABLE(GENERATOR(ROWCOUNT => {rows}))')
    sf.close()


def check_moved(rows: int, label: str) -> None:
    with postgres() as pg:
        in_pg = pg.execute('SELECT count(*) FROM "case"').fetchone()[0]
    sf = sf_connect()
    left = sf.cursor().execute('SELECT count(*) FROM "case"').fetchone()[0]
    sf.close()
    if in_pg != rows or left != 0:
        sys.exit(f"{label}: expected {rows} rows in Postgres and none in Snowflake, got {in_pg} and {left}")


def write_stage(mode: str, rows: int) -> float:
    out = subprocess.run([str(RELEASE / "bench-write"), mode, str(rows)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench-write {mode} {rows} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def ours_run(rows: int, page_rows: int | None = None) -> tuple[float, float, dict, float]:
    """The release replicator as its own process; returns (seconds, peak RSS in MB, run summary,
    seconds its statements to Snowflake took, from their log lines)."""
    reset(rows)
    env = dict(os.environ, MAX_ROWS_PER_RUN=str(rows), LOG_FORMAT="json",
               RUST_LOG="warn,countries_shared::snowflake=info")
    if page_rows is not None:
        env["SNOWFLAKE_PAGE_ROWS"] = str(page_rows)
    # A wrapper process whose only child is the replicator, so that
    # RUSAGE_CHILDREN is that one process's peak RSS. The summary goes to a file.
    wrapper = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "with open(sys.argv[1], 'w') as out:\n"
        "    r = subprocess.run(sys.argv[2:], stdout=out)\n"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)\n"
    )
    summary_file = ROOT / ".local" / "bench-run-summary.json"
    out = subprocess.run([sys.executable, "-c", wrapper, str(summary_file), str(RELEASE / "countries"), "replicate"],
                         env=env, capture_output=True, text=True)
    seconds, rss_kb, code = out.stdout.split()
    if code != "0":
        sys.exit(f"countries replicate failed ({code}):\n{out.stderr[-2000:]}")
    run_summary = json.loads(summary_file.read_text())
    check_moved(rows, "ours-run")
    waiting_ms = 0
    for line in out.stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        # The functions log flattened JSON events: the fields are at the top.
        fields = event.get("fields", event) if isinstance(event, dict) else {}
        if fields.get("message") == "Snowflake statement":
            waiting_ms += int(fields.get("ms", 0))
    return float(seconds), int(rss_kb) / 1024, run_summary, waiting_ms / 1000


SNAPSHOT_ORDER = 'ORDER BY "COUNTRY_ID" NULLS LAST, "COUNTRY" NULLS LAST'


def limit_run(rows: int, waits: Waits | None = None) -> float:
    """The floor of this data path: what the replicator does to the data, as a bare
    script with nothing else (the same snapshot statement, one Arrow read of it, one
    COPY, one join delete, the drop)."""
    import io

    import pyarrow.csv

    waits = waits or Waits()
    reset(rows)
    start = time.perf_counter()
    sf = waits.timed(sf_connect)
    cur = sf.cursor()
    waits.execute(cur,
        'CREATE OR REPLACE TEMPORARY TABLE "LIMIT_RUN" AS SELECT "COUNTRY_ID", "COUNTRY", '
        f'ROW_NUMBER() OVER ({SNAPSHOT_ORDER}) AS "_RN" FROM '
        f'(SELECT "COUNTRY_ID", "COUNTRY" FROM "case" {SNAPSHOT_ORDER} LIMIT {rows})'
    )
    waits.execute(cur, 'SELECT "COUNTRY_ID", "COUNTRY" FROM "LIMIT_RUN" ORDER BY "_RN"')
    table = waits.timed(cur.fetch_arrow_all)
    buffer = io.BytesIO()
    pyarrow.csv.write_csv(table, buffer, pyarrow.csv.WriteOptions(include_header=False))
    with psycopg.connect() as pg, pg.cursor() as pcur:
        with pcur.copy('COPY "case" (country_id, country) FROM STDIN (FORMAT csv)') as copy:
            copy.write(buffer.getbuffer())
        pg.commit()
    waits.execute(cur, 'DELETE FROM "case" AS c USING "LIMIT_RUN" AS b '
                  'WHERE c."COUNTRY_ID" = b."COUNTRY_ID" AND EQUAL_NULL(c."COUNTRY", b."COUNTRY")')
    waits.execute(cur, 'DROP TABLE IF EXISTS "LIMIT_RUN"')
    sf.close()
    seconds = time.perf_counter() - start
    check_moved(rows, "limit-run")
    return seconds


def python_run(rows: int, waits: Waits | None = None) -> float:
    """The job as a typical Python script would do it."""
    waits = waits or Waits()
    reset(rows)
    start = time.perf_counter()
    sf = waits.timed(sf_connect)
    cur = sf.cursor()
    waits.execute(cur, f'SELECT "COUNTRY_ID", "COUNTRY" FROM "case" LIMIT {rows}')
    batch = waits.timed(cur.fetchall)
    with psycopg.connect() as pg, pg.cursor() as pcur:
        pcur.executemany(
            'INSERT INTO "case" (country_id, country) VALUES (%s, %s) '
            "ON CONFLICT (country_id) DO UPDATE SET country = EXCLUDED.country",
            [(int(i), c.strip().upper()) for i, c in batch],
        )
        pg.commit()
    ids = [str(int(i)) for i, _ in batch]
    for k in range(0, len(ids), 5000):
        waits.execute(cur, 'DELETE FROM "case" WHERE "COUNTRY_ID" IN (' + ", ".join(ids[k:k + 5000]) + ")")
    sf.close()
    seconds = time.perf_counter() - start
    check_moved(rows, "python-run")
    return seconds


FUNCTIONS = ["replicator", "retrier", "dlq-reporter", "publisher", "writer"]


def init_times(reps: int, binaries: list[Path] | None = None) -> dict:
    """Each function's init time: from process start to its first request for an
    invocation on the Lambda runtime API (served here by a listener that only
    records that moment, and that registers extensions as Lambda does: the
    functions register a no-op one for their graceful-shutdown hook). It covers
    configuration, secrets, client set-up and that registration."""
    import http.server
    import socket
    import threading

    first_request = threading.Event()

    class Runtime(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            if self.path.endswith("/runtime/invocation/next"):
                first_request.set()
            self.send_response(503)
            self.end_headers()

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("content-length", "0"))
            self.rfile.read(length)
            if self.path.endswith("/extension/register"):
                body = b'{"functionName":"bench","functionVersion":"1","handler":"bootstrap"}'
                self.send_response(200)
                self.send_header("Lambda-Extension-Identifier", "bench-extension")
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_response(503)
                self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Runtime)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(os.environ, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{port}", AWS_LAMBDA_FUNCTION_NAME="bench",
               AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512", AWS_LAMBDA_FUNCTION_VERSION="1",
               AWS_LAMBDA_LOG_GROUP_NAME="bench", AWS_LAMBDA_LOG_STREAM_NAME="bench", RUST_LOG="warn")
    # Several directories (binaries of two builds) take turns per start, so
    # that a slow spell of the machine falls on all of them.
    dirs = binaries or [RELEASE]
    results: dict = {str(d): {} for d in dirs}
    for function in FUNCTIONS:
        samples: dict = {str(d): [] for d in dirs}
        for _ in range(reps):
            for d in dirs:
                first_request.clear()
                start = time.perf_counter()
                proc = subprocess.Popen([str(d / function)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if not first_request.wait(timeout=30):
                    proc.kill()
                    sys.exit(f"{d / function} never asked for an invocation")
                samples[str(d)].append((time.perf_counter() - start) * 1000)
                proc.kill()
                proc.wait()
        for d in dirs:
            t = samples[str(d)]
            results[str(d)][function] = {"median_ms": statistics.median(t), "min_ms": min(t), "max_ms": max(t)}
            print(f"init {function:<13} {results[str(d)][function]['median_ms']:.1f} ms  ({d})", flush=True)
    server.shutdown()
    return results[str(dirs[0])] if binaries is None else results


def summary(samples: list[float], rows: int) -> dict:
    median = statistics.median(samples)
    return {"median_s": median, "min_s": min(samples), "max_s": max(samples), "reps": len(samples),
            "rows_per_s": rows / median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each measurement")
    parser.add_argument("--run-reps-large", type=int, default=1,
                        help="repetitions of the whole-run measurements at sizes >= 500k (they are slow)")
    parser.add_argument("--rss-sizes", default="5000000",
                        help="sizes at which only the whole run's peak RSS is measured ('' for none)")
    parser.add_argument("--latencies", default="0,100,250,500",
                        help="milliseconds the protocol fake adds to every request, for the latency table ('' for none)")
    parser.add_argument("--latency-rows", type=int, default=1_000_000, help="rows of the latency table's runs")
    parser.add_argument("--page-sweep", default="",
                        help="SNOWFLAKE_PAGE_ROWS values to compare on a whole run at the largest size, e.g. "
                             "25000,100000,250000 (printed, not written to bench/latest.*)")
    parser.add_argument("--page-sweep-latency", type=int, default=0,
                        help="milliseconds the protocol fake adds to every request during the page sweep")
    parser.add_argument("--init-only", default="",
                        help="only the functions' init times, for the binaries in these directories (comma "
                             "separated; they take turns), e.g. a build before a change and target/release")
    args = parser.parse_args()
    if args.init_only:
        dirs = [Path(d).resolve() for d in args.init_only.split(",")]
        print(json.dumps(init_times(args.reps * 3, dirs), indent=2))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict = {
        "init_ms": init_times(args.reps * 3),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "bench_run_id": os.environ.get("BENCH_RUN_ID", ""),
        "postgres_sslmode": os.environ.get("PGSSLMODE", ""),
        "batch_size": int(os.environ.get("BATCH_SIZE", "50000")),
        "page_rows": int(os.environ.get("SNOWFLAKE_PAGE_ROWS", "250000")),
        "sizes": {},
    }
    for rows in sizes:
        r: dict = {}
        # The modes take turns within each repetition, so that a slow spell of
        # the shared machine falls on all of them rather than on one.
        samples: dict = {"copy": [], "ours": [], "ours-replay": [], "unnest-replay": []}
        for _ in range(args.reps):
            for mode in samples:
                samples[mode].append(write_stage(mode, rows))
        for mode, times in samples.items():
            key = "ours-fresh" if mode == "ours" else mode
            r[key] = summary(times, rows)
            print(f"{rows:>9} {key:<14} {r[key]['rows_per_s']:>12,.0f} rows/s", flush=True)
        reps = args.run_reps_large if rows >= 500_000 else args.reps
        runs = [ours_run(rows) for _ in range(reps)]
        r["ours-run"] = summary([s for s, _, _, _ in runs], rows)
        r["ours-run"]["peak_rss_mb"] = max(m for _, m, _, _ in runs)
        r["ours-run"]["snowflake_statements"] = max(x["snowflake_statements"] for _, _, x, _ in runs)
        print(f"{rows:>9} {'ours-run':<14} {r['ours-run']['rows_per_s']:>12,.0f} rows/s, "
              f"peak RSS {r['ours-run']['peak_rss_mb']:.0f} MB, "
              f"{r['ours-run']['snowflake_statements']} Snowflake statements", flush=True)
        r["limit-run"] = summary([limit_run(rows) for _ in range(reps)], rows)
        print(f"{rows:>9} {'limit-run':<14} {r['limit-run']['rows_per_s']:>12,.0f} rows/s", flush=True)
        r["python-run"] = summary([python_run(rows) for _ in range(reps)], rows)
        print(f"{rows:>9} {'python-run':<14} {r['python-run']['rows_per_s']:>12,.0f} rows/s", flush=True)
        r["ratios"] = {
            "write_fresh_vs_copy": r["copy"]["median_s"] / r["ours-fresh"]["median_s"],
            "write_replay_vs_unnest_upsert": r["unnest-replay"]["median_s"] / r["ours-replay"]["median_s"],
            "run_vs_python": r["python-run"]["median_s"] / r["ours-run"]["median_s"],
            "run_vs_limit": r["limit-run"]["median_s"] / r["ours-run"]["median_s"],
        }
        results["sizes"][str(rows)] = r
    set_latency(args.page_sweep_latency)
    try:
        for page in [int(x) for x in args.page_sweep.split(",") if x]:
            rows = max(sizes)
            seconds, rss, run_summary, waiting = ours_run(rows, page)
            print(f"page sweep at {args.page_sweep_latency} ms: {rows:,} rows, SNOWFLAKE_PAGE_ROWS={page:,}: "
                  f"{seconds:.2f} s ({waiting:.2f} s waiting on Snowflake), peak RSS {rss:.0f} MB, "
                  f"{run_summary['snowflake_statements']} statements", flush=True)
    finally:
        set_latency(0)
    results["rss_only"] = {}
    for rows in [int(x) for x in args.rss_sizes.split(",") if x]:
        seconds, rss, run_summary, _ = ours_run(rows)
        results["rss_only"][str(rows)] = {"seconds": seconds, "peak_rss_mb": rss,
                                          "snowflake_statements": run_summary["snowflake_statements"]}
        print(f"{rows:>9} {'ours-run':<14} {rows / seconds:>12,.0f} rows/s, peak RSS {rss:.0f} MB, "
              f"{run_summary['snowflake_statements']} Snowflake statements", flush=True)

    results["latency"] = latency_table([int(x) for x in args.latencies.split(",") if x], args.latency_rows)

    out_dir = ROOT / "bench"
    out_dir.mkdir(exist_ok=True)
    lines = ["| rows | measurement | median s | min–max s | rows/s |", "|---|---|---|---|---|"]
    for rows, r in results["sizes"].items():
        for key in ["copy", "ours-fresh", "ours-replay", "unnest-replay", "ours-run", "limit-run", "python-run"]:
            m = r[key]
            extra = (f" (peak RSS {m['peak_rss_mb']:.0f} MB, {m['snowflake_statements']} Snowflake statements)"
                     if "peak_rss_mb" in m else "")
            lines.append(f"| {int(rows):,} | {key}{extra} | {m['median_s']:.2f} | "
                         f"{m['min_s']:.2f}–{m['max_s']:.2f} | {m['rows_per_s']:,.0f} |")
    for rows, m in results["rss_only"].items():
        lines.append(f"| {int(rows):,} | ours-run, once (peak RSS {m['peak_rss_mb']:.0f} MB, "
                     f"{m['snowflake_statements']} Snowflake statements) | {m['seconds']:.2f} | | "
                     f"{int(rows) / m['seconds']:,.0f} |")
    lines.append("")
    lines.append("| function | init (median, min–max) |")
    lines.append("|---|---|")
    for function, t in results["init_ms"].items():
        lines.append(f"| {function} | {t['median_ms']:.1f} ms ({t['min_ms']:.1f}–{t['max_ms']:.1f}) |")
    lines.append("")
    lines.append("| rows | ours ÷ COPY (fresh) | ours ÷ UNNEST upsert (replay) | whole run ÷ Python job "
                 "| whole run ÷ limit |")
    lines.append("|---|---|---|---|---|")
    for rows, r in results["sizes"].items():
        q = r["ratios"]
        lines.append(f"| {int(rows):,} | {q['write_fresh_vs_copy']:.2f} | "
                     f"{q['write_replay_vs_unnest_upsert']:.2f} | {q['run_vs_python']:.2f} | "
                     f"{q['run_vs_limit']:.2f} |")
    largest = str(max(sizes))
    if results["rss_only"] and largest in results["sizes"]:
        base = results["sizes"][largest]["ours-run"]["peak_rss_mb"]
        lines.append("")
        lines.append(f"| rows | peak RSS ÷ peak RSS at {int(largest):,} |")
        lines.append("|---|---|")
        for rows, m in results["rss_only"].items():
            lines.append(f"| {int(rows):,} | {m['peak_rss_mb'] / base:.2f} |")
    if results["latency"]:
        lines.append("")
        lines.append(f"At a real warehouse's latency ({args.latency_rows:,} rows; seconds, and in brackets the "
                     "statements sent and the seconds spent waiting on Snowflake):")
        lines.append("")
        lines.append("| latency per request | whole run | limit script | Python job | whole run ÷ limit "
                     "| whole run ÷ Python job |")
        lines.append("|---|---|---|---|---|---|")
        for ms, m in results["latency"].items():
            cell = lambda k: f"{m[k]['seconds']:.2f} ({m[k]['statements']}, {m[k]['waiting_s']:.2f})"  # noqa: E731
            lines.append(f"| {ms} ms | {cell('ours-run')} | {cell('limit-run')} | {cell('python-run')} | "
                         f"{m['run_vs_limit']:.2f} | {m['run_vs_python']:.2f} |")
    results["targets"] = targets(results)
    lines.append("")
    lines.append("| target | measured | met |")
    lines.append("|---|---|---|")
    for t in results["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
    (out_dir / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "latest.md").write_text("\n".join(lines) + "\n")
    if results["latency"]:
        (out_dir / "latency.svg").write_text(latency_svg(results["latency"], args.latency_rows))
    print("\n" + "\n".join(lines))


def targets(results: dict) -> list[dict]:
    """The README's speed and memory targets, checked against this run's figures (those it measured)."""
    out: list[dict] = []

    def check(target: str, value: float, unit: str, met: bool) -> None:
        out.append({"target": target, "measured": f"{value:.2f}{unit}", "met": met})

    million = results["sizes"].get("1000000")
    if million:
        q = million["ratios"]
        check("write stage ≥ 0.9 × COPY at 1,000,000 rows", q["write_fresh_vs_copy"], " ×",
              q["write_fresh_vs_copy"] >= 0.9)
        check("whole run ≥ 20 × the Python job at 1,000,000 rows", q["run_vs_python"], " ×", q["run_vs_python"] >= 20)
        rss = million["ours-run"]["peak_rss_mb"]
        check("peak RSS ≤ 100 MB at 1,000,000 rows", rss, " MB", rss <= 100)
        for rows, m in results["rss_only"].items():
            ratio = m["peak_rss_mb"] / rss
            check(f"peak RSS at {int(rows):,} rows ≤ 1.2 × the one at 1,000,000", ratio, " ×", ratio <= 1.2)
    for ms, m in results["latency"].items():
        floor = {"0": 0.9, "250": 0.7}.get(ms)
        if floor is not None:
            check(f"whole run ≥ {floor} × the limit script at {ms} ms per request", m["run_vs_limit"], " ×",
                  m["run_vs_limit"] >= floor)
        check(f"whole run ≥ 20 × the Python job at {ms} ms per request", m["run_vs_python"], " ×",
              m["run_vs_python"] >= 20)
    return out


def latency_svg(table: dict, rows: int) -> str:
    """Run time against latency per request (log scale), ours, the limit script and the Python job."""
    series = [("ours-run", "whole run (ours)", "#1f77b4"), ("limit-run", "limit script", "#2ca02c"),
              ("python-run", "Python job", "#d62728")]
    import math

    xs = [int(ms) for ms in table]
    values = [m[k]["seconds"] for m in table.values() for k, _, _ in series]
    lo, hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    width, height, left, right, top, bottom = 640, 380, 70, 180, 40, 50

    def px(ms: float) -> float:
        return left + (ms - min(xs)) / max(1, max(xs) - min(xs)) * (width - left - right)

    def py(seconds: float) -> float:
        return top + (hi - math.log10(seconds)) / max(1, hi - lo) * (height - top - bottom)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           'font-size="12">', '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{left}" y="20" font-size="14">Whole run at {rows:,} rows against latency per Snowflake '
           'request</text>']
    for decade in range(lo, hi + 1):
        y = py(10 ** decade)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{10 ** decade:g} s</text>')
    for ms in xs:
        x = px(ms)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{height - bottom + 18}" text-anchor="middle">{ms} ms</text>')
    for i, (key, label, colour) in enumerate(series):
        points = " ".join(f"{px(int(ms)):.1f},{py(m[key]['seconds']):.1f}" for ms, m in table.items())
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for ms, m in table.items():
            out.append(f'<circle cx="{px(int(ms)):.1f}" cy="{py(m[key]["seconds"]):.1f}" r="3" fill="{colour}"/>')
        y = top + 20 + i * 20
        out.append(f'<line x1="{width - right + 15}" y1="{y}" x2="{width - right + 40}" y2="{y}" '
                   f'stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{width - right + 46}" y="{y + 4}">{label}</text>')
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 10}" text-anchor="middle">'
               'latency added to every request (login, statement, poll, chunk)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def latency_table(latencies: list[int], rows: int) -> dict:
    """The whole run, the limit script and the Python job at each latency the fake adds."""
    table: dict = {}
    try:
        for ms in latencies:
            set_latency(ms)
            seconds, _, run_summary, waiting = ours_run(rows)
            limit_waits, python_waits = Waits(), Waits()
            limit_seconds = limit_run(rows, limit_waits)
            python_seconds = python_run(rows, python_waits)
            table[str(ms)] = {
                "ours-run": {"seconds": seconds, "statements": run_summary["snowflake_statements"],
                             "waiting_s": waiting},
                "limit-run": {"seconds": limit_seconds, "statements": limit_waits.statements,
                              "waiting_s": limit_waits.seconds},
                "python-run": {"seconds": python_seconds, "statements": python_waits.statements,
                               "waiting_s": python_waits.seconds},
                "run_vs_limit": limit_seconds / seconds,
                "run_vs_python": python_seconds / seconds,
            }
            print(f"latency {ms:>3} ms: ours {seconds:.2f} s ({run_summary['snowflake_statements']} statements, "
                  f"{waiting:.2f} s waiting), limit {limit_seconds:.2f} s, Python {python_seconds:.2f} s", flush=True)
    finally:
        set_latency(0)
    return table


if __name__ == "__main__":
    main()
