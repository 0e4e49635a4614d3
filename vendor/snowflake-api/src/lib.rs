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
use std::time::{Duration, Instant};

use reqwest::Method;
use thiserror::Error;
use url::Url;
use uuid::Uuid;

pub use arrow_array::RecordBatch;
pub use arrow_schema::ArrowError;

use crate::connection::{Call, Connection};
pub use crate::connection::{ConnectionError, Timeouts};
use crate::requests::{AbortRequest, ExecRequest};
use crate::responses::{Envelope, ErrorData, InProgressData, QueryData};
pub use crate::session::{AuthError, Credentials, LoginArgs};
use crate::session::{AuthParts, Session};

mod chunks;
pub mod connection;
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

/// How one reply reads.
enum Reply {
    Done(Box<QueryData>),
    Running(InProgressData),
    Session(String),
    Failed(StatementError),
}

/// Session recoveries one statement may need before it gives up.
const MAX_RECOVERIES: u32 = 3;

impl SnowflakeApi {
    /// The current session's number: it changes when a new login replaced
    /// the session (and with it its temporary tables). 0 before any login.
    pub fn session_generation(&self) -> u64 {
        self.session.generation()
    }

    /// Closes the session (and drops its temporary objects).
    pub async fn close_session(&self) -> Result<(), SnowflakeApiError> {
        self.session.close().await?;
        Ok(())
    }

    /// Runs one statement with no deadline and no tag.
    pub async fn exec(&self, sql: &str) -> Result<QueryResult, SnowflakeApiError> {
        Ok(self.execute(sql, &ExecOptions::default()).await?.result)
    }

    /// Runs one statement to completion: polls it while Snowflake says it
    /// is running, recovers the session when Snowflake ends it, downloads
    /// its chunks, and aborts it when the deadline comes first.
    pub async fn execute(
        &self,
        sql: &str,
        opts: &ExecOptions<'_>,
    ) -> Result<Executed, SnowflakeApiError> {
        // One request id for the statement, its retries and its polls.
        let request_id = Uuid::new_v4();
        let mut recoveries = 0u32;
        let mut polls = 0u32;
        let mut pending: Option<InProgressData> = None;
        let mut pause = Duration::from_millis(50);
        loop {
            let parts = self.session.get_token(opts.deadline).await?;
            if let Some(needed) = opts.session {
                if parts.generation != needed {
                    return Err(SnowflakeApiError::SessionReplaced {
                        needed,
                        now: parts.generation,
                    });
                }
            }
            let sent = match &pending {
                None => self.send_statement(sql, opts, request_id, &parts).await,
                Some(running) => {
                    polls += 1;
                    self.poll(&running.get_result_url, opts, request_id, &parts)
                        .await
                }
            };
            let envelope = match sent {
                Ok(envelope) => envelope,
                Err(e) if past(opts.deadline) => {
                    log::debug!("no answer before the deadline: {e}");
                    let query_id = pending.and_then(|p| p.query_id);
                    return Err(self.give_up(sql, request_id, query_id, polls).await);
                }
                Err(e) => return Err(e.into()),
            };
            match interpret(envelope)? {
                Reply::Done(data) => {
                    return self.finish(*data, opts, polls, parts.generation).await;
                }
                Reply::Running(running) => {
                    if past(opts.deadline) {
                        return Err(self.give_up(sql, request_id, running.query_id, polls).await);
                    }
                    log::debug!(
                        "statement {} still running; polling {}",
                        running.query_id.as_deref().unwrap_or("?"),
                        running.get_result_url
                    );
                    pending = Some(running);
                    if polls > 0 {
                        sleep_until_or(pause, opts.deadline).await;
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                }
                Reply::Session(code) => {
                    recoveries += 1;
                    if recoveries > MAX_RECOVERIES {
                        return Err(SnowflakeApiError::SessionUnstable {
                            code,
                            tries: recoveries - 1,
                        });
                    }
                    log::info!("Snowflake answered {code}: recovering the session");
                    self.session.recover(&parts, &code, opts.deadline).await?;
                }
                Reply::Failed(e) => return Err(SnowflakeApiError::Statement(e)),
            }
        }
    }

    async fn send_statement(
        &self,
        sql: &str,
        opts: &ExecOptions<'_>,
        request_id: Uuid,
        parts: &AuthParts,
    ) -> Result<Envelope, ConnectionError> {
        let mut parameters = serde_json::Map::new();
        if let Some(tag) = opts.query_tag {
            parameters.insert("QUERY_TAG".into(), tag.into());
        }
        let body = serde_json::to_value(ExecRequest {
            sql_text: sql,
            async_exec: false,
            sequence_id: parts.sequence_id,
            is_internal: false,
            parameters,
        })?;
        self.connection
            .request_json(Call {
                method: Method::POST,
                path: "/queries/v1/query-request",
                params: &[],
                accept: "application/snowflake",
                auth: Some(&parts.session_token_auth_header),
                body: Some(body),
                request_id: Some(request_id),
                deadline: opts.deadline,
            })
            .await
    }

    async fn poll(
        &self,
        result_url: &str,
        opts: &ExecOptions<'_>,
        request_id: Uuid,
        parts: &AuthParts,
    ) -> Result<Envelope, ConnectionError> {
        self.connection
            .request_json(Call {
                method: Method::GET,
                path: result_url,
                params: &[],
                accept: "application/snowflake",
                auth: Some(&parts.session_token_auth_header),
                body: None,
                request_id: Some(request_id),
                deadline: opts.deadline,
            })
            .await
    }

    async fn finish(
        &self,
        data: QueryData,
        opts: &ExecOptions<'_>,
        polls: u32,
        session: u64,
    ) -> Result<Executed, SnowflakeApiError> {
        let query_id = data.query_id.clone();
        let qid = query_id.as_deref().unwrap_or("(none)");
        let arrow = data.rowset_base64.is_some() || !data.chunks.is_empty();
        let (result, chunks) = if arrow {
            let (batches, chunks) = chunks::collect(
                &self.connection,
                &data,
                qid,
                self.chunk_concurrency,
                opts.deadline,
            )
            .await?;
            if batches.iter().all(|b| b.num_rows() == 0) {
                (QueryResult::Empty, chunks)
            } else {
                (QueryResult::Arrow(batches), chunks)
            }
        } else if let Some(value) = data.rowset {
            let schema = data
                .rowtype
                .into_iter()
                .map(|t| FieldSchema {
                    name: t.name,
                    type_: t.type_,
                    scale: t.scale,
                    precision: t.precision,
                    nullable: t.nullable,
                })
                .collect();
            (QueryResult::Json(JsonResult { value, schema }), 0)
        } else {
            (QueryResult::Empty, 0)
        };
        Ok(Executed {
            result,
            query_id,
            polls,
            chunks,
            session,
        })
    }

    /// The deadline came: abort the statement (by its request id, which
    /// works even when no answer ever named its query id) and say so.
    async fn give_up(
        &self,
        sql: &str,
        request_id: Uuid,
        query_id: Option<String>,
        polls: u32,
    ) -> SnowflakeApiError {
        let aborted = self.abort(sql, request_id).await;
        SnowflakeApiError::DeadlineExceeded {
            query_id,
            polls,
            aborted,
        }
    }

    async fn abort(&self, sql: &str, request_id: Uuid) -> bool {
        let deadline = Some(Instant::now() + Duration::from_secs(5));
        let Ok(parts) = self.session.get_token(deadline).await else {
            return false;
        };
        let Ok(body) = serde_json::to_value(AbortRequest {
            sql_text: sql,
            request_id: request_id.to_string(),
        }) else {
            return false;
        };
        let reply: Result<Envelope, _> = self
            .connection
            .request_json(Call {
                method: Method::POST,
                path: "/queries/v1/abort-request",
                params: &[],
                accept: "application/snowflake",
                auth: Some(&parts.session_token_auth_header),
                body: Some(body),
                request_id: None,
                deadline,
            })
            .await;
        match reply {
            Ok(envelope) => envelope.success,
            Err(e) => {
                log::warn!("could not abort request {request_id}: {e}");
                false
            }
        }
    }
}

fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

async fn sleep_until_or(pause: Duration, deadline: Option<Instant>) {
    let pause = match deadline {
        Some(d) => pause.min(d.saturating_duration_since(Instant::now())),
        None => pause,
    };
    tokio::time::sleep(pause).await;
}

fn interpret(envelope: Envelope) -> Result<Reply, SnowflakeApiError> {
    let code = envelope.code.clone().unwrap_or_default();
    if code == codes::QUERY_IN_PROGRESS || code == codes::QUERY_IN_PROGRESS_ASYNC {
        let running: InProgressData = serde_json::from_value(envelope.data).map_err(|e| {
            SnowflakeApiError::UnexpectedResponse(format!("a {code} reply without a result URL: {e}"))
        })?;
        return Ok(Reply::Running(running));
    }
    if codes::is_session(&code) {
        return Ok(Reply::Session(code));
    }
    if !envelope.success {
        let data: ErrorData = serde_json::from_value(envelope.data).unwrap_or_default();
        return Ok(Reply::Failed(StatementError {
            code: data.error_code.unwrap_or(code),
            sql_state: data.sql_state.unwrap_or_default(),
            message: envelope.message.unwrap_or_default(),
            query_id: data.query_id.unwrap_or_default(),
        }));
    }
    let data: QueryData = serde_json::from_value(envelope.data)
        .map_err(|e| SnowflakeApiError::UnexpectedResponse(format!("a query reply: {e}")))?;
    Ok(Reply::Done(Box::new(data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(v: serde_json::Value) -> Envelope {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn replies_are_read_by_their_code() {
        let running = interpret(envelope(serde_json::json!({
            "data": {"queryId": "q1", "getResultUrl": "/queries/q1/result", "queryAbortsAfterSecs": 300, "progressDesc": null},
            "code": "333334", "message": "Asynchronous execution in progress.", "success": true
        })))
        .unwrap();
        assert!(matches!(running, Reply::Running(r) if r.get_result_url == "/queries/q1/result"));
        let session = interpret(envelope(serde_json::json!({
            "data": {"nextAction": "RETRY_LOGIN"}, "code": "390112", "message": "expired", "success": false
        })))
        .unwrap();
        assert!(matches!(session, Reply::Session(c) if c == "390112"));
        let failed = interpret(envelope(serde_json::json!({
            "data": {"errorCode": "002003", "sqlState": "42S02", "queryId": "q2", "age": 0, "internalError": false},
            "code": "002003", "message": "Object 'X' does not exist", "success": false
        })))
        .unwrap();
        let Reply::Failed(e) = failed else {
            panic!("not a failure")
        };
        assert_eq!(e.to_string(), "Snowflake error 002003 (SQLSTATE 42S02, query id q2): Object 'X' does not exist");
        let bare = interpret(envelope(serde_json::json!({"code": "000604", "message": "canceled", "success": false, "data": null}))).unwrap();
        assert!(matches!(bare, Reply::Failed(e) if e.code == "000604"));
    }
}
