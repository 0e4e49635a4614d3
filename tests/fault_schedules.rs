//! Seeded random fault schedules against the real processes and services.
//!
//! Each schedule draws two datasets (valid rows, malformed rows, rows
//! Postgres refuses, identical copies and conflicting versions of a key):
//! one for `case`, one for the ten-column mapped table `orders`
//! ([`testkit::orders`]). It loads both into the Snowflake emulator and runs
//! the real replicator process, both tables at once (`TABLES_FILE`), with
//! one fault; the step faults hit `case`'s run or the table's, by turns:
//! - a crash (abort) at a named step boundary, or a SIGKILL at a random moment;
//! - Postgres, the Snowflake emulator or SQS going down when the run reaches a
//!   named point, or in the middle of a conversation (after a random number
//!   of bytes);
//! - Snowflake's protocol, through the stack's protocol fake, after a named
//!   point: a long statement, an expired or a lost session, a request that
//!   hangs until the deadline, a chunk that keeps failing.
//!
//! Then it checks the invariant for both tables, heals (runs again with every
//! service up until Snowflake is empty) and checks it again: every row read
//! is in Postgres, in the retry queue or still in Snowflake, and no version
//! was written twice.
//!
//! The first schedules of every run walk the named faults in order, so even the
//! quick setting covers each of them, each in one of the two tables' runs; the
//! next walk puts each in the other table's run (`FAULT_SCHEDULES=90`, and
//! `make soak`); the rest are random.
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
use countries_shared::model::mapped_message::{parse_any_retry_message, AnyRetryMessage};
use countries_shared::model::message::RetryMessage;
use countries_shared::model::row::validate;
use countries_shared::model::row::SourceRow;
use countries_shared::ports::Step;
use futures::StreamExt;
use testkit::orders::{
    create_orders, draw_orders, load_orders, lost_orders, orders_written_twice, postgres_orders,
    snowflake_orders, tables_file, Order,
};
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
    orders: Vec<Order>,
    batch_size: usize,
    page_rows: usize,
    fault: Fault,
    /// The step faults hit the mapped table's run, not `case`'s.
    fault_in_table: bool,
}

fn draw_schedule(number: usize, seed: u64) -> Schedule {
    let mut rng = SplitMix::new(seed ^ (number as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let named = named_faults();
    // The named faults in turn, in `case`'s run and the table's by turns;
    // the second walk swaps them, so that two walks hit each fault in both.
    let walk = number / named.len();
    let (fault, fault_in_table) = if walk < 2 {
        (
            named[number % named.len()].clone(),
            (number % named.len() + walk) % 2 == 1,
        )
    } else {
        (random_fault(&mut rng), rng.below(2) == 1)
    };
    let count = 3 + rng.below(38);
    let rows = draw_rows(&mut rng, count);
    let order_count = 3 + rng.below(30);
    let orders = draw_orders(&mut rng, order_count);
    Schedule {
        number,
        rows,
        orders,
        batch_size: 1 + rng.below(8),
        page_rows: 1 + rng.below(6),
        fault,
        fault_in_table,
    }
}

/// What one schedule found.
#[derive(Debug, Default)]
struct Outcome {
    /// Rows drawn, both tables.
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
    if schedule.fault_in_table {
        vars.insert("COUNTRIES_FAULT_IN".into(), "tables".into());
    }
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

/// The retry queue's messages, drained: `case`'s and the `orders` rows.
async fn drain_queue(env: &TestEnv, context: &str) -> (Vec<RetryMessage>, Vec<Order>) {
    let (mut case, mut orders) = (Vec::new(), Vec::new());
    for body in testkit::drain(&env.sqs, &env.vars["RETRY_QUEUE_URL"]).await {
        match parse_any_retry_message(Some(&body)) {
            Ok(AnyRetryMessage::Case(message)) => case.push(message),
            Ok(AnyRetryMessage::Mapped(message)) => orders.push(
                Order::from_message(&message)
                    .unwrap_or_else(|| panic!("{context}: not an orders row: {message:?}")),
            ),
            Err(e) => panic!("{context}: a malformed message on the queue ({e}): {body}"),
        }
    }
    (case, orders)
}

/// Both tables' rows that are nowhere.
async fn lost(
    env: &TestEnv,
    schedule: &Schedule,
    queued: &[RetryMessage],
    queued_orders: &[Order],
) -> Vec<String> {
    let mut lost = testkit::lost_rows(env, &schedule.rows, queued).await;
    lost.extend(lost_orders(env, &schedule.orders, queued_orders).await);
    lost
}

/// Every run of a healing invocation succeeded, `case`'s and the table's
/// (or found its table empty: the other may still hold rows).
fn check_healing_run(stdout: &[u8], stderr: &[u8], context: &str) {
    let printed: serde_json::Value = serde_json::from_slice(stdout).unwrap_or_else(|e| {
        panic!(
            "{context}: healing run printed no summary ({e}): {}",
            String::from_utf8_lossy(stderr)
        )
    });
    let case: RunSummary = serde_json::from_value(printed.clone())
        .unwrap_or_else(|e| panic!("{context}: not a run summary ({e}): {printed}"));
    let tables: Vec<RunSummary> = serde_json::from_value(printed["tables"].clone())
        .unwrap_or_else(|e| panic!("{context}: no table summaries ({e}): {printed}"));
    assert_eq!(tables.len(), 1, "{context}: {printed}");
    for summary in std::iter::once(&case).chain(&tables) {
        assert!(
            matches!(summary.outcome, RunOutcome::Succeeded | RunOutcome::Idle),
            "{context}: healing run: {summary:?}"
        );
    }
}

async fn run_schedule(schedule: Schedule, seed: u64) -> Outcome {
    let mut env = TestEnv::new(&format!("sched{}", schedule.number)).await;
    record_changes(&env).await;
    create_orders(&env).await;
    env.load(&schedule.rows).await;
    load_orders(&env, &schedule.orders).await;
    let file = tables_file(&env);
    env.vars
        .insert("TABLES_FILE".into(), file.display().to_string());
    let pause_file = std::env::temp_dir().join(format!("{}.pause", env.name));
    let context = format!(
        "seed {seed}, schedule {} ({} in {}; {} + {} rows, batch {}, page {})",
        schedule.number,
        schedule.fault.kind(),
        if schedule.fault_in_table {
            "orders"
        } else {
            "case"
        },
        schedule.rows.len(),
        schedule.orders.len(),
        schedule.batch_size,
        schedule.page_rows
    );

    let mut outcome = Outcome {
        rows: schedule.rows.len() + schedule.orders.len(),
        runs: 1,
        ..Outcome::default()
    };
    outcome.interrupted = run_with_fault(&env, &schedule, &pause_file).await;
    let (mut queued, mut queued_orders) = drain_queue(&env, &context).await;
    outcome.lost = lost(&env, &schedule, &queued, &queued_orders).await;
    assert!(
        outcome.lost.is_empty(),
        "{context}: lost after the fault: {:?}",
        outcome.lost
    );
    if schedule.fault_in_table {
        check_table_fault(
            &env,
            &schedule,
            outcome.interrupted,
            &queued_orders,
            &context,
        )
        .await;
    } else {
        check_fault_specific(&env, &schedule, outcome.interrupted, &queued, &context).await;
    }

    // Heal: run with every service up until Snowflake is empty. Each run
    // writes one version of a key, so a few runs may be needed.
    let mut left = env.snowflake_rows().await.len() + snowflake_orders(&env).await.len();
    let max_runs = 2 + schedule.rows.len().max(schedule.orders.len());
    while left > 0 {
        assert!(
            outcome.runs <= max_runs,
            "{context}: still {left} rows in Snowflake after {} runs",
            outcome.runs
        );
        let out = wait_output(spawn_replicator(&env.vars)).await;
        outcome.runs += 1;
        check_healing_run(&out.stdout, &out.stderr, &context);
        let (case, orders) = drain_queue(&env, &context).await;
        queued.extend(case);
        queued_orders.extend(orders);
        left = env.snowflake_rows().await.len() + snowflake_orders(&env).await.len();
    }

    outcome.lost = lost(&env, &schedule, &queued, &queued_orders).await;
    outcome.written_twice = versions_written_twice(&env).await;
    outcome
        .written_twice
        .extend(orders_written_twice(&env).await);
    for order in &queued_orders {
        assert!(
            schedule.orders.contains(order),
            "{context}: queued an orders row that was never read: {order:?}"
        );
    }
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
        "{context}: interrupted={}, runs={}, queued={}+{}, duplicate messages={}, lost=0",
        outcome.interrupted,
        outcome.runs,
        queued.len(),
        queued_orders.len(),
        outcome.duplicate_messages
    );
    outcome
}

/// What each named fault in the table's run must leave behind of the
/// table, beyond the invariant (`case`'s run went on, or died with the
/// process, wherever it was).
async fn check_table_fault(
    env: &TestEnv,
    schedule: &Schedule,
    interrupted: bool,
    queued: &[Order],
    context: &str,
) {
    if !interrupted {
        return;
    }
    let mut original = schedule.orders.clone();
    original.sort();
    match &schedule.fault {
        Fault::Crash("before_read" | "after_snapshot" | "after_read")
        | Fault::DownAt(Service::Snowflake, "before_read" | "after_snapshot") => {
            assert_eq!(snowflake_orders(env).await, original, "{context}");
            assert!(postgres_orders(env).await.is_empty(), "{context}");
            assert!(queued.is_empty(), "{context}: {queued:?}");
        }
        Fault::DownAt(Service::Sqs, "after_write") => {
            assert!(queued.is_empty(), "{context}: {queued:?}");
            let left = snowflake_orders(env).await;
            for row in schedule.orders.iter().filter(|r| !r.valid()) {
                assert!(left.contains(row), "{context}: {row:?} left Snowflake");
            }
        }
        Fault::DownAt(Service::Snowflake, "after_enqueue") => {
            let left = snowflake_orders(env).await;
            for row in queued {
                assert!(left.contains(row), "{context}: {row:?}");
            }
        }
        _ => {}
    }
}

/// What each named fault in `case`'s run must leave behind, beyond the
/// invariant.
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
