//! The AWS SDK configuration, shared by every AWS client of a function.

/// Builds the AWS SDK configuration from the standard environment
/// (`AWS_REGION`, credentials, and `AWS_ENDPOINT_URL` for a local emulator).
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}
