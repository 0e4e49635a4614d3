//! The `snowflake-api` client: built once from the configuration, optionally
//! redirected to a local emulator, and its errors classified.

use std::sync::Arc;

use async_trait::async_trait;
use snowflake_api::{AuthArgs, SnowflakeApi, SnowflakeApiBuilder, SnowflakeApiError};

use crate::config::{SnowflakeAuth, SnowflakeConfig};
use crate::failure::{error_chain, SourceError};

/// Builds the client. The login happens on the first query and the session
/// is reused by later invocations of a warm Lambda.
pub fn build_api(config: &SnowflakeConfig) -> Result<SnowflakeApi, SourceError> {
    let auth = AuthArgs {
        account_identifier: config.account.clone(),
        warehouse: config.warehouse.clone(),
        database: Some(config.database.clone()),
        schema: Some(config.schema.clone()),
        username: config.user.clone(),
        role: config.role.clone(),
        auth_type: match &config.auth {
            SnowflakeAuth::Password(p) => {
                snowflake_api::AuthType::Password(snowflake_api::PasswordArgs {
                    password: p.expose().to_string(),
                })
            }
            SnowflakeAuth::PrivateKey(k) => {
                snowflake_api::AuthType::Certificate(snowflake_api::CertificateArgs {
                    private_key_pem: k.expose().to_string(),
                })
            }
        },
    };
    let mut builder = SnowflakeApiBuilder::new(auth);
    if let Some(endpoint) = &config.endpoint_url {
        builder = builder.with_client(redirecting_client(endpoint)?);
    }
    builder.build().map_err(|e| api_error("client set-up", e))
}

/// Classifies an error of the client: no answer is transient, an answer
/// that refuses is not.
pub fn api_error(operation: &'static str, err: SnowflakeApiError) -> SourceError {
    let detail = error_chain(&err);
    if is_network_failure(&err) {
        SourceError::Unreachable { operation, detail }
    } else {
        SourceError::Refused { operation, detail }
    }
}

/// A client that sends every request to `endpoint` (scheme, host and port)
/// instead of `https://{account}.snowflakecomputing.com`, keeping path and
/// query, and keeping the crate's own retry middleware.
fn redirecting_client(
    endpoint: &str,
) -> Result<reqwest_middleware::ClientWithMiddleware, SourceError> {
    let setup_error = |detail: String| SourceError::Refused {
        operation: "client set-up",
        detail,
    };
    let target = reqwest::Url::parse(endpoint)
        .map_err(|e| setup_error(format!("SNOWFLAKE_ENDPOINT_URL {endpoint:?}: {e}")))?;
    let builder = snowflake_api::connection::Connection::default_client_builder()
        .map_err(|e| setup_error(e.to_string()))?;
    Ok(builder
        .with(RedirectToEndpoint {
            target: Arc::new(target),
        })
        .build())
}

struct RedirectToEndpoint {
    target: Arc<reqwest::Url>,
}

#[async_trait]
impl reqwest_middleware::Middleware for RedirectToEndpoint {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let url = req.url_mut();
        // The three setters only fail for URLs that cannot have a host
        // (`mailto:`), which a parsed http(s) endpoint never is.
        let _ = url.set_scheme(self.target.scheme());
        let _ = url.set_host(self.target.host_str());
        let _ = url.set_port(self.target.port_or_known_default());
        next.run(req, extensions).await
    }
}

/// Whether the request never got a Snowflake answer. `snowflake-api` wraps
/// transport errors in `#[error(transparent)]` layers, which hide the
/// `reqwest::Error` from the source chain on some paths (after its retry
/// middleware gave up, for one), so the transport's own wording is the
/// fallback.
fn is_network_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<reqwest::Error>() {
            if r.is_connect() || r.is_timeout() || r.is_request() || r.is_body() {
                return true;
            }
        }
        current = e.source();
    }
    let text = error_chain(err).to_ascii_lowercase();
    [
        "error sending request",
        "tcp connect error",
        "connection refused",
        "connection reset",
        "timed out",
        "dns error",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_are_transient_even_when_the_type_is_hidden() {
        #[derive(Debug, thiserror::Error)]
        #[error("Request failed after 3 retries: error sending request for url (http://127.0.0.1:9/): client error (Connect): tcp connect error: Connection refused (os error 111)")]
        struct Opaque;
        assert!(is_network_failure(&Opaque));
        #[derive(Debug, thiserror::Error)]
        #[error("Snowflake API error. Code: `002003`. Message: `Table 'X' does not exist`")]
        struct Sql;
        assert!(!is_network_failure(&Sql));
    }
}
