//! The run lock: a session-level advisory lock keyed on the target table, so
//! that two runs never work on it at once. It is released when its
//! connection ends, so a crashed run cannot leave it behind.

use tokio_postgres::Client;

use crate::connect::{connect, PgConnection};
use crate::sqlstate::write_error;
use countries_shared::config::PostgresConfig;
use countries_shared::failure::WriteError;

pub async fn try_lock(client: &Client, lock_name: &str) -> Result<bool, WriteError> {
    let row = client
        .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&lock_name])
        .await
        .map_err(|e| write_error(&e))?;
    Ok(row.get(0))
}

/// A connection that holds the run lock.
pub struct RunLock {
    config: PostgresConfig,
    name: String,
    connection: PgConnection,
}

impl RunLock {
    /// Connects and takes the lock; `None` when another session holds it.
    pub async fn acquire(
        config: &PostgresConfig,
        name: String,
    ) -> Result<Option<Self>, WriteError> {
        let connection = connect(config).await?;
        if !try_lock(&connection.client, &name).await? {
            return Ok(None);
        }
        Ok(Some(Self {
            config: config.clone(),
            name,
            connection,
        }))
    }

    /// Whether the lock is still held: yes while its connection lives;
    /// after a lost connection, only if it can be taken again. Another run
    /// may hold it by then, and this run must stop writing.
    pub async fn confirm(&mut self) -> Result<(), WriteError> {
        if !self.connection.client.is_closed() {
            return Ok(());
        }
        tracing::warn!("the run lock's connection was lost; reconnecting");
        let connection = connect(&self.config).await?;
        if !try_lock(&connection.client, &self.name).await? {
            return Err(WriteError::fatal(
                "lost the run lock with the connection, and another run holds it now",
            ));
        }
        self.connection = connection;
        Ok(())
    }

    /// The lock's connection (the ledger is written over it).
    pub fn client(&self) -> &Client {
        &self.connection.client
    }

    pub fn config(&self) -> &PostgresConfig {
        &self.config
    }
}
