//! Secrets from AWS Secrets Manager, fetched once at cold start and turned
//! into the variables the configuration reads. Locally no `*_SECRET_ARN` is
//! set, and plain environment variables serve instead.
//!
//! - `SNOWFLAKE_PRIVATE_KEY_SECRET_ARN`: the secret is the PEM key itself, or
//!   JSON with a `private_key` field → `SNOWFLAKE_PRIVATE_KEY`.
//! - `POSTGRES_SECRET_ARN`: JSON with `username` and `password` (the format
//!   RDS-managed secrets use) → `PGUSER`, `PGPASSWORD`; its `host`, `port`
//!   and `dbname`, when present, fill `PGHOST`, `PGPORT`, `PGDATABASE` unless
//!   those are set.
//!
//! Errors name the variable and the ARN, never the secret's value.

use std::collections::HashMap;

use async_trait::async_trait;

use countries_shared::config::vars as declared;
use countries_shared::config::Secret;

#[derive(Debug, thiserror::Error)]
#[error("{variable} ({arn}): {reason}")]
pub struct SecretError {
    pub variable: &'static str,
    pub arn: String,
    pub reason: String,
}

#[async_trait]
pub trait SecretSource: Send + Sync {
    async fn secret_string(&self, arn: &str) -> Result<String, String>;
}

pub struct SecretsManager(aws_sdk_secretsmanager::Client);

impl SecretsManager {
    pub async fn from_environment() -> Self {
        Self(aws_sdk_secretsmanager::Client::new(
            &countries_shared::aws::sdk_config().await,
        ))
    }
}

#[async_trait]
impl SecretSource for SecretsManager {
    async fn secret_string(&self, arn: &str) -> Result<String, String> {
        let output = self
            .0
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string())?;
        output.secret_string.ok_or_else(|| {
            "the secret has no SecretString (binary secrets are not supported)".into()
        })
    }
}

const SNOWFLAKE_KEY_ARN: &str = declared::SNOWFLAKE_PRIVATE_KEY_SECRET_ARN.name;
const POSTGRES_ARN: &str = declared::POSTGRES_SECRET_ARN.name;

/// The process environment with the secrets filled in.
pub async fn environment() -> Result<HashMap<String, String>, SecretError> {
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    let wanted = [SNOWFLAKE_KEY_ARN, POSTGRES_ARN]
        .iter()
        .any(|v| vars.get(*v).is_some_and(|a| !a.trim().is_empty()));
    if wanted {
        resolve(&mut vars, &SecretsManager::from_environment().await).await?;
    }
    Ok(vars)
}

pub async fn resolve(
    vars: &mut HashMap<String, String>,
    source: &dyn SecretSource,
) -> Result<(), SecretError> {
    if let Some(arn) = non_empty(vars, SNOWFLAKE_KEY_ARN) {
        let fail = |reason: String| SecretError {
            variable: SNOWFLAKE_KEY_ARN,
            arn: arn.clone(),
            reason,
        };
        let value = source.secret_string(&arn).await.map_err(fail)?;
        let pem = if value.trim_start().starts_with('{') {
            let json: serde_json::Value = serde_json::from_str(&value)
                .map_err(|_| fail("the secret is neither a PEM key nor JSON".into()))?;
            json.get("private_key")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| fail("the JSON secret has no string field private_key".into()))?
        } else {
            value
        };
        vars.insert(declared::SNOWFLAKE_PRIVATE_KEY.name.into(), pem);
    }
    if let Some(arn) = non_empty(vars, POSTGRES_ARN) {
        let mut fields = postgres_secret(source, &arn).await?;
        for (key, var) in [
            ("username", declared::PGUSER.name),
            ("password", declared::PGPASSWORD.name),
        ] {
            if let Some(value) = fields.remove(key) {
                vars.insert(var.into(), value);
            }
        }
        for (key, var) in [
            ("host", declared::PGHOST.name),
            ("port", declared::PGPORT.name),
            ("dbname", declared::PGDATABASE.name),
        ] {
            if non_empty(vars, var).is_none() {
                if let Some(value) = fields.remove(key) {
                    vars.insert(var.into(), value);
                }
            }
        }
    }
    Ok(())
}

/// The user and password of the Postgres secret `arn`, read again when
/// Postgres refuses the password it had (a rotation:
/// `countries_postgres::warm`).
pub async fn postgres_credentials(
    source: &dyn SecretSource,
    arn: &str,
) -> Result<(String, Secret), SecretError> {
    let mut fields = postgres_secret(source, arn).await?;
    let user = fields.remove("username").unwrap_or_default();
    let password = fields.remove("password").unwrap_or_default();
    Ok((user, Secret::new(password)))
}

/// The fields of a Postgres secret in the RDS format: `username` and
/// `password` (both required), `host`, `port` and `dbname` when present.
async fn postgres_secret(
    source: &dyn SecretSource,
    arn: &str,
) -> Result<HashMap<&'static str, String>, SecretError> {
    let fail = |reason: String| SecretError {
        variable: POSTGRES_ARN,
        arn: arn.to_string(),
        reason,
    };
    let value = source.secret_string(arn).await.map_err(fail)?;
    let json: serde_json::Value = serde_json::from_str(&value)
        .map_err(|_| fail("the secret is not JSON with username and password".into()))?;
    let mut fields = HashMap::new();
    for name in ["username", "password", "host", "port", "dbname"] {
        let value = match json.get(name) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => continue,
        };
        fields.insert(name, value);
    }
    for required in ["username", "password"] {
        if !fields.contains_key(required) {
            return Err(fail(format!("the secret has no {required}")));
        }
    }
    Ok(fields)
}

fn non_empty(vars: &HashMap<String, String>, name: &str) -> Option<String> {
    vars.get(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(HashMap<String, String>);

    #[async_trait]
    impl SecretSource for Fixed {
        async fn secret_string(&self, arn: &str) -> Result<String, String> {
            self.0
                .get(arn)
                .cloned()
                .ok_or_else(|| "ResourceNotFoundException".into())
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn secrets_fill_the_variables_and_explicit_ones_win() {
        let source = Fixed(vars(&[
            (
                "arn:key",
                "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----",
            ),
            (
                "arn:pg",
                r#"{"username":"app","password":"p@ss","host":"db.rds","port":5433,"dbname":"prod"}"#,
            ),
        ]));
        let mut env = vars(&[
            ("SNOWFLAKE_PRIVATE_KEY_SECRET_ARN", "arn:key"),
            ("POSTGRES_SECRET_ARN", "arn:pg"),
            ("PGHOST", "proxy.internal"),
        ]);
        resolve(&mut env, &source).await.unwrap();
        assert!(env["SNOWFLAKE_PRIVATE_KEY"].starts_with("-----BEGIN PRIVATE KEY"));
        assert_eq!(env["PGUSER"], "app");
        assert_eq!(env["PGPASSWORD"], "p@ss");
        assert_eq!(env["PGHOST"], "proxy.internal", "an explicit host wins");
        assert_eq!(env["PGPORT"], "5433");
        assert_eq!(env["PGDATABASE"], "prod");
    }

    #[tokio::test]
    async fn a_json_key_secret_works_and_errors_never_show_values() {
        let source = Fixed(vars(&[
            ("arn:key", r#"{"private_key":"PEM"}"#),
            ("arn:bad", r#"{"user":"app","password":"topsecret"}"#),
        ]));
        let mut env = vars(&[("SNOWFLAKE_PRIVATE_KEY_SECRET_ARN", "arn:key")]);
        resolve(&mut env, &source).await.unwrap();
        assert_eq!(env["SNOWFLAKE_PRIVATE_KEY"], "PEM");

        let mut env = vars(&[("POSTGRES_SECRET_ARN", "arn:bad")]);
        let err = resolve(&mut env, &source).await.unwrap_err().to_string();
        assert!(
            err.contains("POSTGRES_SECRET_ARN") && err.contains("username"),
            "{err}"
        );
        assert!(!err.contains("topsecret"), "{err}");

        let mut env = vars(&[("POSTGRES_SECRET_ARN", "arn:missing")]);
        let err = resolve(&mut env, &source).await.unwrap_err().to_string();
        assert!(
            err.contains("arn:missing") && err.contains("ResourceNotFound"),
            "{err}"
        );
    }
}
