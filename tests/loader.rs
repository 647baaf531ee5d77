//! The handler end to end against the local stack (moto S3 + redshift-data-local on
//! PostgreSQL), through the real AWS SDK clients.

mod common;

use std::time::Duration;

use common::*;
use partition_loader::lake::config::{ClusterAuth, RedshiftTarget};
use partition_loader::run::handler::BatchLimits;
use partition_loader::sql::{LeaseTables, TableName};
use partition_loader::{ErrorKind, Loader, LoaderError, Outcome};
use serde_json::json;

#[tokio::test]
async fn one_file_is_loaded_once_and_a_replay_changes_nothing() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    let event = stack.orders_file("part-00000.snappy.parquet", 0..3).await;

    let outcome = handle(&loader, &event).await.unwrap();
    match &outcome {
        Outcome::Loaded {
            table,
            partition,
            files,
            statement_id,
            quarantined,
        } => {
            assert!(quarantined.is_empty());
            assert_eq!(table, &t);
            assert_eq!(
                partition.0,
                vec![("order_date".to_string(), Some("2024-05-28".to_string()))]
            );
            assert_eq!(*files, 1);
            assert!(!statement_id.is_empty());
        }
        other => panic!("expected loaded, got {other:?}"),
    }
    let json = outcome.to_json();
    assert_eq!(json["partition"], json!({"order_date": "2024-05-28"}));
    assert_eq!(stack.rows(&t).await, 3);
    let filled =
        format!("SELECT COUNT(*) FROM {t} WHERE order_date = '2024-05-28' AND name = 'name-2'");
    assert_eq!(stack.count(&filled).await, 1);
    assert_eq!(stack.ledger_rows(&t).await, 1);
    assert_eq!(stack.lease_rows(&t).await, 0, "the load released the lease");

    let again = handle(&loader, &event).await.unwrap();
    assert!(matches!(again, Outcome::UpToDate { .. }), "{again:?}");
    assert_eq!(stack.rows(&t).await, 3);
    assert_eq!(stack.ledger_rows(&t).await, 1);
    assert_eq!(stack.lease_rows(&t).await, 0);
}

#[tokio::test]
async fn a_burst_of_files_costs_one_load() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    let mut events = Vec::new();
    for i in 0..6 {
        let key = format!("{ORDERS_DAY}/part-{i:05}.parquet");
        events.push(stack.parquet_event(&key, i * 10..i * 10 + 4).await);
    }
    let mut outcomes = Vec::new();
    for e in &events {
        outcomes.push(handle(&loader, e).await);
    }
    assert_eq!(loaded_files(&outcomes[0]), 6, "{:?}", outcomes[0]);
    for o in &outcomes[1..] {
        assert!(matches!(o, Ok(Outcome::UpToDate { .. })), "{o:?}");
    }
    assert_eq!(stack.rows(&t).await, 24);
    assert_eq!(stack.ledger_rows(&t).await, 6);
}

#[tokio::test]
async fn several_partitions_and_two_tables_with_multi_column_partitions() {
    let stack = Stack::new().await;
    let routes = format!(
        "{}\n[[routes]]\nbucket = \"{}\"\nprefix = \"events/\"\ntable = \"{}\"\nformat = \"parquet\"\n\
         partition_columns = [{{ name = \"year\", type = \"integer\" }}, {{ name = \"month\", type = \"integer\" }}, \
         {{ name = \"day\", type = \"integer\" }}]\n",
        stack.orders_route(""),
        stack.bucket,
        stack.table("events")
    );
    let loader = stack.loader(&routes).await;
    let orders = stack.orders_table().await;
    let events = stack
        .create_table(
            "events",
            "year INTEGER, month INTEGER, day INTEGER, id BIGINT, name VARCHAR(64)",
        )
        .await;

    let mut evs = Vec::new();
    for (day, n) in [("2024-05-27", 2), ("2024-05-28", 5)] {
        let key = format!("orders/order_date={day}/part-0.parquet");
        evs.push(stack.parquet_event(&key, 0..n).await);
    }
    for (d, n) in [("27", 1), ("28", 7)] {
        let key = format!("events/year=2024/month=05/day={d}/part-0.parquet");
        evs.push(stack.parquet_event(&key, 0..n).await);
    }
    for e in &evs {
        let o = handle(&loader, e).await;
        assert_eq!(loaded_files(&o), 1, "{o:?}");
    }
    let per_day = |d: &str| format!("SELECT COUNT(*) FROM {orders} WHERE order_date = '{d}'");
    assert_eq!(stack.count(&per_day("2024-05-27")).await, 2);
    assert_eq!(stack.count(&per_day("2024-05-28")).await, 5);
    let per_ev = |d: i32| {
        format!("SELECT COUNT(*) FROM {events} WHERE year = 2024 AND month = 5 AND day = {d}")
    };
    assert_eq!(stack.count(&per_ev(27)).await, 1);
    assert_eq!(stack.count(&per_ev(28)).await, 7);
    assert_eq!(stack.ledger_rows(&orders).await, 2);
    assert_eq!(stack.ledger_rows(&events).await, 2);
    let path = format!(
        "SELECT COUNT(*) FROM {} WHERE partition_path = 'year=2024/month=05/day=28/'",
        stack.loader_table(&events, "ledger")
    );
    assert_eq!(stack.count(&path).await, 1);
    for e in &evs {
        let o = handle(&loader, e).await.unwrap();
        assert!(matches!(o, Outcome::UpToDate { .. }), "{o:?}");
    }
    assert_eq!(stack.rows(&orders).await, 7);
    assert_eq!(stack.rows(&events).await, 8);
}

#[tokio::test]
async fn replace_mode_rewrites_the_partition() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("mode = \"replace\"").await;
    // A row of another partition must survive the rewrite.
    stack
        .sql(&format!(
            "INSERT INTO {t} VALUES (99, 'other', '2024-05-01')"
        ))
        .await;
    let a = format!("{ORDERS_DAY}/part-a.parquet");
    let b = format!("{ORDERS_DAY}/part-b.parquet");
    let event_a = stack.parquet_event(&a, 0..3).await;
    stack.put_parquet(&b, 3..5).await;
    let o = handle(&loader, &event_a).await;
    assert_eq!(loaded_files(&o), 2, "{o:?}");
    assert_eq!(stack.rows(&t).await, 6);

    // The job overwrites part-a with different data.
    let event_a = stack.parquet_event(&a, 100..110).await;
    let o = handle(&loader, &event_a).await;
    assert_eq!(loaded_files(&o), 2, "all files are reloaded: {o:?}");
    let part = format!("SELECT COUNT(*) FROM {t} WHERE order_date = '2024-05-28'");
    assert_eq!(stack.count(&part).await, 12);
    assert_eq!(stack.rows(&t).await, 13);
    assert_eq!(stack.ledger_rows(&t).await, 2);
    let o = handle(&loader, &stack.event(&b, 1)).await.unwrap();
    assert!(matches!(o, Outcome::UpToDate { .. }), "{o:?}");
    assert_eq!(stack.rows(&t).await, 13);
}

#[tokio::test]
async fn form_encoded_key_and_direct_copy() {
    let stack = Stack::new().await;
    let loader = stack.loader(&stack.orders_route("")).await;
    // No partition column in the table: a plain COPY, no staging.
    let t = stack
        .create_table("orders", "id BIGINT, name VARCHAR(64)")
        .await;
    let key = format!("{ORDERS_DAY}/run 2 part+x.parquet");
    let size = stack.put_parquet(&key, 0..4).await;
    let event = stack.event(
        "orders/order_date%3D2024-05-28/run+2+part%2Bx.parquet",
        size,
    );
    let o = handle(&loader, &event).await;
    assert_eq!(loaded_files(&o), 1, "{o:?}");
    assert_eq!(stack.rows(&t).await, 4);
    let url = format!(
        "SELECT COUNT(*) FROM {} WHERE s3_url = 's3://{}/{key}'",
        stack.loader_table(&t, "ledger"),
        stack.bucket
    );
    assert_eq!(stack.count(&url).await, 1);
}

#[tokio::test]
async fn markers_and_unrouted_keys_are_skipped() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    let data = stack.orders_file("part-0.parquet", 0..2).await;
    stack.put(&format!("{ORDERS_DAY}/_SUCCESS"), vec![]).await;
    stack
        .put(&format!("{ORDERS_DAY}/.part-0.parquet.crc"), vec![1, 2])
        .await;
    stack
        .put(&format!("{ORDERS_DAY}/empty.parquet"), vec![])
        .await;
    let skipped = [
        ("orders/order_date=2024-05-28/_SUCCESS", 0, "_SUCCESS"),
        ("orders/_temporary/0/part-0.parquet", 10, "_temporary"),
        ("orders/order_date=2024-05-28/.part-0.parquet.crc", 2, "crc"),
        ("orders/order_date=2024-05-28/empty.parquet", 0, "zero-byte"),
        ("orders/order_date=2024-05-28_$folder$", 0, "folder"),
        ("customers/part-0.parquet", 10, "no route"),
        ("_loader/x/y.manifest", 10, "manifest"),
    ];
    for (key, size, why) in skipped {
        match handle(&loader, &stack.event(key, size)).await {
            Ok(Outcome::Skipped { reason, key: k, .. }) => {
                assert!(reason.contains(why), "{key}: {reason}");
                assert_eq!(k, key);
            }
            other => panic!("{key}: expected skipped, got {other:?}"),
        }
    }
    assert_eq!(stack.rows(&t).await, 0);
    // The markers next to the data file are not loaded with it.
    let o = handle(&loader, &data).await;
    assert_eq!(loaded_files(&o), 1, "{o:?}");
    assert_eq!(stack.ledger_rows(&t).await, 1);
}

#[tokio::test]
async fn a_rewritten_object_in_append_mode_is_a_permanent_error() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    let key = format!("{ORDERS_DAY}/part-0.parquet");
    let first = stack.parquet_event(&key, 0..3).await;
    assert_eq!(loaded_files(&handle(&loader, &first).await), 1);
    let rewritten = stack.parquet_event(&key, 0..5).await;
    let e = handle(&loader, &rewritten).await.unwrap_err();
    assert!(matches!(e, LoaderError::Rewritten { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Permanent);
    assert!(e.to_string().contains("replace"), "{e}");
    assert_eq!(stack.rows(&t).await, 3);
    assert_eq!(stack.ledger_rows(&t).await, 1);
    assert_eq!(
        stack.lease_rows(&t).await,
        0,
        "lease released after the error"
    );
}

#[tokio::test]
async fn a_bad_partition_value_is_a_permanent_error() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    let key = "orders/order_date=2024-02-30/part-0.parquet";
    let event = stack.parquet_event(key, 0..1).await;
    let e = handle(&loader, &event).await.unwrap_err();
    assert_eq!(e.error_type(), "Permanent.BadPartition");
    assert!(e.to_string().contains(key), "{e}");
    let missing = "orders/part-0.parquet";
    let e = handle(&loader, &stack.event(missing, 10))
        .await
        .unwrap_err();
    assert_eq!(e.error_type(), "Permanent.BadPartition");
    assert_eq!(stack.lease_rows(&t).await, 0);
    assert_eq!(stack.rows(&t).await, 0);
}

#[tokio::test]
async fn a_missing_table_is_a_permanent_error_and_releases_the_lease() {
    let stack = Stack::new().await;
    let loader = stack.loader(&stack.orders_route("")).await;
    let event = stack.orders_file("part-0.parquet", 0..1).await;
    let e = handle(&loader, &event).await.unwrap_err();
    assert_eq!(e.error_type(), "Permanent.TableMissing");
    assert!(e.to_string().contains("create it first"), "{e}");
    assert_eq!(stack.lease_rows(&stack.table("orders")).await, 0);
}

#[tokio::test]
async fn concurrent_invocations_load_each_file_once() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    let loader = std::sync::Arc::new(loader);
    let mut events = Vec::new();
    for i in 0..5 {
        let key = format!("{ORDERS_DAY}/part-{i}.parquet");
        events.push(stack.parquet_event(&key, i * 100..i * 100 + 3).await);
    }
    let mut tasks = Vec::new();
    for i in 0..8 {
        let loader = loader.clone();
        let event = events[i % events.len()].clone();
        tasks.push(tokio::spawn(async move { handle(&loader, &event).await }));
    }
    let mut loaded = 0;
    for task in tasks {
        let outcome = task.await.unwrap();
        match &outcome {
            Ok(Outcome::Loaded { files, .. }) => loaded += files,
            // Handed to the holder, which loads it while draining (its outcome counts
            // only its own listing): the table and ledger counts below prove "once".
            Ok(Outcome::UpToDate { .. }) | Ok(Outcome::Queued { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(loaded <= 5, "no file reported loaded twice");
    assert_eq!(stack.rows(&t).await, 15);
    let distinct = format!("SELECT COUNT(DISTINCT id) FROM {t}");
    assert_eq!(stack.count(&distinct).await, 15);
    assert_eq!(stack.ledger_rows(&t).await, 5);
    assert_eq!(stack.lease_rows(&t).await, 0);
}

#[tokio::test]
async fn a_failed_copy_releases_the_lease_and_leaves_the_ledger_unchanged() {
    let stack = Stack::new().await;
    let loader = stack.loader(&stack.orders_route("")).await;
    let t = stack
        .create_table("orders", "id BIGINT, name VARCHAR(64)")
        .await;
    let event = stack.orders_file("part-0.parquet", 0..3).await;
    stack
        .fault(json!({"fail_copies": [{"table": t, "count": 1, "message": "injected: S3 read failed"}]}))
        .await;
    let e = handle(&loader, &event).await.unwrap_err();
    assert_eq!(e.error_type(), "Permanent.LoadRejected", "{e}");
    assert!(e.to_string().contains("injected: S3 read failed"), "{e}");
    assert_eq!(stack.rows(&t).await, 0);
    assert_eq!(stack.ledger_rows(&t).await, 0);
    assert_eq!(
        stack.lease_rows(&t).await,
        0,
        "explicit release after the failure"
    );
    // The fault is used up: the retry loads.
    let o = handle(&loader, &event).await;
    assert_eq!(loaded_files(&o), 1, "{o:?}");
    assert_eq!(stack.rows(&t).await, 3);
}

#[tokio::test]
async fn throttling_is_retried() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    let event = stack.orders_file("part-0.parquet", 0..3).await;
    stack.fault(json!({"throttle_fraction": 0.5})).await;
    let o = handle(&loader, &event).await;
    assert_eq!(loaded_files(&o), 1, "{o:?}");
    assert_eq!(stack.rows(&t).await, 3);
    assert_eq!(stack.ledger_rows(&t).await, 1);
}

/// A loader of `routes` on another workgroup name than the test's (no faults there).
async fn unfaulted(stack: &Stack, routes: &str, name: &str) -> TestLoader {
    let mut config = stack.config(routes);
    config.redshift = RedshiftTarget::Cluster {
        cluster_id: format!("{}-{name}", stack.workgroup),
        auth: ClusterAuth::DbUser(stack.db_user.clone()),
    };
    Loader::connect(config).await
}

/// A loader of `routes` whose lease lasts one second, with slow Data API calls.
async fn slow_with_short_lease(stack: &Stack, routes: &str) -> TestLoader {
    let mut config = stack.config(routes);
    config.lease_ttl = Duration::from_secs(1);
    let slow = Loader::connect(config).await;
    stack.fault(json!({"latency_ms": 700})).await;
    slow
}

#[tokio::test]
async fn a_lost_lease_cannot_commit() {
    let stack = Stack::new().await;
    let routes = stack.orders_route("");
    let (_, t) = stack.orders("").await;
    let event = stack.orders_file("part-0.parquet", 0..3).await;

    // The lease expires between the acquire and the load and another holder takes it
    // over, so the fence inside the load transaction must refuse to commit. (An expired
    // lease that nobody took over is still its holder's: issue 21.1, where a statement
    // left running holds it.)
    let slow = slow_with_short_lease(&stack, &routes).await;
    let (e, _) = tokio::join!(handle(&slow, &event), async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        stack.insert_lease(&t, "taker", 600).await;
    });
    let e = e.unwrap_err();
    assert_eq!(e.error_type(), "Retryable.LeaseLost", "{e}");
    assert_eq!(stack.rows(&t).await, 0, "the COPY was rolled back");
    assert_eq!(stack.ledger_rows(&t).await, 0, "the ledger is unchanged");

    // The next invocation (normal lease, no latency) loads it once, once the taker's
    // lease expired (it has no statement running).
    stack.insert_lease(&t, "taker", -1).await;
    let normal = unfaulted(&stack, &routes, "ok").await;
    let o = handle(&normal, &event).await;
    assert_eq!(loaded_files(&o), 1, "{o:?}");
    assert_eq!(stack.rows(&t).await, 3);
    assert_eq!(stack.ledger_rows(&t).await, 1);
}

#[tokio::test]
async fn the_fence_refuses_a_lease_held_by_another_holder() {
    let stack = Stack::new().await;
    stack.loader(&stack.orders_route("")).await;
    let t = stack.table("orders");
    let tables = LeaseTables::for_target(&TableName::parse(&t).unwrap());
    let fence = |holder: &str| {
        format!(
            "CALL {}.{}('{holder}', 600, 'order_date=2024-05-28/', 'load-x')",
            stack.loader_schema,
            tables.fence.quoted()
        )
    };
    stack.insert_lease(&t, "other", 600).await;
    let e = stack.try_sql(&fence("me")).await.unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("lease on {t} is not held by me")),
        "{e}"
    );
    // The holder itself may renew.
    stack.sql(&fence("other")).await;
    // An expired lease that nobody took over still fences for its holder (a statement
    // left running holds it, issue 21.1), and the fence does not make it live again.
    stack.insert_lease(&t, "late", -1).await;
    stack.sql(&fence("late")).await;
    let live = format!(
        "SELECT COUNT(*) FROM {} WHERE holder = 'late' AND expires_at > GETDATE()",
        stack.loader_table(&t, "lease")
    );
    assert_eq!(stack.count(&live).await, 0, "still expired");
    // Once taken over, it fences no more.
    stack.insert_lease(&t, "next", 600).await;
    let e = stack.try_sql(&fence("late")).await.unwrap_err();
    assert!(e.to_string().contains("not held by late"), "{e}");
}

#[tokio::test]
async fn a_busy_lease_queues_the_object_and_a_sweep_finishes_after_a_crash() {
    let stack = Stack::new().await;
    let routes = stack.orders_route("");
    let (loader, t) = stack.orders("").await;
    stack.insert_lease(&t, "stuck-holder", 600).await;
    let event = stack.orders_file("part-0.parquet", 0..3).await;
    match handle(&loader, &event).await {
        Ok(Outcome::Queued { holder, table, .. }) => {
            assert_eq!(holder, "stuck-holder");
            assert_eq!(table, t);
        }
        other => panic!("expected queued, got {other:?}"),
    }
    assert_eq!(stack.rows(&t).await, 0);
    assert_eq!(stack.wakeup_rows(&t).await, 1, "the object is handed over");
    // A sweep while the holder is live leaves the wake-up to it.
    let swept = loader.sweep(&holder(), 0, deadline()).await;
    assert!(swept.iter().all(|r| r.is_ok()), "{swept:?}");
    assert_eq!(stack.wakeup_rows(&t).await, 1);
    // The holder crashed: its lease expires; the sweep drains what it left.
    stack.insert_lease(&t, "stuck-holder", -1).await;
    let swept = loader.sweep(&holder(), 0, deadline()).await;
    assert!(swept.iter().all(|r| r.is_ok()), "{swept:?}");
    assert_eq!(stack.rows(&t).await, 3, "loaded once");
    assert_eq!(stack.ledger_rows(&t).await, 1);
    assert_eq!(stack.wakeup_rows(&t).await, 0);
    assert_eq!(stack.lease_rows(&t).await, 0);
    // A replay of the event now finds it loaded.
    let again = unfaulted(&stack, &routes, "again").await;
    let o = handle(&again, &event).await;
    assert!(matches!(o, Ok(Outcome::UpToDate { .. })), "{o:?}");
}

#[tokio::test]
async fn files_landing_during_a_long_load_are_all_loaded_once() {
    let stack = Stack::new().await;
    let routes = stack.orders_route("");
    let (_, t) = stack.orders("").await;
    let first = stack.orders_file("part-0.parquet", 0..3).await;
    // The holder's Data API calls are slow: its load outlasts the one-second lease wait
    // of earlier versions many times over, which used to send waiting events to the
    // failure queue.
    let slow = std::sync::Arc::new(Loader::connect(stack.config(&routes)).await);
    stack.fault(json!({"latency_ms": 800})).await;
    let holder_task = {
        let slow = slow.clone();
        tokio::spawn(async move { slow.handle(&first, "the-holder", deadline()).await })
    };
    while stack.lease_rows(&t).await == 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fast = unfaulted(&stack, &routes, "fast").await;
    let mut others = Vec::new();
    for i in 1..5 {
        let e = stack
            .orders_file(&format!("part-{i}.parquet"), i * 10..i * 10 + 3)
            .await;
        others.push(handle(&fast, &e).await);
    }
    // Another partition too: the holder drains every partition of its table.
    let other_day = stack
        .parquet_event("orders/order_date=2024-05-29/part-0.parquet", 100..103)
        .await;
    others.push(handle(&fast, &other_day).await);
    for o in &others {
        assert!(
            matches!(o, Ok(Outcome::Queued { holder, .. })
                if partition_loader::protocol::lease::invocation_of(holder) == "the-holder"),
            "{o:?}"
        );
    }
    let held = holder_task.await.unwrap();
    assert!(matches!(held, Ok(Outcome::Loaded { .. })), "{held:?}");
    assert_eq!(stack.rows(&t).await, 18, "every file once");
    let distinct = format!("SELECT COUNT(DISTINCT id) FROM {t}");
    assert_eq!(stack.count(&distinct).await, 18);
    assert_eq!(stack.ledger_rows(&t).await, 6);
    assert_eq!(stack.wakeup_rows(&t).await, 0, "all drained");
    assert_eq!(stack.lease_rows(&t).await, 0, "released after the drain");
}

#[tokio::test]
async fn a_large_partition_is_loaded_in_chunks_that_renew_the_lease() {
    let stack = Stack::new().await;
    let routes = stack.orders_route("");
    let (_, t) = stack.orders("").await;
    let mut event = json!(null);
    for i in 0..5 {
        let key = format!("{ORDERS_DAY}/part-{i}.parquet");
        event = stack.parquet_event(&key, i * 10..i * 10 + 2).await;
    }
    // Staged append = 5 fixed statements; 7 leaves room for two one-row ledger INSERTs.
    let limits = BatchLimits {
        max_statements: 7,
        max_statement_bytes: 1,
    };
    let small = Loader::connect(stack.config(&routes))
        .await
        .with_limits(limits);
    let o = handle(&small, &event).await;
    assert_eq!(loaded_files(&o), 5, "{o:?}");
    assert_eq!(stack.rows(&t).await, 10);
    assert_eq!(stack.ledger_rows(&t).await, 5);
    assert_eq!(
        stack.lease_rows(&t).await,
        0,
        "released after the last chunk"
    );
    assert_eq!(
        stack.keys("_loader/").await.len(),
        3,
        "one manifest per chunk"
    );

    // Replace mode must rewrite in one transaction: too many chunks is refused.
    stack
        .put_parquet(&format!("{ORDERS_DAY}/part-0.parquet"), 50..53)
        .await;
    let small = Loader::connect(stack.config(&stack.orders_route("mode = \"replace\"")))
        .await
        .with_limits(limits);
    let e = handle(&small, &event).await.unwrap_err();
    assert_eq!(e.error_type(), "Permanent.ReplaceTooLarge", "{e}");
    assert_eq!(stack.lease_rows(&t).await, 0);
    assert_eq!(stack.rows(&t).await, 10);
}

#[tokio::test]
async fn an_event_for_a_partition_with_no_files_is_not_silently_dropped() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    let event = stack.event(&format!("{ORDERS_DAY}/deleted.parquet"), 10);
    let e = handle(&loader, &event).await.unwrap_err();
    assert_eq!(e.error_type(), "Permanent.NothingListed", "{e}");
    assert!(e.to_string().contains("order_date=2024-05-28/"), "{e}");
    assert_eq!(stack.lease_rows(&t).await, 0);
}

#[tokio::test]
async fn csv_with_a_header_is_staged_with_its_partition_value() {
    let stack = Stack::new().await;
    let routes = format!(
        "[[routes]]\nbucket = \"{}\"\nprefix = \"csv/\"\ntable = \"{}\"\nformat = \"csv\"\nheader = true\n\
         partition_columns = [\"region\"]\nfile_columns = [\"id\", \"name\"]\n",
        stack.bucket,
        stack.table("people")
    );
    let loader = stack.loader(&routes).await;
    let t = stack
        .create_table("people", "region VARCHAR(16), id BIGINT, name VARCHAR(64)")
        .await;
    // Stored Hive-escaped (eu's → eu%27s); the event form-encodes the key once more.
    let key = "csv/region=eu%27s/part-0.csv";
    let size = stack.put(key, b"id,name\n1,Ann\n2,Bob\n".to_vec()).await;
    let event = stack.event("csv/region%3Deu%2527s/part-0.csv", size);
    match handle(&loader, &event).await.unwrap() {
        Outcome::Loaded {
            partition, files, ..
        } => {
            assert_eq!(files, 1);
            assert_eq!(
                partition.0[0].1.as_deref(),
                Some("eu's"),
                "Hive escape decoded"
            );
        }
        other => panic!("{other:?}"),
    }
    let q = format!("SELECT COUNT(*) FROM {t} WHERE region = 'eu''s' AND name IN ('Ann', 'Bob')");
    assert_eq!(stack.count(&q).await, 2);
}

#[tokio::test]
async fn a_lease_taken_over_during_a_slow_load_fences_the_old_holder() {
    let stack = Stack::new().await;
    let routes = stack.orders_route("");
    let (_, t) = stack.orders("").await;
    let event = stack.orders_file("part-0.parquet", 0..3).await;

    // A: slow Data API and a 1-second lease. B: a normal invocation, arriving after A's
    // lease expired.
    // The Redshift lease's own fencing: without the S3 gate (issue 21 item 4), which
    // would queue B behind A's gate until A's deadline (tests/gate.rs).
    let slow = slow_with_short_lease(&stack, &routes)
        .await
        .with_gate(false);
    let fast = unfaulted(&stack, &routes, "b").await.with_gate(false);
    let (a, b) = tokio::join!(slow.handle(&event, "holder-a", deadline()), async {
        tokio::time::sleep(Duration::from_millis(2000)).await;
        fast.handle(&event, "holder-b", deadline()).await
    });
    assert_eq!(
        loaded_files(&b),
        1,
        "B took the lease over and loaded: {b:?}"
    );
    // A either reaches its fence after B's takeover (rolled back) or, slower still,
    // reads its ledger after B committed and finds nothing to load: never a second load.
    match a {
        Err(e) => assert_eq!(e.error_type(), "Retryable.LeaseLost", "{e}"),
        Ok(o) => assert!(matches!(o, Outcome::UpToDate { .. }), "{o:?}"),
    }
    assert_eq!(stack.rows(&t).await, 3, "loaded once, by B only");
    assert_eq!(stack.ledger_rows(&t).await, 1);
    let holders = format!(
        "SELECT COUNT(*) FROM {} WHERE holder LIKE 'holder-b+%'",
        stack.loader_table(&t, "ledger")
    );
    assert_eq!(stack.count(&holders).await, 1);
    assert_eq!(stack.lease_rows(&t).await, 0);
}

#[tokio::test]
async fn a_loader_schema_that_was_never_bootstrapped_is_named() {
    let stack = Stack::new().await;
    let loader = Loader::connect(stack.config(&stack.orders_route(""))).await;
    let event = stack.event(&format!("{ORDERS_DAY}/part-0.parquet"), 10);
    let e = handle(&loader, &event).await.unwrap_err();
    assert_eq!(e.error_type(), "Permanent.NotBootstrapped", "{e}");
    assert!(e.to_string().contains("loaderctl bootstrap"), "{e}");
}

#[tokio::test]
async fn json_lines_are_loaded_with_the_partition_filled() {
    let stack = Stack::new().await;
    let routes = format!(
        "[[routes]]\nbucket = \"{}\"\nprefix = \"json/\"\ntable = \"{}\"\nformat = \"json\"\n\
         partition_columns = [{{ name = \"day\", type = \"date\" }}]\n",
        stack.bucket,
        stack.table("clicks")
    );
    let loader = stack.loader(&routes).await;
    let t = stack
        .create_table("clicks", "id BIGINT, name VARCHAR(64), day DATE")
        .await;
    let key = "json/day=2024-05-28/clicks.json";
    let body = b"{\"id\": 1, \"name\": \"a\"}\n{\"id\": 2, \"name\": \"b\"}\n".to_vec();
    let size = stack.put(key, body).await;
    let o = handle(&loader, &stack.event(key, size)).await;
    assert_eq!(loaded_files(&o), 1, "{o:?}");
    let q = format!("SELECT COUNT(*) FROM {t} WHERE day = '2024-05-28' AND id IN (1, 2)");
    assert_eq!(stack.count(&q).await, 2);
}

/// An unpartitioned route `events/` → `<schema>.events (id, name)`, loaded by direct COPY.
fn events_route(stack: &Stack, extra: &str) -> String {
    format!(
        "[[routes]]\nbucket = \"{}\"\nprefix = \"events/\"\ntable = \"{}\"\nformat = \"parquet\"\n{extra}\n",
        stack.bucket,
        stack.table("events")
    )
}

#[tokio::test]
async fn a_busy_lease_on_an_unpartitioned_route_queues_without_an_empty_parameter() {
    // The Data API refuses an empty SqlParameter value; an unpartitioned route's
    // partition path is empty, so the hand-off (take, wake-up, drain) must not bind it.
    let stack = Stack::new().await;
    let routes = events_route(&stack, "");
    stack.bootstrap_as_admin(&routes).await;
    let t = stack
        .create_table("events", "id BIGINT, name VARCHAR(64)")
        .await;
    stack.insert_lease(&t, "loading-holder", 600).await;
    let key = "events/part-0.parquet";
    let (size, etag) = stack.put_object(key, parquet_bytes(0..3)).await;
    let loader = Loader::connect(stack.config(&routes)).await;
    let event = object_created(&stack.bucket, key, size, Some(&etag));
    match handle(&loader, &event).await {
        Ok(Outcome::Queued { holder, .. }) => assert_eq!(holder, "loading-holder"),
        other => panic!("expected queued for the holder, got {other:?}"),
    }
    assert_eq!(stack.wakeup_rows(&t).await, 1);
    assert_eq!(
        stack
            .count(&format!(
                "SELECT COUNT(*) FROM {} WHERE partition_path = ''",
                stack.loader_table(&t, "wakeup")
            ))
            .await,
        1,
        "the wake-up names the empty partition"
    );
    // The holder is gone: its lease expires, and the next event drains the wake-up.
    stack.insert_lease(&t, "loading-holder", -1).await;
    let o = handle(&loader, &event).await;
    assert_eq!(loaded_files(&o), 1, "{o:?}");
    assert_eq!(stack.rows(&t).await, 3);
    assert_eq!(stack.wakeup_rows(&t).await, 0);
    assert_eq!(stack.lease_rows(&t).await, 0, "released");
}

#[tokio::test]
async fn statupdate_needs_the_loaders_user_to_own_the_table() {
    let stack = Stack::new().await;
    let routes = events_route(&stack, "statupdate = true");
    let loader = stack.loader(&routes).await;
    let t = stack
        .create_table("events", "id BIGINT, name VARCHAR(64)")
        .await;
    let event = stack.parquet_event("events/part-0.parquet", 0..3).await;
    let e = handle(&loader, &event).await.unwrap_err();
    assert_eq!(e.error_type(), "Permanent.LoadRejected", "{e}");
    assert!(
        e.to_string()
            .contains("only table or database owner can analyze it"),
        "{e}"
    );
    assert_eq!(stack.rows(&t).await, 0);
    assert_eq!(stack.lease_rows(&t).await, 0, "the lease was released");

    // What `loaderctl bootstrap --grant-to` prints for a statupdate route.
    stack
        .sql(&format!("ALTER TABLE {t} OWNER TO {}", stack.db_user))
        .await;
    let o = handle(&loader, &event).await;
    assert_eq!(loaded_files(&o), 1, "{o:?}");
    assert_eq!(stack.rows(&t).await, 3);

    // Without statupdate, a user with INSERT alone loads (STATUPDATE OFF).
    let plain = stack.loader(&events_route(&stack, "")).await;
    stack
        .sql(&format!("ALTER TABLE {t} OWNER TO CURRENT_USER"))
        .await;
    stack
        .sql(&format!("GRANT INSERT ON {t} TO {}", stack.db_user))
        .await;
    let event = stack.parquet_event("events/part-1.parquet", 3..5).await;
    let o = handle(&plain, &event).await;
    assert_eq!(loaded_files(&o), 1, "{o:?}");
}

/// Routes `cities/` (VARCHAR city) and `cities_c/` (CHAR city), both in replace mode,
/// partitioned by a string `city`.
fn cities_routes(stack: &Stack) -> String {
    let route = |prefix: &str, table: &str| {
        format!(
            "[[routes]]\nbucket = \"{}\"\nprefix = \"{prefix}/\"\ntable = \"{}\"\nformat = \"parquet\"\n\
             mode = \"replace\"\npartition_columns = [\"city\"]\n",
            stack.bucket,
            stack.table(table)
        )
    };
    format!(
        "{}{}",
        route("cities", "cities"),
        route("cities_c", "cities_c")
    )
}

/// The event of Parquet `ids` written to `<prefix>/city=<hive value>/part-0.parquet`; the
/// event form-encodes the key once more, as S3 does.
async fn city_file(
    stack: &Stack,
    prefix: &str,
    hive: &str,
    ids: std::ops::Range<i64>,
) -> serde_json::Value {
    let key = format!("{prefix}/city={hive}/part-0.parquet");
    let (size, etag) = stack.put_object(&key, parquet_bytes(ids)).await;
    let encoded = format!(
        "{prefix}/city%3D{}/part-0.parquet",
        hive.replace('%', "%25")
    );
    object_created(&stack.bucket, &encoded, size, Some(&etag))
}

#[tokio::test]
async fn replace_mode_tells_partitions_apart_that_differ_only_by_trailing_blanks() {
    // Redshift's VARCHAR `=` ignores trailing blanks (the emulator does too): without an
    // exact predicate, replacing `city=Paris` deleted the rows of `city=Paris%20`, whose
    // ledger still said loaded.
    let stack = Stack::new().await;
    let loader = stack.loader(&cities_routes(&stack)).await;
    let t = stack
        .create_table("cities", "id BIGINT, name VARCHAR(64), city VARCHAR(32)")
        .await;
    let paris = city_file(&stack, "cities", "Paris", 0..3).await;
    let paris_blank = city_file(&stack, "cities", "Paris%20", 10..12).await;
    assert_eq!(loaded_files(&handle(&loader, &paris).await), 1);
    assert_eq!(loaded_files(&handle(&loader, &paris_blank).await), 1);
    let exact = |city: &str| {
        format!(
            "SELECT COUNT(*) FROM {t} WHERE city = '{city}' AND LENGTH(city) = {}",
            city.chars().count()
        )
    };
    assert_eq!(stack.count(&exact("Paris")).await, 3);
    assert_eq!(stack.count(&exact("Paris ")).await, 2);

    // The job rewrites each partition: each replace touches only its own rows and
    // ledger rows, and every partition is loaded exactly once.
    let paris = city_file(&stack, "cities", "Paris", 100..104).await;
    assert_eq!(loaded_files(&handle(&loader, &paris).await), 1);
    assert_eq!(stack.count(&exact("Paris")).await, 4);
    assert_eq!(
        stack.count(&exact("Paris ")).await,
        2,
        "Paris%20 kept its rows"
    );
    assert_eq!(stack.ledger_rows(&t).await, 2);
    let paris_blank = city_file(&stack, "cities", "Paris%20", 200..203).await;
    assert_eq!(loaded_files(&handle(&loader, &paris_blank).await), 1);
    assert_eq!(stack.count(&exact("Paris")).await, 4, "Paris kept its rows");
    assert_eq!(stack.count(&exact("Paris ")).await, 3);
    assert_eq!(stack.rows(&t).await, 7);
    assert_eq!(stack.ledger_rows(&t).await, 2);
    for event in [&paris, &paris_blank] {
        let o = handle(&loader, event).await.unwrap();
        assert!(matches!(o, Outcome::UpToDate { .. }), "{o:?}");
    }
    assert_eq!(stack.rows(&t).await, 7);
}

#[tokio::test]
async fn replace_mode_refuses_a_value_ending_in_a_blank_for_a_char_column() {
    // CHAR pads with blanks: `Paris` and `Paris ` are one stored value, so replace mode
    // cannot delete exactly one of the two partitions. Refused with the fix, nothing
    // loaded; a value without a trailing blank loads (and reloads) as usual.
    let stack = Stack::new().await;
    let loader = stack.loader(&cities_routes(&stack)).await;
    let t = stack
        .create_table("cities_c", "id BIGINT, name VARCHAR(64), city CHAR(8)")
        .await;
    let paris = city_file(&stack, "cities_c", "Paris", 0..3).await;
    assert_eq!(loaded_files(&handle(&loader, &paris).await), 1);
    let paris = city_file(&stack, "cities_c", "Paris", 10..14).await;
    assert_eq!(loaded_files(&handle(&loader, &paris).await), 1);
    assert_eq!(stack.rows(&t).await, 4, "the reload replaced the partition");

    let blank = city_file(&stack, "cities_c", "Paris%20", 20..22).await;
    let e = handle(&loader, &blank).await.unwrap_err();
    assert!(matches!(e, LoaderError::TableMismatch { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Permanent);
    assert!(e.to_string().contains("make city a VARCHAR column"), "{e}");
    assert_eq!(stack.rows(&t).await, 4);
    assert_eq!(stack.ledger_rows(&t).await, 1);
    assert_eq!(stack.lease_rows(&t).await, 0, "the lease is released");
}

/// Redshift's PL/pgSQL page, RAISE: "optional arguments must be simple variables, not
/// expressions". The local Redshift refuses a procedure that passes a literal, so the
/// bootstrap itself fails when the take or fence procedure does; both messages still
/// name the table.
#[tokio::test]
async fn bootstrap_procedures_raise_with_simple_variables_only() {
    let stack = Stack::new().await;
    let routes = stack.orders_route("");
    let admin = Loader::connect(stack.admin_config(&routes)).await;
    admin
        .bootstrap(deadline())
        .await
        .expect("bootstrap: the procedures must follow Redshift's RAISE rule");
    let t = stack.table("orders");
    let tables = LeaseTables::for_target(&TableName::parse(&t).unwrap());
    stack
        .sql(&format!(
            "INSERT INTO {} VALUES (NULL, NULL, NULL)",
            stack.loader_table(&t, "lease")
        ))
        .await;
    let take = format!(
        "CALL {}.{}('me', 600, '', '', '', '', '', '')",
        stack.loader_schema,
        tables.take.quoted()
    );
    let e = stack.try_sql(&take).await.unwrap_err();
    assert!(e.to_string().contains(&format!("of {t} has 2 rows")), "{e}");
}

/// Issue 21 item 5: a burst over the Data API's request-rate quotas (the emulator's
/// `rate_limits`, answering `ThrottlingException` "Rate exceeded" as the service does)
/// slows down and loads every file once, in the per-event mode. Before, a throttled call
/// gave up after 8 attempts (about 5-9 s of backoff) and the invocation failed with
/// `Retryable.Throttled`; now throttling is retried until the invocation's deadline.
#[tokio::test]
async fn a_burst_over_the_data_api_rate_limits_slows_down_and_loads_every_file_once() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    const N: i64 = 40;
    let mut events = Vec::new();
    for i in 0..N {
        events.push(
            stack
                .orders_file(&format!("part-{i}.parquet"), i * 3..i * 3 + 3)
                .await,
        );
    }
    // Far below the service's figures, so that 40 events exceed them for many seconds.
    stack
        .fault(json!({"rate_limits": {
            "BatchExecuteStatement": 2, "ExecuteStatement": 2,
            "DescribeStatement": 10, "GetStatementResult": 10
        }}))
        .await;
    let outcomes = futures::future::join_all(events.iter().map(|e| handle(&loader, e))).await;
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().err().map(|e| e.error_type()))
        .collect();
    assert!(failed.is_empty(), "invocations failed: {failed:?}");
    assert_eq!(stack.rows(&t).await, N * 3, "every row once");
    assert_eq!(stack.ledger_rows(&t).await, N);
    assert_eq!(stack.wakeup_rows(&t).await, 0, "no wake-up left");
    let (_, injected) = admin("GET", "/_admin/faults/injected", "").await;
    let injected: serde_json::Value = serde_json::from_str(&injected).unwrap_or_default();
    let throttled = injected[&stack.workgroup]["rate_limited"]
        .as_u64()
        .unwrap_or_default();
    assert!(throttled > 0, "the burst was throttled: {injected}");
}
