//! The protocol holes of issue 18 (items 2 to 6), each a scenario against the local
//! stack that lost or doubled a file before its fix.

mod common;

use std::time::Duration;

use common::*;
use partition_loader::sql::{LeaseTables, TableName, LOADED_ELSEWHERE_MARKER};
use partition_loader::Outcome;
use serde_json::json;
use tokio::time::Instant;

/// The orders route into a table whose columns the Parquet files hold (a direct COPY
/// into the table, so `fail_copies` can name it).
async fn direct_orders(stack: &Stack) -> (TestLoader, String) {
    let loader = stack.loader(&stack.orders_route("")).await;
    let t = stack
        .create_table("orders", "id BIGINT, name VARCHAR(64)")
        .await;
    (loader, t)
}

/// What S3 throttling inside a Parquet COPY (read through Redshift Spectrum) reads like.
const SLOW_DOWN: &str = "ERROR: Spectrum Scan Error DETAIL: S3ServiceException:Please reduce \
                         your request rate.,Status 503,Error SlowDown,Rid 1,ExtRid 2";

/// The lease token of one attempt of a Lambda request, as the entry points make it.
fn attempt(request_id: &str) -> String {
    partition_loader::protocol::lease::attempt_token(request_id)
}

#[tokio::test]
async fn a_throttled_copy_of_a_claimed_partition_keeps_its_wake_up() {
    let stack = Stack::new().await;
    let (loader, t) = direct_orders(&stack).await;
    let a = stack.orders_file("part-0.parquet", 0..3).await;
    assert!(matches!(
        handle(&loader, &a).await,
        Ok(Outcome::Loaded { .. })
    ));
    // A holder that died left a wake-up for partition B.
    stack.insert_lease(&t, "dead-holder", 600).await;
    let b = stack
        .parquet_event("orders/order_date=2024-05-29/part-0.parquet", 10..12)
        .await;
    assert!(matches!(
        handle(&loader, &b).await,
        Ok(Outcome::Queued { .. })
    ));
    stack.insert_lease(&t, "dead-holder", -1).await;
    // A replay of A takes the expired lease and drains B, whose COPY S3 throttles.
    stack
        .fault(json!({"fail_copies": [{"table": t, "count": 1, "message": SLOW_DOWN}]}))
        .await;
    let e = handle(&loader, &a).await.unwrap_err();
    assert!(e.error_type().starts_with("Retryable."), "{e}");
    // The replay's first take found the lease expired and queued A's own wake-up
    // before it looked up the dead holder's statement (none) and took the lease over
    // (issue 21.1): kept too, and harmless (A's partition is up to date).
    assert_eq!(
        stack
            .count(&format!(
                "SELECT COUNT(*) FROM {} WHERE partition_path = 'order_date=2024-05-29/'",
                stack.loader_table(&t, "wakeup")
            ))
            .await,
        1,
        "B's wake-up is kept"
    );
    assert_eq!(stack.rows(&t).await, 3);
    assert_eq!(stack.lease_rows(&t).await, 0, "released for the retry");
    // Lambda's retry drains it.
    assert!(handle(&loader, &a).await.is_ok());
    assert_eq!(stack.rows(&t).await, 5);
    assert_eq!(stack.wakeup_rows(&t).await, 0);
}

#[tokio::test]
async fn a_throttled_copy_of_the_events_own_partition_is_retryable() {
    let stack = Stack::new().await;
    let (loader, t) = direct_orders(&stack).await;
    let a = stack.orders_file("part-0.parquet", 0..3).await;
    stack
        .fault(json!({"fail_copies": [{"table": t, "count": 1, "message": SLOW_DOWN}]}))
        .await;
    let e = handle(&loader, &a).await.unwrap_err();
    assert_eq!(e.error_type(), "Retryable.LoadInterrupted", "{e}");
    assert!(e.to_string().contains("SlowDown"), "{e}");
    assert_eq!(stack.rows(&t).await, 0);
    assert!(matches!(
        handle(&loader, &a).await,
        Ok(Outcome::Loaded { .. })
    ));
}

/// Two routes into one table: `orders/` and `orders_eu/`.
fn two_routes(stack: &Stack) -> String {
    format!(
        "{}[[routes]]\nbucket = \"{}\"\nprefix = \"orders_eu/\"\ntable = \"{}\"\n\
         format = \"parquet\"\npartition_columns = [{{ name = \"order_date\", type = \"date\" }}]\n",
        stack.orders_route(""),
        stack.bucket,
        stack.table("orders")
    )
}

#[tokio::test]
async fn a_wake_up_of_a_second_route_is_loaded_under_that_route() {
    let stack = Stack::new().await;
    let loader = stack.loader(&two_routes(&stack)).await;
    let t = stack.orders_table().await;
    stack.insert_lease(&t, "busy-holder", 600).await;
    let eu = stack
        .parquet_event("orders_eu/order_date=2024-05-29/part-0.parquet", 10..12)
        .await;
    assert!(matches!(
        handle(&loader, &eu).await,
        Ok(Outcome::Queued { .. })
    ));
    stack.insert_lease(&t, "busy-holder", -1).await;
    // The next holder came for the first route.
    let us = stack.orders_file("part-0.parquet", 0..3).await;
    let o = handle(&loader, &us).await;
    assert!(matches!(o, Ok(Outcome::Loaded { .. })), "{o:?}");
    assert_eq!(
        stack.rows(&t).await,
        5,
        "the second route's file is loaded too"
    );
    assert_eq!(stack.wakeup_rows(&t).await, 0);
}

#[tokio::test]
async fn the_sweep_covers_every_route_of_a_table() {
    let stack = Stack::new().await;
    let loader = stack.loader(&two_routes(&stack)).await;
    let t = stack.orders_table().await;
    let today = chrono::Utc::now().date_naive().format("%Y-%m-%d");
    // Two files whose events never came, one per route.
    stack
        .put_parquet(&format!("orders/order_date={today}/a.parquet"), 0..3)
        .await;
    stack
        .put_parquet(&format!("orders_eu/order_date={today}/b.parquet"), 10..12)
        .await;
    let swept = loader.sweep(&holder(), 1, deadline()).await;
    assert!(swept.iter().all(|r| r.is_ok()), "{swept:?}");
    assert_eq!(stack.rows(&t).await, 5);
}

#[tokio::test]
async fn a_thirty_second_function_drains_a_queued_wake_up() {
    let stack = Stack::new().await;
    let (loader, t) = direct_orders(&stack).await;
    let a = stack.orders_file("part-0.parquet", 0..3).await;
    let b = stack.orders_file("part-1.parquet", 3..5).await;
    // A's load batch waits 6 s in the queue, as a COPY on a busy cluster takes seconds:
    // B's event comes meanwhile and is queued for A's holder.
    stack
        .fault(
            json!({"hold_statements": [{"sql_contains": "MANIFEST", "count": 1, "hold_ms": 6000}]}),
        )
        .await;
    // What main.rs gives the handler when the function's timeout is 30 s.
    let deadline = Instant::now() + Duration::from_secs(25);
    let token = attempt("req-a");
    let (first, second) = tokio::join!(loader.handle(&a, &token, deadline), async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        handle(&loader, &b).await
    });
    assert!(matches!(second, Ok(Outcome::Queued { .. })), "{second:?}");
    assert!(matches!(first, Ok(Outcome::Loaded { .. })), "{first:?}");
    assert_eq!(
        stack.rows(&t).await,
        5,
        "the holder drained B before its deadline"
    );
    assert_eq!(stack.wakeup_rows(&t).await, 0);
    assert_eq!(stack.lease_rows(&t).await, 0);
}

#[tokio::test]
async fn a_second_attempt_of_one_request_never_loads_a_file_twice() {
    let stack = Stack::new().await;
    let (loader, t) = direct_orders(&stack).await;
    let event = stack.orders_file("part-0.parquet", 0..3).await;
    // Every load batch waits 6 s in the queue.
    stack
        .fault(
            json!({"hold_statements": [{"sql_contains": "MANIFEST", "count": 2, "hold_ms": 6000}]}),
        )
        .await;
    // Attempt 1 is killed at its timeout while its batch waits: nothing cancels it.
    let killed = tokio::time::timeout(
        Duration::from_secs(3),
        loader.handle(&event, &attempt("req-1"), deadline()),
    )
    .await;
    assert!(killed.is_err(), "{killed:?}");
    // Lambda's retry: the same request id. Attempt 1's batch still waits: the retry
    // finds its statement running and leaves the lease to it (issue 21.1), queued.
    let second = loader.handle(&event, &attempt("req-1"), deadline()).await;
    match &second {
        Ok(o) => assert!(
            matches!(
                o,
                Outcome::Loaded { .. } | Outcome::UpToDate { .. } | Outcome::Queued { .. }
            ),
            "{o:?}"
        ),
        Err(e) => assert!(e.error_type().starts_with("Retryable."), "{e}"),
    }
    // Both batches have run by now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(stack.rows(&t).await, 3, "loaded once: {second:?}");
    assert_eq!(stack.ledger_rows(&t).await, 1);
}

#[tokio::test]
async fn the_sweep_starts_nothing_past_its_deadline() {
    let stack = Stack::new().await;
    let (loader, t) = direct_orders(&stack).await;
    let today = chrono::Utc::now().date_naive().format("%Y-%m-%d");
    for n in 0..3 {
        stack
            .put_parquet(&format!("orders/order_date={today}/{n}.parquet"), 0..1)
            .await;
    }
    // Less time left than any step needs.
    let swept = loader
        .sweep(&holder(), 1, Instant::now() + Duration::from_millis(200))
        .await;
    assert!(
        swept.iter().all(|r| match r {
            Err(e) => e.name() != "Timeout",
            Ok(_) => true,
        }),
        "no take started and cancelled: {swept:?}"
    );
    assert_eq!(stack.lease_rows(&t).await, 0);
    assert_eq!(stack.rows(&t).await, 0);
}

#[tokio::test]
async fn a_busy_table_gets_one_sweep_wake_up() {
    let stack = Stack::new().await;
    let (loader, t) = direct_orders(&stack).await;
    let today = chrono::Utc::now().date_naive();
    for back in 0..3 {
        let day = today - chrono::Days::new(back);
        stack
            .put_parquet(&format!("orders/order_date={day}/a.parquet"), 0..1)
            .await;
    }
    stack.insert_lease(&t, "live-holder", 600).await;
    let swept = loader.sweep(&holder(), 3, deadline()).await;
    assert!(swept.iter().all(|r| r.is_ok()), "{swept:?}");
    assert_eq!(
        stack.wakeup_rows(&t).await,
        1,
        "the live holder drains; the next sweep comes back"
    );
}

#[tokio::test]
async fn a_retry_takes_over_its_own_earlier_attempts_lease_and_no_one_elses() {
    let stack = Stack::new().await;
    let (loader, t) = direct_orders(&stack).await;
    let event = stack.orders_file("part-0.parquet", 0..3).await;
    // Attempt 1 of request req-9 died holding the lease.
    stack.insert_lease(&t, "req-9~0000aaaa", 600).await;
    let other = loader.handle(&event, &attempt("req-7"), deadline()).await;
    assert!(matches!(other, Ok(Outcome::Queued { .. })), "{other:?}");
    // Its retry (same request id, its own token) takes the lease over at once.
    let retry = loader.handle(&event, &attempt("req-9"), deadline()).await;
    assert!(matches!(retry, Ok(Outcome::Loaded { .. })), "{retry:?}");
    assert_eq!(stack.rows(&t).await, 3);
    assert_eq!(stack.wakeup_rows(&t).await, 0);
    assert_eq!(stack.lease_rows(&t).await, 0);
}

#[tokio::test]
async fn the_fence_refuses_files_another_load_has_in_the_ledger() {
    let stack = Stack::new().await;
    let routes = stack.orders_route("");
    let (_, t) = direct_orders(&stack).await;
    let admin = partition_loader::Loader::connect(stack.admin_config(&routes)).await;
    let tables = LeaseTables::for_target(&TableName::parse(&t).unwrap());
    let ledger = stack.loader_table(&t, "ledger");
    stack.insert_lease(&t, "h", 600).await;
    let key = |f: &str| format!("{ORDERS_DAY}/{f}");
    stack
        .insert_ledger_row(&t, &key("a.parquet"), "e", "h")
        .await;
    let load = |file: &str| {
        vec![
            format!(
                "INSERT INTO {ledger} VALUES ('order_date=2024-05-28/', 's3://{}/{}', 'e', 1, \
                 GETDATE(), 'h', 'load-2')",
                stack.bucket,
                key(file)
            ),
            format!(
                "CALL {}.{}('h', 600, 'order_date=2024-05-28/', 'load-2')",
                stack.loader_schema,
                tables.fence.quoted()
            ),
        ]
    };
    let e = admin
        .execute_batch(load("a.parquet"), deadline())
        .await
        .unwrap_err();
    assert!(e.to_string().contains(LOADED_ELSEWHERE_MARKER), "{e}");
    assert_eq!(stack.ledger_rows(&t).await, 1, "rolled back");
    admin
        .execute_batch(load("b.parquet"), deadline())
        .await
        .expect("a file no other load has passes");
    assert_eq!(stack.ledger_rows(&t).await, 2);
}

#[tokio::test]
async fn bootstrap_migrates_a_wake_up_table_of_an_earlier_version() {
    let stack = Stack::new().await;
    let routes = stack.orders_route("");
    let (loader, t) = direct_orders(&stack).await;
    let wakeup = stack.loader_table(&t, "wakeup");
    let tables = LeaseTables::for_target(&TableName::parse(&t).unwrap());
    let take = format!("{}.{}", stack.loader_schema, tables.take.quoted());
    // What an earlier version left: no route column, the six-argument take, and a
    // wake-up it queued.
    stack
        .sql(&format!("ALTER TABLE {wakeup} DROP COLUMN route_prefix"))
        .await;
    stack
        .sql(&format!(
            "CREATE PROCEDURE {take}(a VARCHAR(256), b INTEGER, c VARCHAR(256), \
             d VARCHAR(1024), e VARCHAR(2048), f VARCHAR(128)) AS $$ BEGIN RAISE INFO 'old'; \
             END; $$ LANGUAGE plpgsql"
        ))
        .await;
    stack.orders_file("part-0.parquet", 0..3).await;
    stack
        .sql(&format!(
            "INSERT INTO {wakeup} (bucket, partition_path, s3_url, etag, queued_by, queued_at) \
             VALUES ('{}', 'order_date=2024-05-28/', '', '', 'old', GETDATE())",
            stack.bucket
        ))
        .await;
    stack.bootstrap_as_admin(&routes).await;
    stack.bootstrap_as_admin(&routes).await; // idempotent
    let procedures = format!(
        "SELECT COUNT(*) FROM pg_proc WHERE proname = '{}'",
        tables.take.as_str()
    );
    assert_eq!(
        stack.count(&procedures).await,
        1,
        "the old signature is gone"
    );
    // The old wake-up (no route recorded) is loaded under the holder's route.
    let swept = loader.sweep(&holder(), 0, deadline()).await;
    assert!(swept.iter().all(|r| r.is_ok()), "{swept:?}");
    assert_eq!(stack.rows(&t).await, 3);
    assert_eq!(stack.wakeup_rows(&t).await, 0);
}
