//! Secrets Manager (moto) into the configuration, as at a Lambda cold start.

use countries_secrets::resolve;
use countries_secrets::SecretsManager;
use testkit::stack_var;

#[tokio::test]
async fn secrets_from_secrets_manager_become_the_configuration() {
    let _ = stack_var("AWS_ENDPOINT_URL");
    let client = aws_sdk_secretsmanager::Client::new(&countries_shared::aws::sdk_config().await);
    let name = testkit::unique("pg-secret");
    let pg = client
        .create_secret()
        .name(&name)
        .secret_string(
            r#"{"username":"app","password":"from-the-vault","host":"db.internal","port":6543}"#,
        )
        .send()
        .await
        .expect("create the Postgres secret");
    let key = client
        .create_secret()
        .name(format!("{name}-key"))
        .secret_string("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
        .send()
        .await
        .expect("create the key secret");

    let mut vars: std::collections::HashMap<String, String> = [
        ("POSTGRES_SECRET_ARN", pg.arn.clone().unwrap_or_default()),
        (
            "SNOWFLAKE_PRIVATE_KEY_SECRET_ARN",
            key.arn.clone().unwrap_or_default(),
        ),
        ("PGDATABASE", "countries".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    resolve(&mut vars, &SecretsManager::from_environment().await)
        .await
        .expect("secrets resolve");
    assert_eq!(vars["PGUSER"], "app");
    assert_eq!(vars["PGPASSWORD"], "from-the-vault");
    assert_eq!(vars["PGHOST"], "db.internal");
    assert_eq!(vars["PGPORT"], "6543");
    assert!(vars["SNOWFLAKE_PRIVATE_KEY"].starts_with("-----BEGIN PRIVATE KEY-----"));

    let mut missing: std::collections::HashMap<String, String> = [(
        "POSTGRES_SECRET_ARN".to_string(),
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope".to_string(),
    )]
    .into_iter()
    .collect();
    let err = resolve(&mut missing, &SecretsManager::from_environment().await)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("POSTGRES_SECRET_ARN") && err.contains(":nope"),
        "{err}"
    );
}
