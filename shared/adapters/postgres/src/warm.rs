//! One Postgres connection kept per warm container, the runtime examples'
//! shared-resource idiom: the retrier, the stream writer and the
//! dlq-reporter open it on their first invocation and reuse it on the next
//! ones, instead of a TCP and TLS handshake per batch.
//!
//! - **Checked before use**: a connection taken from the slot answers an
//!   empty query first (a frozen container's connection may have been
//!   closed by the server, a proxy or a NAT while it slept); one that does
//!   not is replaced.
//! - **Opened again after an error**: a lease whose user saw anything but a
//!   row-level error is not put back ([`Lease::discard`]), nor is a closed
//!   one; the next invocation opens a new connection.
//! - **A rotated password**: when the server refuses the password (`28P01`)
//!   and it came from a Secrets Manager secret, the secret is read again,
//!   once, and the connection tried again with it.
//! - **Never shared**: the slot is held for the whole lease. An invocation
//!   that finds it taken (the runtime running invocations side by side)
//!   gets a connection of its own, closed when it is done.
//!
//! The replicator does not keep it warm: its run lock is a session advisory
//! lock that must end with its connection if the run dies, and one
//! handshake per scheduled run costs nothing that matters. A mapped table's
//! sink ([`crate::mapped::PgTableSink`]) and the retrier's mapped rows use
//! [`WarmConnection::open`] for the password read again on `28P01`.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex as SyncMutex};

use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio_postgres::error::SqlState;

use crate::connect::{connect, PgConnection};
use countries_secrets::{postgres_credentials, SecretSource};
use countries_shared::config::{PostgresConfig, Secret};
use countries_shared::failure::WriteError;

/// Where a rotated password is read again.
#[derive(Clone)]
pub struct PasswordSource {
    pub secrets: Arc<dyn SecretSource>,
    /// `POSTGRES_SECRET_ARN`.
    pub arn: String,
}

impl PasswordSource {
    /// Secrets Manager, when the configuration came from a secret
    /// (`POSTGRES_SECRET_ARN`); None for a plain `PGPASSWORD`.
    pub async fn from_config(config: &PostgresConfig) -> Option<Self> {
        let arn = config.secret_arn.clone()?;
        Some(Self {
            secrets: Arc::new(countries_secrets::SecretsManager::from_environment().await),
            arn,
        })
    }
}

/// The container's Postgres connection, lent to one invocation at a time.
pub struct WarmConnection {
    config: PostgresConfig,
    /// The password to use instead of the configured one, after a rotation.
    rotated: SyncMutex<Option<(String, Secret)>>,
    refresh: Option<PasswordSource>,
    slot: Arc<Mutex<Option<PgConnection>>>,
}

impl WarmConnection {
    pub fn new(config: PostgresConfig, refresh: Option<PasswordSource>) -> Self {
        Self {
            config,
            rotated: SyncMutex::new(None),
            refresh,
            slot: Arc::new(Mutex::new(None)),
        }
    }

    /// A checked connection for one invocation: the warm one when it is free
    /// and answers, a new one otherwise.
    pub async fn lease(&self) -> Result<Lease, WriteError> {
        let Ok(mut slot) = Arc::clone(&self.slot).try_lock_owned() else {
            tracing::debug!("the warm Postgres connection is in use; opening another");
            let connection = self.open().await?;
            return Ok(Lease {
                connection: Some(connection),
                slot: None,
                reused: false,
            });
        };
        let mut reused = false;
        if let Some(warm) = slot.take() {
            if !warm.client.is_closed() && warm.client.simple_query("").await.is_ok() {
                reused = true;
                *slot = Some(warm);
            } else {
                tracing::info!("the warm Postgres connection no longer answers; opening a new one");
            }
        }
        let connection = match slot.take() {
            Some(connection) => connection,
            None => self.open().await?,
        };
        Ok(Lease {
            connection: Some(connection),
            slot: Some(slot),
            reused,
        })
    }

    /// Opens a connection; a refused password is read again from its secret
    /// once (rotation), and the new one kept for later connections.
    pub async fn open(&self) -> Result<PgConnection, WriteError> {
        let config = self.current_config();
        let refused = match connect(&config).await {
            Err(e) if e.sqlstate.as_deref() == Some(SqlState::INVALID_PASSWORD.code()) => e,
            other => return other,
        };
        let Some(refresh) = &self.refresh else {
            return Err(refused);
        };
        tracing::warn!(
            "Postgres refused the password (28P01); reading the secret again in case it was rotated"
        );
        let (user, password) = postgres_credentials(refresh.secrets.as_ref(), &refresh.arn)
            .await
            .map_err(|e| WriteError::fatal(format!("{refused}; reading the secret again: {e}")))?;
        let mut config = self.config.clone();
        config.user = user.clone();
        config.password = Some(password.clone());
        let connection = connect(&config).await?;
        *self
            .rotated
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((user, password));
        Ok(connection)
    }

    /// The configuration with the password now in use (after a rotation:
    /// the one read again).
    pub fn current_config(&self) -> PostgresConfig {
        let mut config = self.config.clone();
        let rotated = self
            .rotated
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((user, password)) = rotated.as_ref() {
            config.user = user.clone();
            config.password = Some(password.clone());
        }
        config
    }
}

/// A connection lent to one invocation. Dropped, it goes back to the slot
/// when it came from there, is open and was not discarded.
pub struct Lease {
    connection: Option<PgConnection>,
    slot: Option<OwnedMutexGuard<Option<PgConnection>>>,
    reused: bool,
}

impl Lease {
    /// Whether this is the warm connection of an earlier invocation.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Not put back: its user saw an error that may have left it in any
    /// state. The next lease opens a new one.
    pub fn discard(&mut self) {
        self.slot = None;
    }

    /// Replaces the connection (after a reconnect).
    pub fn replace(&mut self, connection: PgConnection) {
        self.connection = Some(connection);
    }
}

impl Deref for Lease {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        // Some from construction until drop.
        self.connection.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.connection.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl From<PgConnection> for Lease {
    /// A connection of its own, closed when the lease is dropped.
    fn from(connection: PgConnection) -> Self {
        Self {
            connection: Some(connection),
            slot: None,
            reused: false,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let (Some(mut slot), Some(connection)) = (self.slot.take(), self.connection.take()) {
            if !connection.client.is_closed() {
                *slot = Some(connection);
            }
        }
    }
}
