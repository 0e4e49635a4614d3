//! The session: logs in (with the session parameters every login must set),
//! renews the session token with the master token, and logs in again when
//! Snowflake says the master token is gone. Each login starts a new
//! Snowflake session, counted by [`Session::generation`]: temporary tables
//! live in one generation only, which is how a caller learns that they are
//! gone. Expiry is judged by Snowflake's answers (390112–390115) as well as
//! by the validity the login gave.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::lock::Mutex;
use reqwest::Method;
#[cfg(feature = "cert-auth")]
use snowflake_jwt::generate_jwt_token;
use thiserror::Error;

use crate::codes;
use crate::connection::{Call, Connection, ConnectionError};
#[cfg(feature = "cert-auth")]
use crate::requests::CertRequestData;
use crate::requests::{
    ClientEnvironment, LoginRequest, LoginRequestCommon, PasswordRequestData,
    RenewSessionRequest,
};
use crate::responses::{Envelope, LoginData, RenewData};

#[derive(Error, Debug)]
pub enum AuthError {
    #[error(transparent)]
    #[cfg(feature = "cert-auth")]
    JwtError(#[from] snowflake_jwt::JwtError),

    #[error(transparent)]
    RequestError(#[from] ConnectionError),

    #[error("Password auth was requested, but password wasn't provided")]
    MissingPassword,

    #[error("Certificate auth was requested, but certificate wasn't provided")]
    MissingCertificate,

    #[error("Unexpected login reply: {0}")]
    UnexpectedResponse(String),

    #[error("Failed to authenticate. Error code: {0}. Message: {1}")]
    AuthFailed(String, String),

    #[error("Enable the cert-auth feature to use certificate authentication")]
    CertAuthNotEnabled,
}

impl AuthError {
    /// Snowflake's code, when Snowflake answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::AuthFailed(code, _) => Some(code),
            _ => None,
        }
    }
}

/// How the session authenticates.
pub enum Credentials {
    Password(String),
    Certificate(String),
}

/// Who logs in, where, and with which session parameters.
pub struct LoginArgs {
    /// The account identifier as configured (`xy12345`, `org-acct`,
    /// `xy12345.us-east-2.aws`, `xy12345.eu-west-1.privatelink`).
    pub account: String,
    pub user: String,
    pub warehouse: Option<String>,
    pub database: Option<String>,
    pub schema: Option<String>,
    pub role: Option<String>,
    /// `SESSION_PARAMETERS` of every login.
    pub session_parameters: serde_json::Map<String, serde_json::Value>,
}

impl LoginArgs {
    /// The account name alone, upper-cased: what the JWT issuer and the
    /// login's `ACCOUNT_NAME` want (a region or `.privatelink` suffix breaks
    /// the issuer).
    pub fn account_name(&self) -> String {
        self.account
            .split('.')
            .next()
            .unwrap_or_default()
            .to_uppercase()
    }
}

#[derive(Debug, Clone)]
struct AuthToken {
    token: String,
    valid_for: Duration,
    issued_on: Instant,
}

impl AuthToken {
    fn new(token: &str, validity_in_seconds: i64) -> Self {
        Self {
            token: token.to_string(),
            valid_for: Duration::from_secs(u64::try_from(validity_in_seconds).unwrap_or(u64::MAX)),
            issued_on: Instant::now(),
        }
    }

    fn is_expired(&self) -> bool {
        self.issued_on.elapsed() >= self.valid_for
    }

    fn auth_header(&self) -> String {
        format!("Snowflake Token=\"{}\"", self.token)
    }
}

struct AuthTokens {
    session_token: AuthToken,
    master_token: AuthToken,
    /// Every request of a session follows a sequence id.
    sequence_id: u64,
    generation: u64,
}

/// What one request authenticates with.
#[derive(Clone)]
pub struct AuthParts {
    pub session_token_auth_header: String,
    pub sequence_id: u64,
    /// The login this token belongs to.
    pub generation: u64,
    token: String,
}

pub struct Session {
    connection: Arc<Connection>,
    tokens: Mutex<Option<AuthTokens>>,
    logins: AtomicU64,
    args: LoginArgs,
    credentials: Credentials,
}

impl Session {
    pub fn new(connection: Arc<Connection>, args: LoginArgs, credentials: Credentials) -> Self {
        Self {
            connection,
            tokens: Mutex::new(None),
            logins: AtomicU64::new(0),
            args,
            credentials,
        }
    }

    /// Logins so far: a new number means a new Snowflake session.
    pub fn generation(&self) -> u64 {
        self.logins.load(Ordering::SeqCst)
    }

    /// The session token, logging in or renewing first when needed.
    pub async fn get_token(&self, deadline: Option<Instant>) -> Result<AuthParts, AuthError> {
        let mut tokens = self.tokens.lock().await;
        let needs_login = tokens.as_ref().is_none_or(|t| t.master_token.is_expired());
        if needs_login {
            *tokens = Some(self.login(deadline).await?);
        } else if tokens.as_ref().is_some_and(|t| t.session_token.is_expired()) {
            if let Some(old) = tokens.take() {
                *tokens = Some(match self.renew(&old, deadline).await {
                    Ok(renewed) => renewed,
                    Err(e) => {
                        log::info!("session renewal failed ({e}); logging in again");
                        self.login(deadline).await?
                    }
                });
            }
        }
        let Some(t) = tokens.as_mut() else {
            return Err(AuthError::UnexpectedResponse("no tokens after login".into()));
        };
        t.sequence_id += 1;
        Ok(AuthParts {
            session_token_auth_header: t.session_token.auth_header(),
            sequence_id: t.sequence_id,
            generation: t.generation,
            token: t.session_token.token.clone(),
        })
    }

    /// Snowflake answered a request made with `used` with a session code:
    /// renew (390112) or forget the session so the next request logs in
    /// (390113–390115). Nothing to do when another request already did.
    pub async fn recover(
        &self,
        used: &AuthParts,
        code: &str,
        deadline: Option<Instant>,
    ) -> Result<(), AuthError> {
        let mut tokens = self.tokens.lock().await;
        if tokens
            .as_ref()
            .is_none_or(|t| t.session_token.token != used.token)
        {
            return Ok(());
        }
        let Some(old) = tokens.take() else {
            return Ok(());
        };
        if code == codes::SESSION_EXPIRED {
            match self.renew(&old, deadline).await {
                Ok(renewed) => *tokens = Some(renewed),
                Err(e) => log::info!("session renewal failed ({e}); the next request logs in"),
            }
        }
        Ok(())
    }

    pub async fn close(&self) -> Result<(), AuthError> {
        let Some(tokens) = self.tokens.lock().await.take() else {
            return Ok(());
        };
        let header = tokens.session_token.auth_header();
        let reply: Envelope = self
            .connection
            .request_json(Call {
                method: Method::POST,
                path: "/session",
                params: &[("delete", "true")],
                accept: "application/snowflake",
                auth: Some(&header),
                body: Some(serde_json::Value::Null),
                request_id: None,
                deadline: None,
            })
            .await?;
        if reply.success {
            Ok(())
        } else {
            Err(failed(&reply))
        }
    }

    async fn login(&self, deadline: Option<Instant>) -> Result<AuthTokens, AuthError> {
        let body = match &self.credentials {
            Credentials::Password(password) => serde_json::to_value(LoginRequest {
                data: PasswordRequestData {
                    login_request_common: self.login_request_common(),
                    password: password.clone(),
                },
            }),
            Credentials::Certificate(pem) => serde_json::to_value(LoginRequest {
                data: self.cert_request_data(pem)?,
            }),
        }
        .map_err(|e| AuthError::UnexpectedResponse(e.to_string()))?;
        let mut params: Vec<(&str, &str)> = Vec::new();
        let a = &self.args;
        for (name, value) in [
            ("warehouse", &a.warehouse),
            ("databaseName", &a.database),
            ("schemaName", &a.schema),
            ("roleName", &a.role),
        ] {
            if let Some(v) = value {
                params.push((name, v.as_str()));
            }
        }
        let reply: Envelope = self
            .connection
            .request_json(Call {
                method: Method::POST,
                path: "/session/v1/login-request",
                params: &params,
                accept: "application/json",
                auth: None,
                body: Some(body),
                request_id: None,
                deadline,
            })
            .await?;
        if !reply.success {
            return Err(failed(&reply));
        }
        let data: LoginData = serde_json::from_value(reply.data)
            .map_err(|e| AuthError::UnexpectedResponse(e.to_string()))?;
        let generation = self.logins.fetch_add(1, Ordering::SeqCst) + 1;
        log::info!("logged in to Snowflake (session {generation} of this client)");
        Ok(AuthTokens {
            session_token: AuthToken::new(&data.token, data.validity_in_seconds),
            master_token: AuthToken::new(&data.master_token, data.master_validity_in_seconds),
            sequence_id: 0,
            generation,
        })
    }

    async fn renew(
        &self,
        old: &AuthTokens,
        deadline: Option<Instant>,
    ) -> Result<AuthTokens, AuthError> {
        let header = old.master_token.auth_header();
        let body = serde_json::to_value(RenewSessionRequest {
            old_session_token: &old.session_token.token,
            request_type: "RENEW",
        })
        .map_err(|e| AuthError::UnexpectedResponse(e.to_string()))?;
        let reply: Envelope = self
            .connection
            .request_json(Call {
                method: Method::POST,
                path: "/session/token-request",
                params: &[],
                accept: "application/snowflake",
                auth: Some(&header),
                body: Some(body),
                request_id: None,
                deadline,
            })
            .await?;
        if !reply.success {
            return Err(failed(&reply));
        }
        let data: RenewData = serde_json::from_value(reply.data)
            .map_err(|e| AuthError::UnexpectedResponse(e.to_string()))?;
        Ok(AuthTokens {
            session_token: AuthToken::new(&data.session_token, data.validity_in_seconds_s_t),
            master_token: AuthToken::new(&data.master_token, data.validity_in_seconds_m_t),
            sequence_id: old.sequence_id,
            generation: old.generation,
        })
    }

    #[cfg(feature = "cert-auth")]
    fn cert_request_data(&self, pem: &str) -> Result<CertRequestData, AuthError> {
        let issuer = format!(
            "{}.{}",
            self.args.account_name(),
            self.args.user.to_uppercase()
        );
        Ok(CertRequestData {
            login_request_common: self.login_request_common(),
            authenticator: "SNOWFLAKE_JWT".to_string(),
            token: generate_jwt_token(pem, &issuer)?,
        })
    }

    #[cfg(not(feature = "cert-auth"))]
    fn cert_request_data(&self, _pem: &str) -> Result<PasswordRequestData, AuthError> {
        Err(AuthError::CertAuthNotEnabled)
    }

    fn login_request_common(&self) -> LoginRequestCommon {
        let mut session_parameters = serde_json::Map::new();
        session_parameters.insert(
            "CLIENT_VALIDATE_DEFAULT_PARAMETERS".into(),
            serde_json::Value::Bool(true),
        );
        session_parameters.extend(self.args.session_parameters.clone());
        LoginRequestCommon {
            client_app_id: "Go".to_string(),
            client_app_version: "1.6.22".to_string(),
            svn_revision: String::new(),
            account_name: self.args.account_name(),
            login_name: self.args.user.clone(),
            session_parameters,
            client_environment: ClientEnvironment {
                application: "Rust".to_string(),
                os: std::env::consts::OS.to_string(),
                os_version: std::env::consts::ARCH.to_string(),
                ocsp_mode: "FAIL_OPEN".to_string(),
            },
        }
    }
}

fn failed(reply: &Envelope) -> AuthError {
    AuthError::AuthFailed(
        reply.code.clone().unwrap_or_default(),
        reply.message.clone().unwrap_or_default(),
    )
}
