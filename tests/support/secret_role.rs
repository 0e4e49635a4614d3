//! A Postgres role whose password lives in a Secrets Manager secret (moto),
//! for the tests of a rotated password: made with `first-pass`, rotated by
//! [`SecretRole::rotate`] on both sides at once.

use countries_shared::config::PostgresConfig;

use crate::{pg_admin, stack_var, unique, TestEnv};

pub struct SecretRole {
    /// The role's name (grant it what the test needs).
    pub name: String,
    /// The secret's ARN (`POSTGRES_SECRET_ARN`).
    pub arn: String,
    /// A superuser connection to the test's cluster.
    pub admin: tokio_postgres::Client,
    secrets: aws_sdk_secretsmanager::Client,
}

impl SecretRole {
    pub async fn create(env: &TestEnv) -> Self {
        let name = format!("{}_app", env.name);
        let admin = pg_admin(&env.vars["PGHOST"], &env.vars["PGPORT"]).await;
        admin
            .batch_execute(&format!("CREATE ROLE {name} LOGIN PASSWORD 'first-pass'"))
            .await
            .expect("create the role");
        let _ = stack_var("AWS_ENDPOINT_URL");
        let secrets =
            aws_sdk_secretsmanager::Client::new(&countries_shared::aws::sdk_config().await);
        let arn = secrets
            .create_secret()
            .name(unique("rotated-pg"))
            .secret_string(secret(&name, "first-pass"))
            .send()
            .await
            .expect("create the secret")
            .arn
            .unwrap_or_default();
        Self {
            name,
            arn,
            admin,
            secrets,
        }
    }

    /// The test's Postgres configuration as this role, with the first
    /// password and the secret's ARN.
    pub fn config(&self, env: &TestEnv) -> PostgresConfig {
        env.config_with(&[
            ("PGUSER", self.name.as_str()),
            ("PGPASSWORD", "first-pass"),
            ("POSTGRES_SECRET_ARN", self.arn.as_str()),
        ])
        .postgres
    }

    /// The rotation: Postgres's password and the secret both become
    /// `password` (open sessions go on until the test ends them).
    pub async fn rotate(&self, password: &str) {
        self.admin
            .batch_execute(&format!("ALTER ROLE {} PASSWORD '{password}'", self.name))
            .await
            .expect("rotate");
        self.secrets
            .put_secret_value()
            .secret_id(&self.arn)
            .secret_string(secret(&self.name, password))
            .send()
            .await
            .expect("rotate the secret");
    }
}

fn secret(user: &str, password: &str) -> String {
    format!(r#"{{"username":"{user}","password":"{password}"}}"#)
}
