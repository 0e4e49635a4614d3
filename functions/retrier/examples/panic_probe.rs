//! Built with the release profile by `make test`: the retrier's handler,
//! with a Postgres writer that panics, must contain the panic and list the
//! batch for redelivery. Under `panic = "abort"` (what `cargo lambda build
//! --release` sets when the release profile names no strategy) the process
//! would abort instead, and the whole batch would fail without a response.
//!
//! An example, not part of the Lambda binary.

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use countries_shared::deadline::Deadline;
use countries_shared::failure::SinkError;
use countries_shared::lambda::retrier::handle;
use countries_shared::ledger::SinkKind;
use countries_shared::model::row::CountryRow;
use countries_shared::ports::SinkOutcome;
use countries_shared::ports::{RowSink, SinkPool, WriteLimits};
use countries_shared::retrier::Retrier;
use countries_shared::retry::{Backoff, RetryPolicy};

struct PanickingPool;
struct PanickingWriter;

#[async_trait]
impl SinkPool for PanickingPool {
    fn kind(&self) -> SinkKind {
        SinkKind::Postgres
    }

    async fn open(&self, _run_id: Option<uuid::Uuid>) -> Result<Box<dyn RowSink>, SinkError> {
        Ok(Box::new(PanickingWriter))
    }
}

#[async_trait]
impl RowSink for PanickingWriter {
    async fn write(
        &mut self,
        _rows: &[&CountryRow],
        _limits: WriteLimits,
        _deadline: &Deadline,
    ) -> SinkOutcome {
        panic!("a writer bug (panic probe)");
    }
}

#[tokio::main]
async fn main() {
    let retrier = Retrier {
        mapped: None,
        sinks: Box::new(PanickingPool),
        policy: RetryPolicy::immediate(1),
        delay: None,
        retry_backoff: Backoff::ZERO,
        deadline_margin: None,
    };
    let body = r#"{"schema_version":1,"record":{"country_id":1,"country":"USA"},"error":{"class":"rejected","message":"x"},"run_id":"00000000-0000-0000-0000-000000000000","first_failed_at":"2026-11-24T06:00:00Z","attempt":1}"#;
    let mut event = SqsEvent::default();
    for id in ["m1", "m2"] {
        let mut message = SqsMessage::default();
        message.message_id = Some(id.into());
        message.body = Some(body.into());
        event.records.push(message);
    }
    let event = lambda_runtime::LambdaEvent::new(event, lambda_runtime::Context::default());
    match handle(&retrier, event).await {
        Ok(response) => {
            let ids: Vec<String> = response
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect();
            println!("contained: listed {}", ids.join(","));
        }
        Err(e) => {
            println!("not contained: {}", e.error_message);
            std::process::exit(1);
        }
    }
}
