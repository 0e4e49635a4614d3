//! The warm Postgres connection (`countries_postgres::warm`)
//! against the local stack's Postgres: kept across invocations of one
//! process, checked before use, replaced when the server ended it, never
//! lent to two invocations at once, and opened again with a rotated
//! password read from Secrets Manager (moto) after a `28P01`.

use countries_postgres::sink::pool::PostgresStore;
use countries_postgres::sink::PgSink;
use countries_postgres::warm::PasswordSource;
use countries_shared::failure::ErrorKind;
use countries_shared::model::row::{validate, SourceRow};
use countries_shared::sink::isolate::AllOrNothing;
use testkit::secret_role::SecretRole;
use testkit::{pg_admin, TestEnv};

async fn backend_pid(writer: &PgSink) -> i32 {
    writer
        .client()
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pg_backend_pid")
        .get(0)
}

async fn terminate(env: &TestEnv, pid: i32) {
    let admin = pg_admin(&env.vars["PGHOST"], &env.vars["PGPORT"]).await;
    let ended: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("pg_terminate_backend")
        .get(0);
    assert!(ended, "backend {pid} was not there to end");
    // pg_terminate_backend only signals: wait until the backend is gone.
    for _ in 0..100 {
        let gone = admin
            .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .await
            .expect("pg_stat_activity")
            .is_none();
        if gone {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("backend {pid} did not end");
}

/// A chunk as the sinks take it: borrowed rows.
fn refs(
    rows: &[countries_shared::model::row::CountryRow],
) -> Vec<&countries_shared::model::row::CountryRow> {
    rows.iter().collect()
}

fn row(id: i128, country: &str) -> Vec<countries_shared::model::row::CountryRow> {
    vec![validate(&SourceRow::new(Some(id), Some(country))).expect("valid row")]
}

#[tokio::test]
async fn the_connection_is_kept_between_invocations_and_replaced_when_the_server_ended_it() {
    let env = TestEnv::new("warm_pg").await;
    let store = PostgresStore::new(env.config().postgres);

    // Three invocations of one warm process: one connection.
    let mut first = store.pg_sink().await.expect("first invocation");
    let pid = backend_pid(&first).await;
    first.write_all(&refs(&row(1, "USA"))).await.expect("write");
    drop(first);
    for id in 2..4 {
        let mut writer = store.pg_sink().await.expect("next invocation");
        assert_eq!(backend_pid(&writer).await, pid, "invocation {id} reused it");
        writer
            .write_all(&refs(&row(id, "FRA")))
            .await
            .expect("write");
    }

    // The server ends it while the container sleeps: the next invocation
    // finds out before writing, and writes on a new one.
    terminate(&env, pid).await;
    let mut writer = store.pg_sink().await.expect("after the server ended it");
    let new_pid = backend_pid(&writer).await;
    assert_ne!(new_pid, pid);
    writer
        .write_all(&refs(&row(9, "DEU")))
        .await
        .expect("write");
    drop(writer);
    let again = store.pg_sink().await.expect("and kept");
    assert_eq!(backend_pid(&again).await, new_pid);
    drop(again);
    assert_eq!(env.postgres_rows().await.len(), 4);
}

#[tokio::test]
async fn two_invocations_at_once_never_share_it() {
    let env = TestEnv::new("warm_pg_shared").await;
    let store = PostgresStore::new(env.config().postgres);
    let a = store.pg_sink().await.expect("a");
    let b = store
        .pg_sink()
        .await
        .expect("b, while a holds the warm one");
    let (pid_a, pid_b) = (backend_pid(&a).await, backend_pid(&b).await);
    assert_ne!(pid_a, pid_b);
    drop(b);
    drop(a);
    // Only the warm one was kept; the other closed with its invocation.
    let c = store.pg_sink().await.expect("c");
    assert_eq!(backend_pid(&c).await, pid_a);
}

#[tokio::test]
async fn an_error_that_is_not_the_rows_fault_opens_a_new_connection_next_time() {
    let env = TestEnv::new("warm_pg_error").await;
    let store = PostgresStore::new(env.config().postgres);
    env.postgres()
        .await
        .batch_execute(r#"ALTER TABLE "case" ADD CONSTRAINT no_atlantis CHECK (country <> 'ATL')"#)
        .await
        .expect("add a constraint");
    let mut writer = store.pg_sink().await.expect("writer");
    let pid = backend_pid(&writer).await;
    // A refused row: the connection is fine and is kept.
    let refused = writer
        .write_all(&refs(&row(1, "ATL")))
        .await
        .expect_err("the constraint refuses it");
    assert_eq!(refused.kind, ErrorKind::RowLevel, "{refused}");
    drop(writer);
    let mut writer = store.pg_sink().await.expect("writer");
    assert_eq!(
        backend_pid(&writer).await,
        pid,
        "kept after a row-level error"
    );
    // A statement timeout is transient, and may leave the session anywhere.
    writer
        .client()
        .batch_execute("SET statement_timeout = 1")
        .await
        .expect("set");
    let many: Vec<_> = (1..200_000).flat_map(|i| row(i, "NGA")).collect();
    let err = writer.write_all(&refs(&many)).await.expect_err("timed out");
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    drop(writer);
    let writer = store.pg_sink().await.expect("writer");
    assert_ne!(
        backend_pid(&writer).await,
        pid,
        "replaced after the timeout"
    );
}

#[tokio::test]
async fn a_rotated_password_is_read_again_from_its_secret_once() {
    let env = TestEnv::new("warm_pg_rotate").await;
    let role = SecretRole::create(&env).await;
    env.postgres()
        .await
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA public TO {name}; GRANT SELECT, INSERT, UPDATE ON public.\"case\" TO {name}",
            name = role.name
        ))
        .await
        .expect("grant");
    let (arn, config) = (role.arn.clone(), role.config(&env));
    let refresh = PasswordSource::from_config(&config)
        .await
        .expect("a secret ARN is configured");
    assert_eq!(refresh.arn, arn);
    let store = PostgresStore::with_password_source(config.clone(), Some(refresh));
    let without_secret = PostgresStore::new(config);
    let writer = store.pg_sink().await.expect("with the first password");
    let pid = backend_pid(&writer).await;
    drop(writer);

    // The rotation: Postgres and the secret change; the warm connection is
    // ended (RDS ends sessions on a password change only in some set-ups;
    // a cold start or a dropped connection meet the new password anyway).
    role.rotate("second-pass").await;
    terminate(&env, pid).await;

    let mut writer = store.pg_sink().await.expect("read the secret again");
    writer
        .write_all(&refs(&row(7, "JPN")))
        .await
        .expect("write");
    // Lost mid-invocation: it reconnects with the rotated password (at once
    // when the client saw the server end it, on the next write otherwise).
    let lost_pid = backend_pid(&writer).await;
    terminate(&env, lost_pid).await;
    if writer.write_all(&refs(&row(8, "NGA"))).await.is_err() {
        writer
            .write_all(&refs(&row(8, "NGA")))
            .await
            .expect("reconnected with the rotated password");
    }
    assert_ne!(backend_pid(&writer).await, lost_pid, "a new connection");
    drop(writer);
    let writer = store.pg_sink().await.expect("kept");
    drop(writer);

    let err = without_secret
        .pg_sink()
        .await
        .err()
        .expect("no secret to read again: refused");
    assert_eq!(err.sqlstate.as_deref(), Some("28P01"), "{err}");
    assert!(!err.to_string().contains("first-pass"), "{err}");
    assert_eq!(
        env.postgres_rows().await,
        vec![(7, "JPN".to_string()), (8, "NGA".to_string())]
    );
}
