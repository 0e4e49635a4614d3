//! The Postgres sink and run guard against a real PostgreSQL 15: the
//! upsert, its replay, error classification, the run lock, the ledger and
//! TLS.

use countries_postgres::connect::connect;
use countries_postgres::run_guard::PostgresRunGuard;
use countries_postgres::sink::pool::PostgresStore;
use countries_shared::config::{Env, PostgresConfig, ReplicatorConfig, TlsMode};
use countries_shared::failure::ErrorKind;
use countries_shared::ledger::RunOutcome;
use countries_shared::ledger::RunSummary;
use countries_shared::model::row::validate;
use countries_shared::model::row::CountryRow;
use countries_shared::model::row::SourceRow;
use countries_shared::ports::RunGuard;
use countries_shared::sink::isolate::AllOrNothing;
use testkit::{make_ca, make_server_cert, unique, PgCluster, TestEnv};
use uuid::Uuid;

fn rows(spec: &[(i128, &str)]) -> Vec<CountryRow> {
    spec.iter()
        .map(|(id, c)| validate(&SourceRow::new(Some(*id), Some(c))).expect("valid row"))
        .collect()
}

/// A chunk as the sinks take it: borrowed rows.
fn refs(rows: &[CountryRow]) -> Vec<&CountryRow> {
    rows.iter().collect()
}

fn summary() -> RunSummary {
    RunSummary::new(Uuid::new_v4(), Some("test".into()))
}

#[tokio::test]
async fn the_upsert_is_idempotent_and_counts_only_real_changes() {
    let env = TestEnv::new("pg_upsert").await;
    let store = PostgresStore::new(env.config().postgres);
    let mut run = store.pg_sink().await.unwrap();

    let first = rows(&[(1, "USA"), (2, "FRA"), (3, "DEU")]);
    assert_eq!(run.write_all(&refs(&first)).await.unwrap(), 3);
    assert_eq!(
        run.write_all(&refs(&first)).await.unwrap(),
        0,
        "a replay changes nothing"
    );
    assert_eq!(
        run.write_all(&refs(&rows(&[(2, "ITA"), (3, "DEU")])))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        env.postgres_rows().await,
        vec![(1, "USA".into()), (2, "ITA".into()), (3, "DEU".into())]
    );
}

#[tokio::test]
async fn a_refused_row_is_row_level_and_names_the_constraint() {
    let env = TestEnv::new("pg_check").await;
    env.postgres()
        .await
        .batch_execute(r#"ALTER TABLE "case" ADD CONSTRAINT no_atlantis CHECK (country <> 'ATL')"#)
        .await
        .unwrap();
    let store = PostgresStore::new(env.config().postgres);
    let mut run = store.pg_sink().await.unwrap();
    let err = run
        .write_all(&refs(&rows(&[(1, "USA"), (2, "ATL")])))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::RowLevel, "{err}");
    assert_eq!(err.sqlstate.as_deref(), Some("23514"));
    assert!(err.message.contains("no_atlantis"), "{err}");
    assert!(
        env.postgres_rows().await.is_empty(),
        "the statement wrote nothing"
    );
}

#[tokio::test]
async fn a_missing_table_is_systemic() {
    let env = TestEnv::new("pg_missing").await;
    let store = PostgresStore::new(env.config_with(&[("POSTGRES_TABLE", "nope")]).postgres);
    let err = match store.pg_sink().await {
        Err(e) => e,
        Ok(_) => panic!("a sink opened on a missing table"),
    };
    assert_eq!(err.kind, ErrorKind::Fatal, "{err}");
    assert_eq!(err.sqlstate.as_deref(), Some("42P01"));
    assert!(err.message.contains("nope"), "{err}");
}

#[tokio::test]
async fn only_one_run_holds_the_lock_and_it_is_released_with_the_run() {
    let env = TestEnv::new("pg_lock").await;
    let store = PostgresRunGuard::new(env.config().postgres);
    let first = store.open_run(&summary()).await.unwrap();
    assert!(first.is_some());
    assert!(
        store.open_run(&summary()).await.unwrap().is_none(),
        "second run must wait"
    );
    drop(first);
    let mut third = None;
    for _ in 0..50 {
        // The server sees the closed connection shortly after the drop.
        third = store.open_run(&summary()).await.unwrap();
        if third.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(third.is_some(), "the lock was not released");
}

/// A run whose lock connection was lost, and whose lock another run took
/// meanwhile, learns it before its next page: `confirm` fails, and the
/// replicator stops writing.
#[tokio::test]
async fn a_run_that_lost_its_lock_to_another_learns_it_before_writing_on() {
    let env = TestEnv::new("pg_lost_lock").await;
    let guard = PostgresRunGuard::new(env.config().postgres);
    let mut first = guard.open_run(&summary()).await.unwrap().expect("lock");
    first
        .confirm()
        .await
        .expect("held while its connection lives");
    let admin = env.postgres().await;
    admin
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks \
             WHERE locktype = 'advisory' AND pid <> pg_backend_pid()",
        )
        .await
        .unwrap();
    let mut second = None;
    for _ in 0..50 {
        second = guard.open_run(&summary()).await.unwrap();
        if second.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        second.is_some(),
        "the lock went with the terminated connection"
    );
    let mut lost = false;
    for _ in 0..50 {
        // The client sees its connection closed shortly after the server ends it.
        if let Err(e) = first.confirm().await {
            assert!(e.message.contains("another run holds it"), "{e}");
            lost = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(lost, "the first run still believes it holds the lock");
}

#[tokio::test]
async fn the_ledger_records_the_start_and_the_end_of_a_run() {
    let env = TestEnv::new("pg_ledger").await;
    let store = PostgresRunGuard::new(env.config().postgres);
    let mut s = summary();
    let mut run = store.open_run(&s).await.unwrap().expect("lock");
    let client = env.postgres().await;
    let outcome = |row: tokio_postgres::Row| row.get::<_, String>(0);
    let started = client
        .query_one(
            "SELECT outcome FROM replication_run WHERE run_id = $1",
            &[&s.run_id],
        )
        .await
        .unwrap();
    assert_eq!(outcome(started), "running");
    s.outcome = RunOutcome::Succeeded;
    s.rows_read = 7;
    s.rows_written = 7;
    s.finished_at = Some(chrono::Utc::now());
    run.finish(&s).await.unwrap();
    let row = client
        .query_one(
            "SELECT outcome, rows_read, rows_written, finished_at IS NOT NULL FROM replication_run WHERE run_id = $1",
            &[&s.run_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "succeeded");
    assert_eq!(row.get::<_, i64>(1), 7);
    assert_eq!(row.get::<_, i64>(2), 7);
    assert!(row.get::<_, bool>(3));
}

#[tokio::test]
async fn an_unreachable_database_is_transient_and_named() {
    let env = TestEnv::new("pg_unreachable").await;
    let port = testkit::closed_port();
    let config = env.config_with(&[("PGPORT", &port.to_string()), ("PGCONNECT_TIMEOUT", "2")]);
    let err = connect(&config.postgres)
        .await
        .err()
        .expect("no server there");
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(err.message.contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[tokio::test]
async fn a_wrong_password_is_systemic_and_never_shown() {
    let env = TestEnv::new("pg_password").await;
    let config = env.config_with(&[("PGPASSWORD", "not-the-password-xyzzy")]);
    let err = connect(&config.postgres).await.err().expect("refused");
    assert_eq!(err.kind, ErrorKind::Fatal, "{err}");
    assert_eq!(err.sqlstate.as_deref(), Some("28P01"));
    assert!(!err.to_string().contains("xyzzy"), "{err}");
}

fn tls_config(port: u16, host: &str, mode: &str, ca: &std::path::Path) -> PostgresConfig {
    let vars = [
        ("PGHOST", host.to_string()),
        ("PGPORT", port.to_string()),
        ("PGDATABASE", "postgres".to_string()),
        ("PGUSER", "postgres".to_string()),
        ("PGPASSWORD", "postgres".to_string()),
        ("PGSSLMODE", mode.to_string()),
        ("PGSSLROOTCERT", ca.display().to_string()),
        ("PGCONNECT_TIMEOUT", "5".to_string()),
        ("SNOWFLAKE_ACCOUNT", "x".to_string()),
        ("SNOWFLAKE_USER", "x".to_string()),
        ("SNOWFLAKE_PASSWORD", "x".to_string()),
        ("SNOWFLAKE_DATABASE", "x".to_string()),
        ("SNOWFLAKE_SCHEMA", "x".to_string()),
        ("RETRY_QUEUE_URL", "http://x".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    ReplicatorConfig::from_vars(Env::from_map(vars))
        .expect("TLS config")
        .postgres
}

#[tokio::test]
async fn tls_verify_full_accepts_the_right_ca_and_host_and_refuses_the_rest() {
    let dir = std::env::temp_dir().join(unique("countries-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    make_ca(&dir, "right");
    let wrong_ca = make_ca(&dir, "wrong");
    let tls = make_server_cert(&dir, "right");
    let cluster = PgCluster::start(Some(&tls));

    // The certificate names `localhost` only.
    let ok = tls_config(cluster.port, "localhost", "verify-full", &tls.ca_cert);
    assert_eq!(ok.tls, TlsMode::VerifyFull);
    let conn = connect(&ok).await.expect("right CA and host connect");
    let ssl: bool = conn
        .client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the session is encrypted");

    let err = connect(&tls_config(
        cluster.port,
        "localhost",
        "verify-full",
        &wrong_ca,
    ))
    .await
    .err()
    .expect("a wrong CA must be refused");
    assert_eq!(err.kind, ErrorKind::Fatal, "{err}");

    let err = connect(&tls_config(
        cluster.port,
        "127.0.0.1",
        "verify-full",
        &tls.ca_cert,
    ))
    .await
    .err()
    .expect("a host name the certificate does not name must be refused");
    assert_eq!(err.kind, ErrorKind::Fatal, "{err}");

    // verify-ca checks the chain but not the name; it still refuses a wrong CA.
    connect(&tls_config(
        cluster.port,
        "127.0.0.1",
        "verify-ca",
        &tls.ca_cert,
    ))
    .await
    .expect("verify-ca ignores the host name");
    assert!(connect(&tls_config(
        cluster.port,
        "127.0.0.1",
        "verify-ca",
        &wrong_ca
    ))
    .await
    .is_err());

    // The server accepts TLS only: plain TCP is refused.
    assert!(connect(&tls_config(
        cluster.port,
        "localhost",
        "disable",
        &tls.ca_cert
    ))
    .await
    .is_err());
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_least_privilege_role_is_enough_and_no_more() {
    let env = TestEnv::new("pg_role").await;
    let user = format!("limited_{}", env.name);
    let admin = testkit::pg_admin(&env.vars["PGHOST"], &env.vars["PGPORT"]).await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {user} LOGIN PASSWORD 'limited'; GRANT countries_app TO {user}; \
             GRANT CONNECT ON DATABASE {} TO {user}",
            env.name
        ))
        .await
        .unwrap();
    let config = env.config_with(&[("PGUSER", &user), ("PGPASSWORD", "limited")]);
    let store = PostgresStore::new(config.postgres.clone());
    let mut sink = store.pg_sink().await.unwrap();
    assert_eq!(
        sink.write_all(&refs(&rows(&[(1, "USA")]))).await.unwrap(),
        1
    );
    let guard = PostgresRunGuard::new(config.postgres.clone());
    let mut run = guard.open_run(&summary()).await.unwrap().expect("lock");
    let mut s = summary();
    s.outcome = RunOutcome::Succeeded;
    // The ledger row of another run id: INSERT and UPDATE both work.
    run.finish(&s).await.unwrap();
    drop(run);

    let conn = connect(&config.postgres).await.unwrap();
    let err = conn
        .client
        .batch_execute(r#"DELETE FROM "case""#)
        .await
        .unwrap_err();
    assert_eq!(
        err.code().map(|c| c.code()),
        Some("42501"),
        "DELETE is not granted"
    );
    let err = conn
        .client
        .batch_execute("CREATE TABLE sneaky (x int)")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "no DDL");
}

/// A server that agrees to TLS and then drops the connection mid-handshake:
/// a network hiccup, which a later attempt can get past.
async fn tls_dropping_server(reset: bool) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 8];
            if socket.read_exact(&mut request).await.is_err() {
                continue;
            }
            // 'S': the server will speak TLS; then it goes away.
            let _ = socket.write_all(b"S").await;
            let mut hello = [0u8; 16];
            let _ = socket.read(&mut hello).await;
            if reset {
                // SO_LINGER 0: close with a reset rather than a clean FIN.
                let _ = socket.set_zero_linger();
            }
            drop(socket);
        }
    });
    port
}

#[tokio::test]
async fn a_tls_handshake_the_network_breaks_is_transient() {
    let dir = std::env::temp_dir().join(unique("countries-tls-drop"));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = make_ca(&dir, "any");
    for reset in [false, true] {
        let port = tls_dropping_server(reset).await;
        for mode in ["require", "verify-full"] {
            let err = connect(&tls_config(port, "localhost", mode, &ca))
                .await
                .err()
                .expect("the server dropped the handshake");
            assert_eq!(
                err.kind,
                ErrorKind::Transient,
                "reset={reset} {mode}: {err}"
            );
        }
    }
}
