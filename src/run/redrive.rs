//! `loaderctl redrive QUEUE_URL`: replays a failure queue's events through the handler
//! and deletes each message only after its event succeeded (a skip is a success). The
//! queues hold three shapes: the function's on-failure destination wraps the event in
//! Lambda's invocation record (`{"requestPayload": <event>, ...}`,
//! <https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html>);
//! the rule's dead-letter queue and the batch dead-letter queue hold the bare event.
//! Replaying is safe because the ledger makes every load exactly once.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::error::LoaderError;
use crate::io::storage::Storage;
use crate::io::warehouse::Warehouse;
use crate::run::batch::{self, Invocation};
use crate::run::handler::Loader;
use crate::run::outcome::Outcome;

/// The event inside a failure-queue message body (pure).
pub fn event_of(body: &str) -> Result<Value, LoaderError> {
    let value: Value = serde_json::from_str(body)
        .map_err(|e| LoaderError::BadEvent(format!("message body is not JSON: {e}")))?;
    match value.get("requestPayload") {
        Some(payload) => Ok(payload.clone()),
        None => Ok(value),
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub seen: usize,
    pub deleted: usize,
    pub failed: usize,
}

fn queue_error(what: &str, queue_url: &str, e: impl std::fmt::Display) -> LoaderError {
    LoaderError::Queue {
        message: format!("{what} on {queue_url}: {e}"),
        retryable: true,
    }
}

/// Receives the queue's messages one at a time until none is left (or `max`), runs
/// each event through the handler, and reports one JSON line per message through
/// `report`. A message that failed is made visible again at the end, so the queue
/// keeps it for the next attempt; each message is tried once per run.
pub async fn redrive<W: Warehouse, S: Storage>(
    loader: &Loader<W, S>,
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    max: Option<usize>,
    holder: &str,
    budget: Duration,
    mut report: impl FnMut(Value),
) -> Result<Summary, LoaderError> {
    // Hidden from other consumers (and from our next receive) while its event runs.
    let hidden = i32::try_from(budget.as_secs() + 60)
        .unwrap_or(43_200)
        .min(43_200);
    let mut summary = Summary::default();
    let mut seen = HashSet::new();
    let mut kept = Vec::new();
    while max.is_none_or(|m| summary.seen < m) {
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(1)
            .visibility_timeout(hidden)
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(|e| {
                queue_error(
                    "ReceiveMessage",
                    queue_url,
                    aws_sdk_sqs::error::DisplayErrorContext(&e),
                )
            })?;
        let Some(message) = received.messages.unwrap_or_default().into_iter().next() else {
            break;
        };
        let id = message.message_id.clone().unwrap_or_default();
        let receipt = message.receipt_handle.clone().unwrap_or_default();
        if !seen.insert(id.clone()) {
            // Came back within this run (its visibility ran out): tried already.
            break;
        }
        summary.seen += 1;
        let result = replay(loader, message.body.as_deref(), holder, budget).await;
        let mut line = match &result {
            Ok(outcome) => outcome.clone(),
            Err(e) => {
                json!({"outcome": "error", "error_type": e.error_type(), "error": e.to_string()})
            }
        };
        let mut deleted = false;
        if result.is_ok() {
            match sqs
                .delete_message()
                .queue_url(queue_url)
                .receipt_handle(&receipt)
                .send()
                .await
            {
                Ok(_) => deleted = true,
                Err(e) => {
                    line["delete_error"] =
                        json!(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())
                }
            }
        }
        if deleted {
            summary.deleted += 1;
        } else {
            summary.failed += 1;
            kept.push(receipt);
        }
        if let Value::Object(map) = &mut line {
            map.insert("message_id".into(), json!(id));
            map.insert("deleted".into(), json!(deleted));
        }
        report(line);
    }
    for receipt in kept {
        sqs.change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(|e| {
                queue_error(
                    "ChangeMessageVisibility",
                    queue_url,
                    aws_sdk_sqs::error::DisplayErrorContext(&e),
                )
            })?;
    }
    Ok(summary)
}

/// One message's event through the handler: the outcome as JSON, or why it failed.
async fn replay<W: Warehouse, S: Storage>(
    loader: &Loader<W, S>,
    body: Option<&str>,
    holder: &str,
    budget: Duration,
) -> Result<Value, LoaderError> {
    let event = event_of(body.unwrap_or_default())?;
    let deadline = Instant::now() + budget;
    match batch::classify(event)? {
        Invocation::Event(event) => {
            let outcome = loader.handle_direct(&event, holder, deadline).await?;
            outcome.log();
            Ok(outcome.to_json())
        }
        Invocation::SqsBatch(records) => {
            let result = loader.handle_batch(&records, holder, deadline).await;
            match result.errors.into_iter().next() {
                Some(e) => Err(e),
                None => Ok(json!({"outcome": "batch", "outcomes":
                    result.outcomes.iter().map(Outcome::to_json).collect::<Vec<_>>()})),
            }
        }
        // A failed scheduled sweep needs no replay: the next one does the same work.
        Invocation::Sweep { .. } => Ok(json!({"outcome": "skipped",
            "reason": "sweep event: the next scheduled sweep does the same work"})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_of_unwraps_the_destination_record_or_takes_the_bare_event() {
        let event = json!({"source": "aws.s3", "detail-type": "Object Created"});
        let record = json!({
            "version": "1.0",
            "timestamp": "2024-05-29T02:20:00.000Z",
            "requestContext": {"requestId": "r", "condition": "RetriesExhausted",
                               "approximateInvokeCount": 3},
            "requestPayload": event,
            "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
            "responsePayload": {"errorType": "Retryable.LockBusy"}
        });
        assert_eq!(event_of(&record.to_string()).unwrap(), event);
        assert_eq!(event_of(&event.to_string()).unwrap(), event);
        assert!(matches!(
            event_of("not json"),
            Err(LoaderError::BadEvent(_))
        ));
    }
}
