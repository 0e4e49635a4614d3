//! The Snowflake client: built once from the configuration, pointed at the
//! account's host (or `SNOWFLAKE_ENDPOINT_URL`: a regional or PrivateLink
//! host, or the local emulator), with the session parameters every login
//! sets, so that nothing depends on the account's or the user's defaults.

use serde_json::Value;
use snowflake_api::{AuthArgs, SnowflakeApi, SnowflakeApiBuilder, Timeouts};

use crate::errors::api_error;
use countries_shared::config::{SnowflakeAuth, SnowflakeConfig};
use countries_shared::failure::SourceError;

/// Chunks of one result downloaded at once. A page is held whole anyway
/// (memory follows the page, not this), so this only trades idle waiting:
/// at 500 ms per request a 250,000-row page of 10 chunks took 2.3 s to read
/// four at a time. The Go driver downloads 10 at once, JDBC and Python 4.
const CHUNK_DOWNLOADS: usize = 10;

/// Builds the client for `function` (named in every statement's
/// `QUERY_TAG`). The login happens on the first statement and the session
/// is reused by later invocations of a warm Lambda.
pub fn build_api(config: &SnowflakeConfig, function: &str) -> Result<SnowflakeApi, SourceError> {
    build_api_with(config, function, Timeouts::default())
}

/// [`build_api`] with other timeouts (tests of hung requests).
pub fn build_api_with(
    config: &SnowflakeConfig,
    function: &str,
    timeouts: Timeouts,
) -> Result<SnowflakeApi, SourceError> {
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
    let mut builder = SnowflakeApiBuilder::new(auth)
        .with_timeouts(timeouts)
        .with_chunk_concurrency(CHUNK_DOWNLOADS);
    for (name, value) in session_parameters(config, function) {
        builder = builder.with_session_parameter(name, value);
    }
    if let Some(endpoint) = &config.endpoint_url {
        let url = reqwest::Url::parse(endpoint).map_err(|e| SourceError::Refused {
            operation: "client set-up",
            detail: format!("SNOWFLAKE_ENDPOINT_URL {endpoint:?}: {e}"),
        })?;
        builder = builder.with_base_url(url);
    }
    builder.build().map_err(|e| api_error("client set-up", e))
}

/// What every login sets, whatever the account or the user say:
/// - `QUOTED_IDENTIFIERS_IGNORE_CASE=FALSE`: `"case"` is the table `case`,
///   not `CASE`;
/// - `AUTOCOMMIT=TRUE`: each statement commits on its own (a user set to
///   `FALSE` would leave every delete in an open transaction);
/// - `STATEMENT_TIMEOUT_IN_SECONDS` and `LOCK_TIMEOUT` at 90 % of the
///   function's timeout (the defaults are 2 days and 12 hours): a statement
///   stuck behind another's lock ends in Snowflake before the function does,
///   even when the function was killed before it could abort it;
/// - `QUERY_TAG`: the function, so that its statements are found in
///   `QUERY_HISTORY` (each statement adds its run).
pub fn session_parameters(config: &SnowflakeConfig, function: &str) -> Vec<(&'static str, Value)> {
    let timeout = Value::from(statement_timeout_secs(config.function_timeout_secs));
    vec![
        ("QUOTED_IDENTIFIERS_IGNORE_CASE", Value::Bool(false)),
        ("AUTOCOMMIT", Value::Bool(true)),
        ("STATEMENT_TIMEOUT_IN_SECONDS", timeout.clone()),
        ("LOCK_TIMEOUT", timeout),
        ("QUERY_TAG", Value::from(query_tag(function, None))),
    ]
}

/// Snowflake's limit on a statement: 90 % of the function's timeout.
pub fn statement_timeout_secs(function_timeout_secs: u32) -> u32 {
    (function_timeout_secs - function_timeout_secs / 10).max(1)
}

/// `countries/<function>[/run=<id>]`.
pub fn query_tag(function: &str, run_id: Option<uuid::Uuid>) -> String {
    match run_id {
        Some(id) => format!("countries/{function}/run={id}"),
        None => format!("countries/{function}"),
    }
}
