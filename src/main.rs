//! The Lambda: configuration and clients are built once per container; each invocation
//! runs the handler with the request id as lease holder.

// The SDK's nested futures exceed the default when the compiler computes their layout.
#![recursion_limit = "256"]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use partition_loader::{init_logging, Config, Loader, Outcome};
use serde_json::Value;
use tokio::time::Instant;

/// Stop starting work this long before Lambda's own deadline, so the invocation can
/// still cancel, release and report.
const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let config = Config::from_env().inspect_err(|e| {
        tracing::error!(error_type = %e.error_type(), error = %e, "invalid configuration");
    })?;
    let loader = Arc::new(Loader::connect(config).await);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let loader = Arc::clone(&loader);
        async move { invoke(&loader, event).await }
    }))
    .await
}

async fn invoke<W, S>(
    loader: &Loader<W, S>,
    event: LambdaEvent<Value>,
) -> Result<Outcome, Diagnostic>
where
    W: partition_loader::warehouse::Warehouse,
    S: partition_loader::storage::Storage,
{
    let remaining = event
        .context
        .deadline()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let deadline = Instant::now() + remaining.saturating_sub(DEADLINE_MARGIN);
    let holder = event.context.request_id.clone();
    match loader.handle(&event.payload, &holder, deadline).await {
        Ok(outcome) => {
            outcome.log();
            Ok(outcome)
        }
        Err(e) => {
            tracing::error!(error_type = %e.error_type(), error = %e, holder, "invocation failed");
            Err(e.into())
        }
    }
}
