//! The replica as a sink: [`PostgresStore`] opens [`PgSink`]s on the
//! container's warm connection, for `case`'s rows: the retrier, the
//! writers and `countries replay` (the replicator writes every table,
//! `case` included, through [`crate::mapped`]).

use async_trait::async_trait;
use uuid::Uuid;

use super::PgSink;
use crate::warm::{PasswordSource, WarmConnection};
use countries_shared::config::PostgresConfig;
use countries_shared::failure::{SinkError, WriteError};
use countries_shared::ledger::SinkKind;
use countries_shared::ports::{RowSink, SinkPool};

/// The replica: the target table, written through the container's warm
/// connection (one invocation at a time).
pub struct PostgresStore {
    warm: WarmConnection,
}

impl PostgresStore {
    /// A store whose warm connection uses the configured password only.
    pub fn new(config: PostgresConfig) -> Self {
        Self::with_password_source(config, None)
    }

    /// A store that reads `refresh` again when Postgres refuses the password.
    pub fn with_password_source(config: PostgresConfig, refresh: Option<PasswordSource>) -> Self {
        Self {
            warm: WarmConnection::new(config, refresh),
        }
    }

    /// A sink on the warm connection, as a concrete type (the benchmark).
    pub async fn pg_sink(&self) -> Result<PgSink, WriteError> {
        let lease = self.warm.lease().await?;
        // With the password in use now, should it reconnect mid-invocation.
        PgSink::new(self.warm.current_config(), lease).await
    }
}

#[async_trait]
impl SinkPool for PostgresStore {
    fn kind(&self) -> SinkKind {
        SinkKind::Postgres
    }

    async fn open(&self, _run_id: Option<Uuid>) -> Result<Box<dyn RowSink>, SinkError> {
        Ok(Box::new(self.pg_sink().await?))
    }
}
