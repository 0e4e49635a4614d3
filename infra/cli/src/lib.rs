//! Operator and local-stack tooling, kept out of the crates the Lambda
//! functions link: the `countries` command's logic, reused by the tests.
//!
//! - [`status`] (`countries status`: health in one screen), [`failures`]
//!   (the failure report: list, replay, resolve), [`redrive`] (dead letters
//!   back to the retry queue), [`migrate`] (the Postgres migrations, with
//!   adoption of a database set up by hand), [`tables`] (a table mapping
//!   file checked against both databases);
//! - local and demo set-up: [`local_stack`] (queues from `template.yaml`, the
//!   Snowflake table), [`loader`] (rows into Snowflake), [`snowflake_admin`]
//!   (the statements those need), [`event_source`] (the SQS event source
//!   mappings, played locally), [`smoke`] (a deployed stack's smoke test).

pub mod event_source;
pub mod failures;
pub mod loader;
pub mod local_stack;
pub mod migrate;
pub mod redrive;
pub mod smoke;
pub mod snowflake_admin;
pub mod status;
pub mod tables;

use countries_shared::config::vars::{DEAD_LETTER_QUEUE_URL, RETRY_QUEUE_URL};
use countries_shared::config::{ConfigError, Env};

/// The two queues, for moving dead letters back to the retry queue.
#[derive(Debug, Clone)]
pub struct RedriveConfig {
    pub retry_queue_url: String,
    pub dead_letter_queue_url: String,
}

impl RedriveConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut env = Env::from_process();
        let config = Self {
            retry_queue_url: env.url(&RETRY_QUEUE_URL).unwrap_or_default(),
            dead_letter_queue_url: env.url(&DEAD_LETTER_QUEUE_URL).unwrap_or_default(),
        };
        env.finish(config)
    }
}
