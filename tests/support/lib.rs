//! Test kit: per-test resources on the real local services.
//!
//! The test command (`make test`) starts the local stack and exports its
//! environment; every test then makes its own Postgres database, its own
//! Snowflake database and its own SQS queues, so tests run in parallel without
//! seeing each other. Tests about TLS and outages start a private Postgres
//! cluster ([`PgCluster`]) that they can configure and stop.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub mod fault;
pub mod orders;
pub mod proxy;
pub mod runtime;
pub mod schedules;
pub mod secret_role;
pub mod snowflake_fake;
pub mod template;

use countries_ops::local_stack::{queues, snowflake};
use countries_ops::snowflake_admin::SnowflakeAdmin;
use countries_shared::config::{Env, ReplicatorConfig};
use countries_shared::model::message::RetryMessage;
use countries_shared::model::row::{validate, SourceRow};
use countries_snowflake::SnowflakeSource;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name no other test (or earlier run against the same stack) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A variable of the running local stack.
pub fn stack_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the integration tests need the local stack. \
             Run `make test`, or `infra/local/stack.sh up && source .local/stack/stack.env` first."
        )
    })
}

pub fn stack_vars() -> HashMap<String, String> {
    let names = [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "SNOWFLAKE_ENDPOINT_URL",
        "AWS_ENDPOINT_URL",
    ];
    let mut vars: HashMap<String, String> = names
        .iter()
        .map(|n| (n.to_string(), stack_var(n)))
        .collect();
    for (k, v) in [
        ("PGSSLMODE", "disable"),
        ("SNOWFLAKE_ACCOUNT", "fakesnow"),
        ("SNOWFLAKE_USER", "replicator"),
        ("SNOWFLAKE_PASSWORD", "local"),
        ("SNOWFLAKE_SCHEMA", "PUBLIC"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("LOG_FORMAT", "text"),
    ] {
        vars.insert(k.to_string(), v.to_string());
    }
    vars
}

/// Connects without TLS (the shared stack and the private clusters use none)
/// and drives the connection in the background.
async fn pg_connect_to(conn: &str, what: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {what}: {e}"));
    tokio::spawn(connection);
    client
}

/// The stack's admin user, connected to `dbname`.
pub async fn pg_admin_db(host: &str, port: &str, dbname: &str) -> tokio_postgres::Client {
    let conn = format!(
        "host={host} port={port} user={} password={} dbname={dbname}",
        std::env::var("COUNTRIES_PG_ADMIN_USER").unwrap_or_else(|_| "postgres".into()),
        std::env::var("COUNTRIES_PG_ADMIN_PASSWORD").unwrap_or_else(|_| "postgres".into()),
    );
    pg_connect_to(&conn, &format!("{dbname} on {host}:{port} as admin")).await
}

pub async fn pg_admin(host: &str, port: &str) -> tokio_postgres::Client {
    pg_admin_db(host, port, "postgres").await
}

pub async fn pg_connect(vars: &HashMap<String, String>) -> tokio_postgres::Client {
    let conn = format!(
        "host={} port={} user={} password={} dbname={}",
        vars["PGHOST"], vars["PGPORT"], vars["PGUSER"], vars["PGPASSWORD"], vars["PGDATABASE"]
    );
    pg_connect_to(&conn, "the test database").await
}

/// Creates a database owned by the stack's application role and migrates
/// it as that role (`countries migrate`'s code: refinery and its version
/// table), as the local stack does.
pub async fn create_database(host: &str, port: &str, owner: &str, name: &str) {
    let admin = pg_admin(host, port).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name} OWNER {owner}"))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    let mut client = pg_admin_db(host, port, name).await;
    client
        .batch_execute(&format!("SET ROLE {owner}"))
        .await
        .unwrap_or_else(|e| panic!("SET ROLE {owner}: {e}"));
    countries_ops::migrate::migrate(&mut client)
        .await
        .unwrap_or_else(|e| panic!("migrating {name}: {e}"));
}

/// One test's slice of the local stack.
pub struct TestEnv {
    pub name: String,
    pub vars: HashMap<String, String>,
    pub sqs: aws_sdk_sqs::Client,
}

impl TestEnv {
    pub async fn new(prefix: &str) -> Self {
        Self::on_snowflake(prefix, None).await
    }

    /// A test's slice with Snowflake at `endpoint` (a private protocol
    /// fake) instead of the stack's.
    pub async fn on_snowflake(prefix: &str, endpoint: Option<&str>) -> Self {
        let name = unique(prefix).to_lowercase();
        let mut vars = stack_vars();
        if let Some(url) = endpoint {
            vars.insert("SNOWFLAKE_ENDPOINT_URL".into(), url.to_string());
        }
        create_database(&vars["PGHOST"], &vars["PGPORT"], &vars["PGUSER"], &name).await;
        vars.insert("PGDATABASE".into(), name.clone());
        vars.insert("SNOWFLAKE_DATABASE".into(), name.to_uppercase());

        let setup =
            SnowflakeAdmin::connect(&snowflake_config(&vars, false)).expect("Snowflake client");
        snowflake::set_up(
            &setup,
            &name.to_uppercase(),
            "PUBLIC",
            snowflake::SCHEMA_SQL,
        )
        .await
        .expect("the Snowflake database, schema and table");

        let sqs = sqs_client(&vars).await;
        // A short visibility timeout: a message the retrier lists comes back
        // within a second, so five receives take seconds.
        let (retry, dlq) = create_queues(&sqs, &name, 5, 1).await;
        vars.insert("RETRY_QUEUE_URL".into(), retry);
        vars.insert("DEAD_LETTER_QUEUE_URL".into(), dlq);
        // The retry queue's own 1 s timeout is the backoff in tests.
        vars.insert("RETRY_BACKOFF_BASE_SECONDS".into(), "0".into());
        vars.insert("RETRY_BACKOFF_MAX_SECONDS".into(), "0".into());
        // The stack verified this sender; each test mails its own recipient.
        vars.insert("REPORT_SENDER".into(), "replication@example.com".into());
        vars.insert("REPORT_RECIPIENTS".into(), format!("{name}@example.com"));
        Self { name, vars, sqs }
    }

    pub fn config(&self) -> ReplicatorConfig {
        ReplicatorConfig::from_vars(Env::from_map(self.vars.clone())).expect("test config")
    }

    pub fn config_with(&self, overrides: &[(&str, &str)]) -> ReplicatorConfig {
        let mut vars = self.vars.clone();
        for (k, v) in overrides {
            vars.insert(k.to_string(), v.to_string());
        }
        ReplicatorConfig::from_vars(Env::from_map(vars)).expect("test config")
    }

    pub fn source(&self) -> SnowflakeSource {
        SnowflakeSource::connect(&self.config().snowflake, "test").expect("Snowflake client")
    }

    /// A session for writing to the source table (the product never does).
    pub fn admin(&self) -> SnowflakeAdmin {
        SnowflakeAdmin::connect(&self.config().snowflake).expect("Snowflake client")
    }

    /// `rows` rows (ids 1..=rows, all `USA`) made by Snowflake's own
    /// generator: one statement whatever the count.
    pub async fn load_generated(&self, rows: usize) {
        self.admin()
            .execute(&format!(
                "INSERT INTO \"case\" (\"COUNTRY_ID\", \"COUNTRY\") \
                 SELECT SEQ4() + 1, 'USA' FROM TABLE(GENERATOR(ROWCOUNT => {rows}))"
            ))
            .await
            .expect("loading generated rows into Snowflake");
    }

    pub async fn load(&self, rows: &[SourceRow]) {
        self.admin()
            .insert_rows(rows)
            .await
            .expect("loading rows into Snowflake");
    }

    /// Every row left in Snowflake, sorted.
    pub async fn snowflake_rows(&self) -> Vec<SourceRow> {
        let mut rows = self
            .admin()
            .all_rows(10_000_000)
            .await
            .expect("reading Snowflake");
        rows.sort_by(|a, b| (a.country_id, &a.country).cmp(&(b.country_id, &b.country)));
        rows
    }

    pub async fn postgres(&self) -> tokio_postgres::Client {
        pg_connect(&self.vars).await
    }

    /// The Postgres table as (id, country), sorted by id.
    pub async fn postgres_rows(&self) -> Vec<(i32, String)> {
        self.postgres()
            .await
            .query("SELECT country_id, country FROM \"case\" ORDER BY 1", &[])
            .await
            .expect("reading Postgres")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// Stream mode: a FIFO changes queue and its FIFO dead-letter queue of
    /// this test's own, and the variables that name them (4 buckets).
    pub async fn add_changes_queue(&mut self, visibility_timeout: u32, max_receive_count: u32) {
        let (changes, dlq) =
            create_changes_queues(&self.sqs, &self.name, max_receive_count, visibility_timeout)
                .await;
        self.vars.insert("CHANGES_QUEUE_URL".into(), changes);
        self.vars
            .insert("CHANGES_DEAD_LETTER_QUEUE_URL".into(), dlq);
        self.vars.insert(
            "CHANGES_MAX_RECEIVE_COUNT".into(),
            max_receive_count.to_string(),
        );
        self.vars.insert("CHANGE_BUCKETS".into(), "4".into());
        // Blocks of two: the tests' few small ids still spread over the groups.
        self.vars.insert("CHANGE_BLOCK_IDS".into(), "2".into());
    }

    pub fn publisher_config(&self) -> countries_shared::config::PublisherConfig {
        countries_shared::config::PublisherConfig::from_vars(Env::from_map(self.vars.clone()))
            .expect("publisher config")
    }

    pub fn writer_config(&self) -> countries_shared::config::WriterConfig {
        countries_shared::config::WriterConfig::from_vars(Env::from_map(self.vars.clone()))
            .expect("writer config")
    }

    pub fn retrier_config(&self) -> countries_shared::config::RetrierConfig {
        countries_shared::config::RetrierConfig::from_vars(Env::from_map(self.vars.clone()))
            .expect("retrier config")
    }

    pub fn reporter_config(&self) -> countries_shared::config::ReporterConfig {
        countries_shared::config::ReporterConfig::from_vars(Env::from_map(self.vars.clone()))
            .expect("reporter config")
    }

    /// Messages waiting on a queue (visible or in flight).
    pub async fn depth(&self, queue_var: &str) -> usize {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.vars[queue_var])
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .unwrap_or_default();
        [
            A::ApproximateNumberOfMessages,
            A::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .filter_map(|a| attributes.get(a).and_then(|v| v.parse::<usize>().ok()))
        .sum()
    }

    /// Raw MIME of every email the local SES accepted for this test's recipient.
    pub async fn sent_emails(&self) -> Vec<String> {
        let url = format!("{}/moto-api/data.json", self.vars["AWS_ENDPOINT_URL"]);
        let data: serde_json::Value = reqwest::get(&url)
            .await
            .expect("moto data")
            .json()
            .await
            .expect("moto JSON");
        let recipient = &self.vars["REPORT_RECIPIENTS"];
        data["ses"]["RawMessage"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| {
                m["destinations"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|r| r.as_str() == Some(recipient)))
            })
            .filter_map(|m| m["raw_data"].as_str().map(str::to_string))
            .collect()
    }

    /// Receives (and deletes) every message on the retry queue.
    pub async fn drain_retry_queue(&self) -> Vec<RetryMessage> {
        drain(&self.sqs, &self.vars["RETRY_QUEUE_URL"])
            .await
            .iter()
            .map(|body| serde_json::from_str(body).expect("a retry message"))
            .collect()
    }
}

pub fn snowflake_config(
    vars: &HashMap<String, String>,
    with_database: bool,
) -> countries_shared::config::SnowflakeConfig {
    let mut vars = vars.clone();
    if !with_database {
        vars.insert("SNOWFLAKE_DATABASE".into(), "COUNTRIES".into());
    }
    // Only the Snowflake part is used; fill the rest so the config reads.
    for (k, v) in [
        ("PGHOST", "unused"),
        ("PGDATABASE", "unused"),
        ("PGUSER", "unused"),
        ("RETRY_QUEUE_URL", "http://unused"),
    ] {
        vars.entry(k.to_string()).or_insert_with(|| v.to_string());
    }
    ReplicatorConfig::from_vars(Env::from_map(vars))
        .expect("Snowflake config")
        .snowflake
}

pub async fn sqs_client(vars: &HashMap<String, String>) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::config::Builder::new()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .endpoint_url(&vars["AWS_ENDPOINT_URL"])
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// The retry queue and its dead-letter queue, as `template.yaml` declares
/// them (`countries local queues`' code), with the given redrive count and
/// visibility timeout.
pub async fn create_queues(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    max_receive_count: u32,
    visibility_timeout: u32,
) -> (String, String) {
    create_pair(
        sqs,
        name,
        queues::RETRY,
        max_receive_count,
        visibility_timeout,
    )
    .await
}

/// Stream mode's FIFO changes queue and its FIFO dead-letter queue, as
/// `template.yaml` declares them, with the given redrive count and
/// visibility timeout.
pub async fn create_changes_queues(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    max_receive_count: u32,
    visibility_timeout: u32,
) -> (String, String) {
    create_pair(
        sqs,
        name,
        queues::CHANGES,
        max_receive_count,
        visibility_timeout,
    )
    .await
}

async fn create_pair(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    pair: queues::QueuePair,
    max_receive_count: u32,
    visibility_timeout: u32,
) -> (String, String) {
    let (count, timeout) = (
        max_receive_count.to_string(),
        visibility_timeout.to_string(),
    );
    let parameters = [
        (pair.max_receive_count, count.as_str()),
        (pair.visibility_timeout, timeout.as_str()),
    ];
    queues::create_pair(sqs, name, pair, &parameters)
        .await
        .unwrap_or_else(|e| panic!("creating {name}'s queues: {e:#}"))
}

/// Receives and deletes every message on a queue; returns the bodies.
pub async fn drain(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(300)
            .send()
            .await
            .expect("receive");
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return bodies;
        }
        for m in messages {
            if let Some(handle) = m.receipt_handle() {
                sqs.delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .expect("delete");
            }
            bodies.push(m.body.unwrap_or_default());
        }
    }
}

/// A loopback port with nothing listening on it (an unreachable service).
pub fn closed_port() -> u16 {
    free_port()
}

/// The outcomes in the run ledger, oldest first.
pub async fn ledger_outcomes(env: &TestEnv) -> Vec<String> {
    env.postgres()
        .await
        .query(
            "SELECT outcome FROM replication_run ORDER BY started_at",
            &[],
        )
        .await
        .expect("reading the ledger")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A binary of this workspace, built by the same `cargo test` run.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/debug/deps/<test> → target/debug/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `make test`, or `cargo build --workspace --bins` before `cargo test`",
        path.display()
    );
    path
}

pub fn run_binary(
    name: &str,
    args: &[&str],
    vars: &HashMap<String, String>,
) -> std::process::Output {
    Command::new(workspace_binary(name))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars)
        .output()
        .expect("running a workspace binary")
}

/// A loopback port nothing listens on now: for a service that must be
/// unreachable, or one started there.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// Runs a Postgres server command, as the `postgres` user when we are root
/// (the server refuses to run as root).
fn pg_command(program: &str) -> Command {
    let path = format!("{PG_BIN}/{program}");
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &path]);
        c
    } else {
        Command::new(path)
    }
}

/// TLS material for a private cluster, made with the openssl command line.
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a CA and a certificate for `localhost` (and only that name) signed
/// by it. `prefix` keeps two CAs in one folder apart.
pub fn make_ca(dir: &Path, prefix: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={prefix} test CA"),
            "-keyout",
            &format!("{prefix}-ca.key"),
            "-out",
            &format!("{prefix}-ca.pem"),
        ],
    );
    dir.join(format!("{prefix}-ca.pem"))
}

pub fn make_server_cert(dir: &Path, ca_prefix: &str) -> TlsFiles {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").expect("san.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-days",
            "2",
            "-CA",
            &format!("{ca_prefix}-ca.pem"),
            "-CAkey",
            &format!("{ca_prefix}-ca.key"),
            "-CAcreateserial",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
    TlsFiles {
        ca_cert: dir.join(format!("{ca_prefix}-ca.pem")),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    }
}

/// A private Postgres 15 cluster on a free loopback port, stopped on drop.
pub struct PgCluster {
    pub dir: PathBuf,
    pub port: u16,
}

impl PgCluster {
    pub fn start(tls: Option<&TlsFiles>) -> Self {
        let dir = std::env::temp_dir().join(unique("countries-pg"));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let data = dir.join("data");
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, "postgres").expect("pwfile");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:", &dir.to_string_lossy()])
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let out = pg_command("initdb")
            .args([
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth-local=trust",
            ])
            .args(["--auth-host=scram-sha-256", "--no-instructions"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nfsync = off\n",
            dir.display()
        );
        if let Some(tls) = tls {
            for (src, name) in [
                (&tls.server_cert, "server.pem"),
                (&tls.server_key, "server.key"),
            ] {
                let dst = data.join(name);
                std::fs::copy(src, &dst).expect("copy TLS file");
                if is_root() {
                    Command::new("chown")
                        .args(["postgres:", &dst.to_string_lossy()])
                        .status()
                        .expect("chown");
                }
                Command::new("chmod")
                    .args(["600", &dst.to_string_lossy()])
                    .status()
                    .expect("chmod");
            }
            conf.push_str("ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n");
            // Only TLS connections over TCP.
            let hba = "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n";
            std::fs::write(data.join("pg_hba.conf"), hba).expect("pg_hba");
        }
        let conf_path = data.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path).expect("postgresql.conf");
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing).expect("postgresql.conf");
        let cluster = Self { dir, port };
        cluster.start_server();
        cluster
    }

    pub fn start_server(&self) {
        let out = pg_command("pg_ctl")
            .args([
                "-D",
                &self.dir.join("data").to_string_lossy(),
                "-w",
                "-t",
                "30",
            ])
            .args(["-l", &self.dir.join("log").to_string_lossy(), "start"])
            .output()
            .expect("pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server at once, as a crash or an outage would.
    pub fn stop_server(&self) {
        let _ = pg_command("pg_ctl")
            .args([
                "-D",
                &self.dir.join("data").to_string_lossy(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }

    /// Makes the application role and database, like the local stack does.
    pub async fn create_app_database(&self, name: &str) {
        let admin = pg_admin_tls_agnostic(self.port).await;
        admin
            .batch_execute("CREATE ROLE countries LOGIN CREATEROLE PASSWORD 'countries'")
            .await
            .ok();
        drop(admin);
        create_database("127.0.0.1", &self.port.to_string(), "countries", name).await;
    }
}

async fn pg_admin_tls_agnostic(port: u16) -> tokio_postgres::Client {
    pg_admin("127.0.0.1", &port.to_string()).await
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop_server();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until `check` holds, for at most `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Rows of `original` that are nowhere: not in Snowflake, not queued, not
/// written to Postgres. Written means, where the schedules record every
/// commit (`case_changes`, [`schedules::record_changes`]), that Postgres
/// committed the row's own validated version; elsewhere, that Postgres holds
/// its id with the row's version or another version that was also read.
pub async fn lost_rows(
    env: &TestEnv,
    original: &[SourceRow],
    queued: &[RetryMessage],
) -> Vec<String> {
    let in_snowflake = env.snowflake_rows().await;
    let in_postgres: HashMap<i32, String> = env.postgres_rows().await.into_iter().collect();
    let pg = env.postgres().await;
    let logged: bool = pg
        .query_one("SELECT to_regclass('case_changes') IS NOT NULL", &[])
        .await
        .expect("asking for the change log")
        .get(0);
    let mut committed: Option<std::collections::HashSet<(i32, String)>> = None;
    if logged {
        let rows = pg
            .query("SELECT country_id, country FROM case_changes", &[])
            .await
            .expect("reading the change log");
        committed = Some(rows.iter().map(|r| (r.get(0), r.get(1))).collect());
    }
    let mut lost = Vec::new();
    for row in original {
        if in_snowflake.contains(row) || queued.iter().any(|m| &m.record == row) {
            continue;
        }
        let safe = validate(row).is_ok_and(|valid| match &committed {
            Some(log) => log.contains(&(valid.country_id, valid.country.clone())),
            None => in_postgres.get(&valid.country_id).is_some_and(|current| {
                original
                    .iter()
                    .filter_map(|r| validate(r).ok())
                    .any(|v| v.country_id == valid.country_id && &v.country == current)
            }),
        });
        if !safe {
            lost.push(format!("{row:?}"));
        }
    }
    lost
}

/// A small seeded generator (SplitMix64): the same seed gives the same
/// schedules and datasets on every machine and every version, which a
/// failure report's seed relies on.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}
