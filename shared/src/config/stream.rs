//! The configuration of stream mode's two functions, the publisher and the
//! writer.

use std::time::Duration;

use crate::model::change::Groups;

use super::{deadline_margin, vars, ConfigError, Env, PostgresConfig, ReplicatorConfig};

/// Everything the `publisher` function needs: the replicator's settings
/// (its run is the replicator's), the changes queue, and how long to loop.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub replicator: ReplicatorConfig,
    pub changes_queue_url: String,
    /// `CHANGE_BUCKETS` and `CHANGE_BLOCK_IDS`: how ids are spread over the
    /// changes queue's message groups.
    pub change_groups: Groups,
    /// Keep taking runs for this long within one invocation (zero: one run).
    pub loop_for: Duration,
    /// Between looks at an empty table while looping.
    pub idle_wait: Duration,
}

impl PublisherConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(Env::from_process())
    }

    pub fn from_vars(mut env: Env) -> Result<Self, ConfigError> {
        Self::read_from(&mut env)
    }

    /// Reads the configuration and leaves `env` to tell which variables were read.
    pub fn read_from(env: &mut Env) -> Result<Self, ConfigError> {
        let config = Self {
            replicator: ReplicatorConfig::read(env),
            changes_queue_url: env.url(&vars::CHANGES_QUEUE_URL).unwrap_or_default(),
            change_groups: Groups {
                buckets: env.number(&vars::CHANGE_BUCKETS),
                block: env.number(&vars::CHANGE_BLOCK_IDS),
            },
            loop_for: Duration::from_secs(env.number(&vars::PUBLISH_LOOP_SECONDS)),
            idle_wait: Duration::from_millis(env.number(&vars::PUBLISH_IDLE_WAIT_MILLIS)),
        };
        env.finish(config)
    }
}

/// Everything the `writer` function needs.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub postgres: PostgresConfig,
    /// Where rows Postgres refuses go, in the retry queue's format.
    pub retry_queue_url: String,
    /// Where a message that is not a batch, or a batch that failed on its
    /// last receive, is parked.
    pub changes_dead_letter_queue_url: String,
    /// The changes queue's `maxReceiveCount`.
    pub changes_max_receive_count: u32,
    pub write_attempts: u32,
    /// Safety margin before the invocation's deadline (None: the default).
    pub deadline_margin: Option<Duration>,
}

impl WriterConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(Env::from_process())
    }

    pub fn from_vars(mut env: Env) -> Result<Self, ConfigError> {
        Self::read_from(&mut env)
    }

    /// Reads the configuration and leaves `env` to tell which variables were read.
    pub fn read_from(env: &mut Env) -> Result<Self, ConfigError> {
        let config = Self {
            postgres: PostgresConfig::read(env),
            retry_queue_url: env.url(&vars::RETRY_QUEUE_URL).unwrap_or_default(),
            // The changes queue itself is the writer's trigger (the event
            // source mapping), never called by it; each batch names its own
            // packing, so the writer needs no CHANGE_BUCKETS either.
            changes_dead_letter_queue_url: {
                // Optional for the dlq-reporter (batch mode has no such
                // queue), required here.
                if env.optional(&vars::CHANGES_DEAD_LETTER_QUEUE_URL).is_none() {
                    env.problem(
                        &vars::CHANGES_DEAD_LETTER_QUEUE_URL,
                        "is required by the writer (it parks there what it cannot write) but not set (or blank)",
                    );
                }
                env.url(&vars::CHANGES_DEAD_LETTER_QUEUE_URL)
                    .unwrap_or_default()
            },
            changes_max_receive_count: env.number(&vars::CHANGES_MAX_RECEIVE_COUNT),
            write_attempts: env.number(&vars::WRITE_ATTEMPTS),
            deadline_margin: deadline_margin(env),
        };
        env.finish(config)
    }
}
