//! The statement holds the lease (issue 21.1, 21.2) against the local stack: a COPY
//! several times longer than its invocation is left running, loads exactly once with
//! no invocation alive for most of it, and what was queued meanwhile is loaded after
//! it by its completion event (the emulator sends it to the moto queue named by
//! `REDSHIFT_DATA_EVENT_QUEUE_URL`, as an EventBridge rule would), or with the event
//! dropped, by the sweep.

mod common;

use std::time::Duration;

use common::*;
use partition_loader::Outcome;
use serde_json::{json, Value};
use tokio::time::Instant;

/// How long the emulator holds the load batch (SUBMITTED, `hold_statements`): longer
/// than the invocation's deadline (6 s) plus the lease's margin
/// (`lease::LEASE_MARGIN`, 15 s), so the lease expires while the statement still runs.
const HOLD_MS: u64 = 30_000;
const INVOCATION: Duration = Duration::from_secs(6);

async fn direct_orders(stack: &Stack) -> (TestLoader, String) {
    let loader = stack.loader(&stack.orders_route("")).await;
    let t = stack
        .create_table("orders", "id BIGINT, name VARCHAR(64)")
        .await;
    (loader, t)
}

/// Loads A with a COPY held for [`HOLD_MS`] in a 6 s invocation (outcome `running`);
/// queues B while its lease is live and C after it expired, the statement still
/// running. Returns the statement id and when A's invocation started.
async fn leave_a_long_copy(stack: &Stack, loader: &TestLoader, t: &str) -> (String, Instant) {
    let a = stack.orders_file("part-0.parquet", 0..3).await;
    stack
        .fault(json!({"hold_statements": [
            {"sql_contains": "COPY", "count": 1, "hold_ms": HOLD_MS}]}))
        .await;
    let started = Instant::now();
    let out = loader
        .handle(&a, &holder(), started + INVOCATION)
        .await
        .expect("A's invocation ends");
    let Outcome::Running { statement_id, .. } = out else {
        panic!("expected running, got {out:?}");
    };
    assert!(
        started.elapsed() < INVOCATION,
        "the invocation ended by its deadline"
    );
    let b = stack.orders_file("part-1.parquet", 10..12).await;
    let queued = handle(loader, &b).await;
    assert!(matches!(queued, Ok(Outcome::Queued { .. })), "{queued:?}");
    // The lease expires (deadline + margin) while the statement still runs: still busy.
    tokio::time::sleep_until(started + INVOCATION + Duration::from_secs(17)).await;
    assert_eq!(
        stack
            .count(&format!(
                "SELECT COUNT(*) FROM {} WHERE expires_at > GETDATE()",
                stack.loader_table(t, "lease")
            ))
            .await,
        0,
        "the lease expired"
    );
    let c = stack.orders_file("part-2.parquet", 20..21).await;
    let queued = handle(loader, &c).await;
    assert!(
        matches!(queued, Ok(Outcome::Queued { .. })),
        "an expired lease whose statement runs is busy: {queued:?}"
    );
    assert_eq!(stack.rows(t).await, 0, "nothing committed yet");
    assert!(
        started.elapsed() < Duration::from_millis(HOLD_MS),
        "the statement still runs"
    );
    (statement_id, started)
}

fn sqs_client() -> aws_sdk_sqs::Client {
    let endpoint = std::env::var("AWS_ENDPOINT_URL_SQS").expect("AWS_ENDPOINT_URL_SQS");
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

/// The queue the emulator sends status changes to (created if missing).
async fn events_queue(sqs: &aws_sdk_sqs::Client) -> String {
    let url = std::env::var("REDSHIFT_DATA_EVENT_QUEUE_URL")
        .expect("REDSHIFT_DATA_EVENT_QUEUE_URL (scripts/local-stack env)");
    let name = url.rsplit('/').next().unwrap_or_default().to_string();
    sqs.create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("create the events queue");
    url
}

/// Waits for the status change of `statement_id`; deletes every message it reads (only
/// this test reads the queue).
async fn status_change(sqs: &aws_sdk_sqs::Client, queue: &str, statement_id: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(90);
    while Instant::now() < until {
        let got = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        let mut found = None;
        for m in got.messages() {
            if let Some(h) = m.receipt_handle() {
                let _ = sqs
                    .delete_message()
                    .queue_url(queue)
                    .receipt_handle(h)
                    .send()
                    .await;
            }
            let event: Value = serde_json::from_str(m.body().unwrap_or("{}")).unwrap_or_default();
            if event["detail"]["statementId"] == statement_id {
                found = Some(event);
            }
        }
        if let Some(event) = found {
            return event;
        }
    }
    panic!("no status change of {statement_id}");
}

#[tokio::test]
async fn a_copy_longer_than_its_invocation_loads_once_and_its_completion_event_drains_the_rest() {
    let stack = Stack::new().await;
    let sqs = sqs_client();
    let queue = events_queue(&sqs).await;
    let (loader, t) = direct_orders(&stack).await;
    let (statement_id, started) = leave_a_long_copy(&stack, &loader, &t).await;
    let event = status_change(&sqs, &queue, &statement_id).await;
    assert!(
        started.elapsed() >= Duration::from_millis(HOLD_MS),
        "sent when the statement ended"
    );
    // Redshift's shape (data-api-monitoring-events.html): no error text.
    assert_eq!(event["source"], "aws.redshift-data");
    assert_eq!(
        event["detail-type"],
        "Redshift Data Statement Status Change"
    );
    assert_eq!(event["detail"]["state"], "FINISHED");
    let name = event["detail"]["statementName"]
        .as_str()
        .unwrap_or_default();
    assert!(
        name.starts_with(&format!("partition-loader:{t}:")),
        "{name}"
    );
    assert_eq!(
        stack.rows(&t).await,
        3,
        "A, committed by the statement alone"
    );
    let done = handle(&loader, &event).await;
    assert!(
        matches!(
            done,
            Ok(Outcome::Completed {
                taken_over: true,
                ..
            })
        ),
        "{done:?}"
    );
    assert_eq!(stack.rows(&t).await, 6, "B and C after A, each once");
    assert_eq!(stack.ledger_rows(&t).await, 3);
    assert_eq!(stack.wakeup_rows(&t).await, 0);
    assert_eq!(stack.lease_rows(&t).await, 0, "released");
    // A duplicate event changes nothing.
    let again = handle(&loader, &event).await;
    assert!(
        matches!(
            again,
            Ok(Outcome::Completed {
                taken_over: false,
                ..
            })
        ),
        "{again:?}"
    );
    assert_eq!(stack.rows(&t).await, 6);
}

#[tokio::test]
async fn with_the_completion_event_lost_the_sweep_finishes_the_statements_protocol() {
    let stack = Stack::new().await;
    let (loader, t) = direct_orders(&stack).await;
    let (_, started) = leave_a_long_copy(&stack, &loader, &t).await;
    // A sweep while the statement runs leaves the lease to it.
    let early = loader.sweep(&holder(), 1, deadline()).await;
    assert!(early.iter().all(|r| r.is_ok()), "{early:?}");
    assert_eq!(stack.rows(&t).await, 0);
    assert!(
        stack.wakeup_rows(&t).await >= 3,
        "B, C and A's own (and the sweep's)"
    );
    tokio::time::sleep_until(started + Duration::from_millis(HOLD_MS + 3_000)).await;
    while stack.rows(&t).await < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "A never committed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let swept = loader.sweep(&holder(), 1, deadline()).await;
    assert!(swept.iter().all(|r| r.is_ok()), "{swept:?}");
    assert_eq!(stack.rows(&t).await, 6, "B and C after A, each once");
    assert_eq!(stack.wakeup_rows(&t).await, 0);
    assert_eq!(stack.lease_rows(&t).await, 0, "released");
}

/// A lease token per tenure (simulation seed 4174 of `statement`): a statement of an
/// invocation's earlier tenure that runs late (here its release, as when its caller gave
/// up on it and the cancel did not take) must not free the lease the same invocation
/// took again for its next load, or another invocation's COPY runs beside that load.
#[tokio::test]
async fn a_late_release_of_an_earlier_tenure_leaves_the_next_tenures_lease_alone() {
    let stack = Stack::new().await;
    let (loader, t) = direct_orders(&stack).await;
    let me = holder();
    let a = stack.orders_file("part-0.parquet", 0..3).await;
    let first = loader.handle(&a, &me, deadline()).await;
    assert!(matches!(first, Ok(Outcome::Loaded { .. })), "{first:?}");
    let ledger = stack.loader_table(&t, "ledger");
    let earlier = stack
        .text(&format!("SELECT MIN(holder) FROM {ledger}"))
        .await
        .expect("A's tenure in the ledger");
    stack
        .fault(json!({"hold_statements": [
            {"sql_contains": "COPY", "count": 1, "hold_ms": 4_000}]}))
        .await;
    let b = stack.orders_file("part-1.parquet", 10..12).await;
    let lease = stack.loader_table(&t, "lease");
    let late_release = async {
        let until = Instant::now() + Duration::from_secs(10);
        while stack
            .count(&format!(
                "SELECT COUNT(*) FROM {lease} WHERE holder IS NOT NULL"
            ))
            .await
            == 0
        {
            assert!(Instant::now() < until, "the second tenure takes the lease");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The earlier tenure's release (`sql::release_batch`), run late.
        stack
            .sql(&format!(
                "UPDATE {lease} SET holder = NULL, acquired_at = NULL, expires_at = NULL \
                 WHERE holder = '{earlier}'"
            ))
            .await;
    };
    let (second, ()) = tokio::join!(loader.handle(&b, &me, deadline()), late_release);
    assert!(
        matches!(second, Ok(Outcome::Loaded { .. })),
        "the later tenure still holds its lease and commits: {second:?}"
    );
    let tenures = stack
        .count(&format!("SELECT COUNT(DISTINCT holder) FROM {ledger}"))
        .await;
    assert_eq!(tenures, 2, "each load its own tenure's token");
    assert_eq!(stack.rows(&t).await, 5);
    assert_eq!(stack.lease_rows(&t).await, 0, "released");
}
