//! HTTP as Snowflake's own drivers speak it: one base URL (the account's,
//! or a host given for regional, PrivateLink or emulated endpoints), a
//! connect timeout and a read timeout bounded by the caller's deadline, the
//! HTTP status checked before a body is read, and one retry loop: a request
//! keeps its `requestId` across attempts and gets a new `request_guid` each
//! time, with `retryCount`, `retryReason` and `clientStartTime` added from
//! the second attempt on; a 429's `Retry-After` is honoured.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use thiserror::Error;
use url::Url;
use uuid::Uuid;

/// Statuses worth another attempt: throttled, or the service (or a proxy in
/// front of it) failing for now.
const RETRYABLE: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// A chunk's statuses worth another attempt.
const CHUNK_RETRYABLE: [u16; 8] = [400, 403, 408, 429, 500, 502, 503, 504];

#[derive(Error, Debug)]
pub enum ConnectionError {
    /// No answer: connect failure, reset, timeout.
    #[error("{path}: no answer after {attempts} attempt(s): {source}")]
    Transport {
        path: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },

    /// An HTTP error status (after retries, when it was retryable).
    #[error("{path}: HTTP {status} after {attempts} attempt(s): {body}")]
    Status {
        path: String,
        status: u16,
        attempts: u32,
        body: String,
    },

    /// The caller's deadline came before an answer.
    #[error("{path}: the deadline came after {attempts} attempt(s)")]
    Deadline { path: String, attempts: u32 },

    #[error("{path}: the reply is not the expected JSON ({source}): {body}")]
    Deserialization {
        path: String,
        body: String,
        #[source]
        source: serde_json::Error,
    },

    #[error(transparent)]
    UrlParsing(#[from] url::ParseError),

    #[error(transparent)]
    InvalidHeader(#[from] header::InvalidHeaderValue),

    #[error("invalid header name: {0}")]
    InvalidHeaderName(String),

    #[error(transparent)]
    Client(#[from] reqwest::Error),

    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl ConnectionError {
    /// Whether a later attempt may work (the retries here already ran out).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Deadline { .. } => true,
            Self::Status { status, .. } => RETRYABLE.contains(status),
            _ => false,
        }
    }
}

/// How requests are timed and retried.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// The longest wait for one answer. Snowflake holds a query request for
    /// about 45 s before it answers "still running", so this stays above
    /// that; the caller's deadline shortens it.
    pub read: Duration,
    /// Attempts per request, the first included.
    pub attempts: u32,
    /// The first backoff between attempts (doubled each time, up to 16 s).
    pub backoff: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(60),
            attempts: 5,
            backoff: Duration::from_millis(500),
        }
    }
}

/// One request of the protocol.
pub(crate) struct Call<'a> {
    pub method: Method,
    /// A path on the base URL (`/queries/v1/query-request`, a result URL).
    pub path: &'a str,
    pub params: &'a [(&'a str, &'a str)],
    pub accept: &'static str,
    pub auth: Option<&'a str>,
    pub body: Option<serde_json::Value>,
    /// Kept across the attempts of this call (a statement's retries and its
    /// result polls share it); a new one when None.
    pub request_id: Option<Uuid>,
    pub deadline: Option<Instant>,
}

/// The connection pool and where it points.
pub struct Connection {
    client: reqwest::Client,
    base: Url,
    timeouts: Timeouts,
}

impl Connection {
    pub fn new(base: Url, timeouts: Timeouts) -> Result<Self, ConnectionError> {
        let client = reqwest::ClientBuilder::new()
            .user_agent(concat!("countries-snowflake-api/", env!("CARGO_PKG_VERSION")))
            .gzip(true)
            .referer(false)
            .connect_timeout(timeouts.connect)
            .build()?;
        Ok(Self {
            client,
            base,
            timeouts,
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Sends a protocol request and parses its JSON reply.
    pub(crate) async fn request_json<R: serde::de::DeserializeOwned>(
        &self,
        call: Call<'_>,
    ) -> Result<R, ConnectionError> {
        let url = self.base.join(call.path.trim_start_matches('/'))?;
        let request_id = call.request_id.unwrap_or_else(Uuid::new_v4).to_string();
        let start_ms = epoch_ms().to_string();
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(call.accept));
        if let Some(auth) = call.auth {
            let mut value = HeaderValue::from_str(auth)?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        let path = url.path().to_string();
        let body = self
            .send(&path, call.deadline, &RETRYABLE, |attempt, reason| {
                let mut params: Vec<(&str, String)> = vec![
                    ("requestId", request_id.clone()),
                    ("request_guid", Uuid::new_v4().to_string()),
                    ("clientStartTime", start_ms.clone()),
                ];
                if attempt > 0 {
                    params.push(("retryCount", attempt.to_string()));
                    params.push(("retryReason", reason.to_string()));
                }
                params.extend(call.params.iter().map(|(k, v)| (*k, (*v).to_string())));
                let mut req = self
                    .client
                    .request(call.method.clone(), url.clone())
                    .query(&params)
                    .headers(headers.clone());
                if let Some(body) = &call.body {
                    req = req.json(body);
                }
                req
            })
            .await?;
        serde_json::from_slice(&body).map_err(|source| ConnectionError::Deserialization {
            path,
            body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
            source,
        })
    }

    /// Downloads one result chunk from its (absolute) URL.
    pub(crate) async fn get_chunk(
        &self,
        url: &str,
        headers: &[(String, String)],
        deadline: Option<Instant>,
    ) -> Result<Bytes, ConnectionError> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| ConnectionError::InvalidHeaderName(k.clone()))?;
            map.insert(name, HeaderValue::from_str(v)?);
        }
        let parsed = Url::parse(url)?;
        // The path only: a chunk URL carries a presigned query string.
        let path = format!("chunk {}", parsed.path());
        // Any failure of a chunk is retried, a 403 included: storage answers
        // it for a moment's trouble as for a bad key, and the drivers retry.
        self.send(&path, deadline, &CHUNK_RETRYABLE, |_, _| {
            self.client.get(parsed.clone()).headers(map.clone())
        })
        .await
    }

    /// The retry loop every request goes through. `build` makes attempt
    /// number `attempt` (0 first), told why the previous one failed.
    async fn send(
        &self,
        path: &str,
        deadline: Option<Instant>,
        retryable: &[u16],
        build: impl Fn(u32, &str) -> reqwest::RequestBuilder,
    ) -> Result<Bytes, ConnectionError> {
        let mut attempt = 0u32;
        let mut reason = String::new();
        loop {
            let Some(timeout) = self.time_for_one(deadline) else {
                return Err(ConnectionError::Deadline {
                    path: path.to_string(),
                    attempts: attempt,
                });
            };
            let sent = build(attempt, &reason).timeout(timeout).send().await;
            attempt += 1;
            let (failure, retry_after) = match sent {
                Ok(resp) if resp.status().is_success() => match resp.bytes().await {
                    Ok(body) => return Ok(body),
                    Err(source) => {
                        reason = "0".into();
                        (transport(path, attempt, source), None)
                    }
                },
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = retry_after(resp.headers());
                    let body = resp.text().await.unwrap_or_default();
                    let error = ConnectionError::Status {
                        path: path.to_string(),
                        status: status.as_u16(),
                        attempts: attempt,
                        body: body.chars().take(300).collect(),
                    };
                    if !retryable.contains(&status.as_u16()) {
                        return Err(error);
                    }
                    reason = status.as_u16().to_string();
                    (error, retry_after)
                }
                Err(source) if is_transport(&source) => {
                    reason = "0".into();
                    (transport(path, attempt, source), None)
                }
                Err(source) => return Err(ConnectionError::Client(source)),
            };
            if attempt >= self.timeouts.attempts.max(1) {
                return Err(failure);
            }
            let wait = retry_after.unwrap_or_else(|| self.backoff(attempt));
            if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                return Err(failure);
            }
            log::debug!("{path}: attempt {attempt} failed ({failure}); again in {wait:?}");
            tokio::time::sleep(wait).await;
        }
    }

    /// The read timeout of one attempt: the configured one, or less when the
    /// deadline is nearer. None when the deadline has passed.
    fn time_for_one(&self, deadline: Option<Instant>) -> Option<Duration> {
        match deadline {
            None => Some(self.timeouts.read),
            Some(d) => {
                let left = d.checked_duration_since(Instant::now())?;
                (!left.is_zero()).then(|| left.min(self.timeouts.read))
            }
        }
    }

    /// Doubling waits with "equal jitter", capped at 16 s.
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        let delay = self
            .timeouts
            .backoff
            .saturating_mul(factor)
            .min(Duration::from_secs(16));
        let half = delay / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

fn transport(path: &str, attempts: u32, source: reqwest::Error) -> ConnectionError {
    ConnectionError::Transport {
        path: path.to_string(),
        attempts,
        source,
    }
}

fn is_transport(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() || e.is_decode()
}

/// `Retry-After` in seconds (the HTTP-date form is not used by Snowflake).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

pub(crate) fn epoch_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Whether a status is one the loop retries (for callers' classification).
pub fn is_retryable_status(status: StatusCode) -> bool {
    RETRYABLE.contains(&status.as_u16())
}
