//! Seeded fault schedules on stream mode's path, against the real processes
//! and services: the publisher process (`replicate-once` with
//! `COUNTRIES_PUBLISH=1`) and the writers (`countries drive-writers`, two at
//! once, fed from moto's FIFO changes queue like the event source mapping).
//!
//! Each schedule loads a dataset into the Snowflake emulator and injects one
//! fault:
//! - the publisher crashes at a step boundary (after_write: published and
//!   not yet deleted), is killed at a random moment, or loses the changes
//!   queue (SQS) at a step or in the middle of a conversation;
//! - the writers are killed mid-batch, or Postgres goes down under them;
//! - the publisher meets Snowflake's protocol after a step (the stack's
//!   protocol fake): a long statement, an expired or lost session, a request
//!   hung until the deadline, a chunk that keeps failing.
//!
//! Then it drains the changes queue with every service up and checks that no
//! row is lost (each is in Postgres, on the retry queue or still in
//! Snowflake), heals (publisher and writers until Snowflake is empty), and
//! checks again, and that no version was written twice or out of order
//! (Postgres records every change it commits) and nothing went to the
//! changes dead-letter queue.
//!
//! - `STREAM_FAULT_SCHEDULES` (default: one per named fault): how many.
//! - `FAULT_SEED` (default 1), `FAULT_PARALLEL` (default 2), `FAULT_REPORT`:
//!   as in `fault_schedules.rs`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use countries_ops::event_source::LocalEventSource;
use countries_shared::lambda::publisher::PublishOutcome;
use countries_shared::ledger::RunOutcome;
use countries_shared::ports::Step;
use futures::StreamExt;
use testkit::schedules::{
    down_at, draw_rows, env_number, kill_after, protocol_fault_at, record_changes, spawn,
    versions_written_twice, wait_output, Protocol, Service, ServiceProxies,
};
use testkit::{SplitMix, TestEnv};

#[derive(Debug, Clone)]
enum Fault {
    /// The publisher aborts at a step boundary.
    PublisherCrash(&'static str),
    /// The publisher is killed (SIGKILL) this long after it started.
    PublisherKill(Duration),
    /// SQS (the changes queue) goes down when the publisher reaches the point.
    QueueDownAt(&'static str),
    /// SQS goes down after the publisher sent this many bytes to it.
    QueueDownAfterBytes(u64),
    /// The writers' process is killed this long after it started.
    WriterKill(Duration),
    /// Postgres goes down under the writers after this many bytes.
    PostgresDownUnderWriters(u64),
    /// Snowflake answers the publisher's statements after the point the way
    /// the real service can (the protocol fake).
    Protocol(Protocol, &'static str),
}

impl Fault {
    fn kind(&self) -> String {
        match self {
            Fault::PublisherCrash(p) => format!("publisher crash at {p}"),
            Fault::PublisherKill(_) => "publisher killed".into(),
            Fault::QueueDownAt(p) => format!("changes queue down at {p}"),
            Fault::QueueDownAfterBytes(_) => "changes queue down mid-conversation".into(),
            Fault::WriterKill(_) => "writer killed mid-batch".into(),
            Fault::PostgresDownUnderWriters(_) => "Postgres down under the writers".into(),
            Fault::Protocol(p, point) => format!("publisher meets a {} at {point}", p.name()),
        }
    }
}

fn named_faults() -> Vec<Fault> {
    let mut faults: Vec<Fault> = Step::ALL
        .iter()
        .map(|s| Fault::PublisherCrash(s.as_str()))
        .collect();
    faults.extend([
        Fault::QueueDownAt("after_snapshot"),
        Fault::QueueDownAt("mid_write"),
        Fault::QueueDownAt("after_write"),
        Fault::QueueDownAfterBytes(4_000),
        Fault::PublisherKill(Duration::from_millis(150)),
        Fault::WriterKill(Duration::from_millis(60)),
        Fault::WriterKill(Duration::from_millis(250)),
        Fault::PostgresDownUnderWriters(0),
        Fault::PostgresDownUnderWriters(1_200),
        Fault::Protocol(Protocol::HungRequest, "after_snapshot"),
        Fault::Protocol(Protocol::FailedChunk, "after_snapshot"),
        Fault::Protocol(Protocol::SessionExpired, "after_read"),
    ]);
    // A long statement and a lost session after every step.
    for protocol in [Protocol::LongStatement, Protocol::SessionLost] {
        faults.extend(
            Step::ALL
                .iter()
                .map(|s| Fault::Protocol(protocol, s.as_str())),
        );
    }
    faults
}

fn random_fault(rng: &mut SplitMix) -> Fault {
    let point = |rng: &mut SplitMix| Step::ALL[rng.below(Step::ALL.len())].as_str();
    match rng.below(7) {
        6 => Fault::Protocol(Protocol::ALL[rng.below(Protocol::ALL.len())], point(rng)),
        0 => Fault::PublisherCrash(point(rng)),
        1 => Fault::PublisherKill(Duration::from_millis(10 + rng.below(400) as u64)),
        2 => Fault::QueueDownAt(point(rng)),
        3 => Fault::QueueDownAfterBytes(rng.below(20_000) as u64),
        4 => Fault::WriterKill(Duration::from_millis(10 + rng.below(400) as u64)),
        _ => Fault::PostgresDownUnderWriters(rng.below(10_000) as u64),
    }
}

struct Schedule {
    number: usize,
    rows: Vec<countries_shared::model::row::SourceRow>,
    batch_size: usize,
    page_rows: usize,
    fault: Fault,
}

fn draw_schedule(number: usize, seed: u64) -> Schedule {
    // Another stream of draws than batch mode's schedules of the same seed.
    let mut rng = SplitMix::new(!seed ^ (number as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let fault = named_faults()
        .get(number)
        .cloned()
        .unwrap_or_else(|| random_fault(&mut rng));
    let count = 3 + rng.below(38);
    Schedule {
        number,
        rows: draw_rows(&mut rng, count),
        batch_size: 1 + rng.below(8),
        page_rows: 1 + rng.below(6),
        fault,
    }
}

#[derive(Debug, Default)]
struct Outcome {
    rows: usize,
    interrupted: bool,
    publisher_runs: usize,
    lost: usize,
    written_twice: usize,
}

fn publisher() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_replicate-once"))
}

fn publisher_vars(vars: &HashMap<String, String>) -> HashMap<String, String> {
    let mut vars = vars.clone();
    vars.insert("COUNTRIES_PUBLISH".into(), "1".into());
    vars
}

/// The faulty part: the publisher (with the fault, or without when the
/// fault is the writers'), then the writers' process when the fault is
/// theirs. Returns whether the fault interrupted something.
async fn run_with_fault(env: &TestEnv, schedule: &Schedule, pause_file: &Path) -> bool {
    let mut vars = publisher_vars(&env.vars);
    vars.insert("BATCH_SIZE".into(), schedule.batch_size.to_string());
    vars.insert("SNOWFLAKE_PAGE_ROWS".into(), schedule.page_rows.to_string());
    let proxies = ServiceProxies::start(&vars);
    let mut vars = proxies.vars.clone();
    let writers = |vars: &HashMap<String, String>| {
        spawn(
            &testkit::workspace_binary("countries"),
            &["drive-writers", "--writers", "2", "--timeout", "4"],
            vars,
        )
    };
    match &schedule.fault {
        Fault::PublisherCrash(point) => {
            vars.insert("COUNTRIES_CRASH_AT".into(), point.to_string());
            !wait_output(spawn(publisher(), &[], &vars))
                .await
                .status
                .success()
        }
        Fault::PublisherKill(after) => kill_after(spawn(publisher(), &[], &vars), *after).await,
        Fault::QueueDownAt(point) => {
            down_at(
                publisher(),
                &vars,
                &proxies,
                Service::Sqs,
                point,
                pause_file,
            )
            .await
        }
        Fault::QueueDownAfterBytes(bytes) => {
            proxies.proxies[&Service::Sqs].take_down_after(*bytes);
            let _ = wait_output(spawn(publisher(), &[], &vars)).await;
            proxies.proxies[&Service::Sqs].is_down()
        }
        Fault::WriterKill(after) => {
            let out = wait_output(spawn(publisher(), &[], &vars)).await;
            assert!(out.status.success(), "the publisher failed: {out:?}");
            kill_after(writers(&vars), *after).await
        }
        Fault::PostgresDownUnderWriters(bytes) => {
            let out = wait_output(spawn(publisher(), &[], &vars)).await;
            assert!(out.status.success(), "the publisher failed: {out:?}");
            proxies.proxies[&Service::Postgres].take_down_after(*bytes);
            let out = wait_output(writers(&vars)).await;
            proxies.proxies[&Service::Postgres].is_down() && !out.status.success()
        }
        Fault::Protocol(protocol, point) => {
            protocol_fault_at(
                publisher(),
                &vars,
                &env.vars["SNOWFLAKE_ENDPOINT_URL"],
                *protocol,
                point,
                pause_file,
            )
            .await
        }
    }
}

/// Writers with every service up until the changes queue is empty.
async fn drain_changes(env: &TestEnv, context: &str) {
    let writer = writer::build(&env.writer_config()).await;
    let source = LocalEventSource {
        client: env.sqs.clone(),
        queue_url: env.vars["CHANGES_QUEUE_URL"].clone(),
        batch_size: 10,
    };
    source
        .drain_parallel(&writer, 2, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{context}: the changes queue does not empty: {e}"));
}

async fn run_schedule(schedule: Schedule, seed: u64) -> Outcome {
    let mut env = TestEnv::new(&format!("ssched{}", schedule.number)).await;
    // A listed batch comes back after two seconds; nothing gives up.
    env.add_changes_queue(2, 1_000).await;
    record_changes(&env).await;
    env.load(&schedule.rows).await;
    let pause_file: PathBuf = std::env::temp_dir().join(format!("{}.pause", env.name));
    let context = format!(
        "seed {seed}, stream schedule {} ({}; {} rows, batch {}, page {})",
        schedule.number,
        schedule.fault.kind(),
        schedule.rows.len(),
        schedule.batch_size,
        schedule.page_rows
    );
    let mut outcome = Outcome {
        rows: schedule.rows.len(),
        publisher_runs: 1,
        ..Outcome::default()
    };
    outcome.interrupted = run_with_fault(&env, &schedule, &pause_file).await;
    if let Fault::PublisherCrash("after_write") = schedule.fault {
        if outcome.interrupted {
            // Published, and not deleted: every row is still in Snowflake.
            assert_eq!(
                env.snowflake_rows().await.len(),
                schedule.rows.len(),
                "{context}"
            );
        }
    }

    // After the fault: with the changes queue drained, every row is in
    // Postgres, on the retry queue, or still in Snowflake.
    drain_changes(&env, &context).await;
    let mut queued = env.drain_retry_queue().await;
    let lost = testkit::lost_rows(&env, &schedule.rows, &queued).await;
    assert!(lost.is_empty(), "{context}: lost after the fault: {lost:?}");

    // Heal: publisher and writers until Snowflake is empty.
    let max_runs = 2 + schedule.rows.len();
    while !env.snowflake_rows().await.is_empty() {
        assert!(
            outcome.publisher_runs <= max_runs,
            "{context}: rows left in Snowflake after {} publisher runs",
            outcome.publisher_runs
        );
        let out = wait_output(spawn(publisher(), &[], &publisher_vars(&env.vars))).await;
        outcome.publisher_runs += 1;
        let published: PublishOutcome = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{context}: healing run printed no outcome ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        for run in &published.runs {
            assert_eq!(run.outcome, RunOutcome::Succeeded, "{context}: {run:?}");
        }
        drain_changes(&env, &context).await;
        queued.extend(env.drain_retry_queue().await);
    }
    let lost = testkit::lost_rows(&env, &schedule.rows, &queued).await;
    let twice = versions_written_twice(&env).await;
    outcome.lost = lost.len();
    outcome.written_twice = twice.len();
    assert!(lost.is_empty(), "{context}: lost after healing: {lost:?}");
    assert!(twice.is_empty(), "{context}: {twice:?}");
    assert_eq!(
        env.depth("CHANGES_DEAD_LETTER_QUEUE_URL").await,
        0,
        "{context}: a batch gave up"
    );
    for message in &queued {
        assert!(
            schedule.rows.contains(&message.record),
            "{context}: queued a record that was never read: {message:?}"
        );
    }
    eprintln!(
        "{context}: interrupted={}, publisher runs={}, queued={}, lost=0",
        outcome.interrupted,
        outcome.publisher_runs,
        queued.len()
    );
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_fault_schedules_lose_no_row_and_write_no_version_twice() {
    let count = env_number("STREAM_FAULT_SCHEDULES", named_faults().len() as u64) as usize;
    let seed = env_number("FAULT_SEED", 1);
    let parallel = env_number("FAULT_PARALLEL", 2).max(1) as usize;
    let started = Instant::now();
    eprintln!("stream fault schedules: {count} with seed {seed}, {parallel} at a time");
    let outcomes: Vec<(String, Outcome)> = futures::stream::iter(0..count)
        .map(|n| async move {
            let schedule = draw_schedule(n, seed);
            (schedule.fault.kind(), run_schedule(schedule, seed).await)
        })
        .buffer_unordered(parallel)
        .collect()
        .await;

    let mut kinds: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (kind, outcome) in &outcomes {
        let entry = kinds.entry(kind.clone()).or_default();
        entry.0 += 1;
        entry.1 += usize::from(outcome.interrupted);
    }
    let sum = |f: &dyn Fn(&Outcome) -> usize| outcomes.iter().map(|(_, o)| f(o)).sum::<usize>();
    let report = serde_json::json!({
        "seed": seed,
        "schedules": outcomes.len(),
        "faults_injected": sum(&|o| usize::from(o.interrupted)),
        "fault_kinds": kinds.iter().map(|(k, (n, fired))| (k.clone(), serde_json::json!({"schedules": n, "fired": fired}))).collect::<serde_json::Map<_, _>>(),
        "rows": sum(&|o| o.rows),
        "publisher_runs": sum(&|o| o.publisher_runs),
        "rows_lost": sum(&|o| o.lost),
        "versions_written_twice": sum(&|o| o.written_twice),
        "seconds": started.elapsed().as_secs(),
    });
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if let Ok(path) = std::env::var("FAULT_REPORT") {
        let path = format!("{path}.stream.json");
        std::fs::write(&path, format!("{report:#}\n"))
            .unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
    assert_eq!(outcomes.len(), count);
    assert_eq!(report["rows_lost"], 0);
    assert_eq!(report["versions_written_twice"], 0);
    let fired = report["faults_injected"].as_u64().unwrap_or(0) as usize;
    assert!(
        fired * 10 >= count * 6,
        "only {fired} of {count} faults fired"
    );
}
