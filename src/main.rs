//! The Lambda: configuration and clients are built once per container; each invocation
//! runs the handler with the request id as lease holder.

// The SDK's nested futures exceed the default when the compiler computes their layout.
#![recursion_limit = "256"]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use partition_loader::error::LoaderError;
use partition_loader::run::batch::{self, Invocation};
use partition_loader::run::invocation::{handle_batch_measured, handle_measured, sweep_measured};
use partition_loader::run::metrics::{self, Settings};
use partition_loader::{init_logging, Loader};
use serde_json::Value;
use tokio::time::Instant;

/// Stop starting work this long before Lambda's own deadline, so the invocation can
/// still cancel, release and report; a fifth of the time when the timeout is short.
const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    // The routes may come from SSM or S3: read once per container, here.
    let sdk = partition_loader::io::sdk::load_config().await;
    let metrics = Settings::from_env().map_err(startup_failed);
    let config = partition_loader::lake::routes_source::config_from_env(&sdk)
        .await
        .map_err(|e| match &metrics {
            Ok(settings) => startup_failed_with(settings, e),
            Err(_) => startup_failed(e),
        })?;
    let metrics = Arc::new(metrics?);
    let loader = Arc::new(Loader::connect(config).await);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let loader = Arc::clone(&loader);
        let metrics = Arc::clone(&metrics);
        async move { invoke(&loader, &metrics, event).await }
    }))
    .await
}

/// Answers with the event's outcome, or for an SQS batch with `{"batchItemFailures":
/// [...]}` naming the messages that failed (the event source mapping's
/// ReportBatchItemFailures).
async fn invoke<W, S>(
    loader: &Loader<W, S>,
    metrics: &Settings,
    event: LambdaEvent<Value>,
) -> Result<Value, Diagnostic>
where
    W: partition_loader::io::warehouse::Warehouse,
    S: partition_loader::io::storage::Storage,
{
    let remaining = remaining_time(event.context.deadline, SystemTime::now());
    let deadline = Instant::now() + remaining - DEADLINE_MARGIN.min(remaining / 5);
    // Each attempt its own token: Lambda's retries keep the request id.
    let holder = partition_loader::protocol::lease::attempt_token(&event.context.request_id);
    tracing::debug!(
        remaining_ms = remaining.as_millis() as u64,
        holder,
        "invocation"
    );
    // One EMF record per invocation (per table it touched, for a batch or the sweep), on
    // stdout: Lambda sends it to CloudWatch Logs, which extracts the metrics (logs go to
    // stderr, so each record stands alone on its line).
    let result = match batch::classify(event.payload) {
        Ok(Invocation::Event(payload)) => {
            let measured = handle_measured(loader, metrics, &payload, &holder, deadline).await;
            println!("{}", measured.record);
            measured.result.map(|outcome| {
                outcome.log();
                outcome.to_json()
            })
        }
        Ok(Invocation::SqsBatch(records)) => {
            let measured =
                handle_batch_measured(loader, metrics, &records, &holder, deadline).await;
            print_records(&measured.records);
            return Ok(serde_json::to_value(measured.result.response).unwrap_or_default());
        }
        Ok(Invocation::Sweep { look_back_days }) => {
            let days = look_back_days.unwrap_or(loader.config().sweep_look_back_days);
            let measured = sweep_measured(loader, metrics, days, &holder, deadline).await;
            print_records(&measured.records);
            measured.result
        }
        Err(e) => Err(e),
    };
    result.map_err(|e| {
        tracing::error!(error_type = %e.error_type(), error = %e, holder, "invocation failed");
        e.into()
    })
}

/// A start-up error: logged, and printed as an EMF record (the settings' namespace) so
/// that the PermanentErrors alarm sees a function that cannot start.
fn startup_failed_with(settings: &Settings, e: LoaderError) -> LoaderError {
    tracing::error!(error_type = %e.error_type(), error = %e, "invalid configuration");
    println!(
        "{}",
        metrics::startup_record(settings, &e, SystemTime::now())
    );
    e
}

/// [`startup_failed_with`] when the metrics settings themselves are bad: the record goes
/// to the default namespace.
fn startup_failed(e: LoaderError) -> LoaderError {
    startup_failed_with(&Settings::default(), e)
}

fn print_records(records: &[Value]) {
    for record in records {
        println!("{record}");
    }
}

/// Lambda sends the deadline as epoch milliseconds; `cargo lambda watch` sends the
/// timeout itself (600000). A value before 2001 cannot be an epoch deadline, so it is
/// read as the time left.
fn remaining_time(deadline_ms: u64, now: SystemTime) -> Duration {
    const YEAR_2001_MS: u64 = 978_307_200_000;
    if deadline_ms < YEAR_2001_MS {
        return Duration::from_millis(deadline_ms);
    }
    (SystemTime::UNIX_EPOCH + Duration::from_millis(deadline_ms))
        .duration_since(now)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_epoch_millis_or_a_duration() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        assert_eq!(
            remaining_time(1_700_000_030_000, now),
            Duration::from_secs(30)
        );
        assert_eq!(remaining_time(1_600_000_000_000, now), Duration::ZERO);
        assert_eq!(remaining_time(600_000, now), Duration::from_secs(600));
    }
}
