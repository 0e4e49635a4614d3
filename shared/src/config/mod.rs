//! All configuration comes from the environment and is read here, once, at
//! start-up: one config type per function, built from the variables declared
//! in [`vars`] and read through [`env::Env`], which names every problem at once.
//! [`tables`] parses the mapping file of the further tables to replicate
//! (`TABLES_FILE`).

pub mod env;
pub mod stream;
pub mod tables;
#[cfg(test)]
mod tests;
pub mod vars;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use env::{ConfigError, ConfigProblem, Env, Secret};
pub use stream::{PublisherConfig, WriterConfig};

use crate::model::ident::Identifier;

/// The `case` table's columns in Postgres (V1__schema.sql).
const CASE_ID: &str = "country_id";
const CASE_COUNTRY: &str = "country";

#[derive(Debug, Clone)]
pub enum SnowflakeAuth {
    Password(Secret),
    /// Unencrypted PKCS#8 PEM (key-pair authentication).
    PrivateKey(Secret),
}

#[derive(Debug, Clone)]
pub struct SnowflakeConfig {
    pub account: String,
    pub user: String,
    pub auth: SnowflakeAuth,
    pub warehouse: Option<String>,
    pub database: String,
    pub schema: String,
    pub role: Option<String>,
    pub table: Identifier,
    /// The table's key column and its country column, quoted as given.
    pub id_column: Identifier,
    pub country_column: Identifier,
    /// The function's timeout as deployed: every session's
    /// `STATEMENT_TIMEOUT_IN_SECONDS` and `LOCK_TIMEOUT` are set below it.
    pub function_timeout_secs: u32,
    /// Send every request here instead of
    /// `https://{account}.snowflakecomputing.com`: a regional or PrivateLink
    /// host, or the local emulator.
    pub endpoint_url: Option<String>,
}

impl SnowflakeConfig {
    fn read(env: &mut Env) -> Self {
        let account = env.required(&vars::SNOWFLAKE_ACCOUNT);
        let user = env.required(&vars::SNOWFLAKE_USER);
        let password = env.secret(&vars::SNOWFLAKE_PASSWORD);
        let private_key = env.secret(&vars::SNOWFLAKE_PRIVATE_KEY);
        let auth = match (password, private_key) {
            (Some(p), None) => SnowflakeAuth::Password(p),
            (None, Some(k)) => {
                if !k.expose().contains("-----BEGIN PRIVATE KEY-----") {
                    env.problem(
                        &vars::SNOWFLAKE_PRIVATE_KEY,
                        "must be an unencrypted PKCS#8 PEM key (-----BEGIN PRIVATE KEY-----)",
                    );
                }
                SnowflakeAuth::PrivateKey(k)
            }
            (Some(p), Some(_)) => {
                env.problem(
                    &vars::SNOWFLAKE_PASSWORD,
                    "set together with SNOWFLAKE_PRIVATE_KEY: choose one authentication method",
                );
                SnowflakeAuth::Password(p)
            }
            (None, None) => {
                env.problem(
                    &vars::SNOWFLAKE_PASSWORD,
                    "neither SNOWFLAKE_PASSWORD nor SNOWFLAKE_PRIVATE_KEY is set",
                );
                SnowflakeAuth::Password(Secret::new(""))
            }
        };
        Self {
            account,
            user,
            auth,
            warehouse: env.optional(&vars::SNOWFLAKE_WAREHOUSE),
            database: env.required(&vars::SNOWFLAKE_DATABASE),
            schema: env.required(&vars::SNOWFLAKE_SCHEMA),
            role: env.optional(&vars::SNOWFLAKE_ROLE),
            table: env.identifier(&vars::SNOWFLAKE_TABLE),
            id_column: env.identifier(&vars::SNOWFLAKE_ID_COLUMN),
            country_column: env.identifier(&vars::SNOWFLAKE_COUNTRY_COLUMN),
            function_timeout_secs: env.number(&vars::FUNCTION_TIMEOUT_SECONDS),
            endpoint_url: env.url(&vars::SNOWFLAKE_ENDPOINT_URL),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP (local stack only).
    Disable,
    /// Encrypted, but neither the certificate chain nor the host name is checked.
    Require,
    /// Encrypted, chain checked against the CA bundle, host name not checked.
    VerifyCa,
    /// Encrypted, chain and host name checked. The default.
    VerifyFull,
}

impl FromStr for TlsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "disable" => Ok(Self::Disable),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            other => Err(format!(
                "must be one of disable, require, verify-ca, verify-full; got {other:?}"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Option<Secret>,
    /// `POSTGRES_SECRET_ARN`, whose user and password are filled in above;
    /// read again when Postgres refuses the password (a rotation).
    pub secret_arn: Option<String>,
    pub tls: TlsMode,
    /// PEM bundle of the CAs to trust; the system roots when unset.
    pub ca_bundle: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub schema: Identifier,
    pub table: Identifier,
}

impl PostgresConfig {
    fn read(env: &mut Env) -> Self {
        let tls = match env.optional(&vars::PGSSLMODE) {
            None => TlsMode::VerifyFull,
            Some(raw) => raw.parse().unwrap_or_else(|e: String| {
                env.problem(&vars::PGSSLMODE, e);
                TlsMode::VerifyFull
            }),
        };
        let ca_bundle = env.optional(&vars::PGSSLROOTCERT).map(PathBuf::from);
        if let Some(path) = &ca_bundle {
            if !path.is_file() {
                env.problem(
                    &vars::PGSSLROOTCERT,
                    format!("{} is not a readable file", path.display()),
                );
            }
        }
        Self {
            host: env.required(&vars::PGHOST),
            port: env.number(&vars::PGPORT),
            database: env.required(&vars::PGDATABASE),
            user: env.required(&vars::PGUSER),
            password: env.secret(&vars::PGPASSWORD),
            secret_arn: env.optional(&vars::POSTGRES_SECRET_ARN),
            tls,
            ca_bundle,
            connect_timeout: Duration::from_secs(env.number(&vars::PGCONNECT_TIMEOUT)),
            schema: env.identifier(&vars::POSTGRES_SCHEMA),
            table: env.identifier(&vars::POSTGRES_TABLE),
        }
    }
}

/// The safety margin before the invocation's deadline; None: the default
/// (`crate::deadline`).
fn deadline_margin(env: &mut Env) -> Option<Duration> {
    let seconds: u64 = env.number(&vars::DEADLINE_MARGIN_SECONDS);
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

/// Limits of one replicator run.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    /// Rows read from Snowflake per run (the cap).
    pub max_rows_per_run: usize,
    /// Rows per page of the run snapshot (one read, one delete).
    pub page_rows: usize,
    /// Rows per Postgres write.
    pub batch_size: usize,
    /// Circuit breaker: rows sent to the retry queue per run, at most.
    pub max_failures_per_run: usize,
    /// Attempts of a write that fails for a transient reason.
    pub write_attempts: u32,
}

impl RunLimits {
    fn read(env: &mut Env) -> Self {
        Self {
            max_rows_per_run: env.number(&vars::MAX_ROWS_PER_RUN),
            page_rows: env.number(&vars::SNOWFLAKE_PAGE_ROWS),
            batch_size: env.number(&vars::BATCH_SIZE),
            max_failures_per_run: env.number(&vars::MAX_FAILURES_PER_RUN),
            write_attempts: env.number(&vars::WRITE_ATTEMPTS),
        }
    }
}

impl Default for RunLimits {
    /// The declared defaults (an empty environment).
    fn default() -> Self {
        Self::read(&mut Env::from_map(Default::default()))
    }
}

/// Everything the `replicator` function needs.
#[derive(Debug, Clone)]
pub struct ReplicatorConfig {
    pub snowflake: SnowflakeConfig,
    pub postgres: PostgresConfig,
    pub retry_queue_url: String,
    pub limits: RunLimits,
    /// The further tables of `TABLES_FILE` (the replicator's; empty for the
    /// publisher, whose stream mode is `case`'s alone).
    pub tables: Vec<tables::TableMapping>,
    /// Safety margin before the invocation's deadline (None: the default).
    pub deadline_margin: Option<Duration>,
}

impl ReplicatorConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(Env::from_process())
    }

    pub fn from_vars(mut env: Env) -> Result<Self, ConfigError> {
        Self::read_from(&mut env)
    }

    /// Reads the configuration and leaves `env` to tell which variables were read.
    pub fn read_from(env: &mut Env) -> Result<Self, ConfigError> {
        let mut config = Self::read(env);
        config.tables = read_tables(env, &config.postgres, Some(&config.snowflake));
        env.finish(config)
    }

    /// The `case` table as a mapping ([`case_table`]).
    pub fn case_table(&self) -> tables::TableMapping {
        case_table(&self.snowflake, &self.postgres)
    }

    /// The replicator's variables (also the publisher's, [`stream`]).
    fn read(env: &mut Env) -> Self {
        Self {
            snowflake: SnowflakeConfig::read(env),
            postgres: PostgresConfig::read(env),
            retry_queue_url: env.url(&vars::RETRY_QUEUE_URL).unwrap_or_default(),
            limits: RunLimits::read(env),
            deadline_margin: deadline_margin(env),
            tables: Vec::new(),
        }
    }
}

/// The `case` table as a mapping, from the `SNOWFLAKE_*` and `POSTGRES_*`
/// variables: read from `SNOWFLAKE_TABLE` (in the session's database and
/// schema, as ever), written to `POSTGRES_TABLE`, its two columns
/// (`SNOWFLAKE_ID_COLUMN` into `country_id`, the key, and
/// `SNOWFLAKE_COUNTRY_COLUMN` into `country`, under the `country_code`
/// rule), named `case` in the logs, the metrics and the response and after
/// its Postgres table in the ledger (its run guard's), as ever, and capped
/// by `MAX_ROWS_PER_RUN`. The replicator runs it first,
/// beside the file's tables, as one of them; `countries tables` checks it
/// first.
pub fn case_table(snowflake: &SnowflakeConfig, postgres: &PostgresConfig) -> tables::TableMapping {
    let (id, country) = (
        snowflake.id_column.as_str().to_string(),
        snowflake.country_column.as_str().to_string(),
    );
    tables::TableMapping {
        name: tables::CASE.to_string(),
        source_database: None,
        source_schema: None,
        source_table: snowflake.table.as_str().to_string(),
        target_schema: postgres.schema.clone(),
        target_table: postgres.table.clone(),
        key: vec![CASE_ID.to_string()],
        columns: Some(vec![id.clone(), country.clone()]),
        renames: vec![
            (id, CASE_ID.to_string()),
            (country, CASE_COUNTRY.to_string()),
        ],
        rules: vec![(CASE_COUNTRY.to_string(), tables::Rule::CountryCode)],
        max_rows_per_run: None,
        is_case: true,
    }
}

/// The mapping file `TABLES_FILE` names, parsed; each of its problems is a
/// problem of the variable. A table of the file may not be `case` itself
/// ([`tables::parse_tables_beside`]; `source`: `case`'s Snowflake table,
/// where the function reads one).
fn read_tables(
    env: &mut Env,
    case: &PostgresConfig,
    source: Option<&SnowflakeConfig>,
) -> Vec<tables::TableMapping> {
    let Some(path) = env.optional(&vars::TABLES_FILE) else {
        return Vec::new();
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            env.problem(
                &vars::TABLES_FILE,
                format!("{path} is not a readable file: {e}"),
            );
            return Vec::new();
        }
    };
    let case = tables::CaseTable {
        source: source.map(|s| (s.database.as_str(), s.schema.as_str(), s.table.as_str())),
        target: (case.schema.as_str(), case.table.as_str()),
    };
    tables::parse_tables_beside(&text, &path, &case).unwrap_or_else(|problems| {
        for problem in problems {
            env.problem(&vars::TABLES_FILE, problem);
        }
        Vec::new()
    })
}

impl SnowflakeConfig {
    /// Only the Snowflake variables (operator commands).
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut env = Env::from_process();
        let config = Self::read(&mut env);
        env.finish(config)
    }
}

impl PostgresConfig {
    /// Only the Postgres variables (operator commands on the failure report).
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut env = Env::from_process();
        let config = Self::read(&mut env);
        env.finish(config)
    }
}

/// Everything the `retrier` function needs.
#[derive(Debug, Clone)]
pub struct RetrierConfig {
    pub postgres: PostgresConfig,
    /// The queue the retrier consumes, for stretching the visibility timeout
    /// of messages that failed again.
    pub retry_queue_url: String,
    /// First wait before a failed message is retried; doubles with every
    /// receive, up to the maximum. 0 leaves the queue's visibility timeout.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub write_attempts: u32,
    /// Safety margin before the invocation's deadline (None: the default).
    pub deadline_margin: Option<Duration>,
    /// The mapped tables of `TABLES_FILE`, whose rows it writes again.
    pub tables: Vec<tables::TableMapping>,
}

impl RetrierConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(Env::from_process())
    }

    pub fn from_vars(mut env: Env) -> Result<Self, ConfigError> {
        Self::read_from(&mut env)
    }

    /// Reads the configuration and leaves `env` to tell which variables were read.
    pub fn read_from(env: &mut Env) -> Result<Self, ConfigError> {
        let base = env.number(&vars::RETRY_BACKOFF_BASE_SECONDS);
        let max = env.number(&vars::RETRY_BACKOFF_MAX_SECONDS);
        if max < base {
            env.problem(
                &vars::RETRY_BACKOFF_MAX_SECONDS,
                format!("must not be below RETRY_BACKOFF_BASE_SECONDS ({base}), got {max}"),
            );
        }
        let postgres = PostgresConfig::read(env);
        let tables = read_tables(env, &postgres, None);
        let config = Self {
            postgres,
            retry_queue_url: env.url(&vars::RETRY_QUEUE_URL).unwrap_or_default(),
            backoff_base: Duration::from_secs(base),
            backoff_max: Duration::from_secs(max),
            write_attempts: env.number(&vars::WRITE_ATTEMPTS),
            deadline_margin: deadline_margin(env),
            tables,
        };
        env.finish(config)
    }
}

/// Everything the `dlq-reporter` function needs.
#[derive(Debug, Clone)]
pub struct ReporterConfig {
    pub postgres: PostgresConfig,
    pub dead_letter_queue_url: String,
    /// Stream mode's changes dead-letter queue, reported too when set.
    pub changes_dead_letter_queue_url: Option<String>,
    pub sender: String,
    pub recipients: Vec<String>,
    /// Messages taken from the dead-letter queue per run, at most.
    pub max_messages: usize,
    /// Records listed in the email body; all of them are in the CSV.
    pub email_rows: usize,
    /// Safety margin before the invocation's deadline (None: the default).
    pub deadline_margin: Option<Duration>,
}

/// SES refuses more than 50 recipients per message.
pub const MAX_RECIPIENTS: usize = 50;

fn looks_like_email(value: &str) -> bool {
    let mut parts = value.split('@');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(local), Some(domain), None)
            if !local.is_empty() && domain.contains('.') && !value.contains(char::is_whitespace)
    )
}

impl ReporterConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(Env::from_process())
    }

    pub fn from_vars(mut env: Env) -> Result<Self, ConfigError> {
        Self::read_from(&mut env)
    }

    /// Reads the configuration and leaves `env` to tell which variables were read.
    pub fn read_from(env: &mut Env) -> Result<Self, ConfigError> {
        let sender = env.required(&vars::REPORT_SENDER);
        if !sender.is_empty() && !looks_like_email(&sender) {
            env.problem(
                &vars::REPORT_SENDER,
                format!("{sender:?} is not an email address"),
            );
        }
        let raw = env.required(&vars::REPORT_RECIPIENTS);
        let recipients: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect();
        if !raw.is_empty() && recipients.is_empty() {
            // Only commas: a digest nobody receives would be a silent failure.
            env.problem(&vars::REPORT_RECIPIENTS, format!("no address in {raw:?}"));
        }
        if let Some(bad) = recipients.iter().find(|r| !looks_like_email(r)) {
            env.problem(
                &vars::REPORT_RECIPIENTS,
                format!("{bad:?} is not an email address"),
            );
        }
        if recipients.len() > MAX_RECIPIENTS {
            env.problem(
                &vars::REPORT_RECIPIENTS,
                format!(
                    "{} addresses; SES allows {MAX_RECIPIENTS} per message",
                    recipients.len()
                ),
            );
        }
        let config = Self {
            postgres: PostgresConfig::read(env),
            dead_letter_queue_url: env.url(&vars::DEAD_LETTER_QUEUE_URL).unwrap_or_default(),
            changes_dead_letter_queue_url: env.url(&vars::CHANGES_DEAD_LETTER_QUEUE_URL),
            sender,
            recipients,
            max_messages: env.number(&vars::REPORT_MAX_MESSAGES),
            email_rows: env.number(&vars::REPORT_EMAIL_ROWS),
            deadline_margin: deadline_margin(env),
        };
        env.finish(config)
    }
}
