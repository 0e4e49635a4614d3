//! Operator and local-stack tooling, kept out of the crate the Lambda
//! functions link: the `countries` command's logic, reused by the tests.

pub mod event_source;
pub mod failures;
pub mod loader;
pub mod local_stack;
pub mod migrate;
pub mod redrive;
pub mod smoke;
pub mod snowflake_admin;
pub mod status;

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
