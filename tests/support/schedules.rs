//! What the fault-schedule tests (batch mode's and stream mode's) share: the
//! seeded datasets, and the Postgres set-up that records every change so
//! that a version written twice shows.

use std::collections::HashMap;

use countries_shared::model::row::SourceRow;

use crate::{SplitMix, TestEnv};

pub const VALID: &[&str] = &["USA", "FRA", "DEU", "NZL", "bra", " MEX ", "Jpn"];
pub const MALFORMED: &[&str] = &[
    "", "US", "USAA", "U2A", "a b", "ÄÖÜ", "O'B", "A\\B", "U\tA", "\u{1}AB", "   ",
];
/// Postgres refuses this country (a CHECK constraint [`record_changes`] adds).
pub const REFUSED: &str = "ATL";

/// A dataset of `count` rows: valid rows, malformed rows, rows Postgres
/// refuses, NULLs and an id out of range, identical copies and other
/// versions of earlier ids. Ids start at -1, 0 or 1 (zero and negative ids
/// are valid).
pub fn draw_rows(rng: &mut SplitMix, count: usize) -> Vec<SourceRow> {
    let mut rows: Vec<SourceRow> = Vec::with_capacity(count);
    let first_id = rng.below(3) as i128 - 1;
    for next_id in (first_id..).take(count) {
        let row = match rng.below(10) {
            0 => SourceRow::new(Some(next_id), Some(MALFORMED[rng.below(MALFORMED.len())])),
            1 => match rng.below(3) {
                0 => SourceRow::new(None, Some("IND")),
                1 => SourceRow::new(Some(next_id), None),
                _ => SourceRow::new(Some(i128::from(i32::MAX) + 1), Some("USA")),
            },
            2 => SourceRow::new(Some(next_id), Some(REFUSED)),
            3 if !rows.is_empty() => {
                // Another version, or an identical copy, of an earlier row.
                let earlier = rows[rng.below(rows.len())].clone();
                if rng.below(2) == 0 {
                    earlier
                } else {
                    SourceRow::new(earlier.country_id, Some(VALID[rng.below(VALID.len())]))
                }
            }
            _ => SourceRow::new(Some(next_id), Some(VALID[rng.below(VALID.len())])),
        };
        rows.push(row);
    }
    rows
}

/// Makes Postgres refuse [`REFUSED`], and record every change it commits to
/// `"case"`, in order, in `case_changes` (an upsert that changes nothing
/// records nothing).
pub async fn record_changes(env: &TestEnv) {
    env.postgres()
        .await
        .batch_execute(&format!(
            r#"
            ALTER TABLE "case" ADD CONSTRAINT no_atlantis CHECK (country <> '{REFUSED}');
            -- Every change Postgres commits to "case", in order: a version
            -- that appears twice for one id was written twice.
            CREATE TABLE case_changes (seq bigserial PRIMARY KEY, country_id int, country text);
            CREATE FUNCTION record_case_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO case_changes (country_id, country) VALUES (NEW.country_id, NEW.country);
                RETURN NEW;
            END $$;
            CREATE TRIGGER record_case_change AFTER INSERT OR UPDATE ON "case"
                FOR EACH ROW EXECUTE FUNCTION record_case_change();
            "#
        ))
        .await
        .expect("schedule set-up in Postgres");
}

/// Versions Postgres committed more than once for an id: written twice, or
/// written again after a later version (out of order).
pub async fn versions_written_twice(env: &TestEnv) -> Vec<String> {
    let changes = env
        .postgres()
        .await
        .query(
            "SELECT country_id, country FROM case_changes ORDER BY seq",
            &[],
        )
        .await
        .expect("reading case_changes");
    let mut seen: HashMap<(i32, String), usize> = HashMap::new();
    for row in changes {
        *seen.entry((row.get(0), row.get(1))).or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((id, c), n)| format!("({id}, {c}) written {n} times"))
        .collect()
}

/// A whole number from the environment (the schedules' settings), or
/// `default`; anything else stops the test with the variable's name.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("{name} must be a whole number, got {v:?}"))
        })
        .unwrap_or(default)
}

/// A service the fault schedules take down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Service {
    Postgres,
    Snowflake,
    Sqs,
}

/// Every service behind a proxy a schedule can take down, and the
/// variables that send a process through them.
pub struct ServiceProxies {
    pub proxies: std::collections::BTreeMap<Service, crate::proxy::FaultProxy>,
    pub vars: HashMap<String, String>,
}

impl ServiceProxies {
    pub fn start(vars: &HashMap<String, String>) -> Self {
        use crate::proxy::FaultProxy;
        let proxies: std::collections::BTreeMap<Service, FaultProxy> = [
            (
                Service::Postgres,
                FaultProxy::start(port_of(&vars["PGPORT"])),
            ),
            (
                Service::Snowflake,
                FaultProxy::start(port_of(&vars["SNOWFLAKE_ENDPOINT_URL"])),
            ),
            (
                Service::Sqs,
                FaultProxy::start(port_of(&vars["AWS_ENDPOINT_URL"])),
            ),
        ]
        .into_iter()
        .collect();
        let mut vars = vars.clone();
        vars.insert(
            "PGPORT".into(),
            proxies[&Service::Postgres].port().to_string(),
        );
        vars.insert(
            "SNOWFLAKE_ENDPOINT_URL".into(),
            format!("http://127.0.0.1:{}", proxies[&Service::Snowflake].port()),
        );
        vars.insert(
            "AWS_ENDPOINT_URL".into(),
            format!("http://127.0.0.1:{}", proxies[&Service::Sqs].port()),
        );
        // Give up on a dead Postgres quickly; the run's own retries still apply.
        vars.insert("PGCONNECT_TIMEOUT".into(), "2".into());
        Self { proxies, vars }
    }
}

pub fn port_of(url_or_port: &str) -> u16 {
    url_or_port
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {url_or_port:?}"))
}

/// Starts a program with exactly `vars` as its environment, its output piped.
pub fn spawn(
    program: &std::path::Path,
    args: &[&str],
    vars: &HashMap<String, String>,
) -> std::process::Child {
    std::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(vars)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()))
}

pub async fn wait_output(child: std::process::Child) -> std::process::Output {
    tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("waiting task")
        .expect("waiting for the process")
}

/// Kills the process `after` its start unless it ended before; returns
/// whether it was killed.
pub async fn kill_after(mut child: std::process::Child, after: std::time::Duration) -> bool {
    let started = std::time::Instant::now();
    loop {
        if child.try_wait().ok().flatten().is_some() {
            let _ = wait_output(child).await;
            return false;
        }
        if started.elapsed() >= after {
            let _ = child.kill();
            let _ = wait_output(child).await;
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Runs the process with `COUNTRIES_PAUSE_AT=point`; when it pauses there,
/// takes `service` down and lets it go on. Returns whether it paused.
pub async fn down_at(
    program: &std::path::Path,
    vars: &HashMap<String, String>,
    proxies: &ServiceProxies,
    service: Service,
    point: &str,
    pause_file: &std::path::Path,
) -> bool {
    pause_at(program, vars, point, pause_file, async || {
        proxies.proxies[&service].take_down();
    })
    .await
}

/// Runs `program` until it reaches `point`, does `on_pause` there, and lets
/// it go on; returns whether it got there.
pub async fn pause_at(
    program: &std::path::Path,
    vars: &HashMap<String, String>,
    point: &str,
    pause_file: &std::path::Path,
    on_pause: impl AsyncFnOnce(),
) -> bool {
    let mut vars = vars.clone();
    vars.insert("COUNTRIES_PAUSE_AT".into(), point.to_string());
    vars.insert(
        "COUNTRIES_PAUSE_FILE".into(),
        pause_file.display().to_string(),
    );
    let mut child = spawn(program, &[], &vars);
    let mut paused = false;
    while child.try_wait().ok().flatten().is_none() {
        if pause_file.exists() {
            on_pause().await;
            let _ = std::fs::remove_file(pause_file);
            paused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let out = wait_output(child).await;
    assert!(
        paused || !String::from_utf8_lossy(&out.stderr).contains("paused at"),
        "the pause at {point} was missed"
    );
    paused
}

/// A way real Snowflake answers that the emulator never does, switched on
/// in the stack's protocol fake for one test database, for the statements
/// after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The next statement outlives Snowflake's hold: polled twice.
    LongStatement,
    /// The session token expires: renewed, the snapshot kept.
    SessionExpired,
    /// The master token is gone: a new session, the snapshot lost.
    SessionLost,
    /// The next statement's request hangs until the invocation's deadline.
    HungRequest,
    /// The next page arrives in chunks, and a chunk fails six times.
    FailedChunk,
}

impl Protocol {
    pub const ALL: [Protocol; 5] = [
        Protocol::LongStatement,
        Protocol::SessionExpired,
        Protocol::SessionLost,
        Protocol::HungRequest,
        Protocol::FailedChunk,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::LongStatement => "long statement",
            Protocol::SessionExpired => "session expired",
            Protocol::SessionLost => "session lost",
            Protocol::HungRequest => "hung request",
            Protocol::FailedChunk => "failed chunk",
        }
    }

    /// The fake's rules for this fault, scoped to `database`.
    pub fn rules(self, database: &str) -> serde_json::Value {
        use serde_json::json;
        match self {
            Protocol::LongStatement => json!([
                {"route": "query", "action": "async", "polls": 2, "database": database},
            ]),
            Protocol::SessionExpired => json!([
                {"route": "query", "action": "session_expired", "database": database},
            ]),
            Protocol::SessionLost => json!([
                {"route": "query", "action": "master_expired", "code": "390114", "database": database},
            ]),
            Protocol::HungRequest => json!([
                {"route": "query", "action": "hang", "seconds": 60, "database": database},
            ]),
            Protocol::FailedChunk => json!([
                {"route": "query", "sql_contains": "\"_RN\" FROM", "action": "chunks",
                 "chunk_rows": 2, "inline_rows": 1, "database": database},
                {"route": "chunk", "action": "status", "status": 403, "times": 6, "database": database},
            ]),
        }
    }

    /// The deadline the invocation gets (a hung request ends there).
    pub fn deadline(self) -> Option<std::time::Duration> {
        (self == Protocol::HungRequest).then(|| std::time::Duration::from_secs(6))
    }
}

/// Runs `program` with `fault` switched on in the stack's fake once the run
/// reaches `point`; returns whether the fake applied it. The rules are
/// removed afterwards, whether or not they were used.
pub async fn protocol_fault_at(
    program: &std::path::Path,
    vars: &HashMap<String, String>,
    fake_url: &str,
    fault: Protocol,
    point: &str,
    pause_file: &std::path::Path,
) -> bool {
    let fake = crate::snowflake_fake::FakeControl::at(fake_url);
    let database = vars["SNOWFLAKE_DATABASE"].clone();
    let mut vars = vars.clone();
    if let Some(left) = fault.deadline() {
        vars.insert("COUNTRIES_DEADLINE_MS".into(), left.as_millis().to_string());
        vars.insert("DEADLINE_MARGIN_SECONDS".into(), "2".into());
    }
    let reached = pause_at(program, &vars, point, pause_file, async || {
        fake.faults(fault.rules(&database)).await;
    })
    .await;
    fake.clear_faults_of(&database).await;
    reached
        && fake
            .log_of(Some(&database))
            .await
            .iter()
            .any(|r| !r["fault"].is_null())
}
