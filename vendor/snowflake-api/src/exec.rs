//! Running one statement: sent with its request id, polled while
//! Snowflake says it is still running, the session recovered when Snowflake
//! ends it, the result collected (chunks included), and the statement
//! aborted when the caller's deadline comes first.

use std::time::{Duration, Instant};

use reqwest::Method;
use uuid::Uuid;

use crate::chunks;
use crate::codes;
use crate::connection::{Call, ConnectionError};
use crate::requests::{AbortRequest, ExecRequest};
use crate::responses::{Envelope, ErrorData, InProgressData, QueryData};
use crate::session::AuthParts;
use crate::{
    ExecOptions, Executed, FieldSchema, JsonResult, QueryResult, SnowflakeApi, SnowflakeApiError,
    StatementError,
};

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
