//! `snowflake-api` 0.14.0, forked for the countries replication job so that
//! it speaks the protocol real Snowflake speaks (the changes and the
//! upstream work each follows are listed in this crate's `README.md`):
//! statements that outlive Snowflake's ~45 s hold are polled to completion,
//! or aborted at the caller's deadline; chunked results are downloaded in
//! order, checked and retried; session answers (390112–390115) renew the
//! session or log in again; requests have timeouts and the drivers' retry
//! protocol; every error keeps Snowflake's code, SQLSTATE, message and
//! query id.

use std::fmt::{Display, Formatter};
use std::sync::Arc;
use std::time::Instant;

use thiserror::Error;
use url::Url;

pub use arrow_array::RecordBatch;
pub use arrow_schema::ArrowError;

use crate::connection::Connection;
pub use crate::connection::{ConnectionError, Timeouts};
pub use crate::session::{AuthError, Credentials, LoginArgs};
use crate::session::Session;

mod chunks;
pub mod connection;
mod exec;
mod requests;
mod responses;
mod session;

/// Snowflake's answer codes the client acts on.
pub mod codes {
    /// The statement is still running: poll its result URL.
    pub const QUERY_IN_PROGRESS: &str = "333333";
    pub const QUERY_IN_PROGRESS_ASYNC: &str = "333334";
    /// The session token expired: renew it with the master token.
    pub const SESSION_EXPIRED: &str = "390112";
    /// The master token is missing, expired or invalid: log in again.
    pub const MASTER_TOKEN_NOT_FOUND: &str = "390113";
    pub const MASTER_TOKEN_EXPIRED: &str = "390114";
    pub const MASTER_TOKEN_INVALID: &str = "390115";

    pub fn is_session(code: &str) -> bool {
        matches!(
            code,
            SESSION_EXPIRED | MASTER_TOKEN_NOT_FOUND | MASTER_TOKEN_EXPIRED | MASTER_TOKEN_INVALID
        )
    }
}

/// A statement Snowflake refused, as Snowflake described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementError {
    pub code: String,
    pub sql_state: String,
    pub message: String,
    pub query_id: String,
}

impl Display for StatementError {
    fn fmt(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Snowflake error {} (SQLSTATE {}, query id {}): {}",
            self.code,
            self.sql_state,
            if self.query_id.is_empty() { "none" } else { &self.query_id },
            self.message
        )
    }
}

#[derive(Error, Debug)]
pub enum SnowflakeApiError {
    #[error(transparent)]
    RequestError(#[from] ConnectionError),

    #[error(transparent)]
    AuthError(#[from] AuthError),

    #[error(transparent)]
    ResponseDeserializationError(#[from] base64::DecodeError),

    #[error(transparent)]
    ArrowError(#[from] ArrowError),

    #[error(transparent)]
    LocalIoError(#[from] std::io::Error),

    #[error("{0}")]
    Statement(StatementError),

    /// The deadline came while the statement was running (or before its
    /// answer arrived); it was aborted, or the abort was not confirmed.
    #[error("statement {} still running at the deadline after {polls} result poll(s); {}",
        query_id.as_deref().unwrap_or("(no query id yet)"),
        if *aborted { "aborted" } else { "the abort was not confirmed" })]
    DeadlineExceeded {
        query_id: Option<String>,
        polls: u32,
        aborted: bool,
    },

    /// The caller needs session `needed` (its temporary tables), and a new
    /// login replaced it.
    #[error("the Snowflake session ended and a new one was started (session {now}, needed {needed}): its temporary tables are gone")]
    SessionReplaced { needed: u64, now: u64 },

    #[error("Snowflake kept ending the session (code {code}) after {tries} recoveries")]
    SessionUnstable { code: String, tries: u32 },

    #[error("chunk {index} of query {query_id}: {source}")]
    Chunk {
        index: usize,
        query_id: String,
        #[source]
        source: ConnectionError,
    },

    #[error("result of query {query_id}: {detail}")]
    BrokenResult { query_id: String, detail: String },

    #[error("unexpected Snowflake reply: {0}")]
    UnexpectedResponse(String),
}

impl SnowflakeApiError {
    /// Snowflake's own code, when Snowflake answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Statement(e) => Some(&e.code),
            Self::AuthError(e) => e.code(),
            Self::SessionUnstable { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// JSON rows: what DML answers (`[["2"]]`, the count of a DELETE).
pub struct JsonResult {
    pub value: serde_json::Value,
    pub schema: Vec<FieldSchema>,
}

impl Display for JsonResult {
    fn fmt(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.value)
    }
}

pub struct FieldSchema {
    pub name: String,
    pub type_: String,
    pub scale: Option<i64>,
    pub precision: Option<i64>,
    pub nullable: bool,
}

/// A statement's result: Arrow batches in order (SELECT), JSON rows (DML),
/// or nothing.
pub enum QueryResult {
    Arrow(Vec<RecordBatch>),
    Json(JsonResult),
    Empty,
}

/// A result and what it took.
pub struct Executed {
    pub result: QueryResult,
    pub query_id: Option<String>,
    /// Result polls after Snowflake answered "still running".
    pub polls: u32,
    /// Chunks downloaded beside the inline part.
    pub chunks: usize,
    /// The session ([`SnowflakeApi::session_generation`]) it ran in.
    pub session: u64,
}

/// What a caller asks of one statement.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions<'a> {
    /// Give up (and abort the statement) here.
    pub deadline: Option<Instant>,
    /// `QUERY_TAG` of this statement, to find it in `QUERY_HISTORY`.
    pub query_tag: Option<&'a str>,
    /// Run only in this session: its temporary tables are needed.
    pub session: Option<u64>,
}

pub struct AuthArgs {
    pub account_identifier: String,
    pub warehouse: Option<String>,
    pub database: Option<String>,
    pub schema: Option<String>,
    pub username: String,
    pub role: Option<String>,
    pub auth_type: AuthType,
}

pub enum AuthType {
    Password(PasswordArgs),
    Certificate(CertificateArgs),
}

pub struct PasswordArgs {
    pub password: String,
}

pub struct CertificateArgs {
    pub private_key_pem: String,
}

#[must_use]
pub struct SnowflakeApiBuilder {
    pub auth: AuthArgs,
    base_url: Option<Url>,
    timeouts: Timeouts,
    session_parameters: serde_json::Map<String, serde_json::Value>,
    chunk_concurrency: usize,
}

impl SnowflakeApiBuilder {
    pub fn new(auth: AuthArgs) -> Self {
        Self {
            auth,
            base_url: None,
            timeouts: Timeouts::default(),
            session_parameters: serde_json::Map::new(),
            chunk_concurrency: 4,
        }
    }

    /// Send every request here instead of
    /// `https://{account}.snowflakecomputing.com` (regional and PrivateLink
    /// hosts, emulators).
    pub fn with_base_url(mut self, url: Url) -> Self {
        self.base_url = Some(url);
        self
    }

    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// A parameter every login sets on its new session.
    pub fn with_session_parameter(mut self, name: &str, value: serde_json::Value) -> Self {
        self.session_parameters.insert(name.to_string(), value);
        self
    }

    /// Chunks downloaded at once.
    pub fn with_chunk_concurrency(mut self, n: usize) -> Self {
        self.chunk_concurrency = n.max(1);
        self
    }

    pub fn build(self) -> Result<SnowflakeApi, SnowflakeApiError> {
        let base = match self.base_url {
            Some(url) => url,
            None => Url::parse(&format!(
                "https://{}.snowflakecomputing.com/",
                self.auth.account_identifier
            ))
            .map_err(ConnectionError::from)?,
        };
        let connection = Arc::new(Connection::new(base, self.timeouts)?);
        let credentials = match self.auth.auth_type {
            AuthType::Password(p) => Credentials::Password(p.password),
            AuthType::Certificate(c) => Credentials::Certificate(c.private_key_pem),
        };
        let args = LoginArgs {
            account: self.auth.account_identifier,
            user: self.auth.username,
            warehouse: self.auth.warehouse,
            database: self.auth.database,
            schema: self.auth.schema,
            role: self.auth.role,
            session_parameters: self.session_parameters,
        };
        Ok(SnowflakeApi {
            session: Session::new(Arc::clone(&connection), args, credentials),
            connection,
            chunk_concurrency: self.chunk_concurrency,
        })
    }
}

/// The client: one connection pool and one session, reused across calls.
pub struct SnowflakeApi {
    connection: Arc<Connection>,
    session: Session,
    chunk_concurrency: usize,
}
