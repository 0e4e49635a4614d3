//! The run lock: a session-level advisory lock keyed on the target table, so
//! that two replicator runs never write at once. It is released when its
//! connection ends, so a crashed run cannot leave it behind.

use tokio_postgres::Client;

use crate::sqlstate::write_error;
use countries_shared::failure::WriteError;

pub async fn try_lock(client: &Client, lock_name: &str) -> Result<bool, WriteError> {
    // A session-level advisory lock: released when the connection ends, so a
    // crashed run cannot leave it behind.
    let row = client
        .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&lock_name])
        .await
        .map_err(|e| write_error(&e))?;
    Ok(row.get(0))
}
