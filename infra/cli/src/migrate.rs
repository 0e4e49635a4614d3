//! The Postgres schema, migrated by one tool: refinery applies the files of
//! `infra/sql/postgres` (`V<n>__<name>.sql`) in order and records each in its
//! version table (`refinery_schema_history`), refusing a file that changed
//! after it was applied. The local stack, the tests and production
//! (`countries migrate`) all come here.
//!
//! A database set up before the version table existed (by the README's
//! earlier steps: each file run by hand) is adopted: what its schema already
//! holds is recorded as applied without running anything ([`adopted_version`]),
//! and only the files after it run.

use refinery::Target;
use tokio_postgres::Client;

mod embedded {
    refinery::embed_migrations!("../sql/postgres");
}

/// What each migration leaves behind, in version order: a database whose
/// schema shows the first `n` of these was set up through version `n`.
/// One per file (a test checks the count).
pub const LEFT_BEHIND: &[(i32, &str)] = &[
    (
        1,
        "to_regclass('\"case\"') IS NOT NULL AND to_regclass('replication_run') IS NOT NULL",
    ),
    (2, "to_regclass('failure_report') IS NOT NULL"),
    (
        3,
        "EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'countries_app')",
    ),
    (4, "EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'replication_run' AND column_name = 'snowflake_statements')"),
    (5, "EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'replication_run' AND column_name = 'sink')"),
    (6, "EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'failure_report' AND column_name = 'table_name')"),
    (7, "to_regclass('change_marks') IS NOT NULL"),
    (8, "EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'replication_run' AND column_name = 'table_name')"),
    (9, "EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'change_marks' AND column_name = 'block')"),
];

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Versions recorded as applied without running (an adopted database).
    pub adopted: Vec<i32>,
    /// Migrations run now, as `V<n>__<name>`.
    pub applied: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("reading the schema: {0}")]
    Probe(#[from] tokio_postgres::Error),
    #[error(
        "migrating: {0} (run `countries migrate` as a role that owns the schema and may create roles: the RDS master user)"
    )]
    Refinery(#[from] refinery::Error),
}

/// Every migration, in order.
pub fn migrations() -> Vec<refinery::Migration> {
    embedded::migrations::runner().get_migrations().clone()
}

/// Brings the database up to date: adopts a schema set up by hand first,
/// then applies what is missing. Safe to run again (it then does nothing).
pub async fn migrate(client: &mut Client) -> Result<Migrated, MigrateError> {
    let mut adopted = Vec::new();
    if !has_version_table(client).await? {
        let version = adopted_version(client).await?;
        if version > 0 {
            // Recorded, not run (refinery's report lists none of them).
            embedded::migrations::runner()
                .set_target(Target::FakeVersion(version))
                .run_async(client)
                .await?;
            adopted = (1..=version).collect();
        }
    }
    let report = embedded::migrations::runner().run_async(client).await?;
    let applied = report
        .applied_migrations()
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(Migrated { adopted, applied })
}

async fn has_version_table(client: &Client) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// How far a database without a version table was set up: the number of
/// leading [`LEFT_BEHIND`] marks its schema shows (0: an empty database).
pub async fn adopted_version(client: &Client) -> Result<i32, tokio_postgres::Error> {
    let mut version = 0;
    for (v, holds) in LEFT_BEHIND {
        let row = client.query_one(&format!("SELECT {holds}"), &[]).await?;
        if !row.get::<_, bool>(0) {
            break;
        }
        version = *v;
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_says_what_it_leaves_behind() {
        let versions: Vec<i32> = migrations().iter().map(|m| m.version()).collect();
        let marked: Vec<i32> = LEFT_BEHIND.iter().map(|(v, _)| *v).collect();
        assert_eq!(versions, marked, "one LEFT_BEHIND entry per file, in order");
    }
}
