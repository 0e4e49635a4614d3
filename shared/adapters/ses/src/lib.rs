//! SES v2: the digest email, sent as one raw MIME message (the simple
//! content type has no attachments).

use async_trait::async_trait;
use aws_sdk_sesv2::error::{DisplayErrorContext, SdkError};
use aws_sdk_sesv2::operation::send_email::SendEmailError;

use countries_shared::failure::{ErrorKind, MailError};
use countries_shared::model::report::Digest;
use countries_shared::ports::Mailer;

/// Sends the digest through SES v2 as a raw MIME message (the simple content
/// type has no attachments).
pub struct SesMailer {
    client: aws_sdk_sesv2::Client,
    sender: String,
    recipients: Vec<String>,
}

impl SesMailer {
    pub fn new(client: aws_sdk_sesv2::Client, sender: String, recipients: Vec<String>) -> Self {
        Self {
            client,
            sender,
            recipients,
        }
    }

    pub fn mime(&self, digest: &Digest) -> Result<Vec<u8>, MailError> {
        let mut message = mail_builder::MessageBuilder::new()
            .from(("countries replication", self.sender.as_str()))
            .to(self
                .recipients
                .iter()
                .map(String::as_str)
                .collect::<Vec<&str>>())
            .subject(digest.subject.as_str())
            .text_body(digest.text.as_str())
            .html_body(digest.html.as_str());
        if let Some(csv) = &digest.csv {
            message = message.attachment("text/csv", "failed-records.csv", csv.as_str());
        }
        message
            .write_to_vec()
            .map_err(|e| MailError::new(ErrorKind::Fatal, format!("building the message: {e}")))
    }
}

#[async_trait]
impl Mailer for SesMailer {
    async fn send(&self, digest: &Digest) -> Result<(), MailError> {
        let raw = aws_sdk_sesv2::types::RawMessage::builder()
            .data(aws_sdk_sesv2::primitives::Blob::new(self.mime(digest)?))
            .build()
            .map_err(|e| MailError::new(ErrorKind::Fatal, e.to_string()))?;
        self.client
            .send_email()
            .from_email_address(&self.sender)
            .destination(
                aws_sdk_sesv2::types::Destination::builder()
                    .set_to_addresses(Some(self.recipients.clone()))
                    .build(),
            )
            .content(
                aws_sdk_sesv2::types::EmailContent::builder()
                    .raw(raw)
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| MailError::new(send_error_kind(&e), DisplayErrorContext(&e).to_string()))
    }
}

/// Throttling and a call that got no answer can pass; any other refusal
/// (an unverified sender, a sandbox recipient) needs an operator.
fn send_error_kind<R>(err: &SdkError<SendEmailError, R>) -> ErrorKind {
    match err {
        SdkError::ServiceError(e)
            if !(e.err().is_too_many_requests_exception()
                || e.err().is_limit_exceeded_exception()) =>
        {
            ErrorKind::Fatal
        }
        _ => ErrorKind::Transient,
    }
}
