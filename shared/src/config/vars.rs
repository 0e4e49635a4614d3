//! Every environment variable the functions read, declared once: its name,
//! what it accepts, its default, what it means, and which functions read it.
//!
//! The readers in [`crate::config`] take ranges and defaults from here; the
//! configuration corpus test tries every entry; the README's configuration
//! table is generated from [`ALL`] (a test fails when the two drift apart).

/// A Lambda function of the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Replicator,
    Retrier,
    Reporter,
    /// Stream mode: `case`'s own run, publishing to the changes queue.
    Publisher,
    /// Stream mode: writes the changes queue's batches.
    Writer,
}

impl Function {
    /// The function's name: its folder under `functions/`, its binary, its
    /// `Function` metric dimension and its column in `countries status`.
    /// Every other spelling in the code comes from here.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Replicator => "replicator",
            Self::Retrier => "retrier",
            Self::Reporter => "dlq-reporter",
            Self::Publisher => "publisher",
            Self::Writer => "writer",
        }
    }
}

/// What a variable accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Must be set; any non-blank text (a wrong value fails at the first
    /// connection, naming the service).
    RequiredText,
    /// May be unset; any text. `default` says what applies then.
    OptionalText {
        default: &'static str,
    },
    /// A password: may be unset, never trimmed, never shown.
    Password,
    /// A whole number in `min..=max`.
    Number {
        min: i64,
        max: i64,
        default: i64,
    },
    RequiredUrl,
    OptionalUrl,
    /// A plain SQL identifier (letters, digits, `_`), always quoted.
    Identifier {
        default: &'static str,
    },
    /// One of disable | require | verify-ca | verify-full.
    SslMode,
    /// A readable file; `default` says what applies when unset.
    File {
        default: &'static str,
    },
    Email,
    EmailList,
    /// `SNOWFLAKE_PASSWORD` or `SNOWFLAKE_PRIVATE_KEY`: exactly one.
    SnowflakeAuth,
    /// The ARN of a Secrets Manager secret, resolved at cold start into the
    /// variables it names (`countries_secrets`), before the configuration is read.
    SecretArn,
}

/// One environment variable.
#[derive(Debug, Clone, Copy)]
pub struct Var {
    pub name: &'static str,
    pub rule: Rule,
    pub meaning: &'static str,
    pub read_by: &'static [Function],
}

use Function::{Publisher, Replicator, Reporter, Retrier, Writer};

const ALL_FUNCTIONS: &[Function] = &[Replicator, Retrier, Reporter, Publisher, Writer];

macro_rules! vars {
    ($($ident:ident: $rule:expr, [$($f:ident),*], $meaning:expr;)*) => {
        $(pub const $ident: Var = Var {
            name: stringify!($ident),
            rule: $rule,
            meaning: $meaning,
            read_by: &[$($f),*],
        };)*
        /// Every variable, in the README's order.
        pub const ALL: &[Var] = &[$($ident),*];
    };
}

vars! {
    SNOWFLAKE_ACCOUNT: Rule::RequiredText, [Replicator, Publisher],
        "account identifier (`orgname-account`)";
    SNOWFLAKE_USER: Rule::RequiredText, [Replicator, Publisher], "user";
    SNOWFLAKE_PASSWORD: Rule::SnowflakeAuth, [Replicator, Publisher],
        "password authentication (set this or `SNOWFLAKE_PRIVATE_KEY`)";
    SNOWFLAKE_PRIVATE_KEY: Rule::SnowflakeAuth, [Replicator, Publisher],
        "key-pair authentication: unencrypted PKCS#8 PEM (set this or `SNOWFLAKE_PASSWORD`)";
    SNOWFLAKE_PRIVATE_KEY_SECRET_ARN: Rule::SecretArn, [Replicator, Publisher],
        "Secrets Manager secret holding the PEM key (or JSON with `private_key`); fills `SNOWFLAKE_PRIVATE_KEY`";
    SNOWFLAKE_WAREHOUSE: Rule::OptionalText { default: "user default" }, [Replicator, Publisher], "warehouse";
    SNOWFLAKE_DATABASE: Rule::RequiredText, [Replicator, Publisher], "database of the source table";
    SNOWFLAKE_SCHEMA: Rule::RequiredText, [Replicator, Publisher], "schema of the source table";
    SNOWFLAKE_ROLE: Rule::OptionalText { default: "user default" }, [Replicator, Publisher],
        "role (needs USAGE on the warehouse, database and schema, SELECT and DELETE on the table; `infra/sql/snowflake/deploy/access.sql`)";
    SNOWFLAKE_TABLE: Rule::Identifier { default: "case" }, [Replicator, Publisher],
        "source table; always quoted (case-sensitive)";
    SNOWFLAKE_ID_COLUMN: Rule::Identifier { default: "COUNTRY_ID" }, [Replicator, Publisher],
        "the table's key column (integer); always quoted (case-sensitive)";
    SNOWFLAKE_COUNTRY_COLUMN: Rule::Identifier { default: "COUNTRY" }, [Replicator, Publisher],
        "the table's country column (text); always quoted (case-sensitive)";
    FUNCTION_TIMEOUT_SECONDS: Rule::Number { min: 10, max: 900, default: 300 }, [Replicator, Publisher],
        "the function's timeout as deployed (the template sets it): Snowflake's `STATEMENT_TIMEOUT_IN_SECONDS` and `LOCK_TIMEOUT` are set to 90 % of it at every login";
    SNOWFLAKE_ENDPOINT_URL: Rule::OptionalUrl, [Replicator, Publisher],
        "send requests here instead of `https://{account}.snowflakecomputing.com`: a regional or PrivateLink host (`https://xy12345.eu-west-1.privatelink.snowflakecomputing.com`), or the local emulator";
    PGHOST: Rule::RequiredText, [Replicator, Retrier, Reporter, Publisher, Writer], "Postgres host";
    PGPORT: Rule::Number { min: 1, max: 65_535, default: 5_432 }, [Replicator, Retrier, Reporter, Publisher, Writer], "port";
    PGDATABASE: Rule::RequiredText, [Replicator, Retrier, Reporter, Publisher, Writer], "database";
    PGUSER: Rule::RequiredText, [Replicator, Retrier, Reporter, Publisher, Writer], "user";
    PGPASSWORD: Rule::Password, [Replicator, Retrier, Reporter, Publisher, Writer], "password";
    POSTGRES_SECRET_ARN: Rule::SecretArn, [Replicator, Retrier, Reporter, Publisher, Writer],
        "Secrets Manager secret with `username` and `password` (and optionally `host`, `port`, `dbname`), the RDS format; fills the `PG*` variables not set";
    PGSSLMODE: Rule::SslMode, [Replicator, Retrier, Reporter, Publisher, Writer],
        "`disable`, `require` (encrypt, no checks), `verify-ca` (check the chain), `verify-full` (chain and host name)";
    PGSSLROOTCERT: Rule::File { default: "system roots" }, [Replicator, Retrier, Reporter, Publisher, Writer],
        "PEM bundle of the CAs to trust (for RDS: Amazon's global bundle); when set, only these CAs are trusted";
    PGCONNECT_TIMEOUT: Rule::Number { min: 1, max: 300, default: 10 }, [Replicator, Retrier, Reporter, Publisher, Writer],
        "seconds";
    POSTGRES_SCHEMA: Rule::Identifier { default: "public" }, [Replicator, Retrier, Reporter, Publisher, Writer],
        "schema of the target table, the ledger and the failure report";
    POSTGRES_TABLE: Rule::Identifier { default: "case" }, [Replicator, Retrier, Reporter, Publisher, Writer],
        "target table; always quoted";
    RETRY_QUEUE_URL: Rule::RequiredUrl, [Replicator, Retrier, Publisher, Writer], "SQS URL of the retry queue";
    TABLES_FILE: Rule::File { default: "`case` only" }, [Replicator, Retrier],
        "the mapping file of further tables to replicate beside `case` (TOML, see \"Tables\"; a path in the deployment package, e.g. `tables.toml`); the retrier writes their failed rows again";
    MAX_ROWS_PER_RUN: Rule::Number { min: 1, max: 10_000_000, default: 1_000_000 }, [Replicator, Publisher],
        "the cap: rows frozen into one run's snapshot (memory follows the page, not this)";
    SNOWFLAKE_PAGE_ROWS: Rule::Number { min: 1, max: 10_000_000, default: 250_000 }, [Replicator, Publisher],
        "rows read from the run snapshot per statement, and deleted by one join (a mapped table's page holds as many cells: fewer rows when wider); peak memory follows it, not the cap";
    BATCH_SIZE: Rule::Number { min: 1, max: 100_000, default: 50_000 }, [Replicator, Publisher],
        "rows per Postgres write; large chunks bring COPY close to its limit (see Speed), and isolating a bad row in one still costs well under a second";
    MAX_FAILURES_PER_RUN: Rule::Number { min: 0, max: 100_000, default: 1_000 }, [Replicator, Publisher],
        "circuit breaker: rows enqueued per run at most";
    WRITE_ATTEMPTS: Rule::Number { min: 1, max: 10, default: 3 }, [Replicator, Retrier, Publisher, Writer],
        "attempts for a write that fails for a transient reason";
    RETRY_BACKOFF_BASE_SECONDS: Rule::Number { min: 0, max: 43_200, default: 30 }, [Retrier],
        "visibility timeout after a message's first failed receive, doubled per receive; `0` leaves the queue's own timeout";
    RETRY_BACKOFF_MAX_SECONDS: Rule::Number { min: 0, max: 43_200, default: 900 }, [Retrier],
        "the cap of that backoff; not below the base";
    DEADLINE_MARGIN_SECONDS: Rule::Number { min: 0, max: 600, default: 0 }, [Replicator, Retrier, Reporter, Publisher, Writer],
        "stop starting work when less than this is left before the invocation's deadline; `0`: a tenth of the function's timeout, between 2 and 60 seconds";
    DEAD_LETTER_QUEUE_URL: Rule::RequiredUrl, [Reporter], "SQS URL of the dead-letter queue";
    REPORT_SENDER: Rule::Email, [Reporter], "verified SES sender address";
    REPORT_RECIPIENTS: Rule::EmailList, [Reporter],
        "comma-separated addresses, at most 50 (SES limit per message)";
    REPORT_MAX_MESSAGES: Rule::Number { min: 1, max: 100_000, default: 1_000 }, [Reporter],
        "dead letters taken per run";
    REPORT_EMAIL_ROWS: Rule::Number { min: 1, max: 1_000, default: 50 }, [Reporter],
        "records listed in the email body; all of them go in the CSV attachment when there are more";
    CHANGES_QUEUE_URL: Rule::RequiredUrl, [Publisher],
        "stream mode: SQS URL of the changes queue (FIFO)";
    CHANGE_BUCKETS: Rule::Number { min: 1, max: 10_000, default: 16 }, [Publisher],
        "stream mode: message groups of the changes queue (blocks of `CHANGE_BLOCK_IDS` ids, block after block round this many groups); bounds the writers' parallelism; each batch carries it, so the writers need no setting (change it with the publisher paused: see Stream mode)";
    CHANGE_BLOCK_IDS: Rule::Number { min: 1, max: 1_048_576, default: 65_536 }, [Publisher],
        "stream mode: consecutive ids that share a message group (1: each id its own, `country_id` modulo `CHANGE_BUCKETS`); blocks make each message runs of consecutive ids, which Postgres's primary key takes page after page; each batch carries it (change it with the publisher paused: see Stream mode)";
    CHANGES_DEAD_LETTER_QUEUE_URL: Rule::OptionalUrl, [Reporter, Writer],
        "stream mode: SQS URL of the changes queue's dead-letter queue (FIFO); the writer (which requires it) parks there a message that is not a batch, or a batch that fails on its last receive; the dlq-reporter reports what is there (unset: batch mode only)";
    CHANGES_MAX_RECEIVE_COUNT: Rule::Number { min: 1, max: 1_000, default: 50 }, [Writer],
        "stream mode: the changes queue's `maxReceiveCount` (template parameter `ChangesMaxReceiveCount`): a batch that fails on that receive is parked with its last error, which the redrive policy would drop";
    PUBLISH_LOOP_SECONDS: Rule::Number { min: 0, max: 840, default: 0 }, [Publisher],
        "stream mode: keep publishing for this long in one invocation (`0`: one run per invocation); below the function's timeout";
    PUBLISH_IDLE_WAIT_MILLIS: Rule::Number { min: 10, max: 60_000, default: 1_000 }, [Publisher],
        "stream mode, looping: wait between looks at an empty table (one metadata `COUNT(*)` each, no warehouse)";
}

impl Var {
    /// The default as the README shows it.
    pub fn default_text(&self) -> String {
        match self.rule {
            Rule::Number { default, .. } => default.to_string(),
            Rule::Identifier { default } => format!("`{default}`"),
            Rule::OptionalText { default } => default.to_string(),
            Rule::SslMode => "`verify-full`".into(),
            Rule::File { default } => default.into(),
            _ => String::new(),
        }
    }

    /// What the variable accepts, as the README shows it.
    pub fn accepts_text(&self) -> String {
        match self.rule {
            Rule::RequiredText => "required".into(),
            Rule::OptionalText { .. } | Rule::Password => "optional".into(),
            Rule::Number { min, max, .. } => format!("{min}–{max}"),
            Rule::RequiredUrl => "required; http(s) URL".into(),
            Rule::OptionalUrl => "optional; http(s) URL".into(),
            Rule::Identifier { .. } => "letters, digits, `_`".into(),
            Rule::SslMode => "one of four modes".into(),
            Rule::File { .. } => "optional; a readable file".into(),
            Rule::Email => "required; an address".into(),
            Rule::EmailList => "required; 1–50 addresses".into(),
            Rule::SnowflakeAuth => "exactly one of the two".into(),
            Rule::SecretArn => "optional; a secret ARN".into(),
        }
    }

    pub fn read_by_text(&self) -> String {
        if self.read_by == ALL_FUNCTIONS {
            return "all".into();
        }
        let names: Vec<&str> = self.read_by.iter().map(|f| f.name()).collect();
        names.join(", ")
    }
}

/// The README's configuration table, generated from [`ALL`].
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| variable | read by | accepts | default | meaning |\n|---|---|---|---|---|\n",
    );
    for var in ALL {
        let default = var.default_text();
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            var.name,
            var.read_by_text(),
            var.accepts_text(),
            default,
            var.meaning
        ));
    }
    out
}
