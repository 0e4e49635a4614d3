//! All configuration comes from the environment and is read here, once, at start-up.
//!
//! Every problem found is reported at once, each naming its variable, so that a
//! deploy with three mistakes needs one fix round, not three. Secrets are held in
//! [`Secret`], whose `Debug` never shows the value.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::ident::Identifier;

/// A value that must never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub variable: &'static str,
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration:")?;
        for p in &self.problems {
            write!(f, " {}: {};", p.variable, p.problem)?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub fn mentions(&self, variable: &str) -> bool {
        self.problems.iter().any(|p| p.variable == variable)
    }
}

/// A snapshot of the environment that collects problems while it is read,
/// and remembers which variables were read (the template contract test uses
/// that to catch a variable the template sets but no code reads).
pub struct Env {
    vars: HashMap<String, String>,
    problems: Vec<ConfigProblem>,
    read: std::cell::RefCell<std::collections::BTreeSet<&'static str>>,
}

impl Env {
    pub fn from_process() -> Self {
        Self::from_map(std::env::vars().collect())
    }

    pub fn from_map(vars: HashMap<String, String>) -> Self {
        Self {
            vars,
            problems: Vec::new(),
            read: Default::default(),
        }
    }

    /// The variables read so far.
    pub fn variables_read(&self) -> Vec<&'static str> {
        self.read.borrow().iter().copied().collect()
    }

    fn problem(&mut self, variable: &'static str, problem: impl Into<String>) {
        self.problems.push(ConfigProblem {
            variable,
            problem: problem.into(),
        });
    }

    /// The trimmed value, or None when unset or blank.
    fn optional(&self, variable: &'static str) -> Option<String> {
        self.read.borrow_mut().insert(variable);
        self.vars
            .get(variable)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn required(&mut self, variable: &'static str) -> String {
        match self.optional(variable) {
            Some(value) => value,
            None => {
                self.problem(variable, "is required but not set (or blank)");
                String::new()
            }
        }
    }

    fn secret(&mut self, variable: &'static str) -> Option<Secret> {
        self.read.borrow_mut().insert(variable);
        // Secrets are not trimmed: a password may end in a space.
        self.vars
            .get(variable)
            .filter(|v| !v.is_empty())
            .map(|v| Secret::new(v.clone()))
    }

    fn number<T>(&mut self, variable: &'static str, default: T, min: T, max: T) -> T
    where
        T: FromStr + PartialOrd + Copy + fmt::Display,
    {
        let Some(raw) = self.optional(variable) else {
            return default;
        };
        match raw.parse::<T>() {
            Ok(value) if value >= min && value <= max => value,
            Ok(_) => {
                self.problem(
                    variable,
                    format!("must be between {min} and {max}, got {raw:?}"),
                );
                default
            }
            Err(_) => {
                self.problem(variable, format!("must be a whole number, got {raw:?}"));
                default
            }
        }
    }

    fn identifier(&mut self, variable: &'static str, default: &str) -> Identifier {
        let raw = self
            .optional(variable)
            .unwrap_or_else(|| default.to_string());
        match Identifier::parse(&raw) {
            Ok(ident) => ident,
            Err(e) => {
                self.problem(variable, e.to_string());
                Identifier::parse(default).unwrap_or_else(|_| Identifier::fallback())
            }
        }
    }

    fn url(&mut self, variable: &'static str, required: bool) -> Option<String> {
        let value = if required {
            Some(self.required(variable))
        } else {
            self.optional(variable)
        }?;
        if value.is_empty() {
            return None;
        }
        if !(value.starts_with("http://") || value.starts_with("https://"))
            || reqwest::Url::parse(&value).is_err()
        {
            self.problem(
                variable,
                format!("must be an http:// or https:// URL, got {value:?}"),
            );
            return None;
        }
        Some(value)
    }

    fn finish<T>(&mut self, value: T) -> Result<T, ConfigError> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError {
                problems: std::mem::take(&mut self.problems),
            })
        }
    }
}

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
    /// Local emulator only: send every request here instead of
    /// `https://{account}.snowflakecomputing.com`.
    pub endpoint_url: Option<String>,
    /// Rows per DELETE statement.
    pub delete_chunk_rows: usize,
}

impl SnowflakeConfig {
    fn read(env: &mut Env) -> Self {
        let account = env.required("SNOWFLAKE_ACCOUNT");
        let user = env.required("SNOWFLAKE_USER");
        let password = env.secret("SNOWFLAKE_PASSWORD");
        let private_key = env.secret("SNOWFLAKE_PRIVATE_KEY");
        let auth = match (password, private_key) {
            (Some(p), None) => SnowflakeAuth::Password(p),
            (None, Some(k)) => {
                if !k.expose().contains("-----BEGIN PRIVATE KEY-----") {
                    env.problem(
                        "SNOWFLAKE_PRIVATE_KEY",
                        "must be an unencrypted PKCS#8 PEM key (-----BEGIN PRIVATE KEY-----)",
                    );
                }
                SnowflakeAuth::PrivateKey(k)
            }
            (Some(p), Some(_)) => {
                env.problem(
                    "SNOWFLAKE_PASSWORD",
                    "set together with SNOWFLAKE_PRIVATE_KEY: choose one authentication method",
                );
                SnowflakeAuth::Password(p)
            }
            (None, None) => {
                env.problem(
                    "SNOWFLAKE_PASSWORD",
                    "neither SNOWFLAKE_PASSWORD nor SNOWFLAKE_PRIVATE_KEY is set",
                );
                SnowflakeAuth::Password(Secret::new(""))
            }
        };
        Self {
            account,
            user,
            auth,
            warehouse: env.optional("SNOWFLAKE_WAREHOUSE"),
            database: env.required("SNOWFLAKE_DATABASE"),
            schema: env.required("SNOWFLAKE_SCHEMA"),
            role: env.optional("SNOWFLAKE_ROLE"),
            table: env.identifier("SNOWFLAKE_TABLE", "case"),
            endpoint_url: env.url("SNOWFLAKE_ENDPOINT_URL", false),
            delete_chunk_rows: env.number("SNOWFLAKE_DELETE_CHUNK_ROWS", 5_000, 1, 16_384),
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
    pub tls: TlsMode,
    /// PEM bundle of the CAs to trust; the system roots when unset.
    pub ca_bundle: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub schema: Identifier,
    pub table: Identifier,
}

impl PostgresConfig {
    fn read(env: &mut Env) -> Self {
        let tls = match env.optional("PGSSLMODE") {
            None => TlsMode::VerifyFull,
            Some(raw) => raw.parse().unwrap_or_else(|e: String| {
                env.problem("PGSSLMODE", e);
                TlsMode::VerifyFull
            }),
        };
        let ca_bundle = env.optional("PGSSLROOTCERT").map(PathBuf::from);
        if let Some(path) = &ca_bundle {
            if !path.is_file() {
                env.problem(
                    "PGSSLROOTCERT",
                    format!("{} is not a readable file", path.display()),
                );
            }
        }
        Self {
            host: env.required("PGHOST"),
            port: env.number("PGPORT", 5432, 1, u16::MAX),
            database: env.required("PGDATABASE"),
            user: env.required("PGUSER"),
            password: env.secret("PGPASSWORD"),
            tls,
            ca_bundle,
            connect_timeout: Duration::from_secs(env.number("PGCONNECT_TIMEOUT", 10, 1, 300)),
            schema: env.identifier("POSTGRES_SCHEMA", "public"),
            table: env.identifier("POSTGRES_TABLE", "case"),
        }
    }
}

/// Limits of one replicator run.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    /// Rows read from Snowflake per run (the cap).
    pub max_rows_per_run: usize,
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
            max_rows_per_run: env.number("MAX_ROWS_PER_RUN", 100_000, 1, 10_000_000),
            batch_size: env.number("BATCH_SIZE", 50_000, 1, 100_000),
            max_failures_per_run: env.number("MAX_FAILURES_PER_RUN", 1_000, 0, 100_000),
            write_attempts: env.number("WRITE_ATTEMPTS", 3, 1, 10),
        }
    }
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_rows_per_run: 100_000,
            batch_size: 50_000,
            max_failures_per_run: 1_000,
            write_attempts: 3,
        }
    }
}

/// Everything the `replicator` function needs.
#[derive(Debug, Clone)]
pub struct ReplicatorConfig {
    pub snowflake: SnowflakeConfig,
    pub postgres: PostgresConfig,
    pub retry_queue_url: String,
    pub limits: RunLimits,
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
        let config = Self {
            snowflake: SnowflakeConfig::read(env),
            postgres: PostgresConfig::read(env),
            retry_queue_url: env.url("RETRY_QUEUE_URL", true).unwrap_or_default(),
            limits: RunLimits::read(env),
        };
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
            retry_queue_url: env.url("RETRY_QUEUE_URL", true).unwrap_or_default(),
            dead_letter_queue_url: env.url("DEAD_LETTER_QUEUE_URL", true).unwrap_or_default(),
        };
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
        let base = env.number("RETRY_BACKOFF_BASE_SECONDS", 30u64, 0, 43_200);
        let max = env.number("RETRY_BACKOFF_MAX_SECONDS", 900u64, 0, 43_200);
        if max < base {
            env.problem(
                "RETRY_BACKOFF_MAX_SECONDS",
                format!("must not be below RETRY_BACKOFF_BASE_SECONDS ({base}), got {max}"),
            );
        }
        let config = Self {
            postgres: PostgresConfig::read(env),
            retry_queue_url: env.url("RETRY_QUEUE_URL", true).unwrap_or_default(),
            backoff_base: Duration::from_secs(base),
            backoff_max: Duration::from_secs(max),
            write_attempts: env.number("WRITE_ATTEMPTS", 3, 1, 10),
        };
        env.finish(config)
    }
}

/// Everything the `dlq-reporter` function needs.
#[derive(Debug, Clone)]
pub struct ReporterConfig {
    pub postgres: PostgresConfig,
    pub dead_letter_queue_url: String,
    pub sender: String,
    pub recipients: Vec<String>,
    /// Messages taken from the dead-letter queue per run, at most.
    pub max_messages: usize,
    /// Records listed in the email body; all of them are in the CSV.
    pub email_rows: usize,
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
        let sender = env.required("REPORT_SENDER");
        if !sender.is_empty() && !looks_like_email(&sender) {
            env.problem(
                "REPORT_SENDER",
                format!("{sender:?} is not an email address"),
            );
        }
        let raw = env.required("REPORT_RECIPIENTS");
        let recipients: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect();
        if !raw.is_empty() && recipients.is_empty() {
            // Only commas: a digest nobody receives would be a silent failure.
            env.problem("REPORT_RECIPIENTS", format!("no address in {raw:?}"));
        }
        if let Some(bad) = recipients.iter().find(|r| !looks_like_email(r)) {
            env.problem(
                "REPORT_RECIPIENTS",
                format!("{bad:?} is not an email address"),
            );
        }
        if recipients.len() > MAX_RECIPIENTS {
            env.problem(
                "REPORT_RECIPIENTS",
                format!(
                    "{} addresses; SES allows {MAX_RECIPIENTS} per message",
                    recipients.len()
                ),
            );
        }
        let config = Self {
            postgres: PostgresConfig::read(env),
            dead_letter_queue_url: env.url("DEAD_LETTER_QUEUE_URL", true).unwrap_or_default(),
            sender,
            recipients,
            max_messages: env.number("REPORT_MAX_MESSAGES", 1_000, 1, 100_000),
            email_rows: env.number("REPORT_EMAIL_ROWS", 50, 1, 1_000),
        };
        env.finish(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> HashMap<String, String> {
        [
            ("SNOWFLAKE_ACCOUNT", "acme-prod"),
            ("SNOWFLAKE_USER", "replicator"),
            ("SNOWFLAKE_PASSWORD", "hunter2"),
            ("SNOWFLAKE_DATABASE", "ANALYTICS"),
            ("SNOWFLAKE_SCHEMA", "PUBLIC"),
            ("PGHOST", "db.internal"),
            ("PGDATABASE", "countries"),
            ("PGUSER", "replicator"),
            ("PGPASSWORD", "s3cret"),
            (
                "RETRY_QUEUE_URL",
                "https://sqs.eu-west-1.amazonaws.com/123/retry",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn read(vars: HashMap<String, String>) -> Result<ReplicatorConfig, ConfigError> {
        ReplicatorConfig::from_vars(Env::from_map(vars))
    }

    #[test]
    fn defaults_are_safe_for_the_cloud() {
        let config = read(valid()).expect("valid config");
        assert_eq!(config.postgres.tls, TlsMode::VerifyFull);
        assert_eq!(config.postgres.port, 5432);
        assert_eq!(config.postgres.table.as_str(), "case");
        assert_eq!(config.snowflake.table.as_str(), "case");
        assert_eq!(config.limits.max_rows_per_run, 100_000);
        assert!(config.snowflake.endpoint_url.is_none());
    }

    #[test]
    fn every_missing_variable_is_named_at_once() {
        let err = read(HashMap::new()).unwrap_err();
        for var in [
            "SNOWFLAKE_ACCOUNT",
            "SNOWFLAKE_USER",
            "SNOWFLAKE_PASSWORD",
            "SNOWFLAKE_DATABASE",
            "SNOWFLAKE_SCHEMA",
            "PGHOST",
            "PGDATABASE",
            "PGUSER",
            "RETRY_QUEUE_URL",
        ] {
            assert!(err.mentions(var), "{var} not reported in: {err}");
        }
    }

    #[test]
    fn malformed_values_are_rejected_with_their_variable() {
        let cases = [
            ("MAX_ROWS_PER_RUN", "0"),
            ("MAX_ROWS_PER_RUN", "lots"),
            ("BATCH_SIZE", "-5"),
            ("BATCH_SIZE", "1000001"),
            ("MAX_FAILURES_PER_RUN", "1e3"),
            ("PGPORT", "70000"),
            ("PGSSLMODE", "verify_full"),
            ("POSTGRES_TABLE", "case; drop table x"),
            ("SNOWFLAKE_TABLE", "\"case\""),
            ("RETRY_QUEUE_URL", "sqs://queue"),
            ("SNOWFLAKE_ENDPOINT_URL", "localhost:8080"),
            ("PGSSLROOTCERT", "/nonexistent/ca.pem"),
            ("SNOWFLAKE_DELETE_CHUNK_ROWS", "100000"),
        ];
        for (var, value) in cases {
            let mut vars = valid();
            vars.insert(var.to_string(), value.to_string());
            let err = read(vars).expect_err(var);
            assert!(err.mentions(var), "{var}={value:?} not reported: {err}");
            assert_eq!(err.problems.len(), 1, "{var}={value:?}: {err}");
        }
    }

    #[test]
    fn two_snowflake_auth_methods_are_refused() {
        let mut vars = valid();
        vars.insert(
            "SNOWFLAKE_PRIVATE_KEY".into(),
            "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----".into(),
        );
        assert!(read(vars).unwrap_err().mentions("SNOWFLAKE_PASSWORD"));
    }

    #[test]
    fn retrier_and_reporter_configs_name_their_variables() {
        let mut vars = valid();
        vars.insert("RETRY_BACKOFF_BASE_SECONDS".into(), "60".into());
        vars.insert("RETRY_BACKOFF_MAX_SECONDS".into(), "30".into());
        let err = RetrierConfig::from_vars(Env::from_map(vars)).unwrap_err();
        assert!(err.mentions("RETRY_BACKOFF_MAX_SECONDS"), "{err}");

        let err = ReporterConfig::from_vars(Env::from_map(valid())).unwrap_err();
        for var in [
            "REPORT_SENDER",
            "REPORT_RECIPIENTS",
            "DEAD_LETTER_QUEUE_URL",
        ] {
            assert!(err.mentions(var), "{var}: {err}");
        }
        let mut vars = valid();
        vars.insert("REPORT_SENDER".into(), "ops@example.com".into());
        vars.insert(
            "REPORT_RECIPIENTS".into(),
            "a@example.com, not-an-address".into(),
        );
        vars.insert("DEAD_LETTER_QUEUE_URL".into(), "http://localhost/q".into());
        let err = ReporterConfig::from_vars(Env::from_map(vars.clone())).unwrap_err();
        assert!(
            err.mentions("REPORT_RECIPIENTS") && err.problems.len() == 1,
            "{err}"
        );
        vars.insert(
            "REPORT_RECIPIENTS".into(),
            "a@example.com, b@example.org".into(),
        );
        let ok = ReporterConfig::from_vars(Env::from_map(vars)).unwrap();
        assert_eq!(ok.recipients, vec!["a@example.com", "b@example.org"]);
    }

    #[test]
    fn secrets_never_show_in_debug_or_errors() {
        let config = read(valid()).expect("valid config");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );

        let mut vars = valid();
        vars.insert("PGPORT".into(), "nope".into());
        let err = read(vars).unwrap_err().to_string();
        assert!(!err.contains("hunter2") && !err.contains("s3cret"), "{err}");
    }

    /// What a variable accepts, for the configuration corpus below.
    #[derive(Debug, Clone, Copy)]
    enum Rule {
        /// Must be set; any non-blank text (a wrong value fails at the first
        /// connection, naming the service).
        RequiredText,
        /// May be unset; any text.
        OptionalText,
        /// A whole number in `min..=max`, with a default when unset.
        Number {
            min: i64,
            max: i64,
        },
        RequiredUrl,
        OptionalUrl,
        /// A plain SQL identifier, with a default when unset.
        Identifier,
        /// One of disable | require | verify-ca | verify-full.
        SslMode,
        /// A readable file.
        File,
        Email,
        EmailList,
        /// SNOWFLAKE_PASSWORD or SNOWFLAKE_PRIVATE_KEY: exactly one.
        SnowflakeAuth,
    }

    /// Every variable any function reads. The README's configuration table
    /// and "Reliability" corpus follow it; a variable added to the code but
    /// not here fails `the_corpus_covers_every_variable`.
    const VARIABLES: &[(&str, Rule)] = &[
        ("SNOWFLAKE_ACCOUNT", Rule::RequiredText),
        ("SNOWFLAKE_USER", Rule::RequiredText),
        ("SNOWFLAKE_PASSWORD", Rule::SnowflakeAuth),
        ("SNOWFLAKE_PRIVATE_KEY", Rule::SnowflakeAuth),
        ("SNOWFLAKE_WAREHOUSE", Rule::OptionalText),
        ("SNOWFLAKE_DATABASE", Rule::RequiredText),
        ("SNOWFLAKE_SCHEMA", Rule::RequiredText),
        ("SNOWFLAKE_ROLE", Rule::OptionalText),
        ("SNOWFLAKE_TABLE", Rule::Identifier),
        ("SNOWFLAKE_ENDPOINT_URL", Rule::OptionalUrl),
        (
            "SNOWFLAKE_DELETE_CHUNK_ROWS",
            Rule::Number {
                min: 1,
                max: 16_384,
            },
        ),
        ("PGSSLMODE", Rule::SslMode),
        ("PGSSLROOTCERT", Rule::File),
        ("PGHOST", Rule::RequiredText),
        (
            "PGPORT",
            Rule::Number {
                min: 1,
                max: 65_535,
            },
        ),
        ("PGDATABASE", Rule::RequiredText),
        ("PGUSER", Rule::RequiredText),
        ("PGPASSWORD", Rule::OptionalText),
        ("PGCONNECT_TIMEOUT", Rule::Number { min: 1, max: 300 }),
        ("POSTGRES_SCHEMA", Rule::Identifier),
        ("POSTGRES_TABLE", Rule::Identifier),
        (
            "MAX_ROWS_PER_RUN",
            Rule::Number {
                min: 1,
                max: 10_000_000,
            },
        ),
        (
            "BATCH_SIZE",
            Rule::Number {
                min: 1,
                max: 100_000,
            },
        ),
        (
            "MAX_FAILURES_PER_RUN",
            Rule::Number {
                min: 0,
                max: 100_000,
            },
        ),
        ("WRITE_ATTEMPTS", Rule::Number { min: 1, max: 10 }),
        ("RETRY_QUEUE_URL", Rule::RequiredUrl),
        ("DEAD_LETTER_QUEUE_URL", Rule::RequiredUrl),
        (
            "RETRY_BACKOFF_BASE_SECONDS",
            Rule::Number {
                min: 0,
                max: 43_200,
            },
        ),
        (
            "RETRY_BACKOFF_MAX_SECONDS",
            Rule::Number {
                min: 0,
                max: 43_200,
            },
        ),
        ("REPORT_SENDER", Rule::Email),
        ("REPORT_RECIPIENTS", Rule::EmailList),
        (
            "REPORT_MAX_MESSAGES",
            Rule::Number {
                min: 1,
                max: 100_000,
            },
        ),
        ("REPORT_EMAIL_ROWS", Rule::Number { min: 1, max: 1_000 }),
    ];

    fn valid_for_all() -> HashMap<String, String> {
        let mut vars = valid();
        for (k, v) in [
            (
                "DEAD_LETTER_QUEUE_URL",
                "https://sqs.eu-west-1.amazonaws.com/123/dlq",
            ),
            ("REPORT_SENDER", "ops@example.com"),
            ("REPORT_RECIPIENTS", "a@example.com"),
            // The pair must keep base <= max at both ends of each range.
            ("RETRY_BACKOFF_BASE_SECONDS", "0"),
            ("RETRY_BACKOFF_MAX_SECONDS", "43200"),
        ] {
            vars.insert(k.into(), v.into());
        }
        vars
    }

    /// Reads the configuration of every function that reads `variable`;
    /// returns each outcome, and the variables read.
    fn read_all(
        vars: &HashMap<String, String>,
    ) -> (Vec<Result<(), ConfigError>>, Vec<&'static str>) {
        let mut results = Vec::new();
        let mut read = Vec::new();
        let mut env = Env::from_map(vars.clone());
        results.push(ReplicatorConfig::read_from(&mut env).map(drop));
        read.extend(env.variables_read());
        let mut env = Env::from_map(vars.clone());
        results.push(RetrierConfig::read_from(&mut env).map(drop));
        read.extend(env.variables_read());
        let mut env = Env::from_map(vars.clone());
        results.push(ReporterConfig::read_from(&mut env).map(drop));
        read.extend(env.variables_read());
        (results, read)
    }

    #[test]
    fn the_corpus_covers_every_variable() {
        let (results, read) = read_all(&valid_for_all());
        for r in &results {
            assert!(r.is_ok(), "{r:?}");
        }
        let mut read: Vec<&str> = read;
        read.sort_unstable();
        read.dedup();
        let mut listed: Vec<&str> = VARIABLES.iter().map(|(v, _)| *v).collect();
        listed.sort_unstable();
        assert_eq!(read, listed);
    }

    /// Every variable missing, empty, malformed and out of range: each case
    /// either falls back to the documented default or is refused with an
    /// error that names that variable (and only it), never a panic, never a
    /// secret in the message.
    #[test]
    fn every_variable_missing_empty_malformed_or_out_of_range() {
        let mut tried = 0;
        for (variable, rule) in VARIABLES {
            let refused: Vec<(&str, String)> = match rule {
                Rule::RequiredText | Rule::RequiredUrl | Rule::Email | Rule::EmailList => {
                    vec![("missing", String::new()), ("empty", " ".into())]
                }
                _ => vec![],
            };
            let mut refused = refused;
            let mut accepted: Vec<(&str, String)> = Vec::new();
            match rule {
                Rule::RequiredText => accepted.push(("any text", "x-y_z.1".into())),
                Rule::OptionalText => {
                    accepted.extend([("missing", String::new()), ("empty", String::new())])
                }
                Rule::Number { min, max } => {
                    accepted.extend([("missing", String::new()), ("empty", " ".into())]);
                    accepted.extend([("minimum", min.to_string()), ("maximum", max.to_string())]);
                    refused.extend([
                        ("below the range", (min - 1).to_string()),
                        ("above the range", (max + 1).to_string()),
                        ("not a number", "lots".into()),
                        ("a fraction", "1.5".into()),
                        ("huge", "99999999999999999999999".into()),
                    ]);
                }
                Rule::RequiredUrl | Rule::OptionalUrl => {
                    refused.extend([
                        ("not http", "sqs://queue".into()),
                        ("no scheme", "localhost:8080".into()),
                        ("junk", "http://[::1".into()),
                    ]);
                }
                Rule::Identifier => {
                    accepted.extend([("missing", String::new()), ("empty", " ".into())]);
                    refused.extend([
                        ("quoted", "\"case\"".into()),
                        ("SQL", "case; drop table x".into()),
                        ("too long", "a".repeat(300)),
                    ]);
                }
                Rule::SslMode => {
                    accepted.push(("missing", String::new()));
                    refused.extend([("unknown", "verify_full".into()), ("junk", "\u{7}".into())]);
                }
                Rule::File => {
                    accepted.push(("missing", String::new()));
                    refused.extend([
                        ("no such file", "/nonexistent/ca.pem".into()),
                        ("a folder", "/".into()),
                    ]);
                }
                Rule::Email => refused.extend([
                    ("not an address", "nobody".into()),
                    ("two @", "a@b@c.d".into()),
                ]),
                Rule::EmailList => refused.extend([
                    ("one bad address", "a@example.com, nope".into()),
                    ("only commas", ",,".into()),
                    ("too many", vec!["a@example.com"; 51].join(",")),
                ]),
                Rule::SnowflakeAuth => {}
            }
            for (case, value) in &accepted {
                let mut vars = valid_for_all();
                if *case == "missing" {
                    vars.remove(*variable);
                } else {
                    vars.insert(variable.to_string(), value.clone());
                }
                let (results, _) = read_all(&vars);
                for r in results {
                    assert!(r.is_ok(), "{variable} {case} ({value:?}): {r:?}");
                }
                tried += 1;
            }
            for (case, value) in &refused {
                let mut vars = valid_for_all();
                if *case == "missing" {
                    vars.remove(*variable);
                } else {
                    vars.insert(variable.to_string(), value.clone());
                }
                let (results, read) = read_all(&vars);
                let errors: Vec<ConfigError> =
                    results.into_iter().filter_map(Result::err).collect();
                assert!(
                    !errors.is_empty(),
                    "{variable} {case} ({value:?}) was accepted"
                );
                assert!(read.contains(variable));
                for err in errors {
                    assert!(err.mentions(variable), "{variable} {case}: {err}");
                    assert_eq!(err.problems.len(), 1, "{variable} {case}: {err}");
                    let shown = err.to_string();
                    assert!(
                        !shown.contains("hunter2") && !shown.contains("s3cret"),
                        "{shown}"
                    );
                }
                tried += 1;
            }
        }
        // The authentication pair: neither, both, and a key that is not PEM.
        let mut neither = valid_for_all();
        neither.remove("SNOWFLAKE_PASSWORD");
        let mut both = valid_for_all();
        both.insert(
            "SNOWFLAKE_PRIVATE_KEY".into(),
            "-----BEGIN PRIVATE KEY-----".into(),
        );
        let mut not_pem = neither.clone();
        not_pem.insert("SNOWFLAKE_PRIVATE_KEY".into(), "hunter2".into());
        for (vars, variable) in [
            (neither, "SNOWFLAKE_PASSWORD"),
            (both, "SNOWFLAKE_PASSWORD"),
            (not_pem, "SNOWFLAKE_PRIVATE_KEY"),
        ] {
            let err = ReplicatorConfig::from_vars(Env::from_map(vars)).unwrap_err();
            assert!(err.mentions(variable) && err.problems.len() == 1, "{err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
            tried += 1;
        }
        assert!(tried >= 172, "{tried} cases: a case was dropped");
    }
}
