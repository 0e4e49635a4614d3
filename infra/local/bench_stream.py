"""Stream mode's figures, part of `make bench` (infra/local/bench.sh --stream-only runs
only these): freshness and scale-out, on the same private local stack, with the release
`countries` binary running the real publisher and writer handlers.

freshness  rows are inserted into the Snowflake emulator at a steady rate (default 1,000
           rows/s for 60 s, ten inserts a second) while the publisher loops
           (PUBLISH_LOOP_SECONDS) and N writers follow the changes queue the way the event
           source mapping does. Each row's latency is the time from the end of its INSERT to
           its write in Postgres (clock_timestamp() in a trigger; its transaction commits
           right after). Reported: p50, p95, max, and whether every row arrived.
scale      rows/s into Postgres with 1, 2 and 4 writers, two ways:
           - writers direct: N rows (default 1,000,000) packed as the publisher packs them, each
             message group given to one writer, and 1, 2, 4 writers (each on its own thread and
             runtime, as Lambda sandboxes are) invoking the real writer handler with FIFO events
             of 10 messages (`bench-write stream-writers`): the writers and Postgres alone;
           - through the queue: the same rows published once to the changes queue in moto,
             then drained by `countries drive-writers` with 1, 2, 4 writers.
           Each with where the time goes: the CPU seconds of Postgres, of the SQS emulator
           (moto, one Python process) and of the writers' process, against the wall time.
versus     one writer against binary COPY of the same rows, and against COPY in one writer's
           pattern (the floor: one COPY per invocation, no parsing), and the writer on batches
           packed by id (the rule before blocks), interleaved round by round (`bench-write copy`,
           `copy-as-writers`, `stream-writers`), medians.

Results go to bench/stream-latest.json and bench/stream-latest.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import postgres, sf_connect  # noqa: E402  (the batch benchmark's connections)

ROOT = Path(__file__).resolve().parents[2]
# The release build; BENCH_COUNTRIES points elsewhere (a quick check of this script).
COUNTRIES = Path(os.environ.get("BENCH_COUNTRIES", ROOT / "target" / "release" / "countries"))
TICK = os.sysconf("SC_CLK_TCK")


def sqs():
    return boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])


def empty_everything() -> None:
    with postgres() as pg:
        pg.execute('TRUNCATE "case"')
        pg.execute("TRUNCATE replication_run")
    sf = sf_connect()
    sf.cursor().execute('DELETE FROM "case"')
    sf.close()
    client = sqs()
    for var in ("CHANGES_QUEUE_URL", "RETRY_QUEUE_URL"):
        client.purge_queue(QueueUrl=os.environ[var])


def queue_depth(var: str) -> int:
    attributes = sqs().get_queue_attributes(
        QueueUrl=os.environ[var],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


def run_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.update({"LOG_FORMAT": "text", "RUST_LOG": "warn"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


# ---- CPU accounting: where the time goes ----

def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process and of its children that ended (a
    Postgres backend ends with its connection; the postmaster collects its time)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def postgres_pids() -> list[int]:
    """The stack's postmaster and its children."""
    state = Path(os.environ["COUNTRIES_STACK_DIR"])
    data = Path((state / "pg.datadir").read_text().strip()) / "data"
    master = int((data / "postmaster.pid").read_text().split()[0])
    pids = [master]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == master:
                pids.append(int(entry.name))
    return pids


def cpu_snapshot() -> dict:
    state = Path(os.environ["COUNTRIES_STACK_DIR"])
    moto = int((state / "moto.pid").read_text().strip())
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "moto": proc_cpu(moto),
        "postgres": sum(proc_cpu(p) for p in postgres_pids()),
        "children": children.ru_utime + children.ru_stime,
    }


# ---- freshness ----

TRIGGER = """
CREATE TABLE IF NOT EXISTS bench_arrival (country_id int PRIMARY KEY, at double precision);
TRUNCATE bench_arrival;
CREATE OR REPLACE FUNCTION bench_arrival() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_arrival VALUES (NEW.country_id, extract(epoch FROM clock_timestamp()))
        ON CONFLICT DO NOTHING;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS bench_arrival ON "case";
CREATE TRIGGER bench_arrival AFTER INSERT OR UPDATE ON "case" FOR EACH ROW EXECUTE FUNCTION bench_arrival();
"""
UNTRIGGER = 'DROP TRIGGER IF EXISTS bench_arrival ON "case"; DROP TABLE IF EXISTS bench_arrival;'


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def freshness(rate: int, seconds: int, writers: int, idle_ms: int) -> dict:
    empty_everything()
    with postgres() as pg:
        pg.execute(TRIGGER)
    tail = 20
    publisher = subprocess.Popen(
        [str(COUNTRIES), "publish"],
        env=run_env(PUBLISH_LOOP_SECONDS=seconds + tail, PUBLISH_IDLE_WAIT_MILLIS=idle_ms),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    drivers = subprocess.Popen(
        [str(COUNTRIES), "drive-writers", "--writers", str(writers), "--follow", str(seconds + tail),
         "--timeout", str(seconds + tail + 60)],
        env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(1.0)  # both processes up and polling before the first row
    inserted: dict[int, float] = {}
    per_tick = max(1, rate // 10)
    sf = sf_connect()
    cur = sf.cursor()
    next_id = 1
    started = time.time()
    late_ticks = 0
    for tick in range(seconds * 10):
        due = started + tick / 10
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)
        else:
            late_ticks += 1
        ids = range(next_id, next_id + per_tick)
        values = ",".join(f"({i}, 'USA')" for i in ids)
        cur.execute(f'INSERT INTO "case" VALUES {values}')
        done = time.time()
        for i in ids:
            inserted[i] = done
        next_id += per_tick
    insert_seconds = time.time() - started
    sf.close()
    publisher_out, publisher_err = publisher.communicate(timeout=seconds + tail + 120)
    drivers_out, drivers_err = drivers.communicate(timeout=seconds + tail + 120)
    with postgres() as pg:
        arrived = dict(pg.execute("SELECT country_id, at FROM bench_arrival").fetchall())
        runs = pg.execute("SELECT count(*), coalesce(sum(snowflake_statements), 0) FROM replication_run").fetchone()
        pg.execute(UNTRIGGER)
    latencies = [arrived[i] - t for i, t in inserted.items() if i in arrived]
    missing = len(inserted) - len(latencies)
    if publisher.returncode != 0 or drivers.returncode != 0 or missing:
        sys.exit(f"freshness: publisher exit {publisher.returncode}, writers exit {drivers.returncode}, "
                 f"{missing} rows missing\n{publisher_err[-2000:]}\n{drivers_err[-2000:]}")
    return {
        "rate_rows_per_s": rate, "seconds": seconds, "writers": writers,
        "publish_idle_wait_ms": idle_ms,
        "rows": len(inserted), "arrived": len(latencies),
        "achieved_insert_rate": round(len(inserted) / insert_seconds),
        "late_insert_ticks": late_ticks,
        "p50_s": round(percentile(latencies, 50), 3), "p95_s": round(percentile(latencies, 95), 3),
        "p99_s": round(percentile(latencies, 99), 3), "max_s": round(max(latencies), 3),
        "publisher_runs": int(runs[0]), "snowflake_statements": int(runs[1]),
    }


# ---- scale ----

def load(rows: int) -> None:
    sf = sf_connect()
    sf.cursor().execute(
        f"INSERT INTO \"case\" SELECT SEQ4(), CASE MOD(SEQ4(), 4) WHEN 0 THEN 'USA' WHEN 1 THEN 'FRA' "
        f"WHEN 2 THEN 'DEU' ELSE 'JPN' END FROM TABLE(GENERATOR(ROWCOUNT => {rows}))"
    )
    sf.close()


RELEASE = ROOT / "target" / "release"


def scale_direct(rows: int, writers_list: list[int], buckets: int) -> list[dict]:
    results = []
    for writers in writers_list:
        before = cpu_snapshot()
        out = subprocess.run([str(RELEASE / "bench-write"), "stream-writers", str(rows)],
                             env=run_env(WRITERS=writers, CHANGE_BUCKETS=buckets), capture_output=True, text=True)
        after = cpu_snapshot()
        if out.returncode != 0:
            sys.exit(f"scale (direct): {out.stderr[-2000:]}")
        wall = json.loads(out.stdout)["seconds"]
        # The child's CPU includes packing before its clock started: an upper bound.
        cpu = {k: round(after[k] - before[k], 2) for k in after}
        results.append({
            "writers": writers, "rows": rows, "buckets": buckets, "seconds": round(wall, 2),
            "rows_per_s": round(rows / wall),
            "cpu_share_of_wall": {"postgres": round(cpu["postgres"] / wall, 2),
                                  "writers": round(cpu["children"] / wall, 2)},
        })
        print(f"  direct: {writers} writers: {rows / wall:,.0f} rows/s ({wall:.2f} s); CPU/wall: "
              f"postgres {cpu['postgres'] / wall:.2f}, writers {cpu['children'] / wall:.2f}", flush=True)
    return results


def scale(rows: int, writers_list: list[int], batch_size: int, buckets: int) -> list[dict]:
    results = []
    for writers in writers_list:
        empty_everything()
        load(rows)
        started = time.time()
        out = subprocess.run([str(COUNTRIES), "publish"], env=run_env(CHANGE_BUCKETS=buckets, PUBLISH_LOOP_SECONDS=0),
                             capture_output=True, text=True)
        publish_seconds = time.time() - started
        if out.returncode != 0:
            sys.exit(f"scale: the publisher failed: {out.stderr[-2000:]}")
        messages = queue_depth("CHANGES_QUEUE_URL")
        before = cpu_snapshot()
        started = time.time()
        out = subprocess.run(
            [str(COUNTRIES), "drive-writers", "--writers", str(writers), "--batch-size", str(batch_size),
             "--timeout", "900"],
            env=run_env(CHANGE_BUCKETS=buckets), capture_output=True, text=True,
        )
        after = cpu_snapshot()
        if out.returncode != 0:
            sys.exit(f"scale: the writers failed: {out.stderr[-2000:]}")
        # The writers' own account of the time the work took: up to their last poll
        # with messages, without the empty long poll (one second) that ends a drain.
        wall = json.loads(out.stdout)["busy_seconds"]
        with postgres() as pg:
            in_pg = pg.execute('SELECT count(*) FROM "case"').fetchone()[0]
        if in_pg != rows:
            sys.exit(f"scale: {in_pg} rows in Postgres, expected {rows}")
        cpu = {k: round(after[k] - before[k], 2) for k in after}
        results.append({
            "writers": writers, "rows": rows, "messages": messages, "buckets": buckets,
            "writer_batch_size": batch_size, "seconds": round(wall, 2),
            "rows_per_s": round(rows / wall), "publish_seconds": round(publish_seconds, 2),
            "cpu_seconds": {"sqs_emulator": cpu["moto"], "postgres": cpu["postgres"], "writers": cpu["children"]},
            "cpu_share_of_wall": {"sqs_emulator": round(cpu["moto"] / wall, 2),
                                  "postgres": round(cpu["postgres"] / wall, 2),
                                  "writers": round(cpu["children"] / wall, 2)},
        })
        print(f"  through moto: {writers} writers: {rows / wall:,.0f} rows/s ({wall:.1f} s, {messages} messages); "
              f"CPU/wall: moto {cpu['moto'] / wall:.2f}, postgres {cpu['postgres'] / wall:.2f}, "
              f"writers {cpu['children'] / wall:.2f}", flush=True)
    return results


def bench_write(mode: str, rows: int, **env: object) -> float:
    out = subprocess.run([str(RELEASE / "bench-write"), mode, str(rows)], env=run_env(**env),
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench-write {mode} {rows}: {out.stderr[-2000:]}")
    return json.loads(out.stdout)["seconds"]


def writer_vs_copy(rows: int, buckets: int, block: int, rounds: int) -> dict:
    """One stream writer against binary COPY of the same rows, measured here, interleaved round by
    round (the machine is shared: a baseline from another minute is another machine), medians of
    `rounds`. A third line, COPY in one writer's pattern (one COPY per invocation of 10 messages,
    each in id order, no parsing), splits the ratio: what bucketed delivery leaves Postgres
    (floor ÷ COPY) and what our writer adds on top (writer ÷ floor). A fourth, the writer on
    batches packed by id (CHANGE_BLOCK_IDS=1, message version 1's rule), is the before."""
    lines = {"copy": ("copy", block), "copy-as-writers": ("copy-as-writers", block),
             "stream-writers": ("stream-writers", block), "stream-writers-by-id": ("stream-writers", 1)}
    times: dict[str, list[float]] = {name: [] for name in lines}
    for _ in range(rounds):
        for name, (mode, line_block) in lines.items():
            times[name].append(bench_write(mode, rows, WRITERS=1, CHANGE_BUCKETS=buckets,
                                           CHANGE_BLOCK_IDS=line_block))
    median = {name: statistics.median(t) for name, t in times.items()}
    rate = {name: rows / s for name, s in median.items()}
    result = {
        "rows": rows, "rounds": rounds, "buckets": buckets, "block": block,
        "seconds": {name: [round(x, 3) for x in t] for name, t in times.items()},
        "copy_rows_per_s": round(rate["copy"]),
        "floor_rows_per_s": round(rate["copy-as-writers"]),
        "writer_rows_per_s": round(rate["stream-writers"]),
        "writer_by_id_rows_per_s": round(rate["stream-writers-by-id"]),
        "ratio": round(rate["stream-writers"] / rate["copy"], 2),
        "by_id_ratio": round(rate["stream-writers-by-id"] / rate["copy"], 2),
        "floor_ratio": round(rate["copy-as-writers"] / rate["copy"], 2),
        "writer_of_floor": round(rate["stream-writers"] / rate["copy-as-writers"], 2),
    }
    result["met"] = result["ratio"] >= 0.7
    print(f"  one stream writer ÷ COPY ({rows:,} rows, PGSSLMODE={os.environ.get('PGSSLMODE', '')}, median of "
          f"{rounds}): {result['ratio']:.2f} × (target ≥ 0.7 ×; packed by id: {result['by_id_ratio']:.2f} ×); "
          f"COPY in one writer's pattern ÷ COPY: {result['floor_ratio']:.2f} ×; writer ÷ that floor: "
          f"{result['writer_of_floor']:.2f} ×", flush=True)
    return result


def markdown(report: dict) -> str:
    f = report["freshness"]
    lines = [
        "# Stream mode: freshness and scale (make bench)",
        "",
        f"Freshness: {f['rows']:,} rows inserted at {f['rate_rows_per_s']:,} rows/s for {f['seconds']} s "
        f"(achieved {f['achieved_insert_rate']:,}/s), publisher looping (idle wait {f['publish_idle_wait_ms']} ms), "
        f"{f['writers']} writers: insert → Postgres p50 **{f['p50_s']} s**, p95 **{f['p95_s']} s**, "
        f"p99 {f['p99_s']} s, max {f['max_s']} s; every row arrived ({f['publisher_runs']} publisher runs, "
        f"{f['snowflake_statements']} Snowflake statements).",
        "",
        "Writers direct (the real writer handler on pre-packed FIFO events, no queue):",
        "",
        "| writers | rows | seconds | rows/s | vs 1 writer | CPU/wall: Postgres | writers |",
        "|---|---|---|---|---|---|---|",
    ]
    base = report["scale_direct"][0]["rows_per_s"]
    for s in report["scale_direct"]:
        c = s["cpu_share_of_wall"]
        lines.append(f"| {s['writers']} | {s['rows']:,} | {s['seconds']} | {s['rows_per_s']:,} | "
                     f"{s['rows_per_s'] / base:.2f}× | {c['postgres']} | {c['writers']} |")
    w = report.get("writer_vs_copy")
    if w:
        lines += ["", f"One stream writer ÷ COPY ({w['rows']:,} rows, Postgres over TLS, "
                  f"PGSSLMODE={report.get('postgres_sslmode', '')}, the four lines interleaved, median of "
                  f"{w['rounds']}): **{w['ratio']:.2f} ×** ({w['writer_rows_per_s']:,} against "
                  f"{w['copy_rows_per_s']:,} rows/s); target ≥ 0.7 ×: {'met' if w['met'] else 'not met'}. "
                  f"Ids go to {w['buckets']} message groups by blocks of {w.get('block', 1):,}; the same writer on "
                  f"batches packed by id (block 1, message version 1's rule): {w['writer_by_id_rows_per_s']:,} "
                  f"rows/s, **{w['by_id_ratio']:.2f} ×** COPY. "
                  f"COPY of the same rows in one writer's pattern (one COPY per "
                  f"invocation of 10 messages, in id order, no parsing): {w['floor_rows_per_s']:,} rows/s, "
                  f"**{w['floor_ratio']:.2f} ×** COPY, what this delivery pattern leaves Postgres; "
                  f"the writer reaches **{w['writer_of_floor']:.2f} ×** of it."]
    lines += [
        "",
        "Through the changes queue in moto (`countries drive-writers`):",
        "",
        "| writers | rows | messages | seconds | rows/s | vs 1 writer | CPU/wall: SQS emulator | Postgres | writers |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = report["scale"][0]["rows_per_s"]
    for s in report["scale"]:
        c = s["cpu_share_of_wall"]
        lines.append(f"| {s['writers']} | {s['rows']:,} | {s['messages']} | {s['seconds']} | {s['rows_per_s']:,} | "
                     f"{s['rows_per_s'] / base:.2f}× | {c['sqs_emulator']} | {c['postgres']} | {c['writers']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="rows/s inserted for the freshness run")
    parser.add_argument("--seconds", type=int, default=60, help="length of the freshness run")
    parser.add_argument("--fresh-writers", type=int, default=4)
    parser.add_argument("--idle-ms", type=int, default=1000, help="PUBLISH_IDLE_WAIT_MILLIS (the default)")
    parser.add_argument("--scale-rows", type=int, default=1_000_000)
    parser.add_argument("--scale-writers", default="1,2,4")
    parser.add_argument("--writer-batch", type=int, default=10)
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument("--block", type=int, default=65536, help="CHANGE_BLOCK_IDS (the default)")
    parser.add_argument("--copy-rounds", type=int, default=5,
                        help="rounds of COPY / COPY in a writer's pattern / one writer / one writer by id, interleaved")
    parser.add_argument("--scale-only", action="store_true", help="keep the last freshness figures")
    args = parser.parse_args()
    # Every line packs as the publisher would with this block (the by-id line sets its own).
    os.environ["CHANGE_BLOCK_IDS"] = str(args.block)
    if args.scale_only:
        fresh = json.loads((ROOT / "bench" / "stream-latest.json").read_text())["freshness"]
    else:
        print(f"==> stream freshness: {args.rate} rows/s for {args.seconds} s, {args.fresh_writers} writers",
              flush=True)
        fresh = freshness(args.rate, args.seconds, args.fresh_writers, args.idle_ms)
    print(f"  p50 {fresh['p50_s']} s, p95 {fresh['p95_s']} s, max {fresh['max_s']} s", flush=True)
    writers_list = [int(w) for w in args.scale_writers.split(",")]
    print(f"==> stream scale: {args.scale_rows} rows, writers {args.scale_writers}", flush=True)
    with postgres() as pg:
        pg.execute('TRUNCATE "case"')
    direct = scale_direct(args.scale_rows, writers_list, args.buckets)
    print("==> one stream writer against COPY, interleaved", flush=True)
    versus = writer_vs_copy(args.scale_rows, args.buckets, args.block, args.copy_rounds)
    scaled = scale(args.scale_rows, writers_list, args.writer_batch, args.buckets)
    report = {"freshness": fresh, "scale_direct": direct, "scale": scaled, "cpus": os.cpu_count(),
              "writer_vs_copy": versus, "postgres_sslmode": os.environ.get("PGSSLMODE", ""),
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    out = ROOT / "bench"
    out.mkdir(exist_ok=True)
    (out / "stream-latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "stream-latest.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
