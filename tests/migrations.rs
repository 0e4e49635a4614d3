//! `countries migrate` on PostgreSQL 15: a new database gets every file in
//! order with refinery's version table; a database set up by hand with the
//! files (the README's earlier steps) is adopted: what it holds is recorded,
//! nothing of it runs again, and only the newer files run; a file changed
//! after it was applied is refused.

use countries_ops::migrate::{migrate, migrations, Migrated};
use testkit::{pg_admin, pg_admin_db, stack_var, unique};

/// An empty database owned by the stack's application role, and a session
/// in it as that role.
async fn empty_database(prefix: &str) -> (String, tokio_postgres::Client) {
    let (host, port, owner) = (
        stack_var("PGHOST"),
        stack_var("PGPORT"),
        stack_var("PGUSER"),
    );
    let name = unique(prefix).to_lowercase();
    pg_admin(&host, &port)
        .await
        .batch_execute(&format!("CREATE DATABASE {name} OWNER {owner}"))
        .await
        .expect("CREATE DATABASE");
    let client = pg_admin_db(&host, &port, &name).await;
    client
        .batch_execute(&format!("SET ROLE {owner}"))
        .await
        .expect("SET ROLE");
    (name, client)
}

/// The files through `version`, run by hand as the README said: each as the
/// schema owner, the role file as the admin.
async fn set_up_by_hand(client: &tokio_postgres::Client, version: i32) {
    for m in migrations().iter().filter(|m| m.version() <= version) {
        let sql = m.sql().expect("the migration's SQL");
        let sql = if m.name().ends_with("role") {
            format!("RESET ROLE; {sql}; SET ROLE {};", stack_var("PGUSER"))
        } else {
            sql.to_string()
        };
        client.batch_execute(&sql).await.expect("a file by hand");
    }
}

fn names(from: i32) -> Vec<String> {
    migrations()
        .iter()
        .filter(|m| m.version() >= from)
        .map(ToString::to_string)
        .collect()
}

async fn history(client: &tokio_postgres::Client) -> Vec<i32> {
    client
        .query(
            "SELECT version FROM refinery_schema_history ORDER BY version",
            &[],
        )
        .await
        .expect("the version table")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_new_database_gets_every_file_once() {
    let (_, mut client) = empty_database("mig_new").await;
    let first = migrate(&mut client).await.expect("migrate");
    assert_eq!(
        first,
        Migrated {
            adopted: vec![],
            applied: names(1)
        }
    );
    let all: Vec<i32> = migrations().iter().map(|m| m.version()).collect();
    assert_eq!(history(&client).await, all);
    let again = migrate(&mut client).await.expect("migrate again");
    assert_eq!(
        again,
        Migrated {
            adopted: vec![],
            applied: vec![]
        }
    );
}

/// The identity of V4's check constraint, which V4 drops and adds again:
/// it changes if V4 runs again.
async fn outcome_check(client: &tokio_postgres::Client) -> u32 {
    client
        .query_one(
            "SELECT oid FROM pg_constraint WHERE conname = 'replication_run_outcome_check'",
            &[],
        )
        .await
        .expect("V4's constraint")
        .get(0)
}

#[tokio::test]
async fn a_database_set_up_by_hand_is_adopted_without_running_its_files_again() {
    let last = migrations().last().map(|m| m.version()).unwrap_or(0);
    for through in [last - 1, 4] {
        let (name, mut client) = empty_database("mig_adopt").await;
        set_up_by_hand(&client, through).await;
        client
            .batch_execute(r#"INSERT INTO "case" VALUES (1, 'USA')"#)
            .await
            .expect("a live deployment's data");
        let before = outcome_check(&client).await;
        let done = migrate(&mut client).await.expect("migrate");
        assert_eq!(
            done,
            Migrated {
                adopted: (1..=through).collect(),
                applied: names(through + 1),
            },
            "{name}: set up through {through}"
        );
        assert_eq!(history(&client).await, (1..=last).collect::<Vec<_>>());
        assert_eq!(outcome_check(&client).await, before, "V4 did not run again");
        let kept: String = client
            .query_one(r#"SELECT country FROM "case" WHERE country_id = 1"#, &[])
            .await
            .expect("read back")
            .get(0);
        assert_eq!(kept, "USA");
        // Adopted once: the next run has nothing to do.
        let again = migrate(&mut client).await.expect("migrate again");
        assert!(
            again.adopted.is_empty() && again.applied.is_empty(),
            "{again:?}"
        );
    }
}

#[tokio::test]
async fn a_file_changed_after_it_was_applied_is_refused() {
    let (_, mut client) = empty_database("mig_changed").await;
    migrate(&mut client).await.expect("migrate");
    client
        .batch_execute("UPDATE refinery_schema_history SET checksum = '1' WHERE version = 2")
        .await
        .expect("tamper");
    let refused = migrate(&mut client)
        .await
        .expect_err("a divergent file is refused");
    let message = refused.to_string();
    assert!(
        message.contains("failure_report") || message.contains("V2"),
        "names the file: {message}"
    );
}
