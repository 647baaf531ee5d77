//! The lease protocol against the local stack: tables independent of each other under
//! Redshift's table-level serializable rule, hand-off, sweep, chaos.

mod common;

use std::sync::{Arc, Mutex};

use aws_sdk_redshiftdata::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_redshiftdata::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
use common::*;
use partition_loader::handler::Loader;
use partition_loader::storage::S3;
use partition_loader::warehouse::DataApi;
use partition_loader::{Config, Outcome};
use serde_json::json;

/// Counts the distinct statements the Data API reported FAILED with error 1023.
#[derive(Debug, Clone, Default)]
struct ConflictCounter(Arc<Mutex<std::collections::HashSet<String>>>);

impl Intercept for ConflictCounter {
    fn name(&self) -> &'static str {
        "ConflictCounter"
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_redshiftdata::error::BoxError> {
        let described = context
            .output_or_error()
            .and_then(|r| r.ok())
            .and_then(|o| o.downcast_ref::<DescribeStatementOutput>());
        if let Some(d) = described {
            let failed = d.sub_statements().iter().any(|s| {
                s.error().is_some_and(|e| e.contains("1023"))
            }) || d.error().is_some_and(|e| e.contains("1023"));
            if failed {
                if let (Some(id), Ok(mut ids)) = (d.id().into(), self.0.lock()) {
                    ids.insert(id.to_string());
                }
            }
        }
        Ok(())
    }
}

impl ConflictCounter {
    fn count(&self) -> usize {
        self.0.lock().map(|ids| ids.len()).unwrap_or_default()
    }
}

async fn counted_loader(config: Config, counter: ConflictCounter) -> TestLoader {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let rsd = aws_sdk_redshiftdata::Client::from_conf(
        aws_sdk_redshiftdata::config::Builder::from(&sdk)
            .interceptor(counter)
            .build(),
    );
    let warehouse = DataApi::new(rsd, config.redshift.clone(), config.database.clone());
    Loader::new(config, warehouse, S3::new(s3))
}

/// Eight tables load at once, three rounds of new files each: under SERIALIZABLE with
/// Redshift's table-level rule, a shared lease table or ledger makes loads into
/// different tables abort each other (error 1023, COPY re-run). Per-table lease,
/// ledger and wake-up tables make them independent.
#[tokio::test]
async fn eight_tables_loading_at_once_never_conflict() {
    const TABLES: usize = 8;
    const ROUNDS: i64 = 3;
    let stack = Stack::new().await;
    let mut routes = String::new();
    for i in 0..TABLES {
        routes.push_str(&format!(
            "[[routes]]\nbucket = \"{}\"\nprefix = \"t{i}/\"\ntable = \"{}\"\nformat = \"parquet\"\n\
             partition_columns = [{{ name = \"order_date\", type = \"date\" }}]\n",
            stack.bucket,
            stack.table(&format!("t{i}"))
        ));
    }
    let boot = stack.loader(&routes).await;
    drop(boot);
    for i in 0..TABLES {
        stack
            .create_table(&format!("t{i}"), "id BIGINT, name VARCHAR(64), order_date DATE")
            .await;
    }
    // Slower calls make the eight transactions overlap, as COPYs of real size do.
    stack.fault(json!({"latency_ms": 30})).await;
    let counter = ConflictCounter::default();
    let loader = Arc::new(counted_loader(stack.config(&routes), counter.clone()).await);
    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        for i in 0..TABLES {
            let first = (i as i64 * ROUNDS + round) * 10;
            let key = format!("t{i}/order_date=2024-05-28/part-{round}.parquet");
            let event = stack.parquet_event(&key, first..first + 10).await;
            let loader = loader.clone();
            tasks.push(tokio::spawn(async move { handle(&loader, &event).await }));
        }
        for task in tasks {
            match task.await.expect("task") {
                Ok(Outcome::Loaded { files: 1, .. }) => {}
                other => panic!("round {round}: {other:?}"),
            }
        }
    }
    for i in 0..TABLES {
        let t = stack.table(&format!("t{i}"));
        assert_eq!(stack.rows(&t).await, ROUNDS * 10, "{t}");
        assert_eq!(stack.ledger_rows(&t).await, ROUNDS, "{t}");
    }
    let conflicts = counter.count();
    eprintln!("serialization conflicts (1023) between tables: {conflicts}");
    assert_eq!(conflicts, 0, "loads into different tables conflicted");
}
