//! The replies of the protocol. Every reply is first read as an
//! [`Envelope`] (`success`, `code`, `message`, `data`), so that an error, a
//! session answer or a "still running" answer is recognised by its code
//! whatever its `data` holds; only then is `data` read into the shape its
//! code promises. Fields Snowflake may leave out are optional here.

use serde::{Deserialize, Deserializer};

#[derive(Deserialize, Debug)]
pub struct Envelope {
    #[serde(default)]
    pub success: bool,
    #[serde(default, deserialize_with = "code")]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
}

/// Codes come as strings, and from some proxies as numbers.
fn code<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(format!("{n:0>6}")),
        _ => None,
    })
}

/// What an error reply's `data` may say about it.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct ErrorData {
    #[serde(default, deserialize_with = "code")]
    pub error_code: Option<String>,
    #[serde(default)]
    pub sql_state: Option<String>,
    #[serde(default)]
    pub query_id: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct LoginData {
    pub token: String,
    pub master_token: String,
    #[serde(default = "an_hour")]
    pub validity_in_seconds: i64,
    #[serde(default = "four_hours")]
    pub master_validity_in_seconds: i64,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct RenewData {
    pub session_token: String,
    #[serde(rename = "validityInSecondsST", default = "an_hour")]
    pub validity_in_seconds_s_t: i64,
    pub master_token: String,
    #[serde(rename = "validityInSecondsMT", default = "four_hours")]
    pub validity_in_seconds_m_t: i64,
}

fn an_hour() -> i64 {
    3600
}

fn four_hours() -> i64 {
    14_400
}

/// A statement still running: poll `get_result_url`.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct InProgressData {
    #[serde(default)]
    pub query_id: Option<String>,
    pub get_result_url: String,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct QueryData {
    #[serde(default)]
    pub rowtype: Vec<ExecResponseRowType>,
    /// JSON rows: DML answers (`[["2"]]` for a DELETE of two rows).
    #[serde(default)]
    pub rowset: Option<serde_json::Value>,
    /// The inline first part of an Arrow result (an IPC stream, base64).
    #[serde(default)]
    pub rowset_base64: Option<String>,
    /// Rows in the whole result.
    #[serde(default)]
    pub total: Option<i64>,
    #[serde(default)]
    pub query_id: Option<String>,
    #[serde(default)]
    pub chunks: Vec<ExecResponseChunk>,
    /// The key for chunk downloads when `chunk_headers` is empty.
    #[serde(default)]
    pub qrmk: Option<String>,
    #[serde(default)]
    pub chunk_headers: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct ExecResponseRowType {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub scale: Option<i64>,
    #[serde(default)]
    pub precision: Option<i64>,
    #[serde(default)]
    pub nullable: bool,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ExecResponseChunk {
    pub url: String,
    pub row_count: i64,
}
