//! Seeded random fault schedules against the real processes and services.
//!
//! Each schedule draws a dataset (valid rows, malformed rows, rows Postgres
//! refuses, identical copies and conflicting versions of an id), loads it
//! into the Snowflake emulator, and runs the real replicator process with
//! one fault:
//! - a crash (abort) at a named step boundary, or a SIGKILL at a random moment;
//! - Postgres, the Snowflake emulator or SQS going down when the run reaches a
//!   named point, or in the middle of a conversation (after a random number
//!   of bytes);
//! - Snowflake's protocol, through the stack's protocol fake, after a named
//!   point: a long statement, an expired or a lost session, a request that
//!   hangs until the deadline, a chunk that keeps failing.
//!
//! Then it checks the invariant, heals (runs again with every service up until
//! Snowflake is empty) and checks it again: every row read is in Postgres, in
//! the retry queue or still in Snowflake, and no version was written twice.
//!
//! The first schedules of every run walk the named faults in order, so even the
//! quick setting covers each of them; the rest are random.
//!
//! - `FAULT_SCHEDULES` (default: one per named fault): how many schedules run.
//! - `FAULT_SEED` (default 1): the seed; a failure prints it with the
//!   schedule's number, and the same seed replays the same schedules.
//! - `FAULT_PARALLEL` (default 2): schedules run at once.
//! - `FAULT_REPORT`: a file to write the figures to, as JSON.
//!
//! The long (soak) run is `make soak`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use countries_shared::ledger::RunOutcome;
use countries_shared::ledger::RunSummary;
use countries_shared::model::message::RetryMessage;
use countries_shared::model::row::validate;
use countries_shared::model::row::SourceRow;
use countries_shared::ports::Step;
use futures::StreamExt;
use testkit::schedules::{
    down_at, draw_rows, env_number, kill_after, protocol_fault_at, record_changes, spawn,
    versions_written_twice, wait_output, Protocol, Service, ServiceProxies,
};
use testkit::{SplitMix, TestEnv};

/// Step boundaries of a run, in order (`Step` in the shared crate's ports).
const POINTS: [&str; Step::ALL.len()] = {
    let mut names = [""; Step::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = Step::ALL[i].as_str();
        i += 1;
    }
    names
};

#[derive(Debug, Clone)]
enum Fault {
    /// The process aborts at a step boundary.
    Crash(&'static str),
    /// The process is killed (SIGKILL) this long after it started.
    Kill(Duration),
    /// The service goes down when the run reaches the point.
    DownAt(Service, &'static str),
    /// The service goes down after sending this many bytes.
    DownAfterBytes(Service, u64),
    /// The invocation's deadline (from the Lambda context) is this far
    /// away; the safety margin (one second, capped at half the invocation)
    /// makes the run stop starting work half-way to it, in the middle of
    /// the run.
    Deadline(Duration),
    /// Snowflake answers the statements after the point the way the real
    /// service can and the emulator never does (the protocol fake).
    Protocol(Protocol, &'static str),
}

impl Fault {
    fn kind(&self) -> String {
        match self {
            Fault::Crash(p) => format!("crash at {p}"),
            Fault::Kill(_) => "kill at a random moment".into(),
            Fault::DownAt(s, p) => format!("{s:?} down at {p}"),
            Fault::DownAfterBytes(s, _) => format!("{s:?} down mid-conversation"),
            Fault::Deadline(_) => "deadline reached mid-run".into(),
            Fault::Protocol(p, point) => format!("{} at {point}", p.name()),
        }
    }
}

/// The named faults, walked first in every run.
fn named_faults() -> Vec<Fault> {
    let mut faults: Vec<Fault> = POINTS.iter().map(|p| Fault::Crash(p)).collect();
    faults.extend([
        Fault::DownAt(Service::Snowflake, "before_read"),
        Fault::DownAt(Service::Snowflake, "after_snapshot"),
        Fault::DownAt(Service::Postgres, "mid_write"),
        Fault::DownAt(Service::Sqs, "after_write"),
        Fault::DownAt(Service::Snowflake, "after_enqueue"),
        Fault::DownAt(Service::Snowflake, "mid_delete"),
        Fault::DownAt(Service::Snowflake, "before_drop"),
        Fault::DownAt(Service::Postgres, "before_ledger"),
        Fault::Kill(Duration::from_millis(150)),
        Fault::DownAfterBytes(Service::Snowflake, 3_000),
        Fault::DownAfterBytes(Service::Postgres, 2_000),
        Fault::Deadline(Duration::from_millis(500)),
        Fault::Protocol(Protocol::HungRequest, "after_snapshot"),
        Fault::Protocol(Protocol::FailedChunk, "after_snapshot"),
        Fault::Protocol(Protocol::SessionExpired, "after_read"),
    ]);
    // A long statement and a lost session after every step.
    for protocol in [Protocol::LongStatement, Protocol::SessionLost] {
        faults.extend(POINTS.iter().map(|p| Fault::Protocol(protocol, p)));
    }
    faults
}

fn random_fault(rng: &mut SplitMix) -> Fault {
    let services = [Service::Postgres, Service::Snowflake, Service::Sqs];
    match rng.below(6) {
        5 => Fault::Protocol(
            Protocol::ALL[rng.below(Protocol::ALL.len())],
            POINTS[rng.below(POINTS.len())],
        ),
        4 => Fault::Deadline(Duration::from_millis(200 + rng.below(600) as u64)),
        0 => Fault::Crash(POINTS[rng.below(POINTS.len())]),
        1 => Fault::Kill(Duration::from_millis(10 + rng.below(400) as u64)),
        2 => Fault::DownAt(
            services[rng.below(services.len())],
            POINTS[rng.below(POINTS.len())],
        ),
        _ => Fault::DownAfterBytes(
            services[rng.below(services.len())],
            rng.below(20_000) as u64,
        ),
    }
}

struct Schedule {
    number: usize,
    rows: Vec<SourceRow>,
    batch_size: usize,
    page_rows: usize,
    fault: Fault,
}

fn draw_schedule(number: usize, seed: u64) -> Schedule {
    let mut rng = SplitMix::new(seed ^ (number as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let named = named_faults();
    let fault = named
        .get(number)
        .cloned()
        .unwrap_or_else(|| random_fault(&mut rng));
    let count = 3 + rng.below(38);
    let rows = draw_rows(&mut rng, count);
    Schedule {
        number,
        rows,
        batch_size: 1 + rng.below(8),
        page_rows: 1 + rng.below(6),
        fault,
    }
}

/// What one schedule found.
#[derive(Debug, Default)]
struct Outcome {
    rows: usize,
    lost: Vec<String>,
    written_twice: Vec<String>,
    duplicate_messages: usize,
    runs: usize,
    interrupted: bool,
}

fn spawn_replicator(vars: &HashMap<String, String>) -> Child {
    spawn(Path::new(env!("CARGO_BIN_EXE_replicate-once")), &[], vars)
}

/// Runs the faulty invocation; returns whether the fault interrupted it.
async fn run_with_fault(env: &TestEnv, schedule: &Schedule, pause_file: &Path) -> bool {
    let mut vars = env.vars.clone();
    vars.insert("BATCH_SIZE".into(), schedule.batch_size.to_string());
    vars.insert("SNOWFLAKE_PAGE_ROWS".into(), schedule.page_rows.to_string());
    let proxies = ServiceProxies::start(&vars);
    let mut vars = proxies.vars.clone();

    match &schedule.fault {
        Fault::Crash(point) => {
            vars.insert("COUNTRIES_CRASH_AT".into(), point.to_string());
            let out = wait_output(spawn_replicator(&vars)).await;
            !out.status.success()
        }
        Fault::Kill(after) => kill_after(spawn_replicator(&vars), *after).await,
        Fault::Deadline(left) => {
            vars.insert("COUNTRIES_DEADLINE_MS".into(), left.as_millis().to_string());
            vars.insert("DEADLINE_MARGIN_SECONDS".into(), "1".into());
            let out = wait_output(spawn_replicator(&vars)).await;
            String::from_utf8_lossy(&out.stderr).contains("deadline")
        }
        Fault::DownAfterBytes(service, bytes) => {
            proxies.proxies[service].take_down_after(*bytes);
            let _ = wait_output(spawn_replicator(&vars)).await;
            proxies.proxies[service].is_down()
        }
        Fault::DownAt(service, point) => {
            down_at(
                Path::new(env!("CARGO_BIN_EXE_replicate-once")),
                &vars,
                &proxies,
                *service,
                point,
                pause_file,
            )
            .await
        }
        Fault::Protocol(protocol, point) => {
            protocol_fault_at(
                Path::new(env!("CARGO_BIN_EXE_replicate-once")),
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

async fn run_schedule(schedule: Schedule, seed: u64) -> Outcome {
    let env = TestEnv::new(&format!("sched{}", schedule.number)).await;
    record_changes(&env).await;
    env.load(&schedule.rows).await;
    let pause_file = std::env::temp_dir().join(format!("{}.pause", env.name));
    let context = format!(
        "seed {seed}, schedule {} ({}; {} rows, batch {}, page {})",
        schedule.number,
        schedule.fault.kind(),
        schedule.rows.len(),
        schedule.batch_size,
        schedule.page_rows
    );

    let mut outcome = Outcome {
        rows: schedule.rows.len(),
        runs: 1,
        ..Outcome::default()
    };
    outcome.interrupted = run_with_fault(&env, &schedule, &pause_file).await;
    let mut queued = env.drain_retry_queue().await;
    outcome.lost = testkit::lost_rows(&env, &schedule.rows, &queued).await;
    assert!(
        outcome.lost.is_empty(),
        "{context}: lost after the fault: {:?}",
        outcome.lost
    );
    check_fault_specific(&env, &schedule, outcome.interrupted, &queued, &context).await;

    // Heal: run with every service up until Snowflake is empty. Each run
    // writes one version of an id, so a few runs may be needed.
    let mut left = env.snowflake_rows().await;
    let max_runs = 2 + schedule.rows.len();
    while !left.is_empty() {
        assert!(
            outcome.runs <= max_runs,
            "{context}: still {} rows in Snowflake after {} runs: {left:?}",
            left.len(),
            outcome.runs
        );
        let out = wait_output(spawn_replicator(&env.vars)).await;
        outcome.runs += 1;
        let summary: RunSummary = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{context}: healing run printed no summary ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(
            summary.outcome,
            RunOutcome::Succeeded,
            "{context}: healing run: {summary:?}"
        );
        queued.extend(env.drain_retry_queue().await);
        left = env.snowflake_rows().await;
    }

    outcome.lost = testkit::lost_rows(&env, &schedule.rows, &queued).await;
    outcome.written_twice = versions_written_twice(&env).await;
    // The queue carries each failed row at least once; a crash between the
    // enqueue and the delete may send one again (documented: at least once,
    // with a stable record_key). Count the extra copies, and check that the
    // queue carries nothing that was not read.
    let mut sent: HashMap<&SourceRow, usize> = HashMap::new();
    for message in &queued {
        assert!(
            schedule.rows.contains(&message.record),
            "{context}: queued a record that was never read: {message:?}"
        );
        *sent.entry(&message.record).or_default() += 1;
    }
    outcome.duplicate_messages = sent
        .iter()
        .map(|(row, n)| n.saturating_sub(schedule.rows.iter().filter(|r| r == row).count()))
        .sum();
    assert!(
        outcome.lost.is_empty(),
        "{context}: lost after healing: {:?}",
        outcome.lost
    );
    assert!(
        outcome.written_twice.is_empty(),
        "{context}: {:?}",
        outcome.written_twice
    );
    eprintln!(
        "{context}: interrupted={}, runs={}, queued={}, duplicate messages={}, lost=0",
        outcome.interrupted,
        outcome.runs,
        queued.len(),
        outcome.duplicate_messages
    );
    outcome
}

/// What each named fault must leave behind, beyond the invariant.
async fn check_fault_specific(
    env: &TestEnv,
    schedule: &Schedule,
    interrupted: bool,
    queued: &[RetryMessage],
    context: &str,
) {
    if !interrupted {
        return;
    }
    let mut original = schedule.rows.clone();
    original.sort_by(|a, b| (a.country_id, &a.country).cmp(&(b.country_id, &b.country)));
    match &schedule.fault {
        // Nothing read yet, or nothing done with what was read.
        Fault::Crash("before_read" | "after_snapshot" | "after_read")
        | Fault::DownAt(Service::Snowflake, "before_read" | "after_snapshot") => {
            assert_eq!(env.snowflake_rows().await, original, "{context}");
            assert!(env.postgres_rows().await.is_empty(), "{context}");
            assert!(queued.is_empty(), "{context}");
        }
        // The rows the queue did not take stay in Snowflake.
        Fault::DownAt(Service::Sqs, "after_write") => {
            assert!(queued.is_empty(), "{context}: {queued:?}");
            let left = env.snowflake_rows().await;
            for row in &schedule.rows {
                if validate(row).is_err() {
                    assert!(left.contains(row), "{context}: {row:?} left Snowflake");
                }
            }
        }
        // Snowflake went down before the queued rows' delete: they are both
        // queued and still in Snowflake (the next run queues them again).
        Fault::DownAt(Service::Snowflake, "after_enqueue") => {
            let left = env.snowflake_rows().await;
            for message in queued {
                assert!(left.contains(&message.record), "{context}: {message:?}");
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_fault_schedules_lose_no_row() {
    let count = env_number("FAULT_SCHEDULES", named_faults().len() as u64) as usize;
    let seed = env_number("FAULT_SEED", 1);
    let parallel = env_number("FAULT_PARALLEL", 2).max(1) as usize;
    let started = Instant::now();
    eprintln!("fault schedules: {count} with seed {seed}, {parallel} at a time");

    let outcomes: Vec<(String, Outcome)> = futures::stream::iter(0..count)
        .map(|n| async move {
            let schedule = draw_schedule(n, seed);
            let kind = schedule.fault.kind();
            (kind, run_schedule(schedule, seed).await)
        })
        .buffer_unordered(parallel)
        .collect()
        .await;

    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    let mut fired_by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for (kind, outcome) in &outcomes {
        *by_kind.entry(kind.clone()).or_default() += 1;
        *fired_by_kind.entry(kind.clone()).or_default() += usize::from(outcome.interrupted);
    }
    let sum = |f: &dyn Fn(&Outcome) -> usize| outcomes.iter().map(|(_, o)| f(o)).sum::<usize>();
    let report = serde_json::json!({
        "seed": seed,
        "schedules": outcomes.len(),
        "faults_injected": sum(&|o| usize::from(o.interrupted)),
        "fault_kinds": by_kind,
        "fault_kinds_fired": fired_by_kind,
        "rows": sum(&|o| o.rows),
        "replicator_runs": sum(&|o| o.runs),
        "rows_lost": sum(&|o| o.lost.len()),
        "versions_written_twice": sum(&|o| o.written_twice.len()),
        "duplicate_queue_messages": sum(&|o| o.duplicate_messages),
        "seconds": started.elapsed().as_secs(),
    });
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if let Ok(path) = std::env::var("FAULT_REPORT") {
        std::fs::write(&path, format!("{report:#}\n"))
            .unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
    assert_eq!(outcomes.len(), count);
    assert_eq!(report["rows_lost"], 0);
    // Most schedules must really have hit their fault, or the suite proves
    // little: a fault that never fires is a broken schedule.
    let fired = report["faults_injected"].as_u64().unwrap_or(0) as usize;
    assert!(
        fired * 10 >= count * 6,
        "only {fired} of {count} faults fired"
    );
}
