//! The handler end to end against the local stack (moto S3 + redshift-data-local on
//! PostgreSQL), through the real AWS SDK clients.

mod common;

use common::*;
use partition_loader::{ErrorKind, LoaderError, Outcome};
use serde_json::json;

/// Orders table whose partition column the files lack (filled through staging).
async fn orders_table(stack: &Stack, loader: &TestLoader) -> String {
    let t = stack.table("orders");
    stack
        .sql(
            loader,
            &format!("CREATE TABLE {t} (id BIGINT, name VARCHAR(64), order_date DATE)"),
        )
        .await;
    t
}

#[tokio::test]
async fn one_file_is_loaded_once_and_a_replay_changes_nothing() {
    let stack = Stack::new().await;
    let loader = stack.loader(&orders_route(&stack, "")).await;
    let t = orders_table(&stack, &loader).await;
    let key = "orders/order_date=2024-05-28/part-00000.snappy.parquet";
    let size = stack.put_parquet(key, 0..3).await;
    let event = stack.event(key, size);

    let outcome = loader.handle(&event, &holder(), deadline()).await.unwrap();
    match &outcome {
        Outcome::Loaded {
            table,
            partition,
            files,
            statement_id,
        } => {
            assert_eq!(table, &t);
            assert_eq!(
                partition.0,
                vec![("order_date".to_string(), "2024-05-28".to_string())]
            );
            assert_eq!(*files, 1);
            assert!(!statement_id.is_empty());
        }
        other => panic!("expected loaded, got {other:?}"),
    }
    let json = outcome.to_json();
    assert_eq!(json["partition"], json!({"order_date": "2024-05-28"}));
    assert_eq!(stack.rows(&loader, &t).await, 3);
    let filled =
        format!("SELECT COUNT(*) FROM {t} WHERE order_date = '2024-05-28' AND name = 'name-2'");
    assert_eq!(stack.count(&loader, &filled).await, 1);
    assert_eq!(stack.ledger_rows(&loader, &t).await, 1);
    assert_eq!(
        stack.lease_rows(&loader, &t).await,
        0,
        "the load released the lease"
    );

    let again = loader.handle(&event, &holder(), deadline()).await.unwrap();
    assert!(matches!(again, Outcome::UpToDate { .. }), "{again:?}");
    assert_eq!(stack.rows(&loader, &t).await, 3);
    assert_eq!(stack.ledger_rows(&loader, &t).await, 1);
    assert_eq!(stack.lease_rows(&loader, &t).await, 0);
}

#[tokio::test]
async fn a_burst_of_files_costs_one_load() {
    let stack = Stack::new().await;
    let loader = stack.loader(&orders_route(&stack, "")).await;
    let t = orders_table(&stack, &loader).await;
    let mut events = Vec::new();
    for i in 0..6 {
        let key = format!("orders/order_date=2024-05-28/part-{i:05}.parquet");
        let size = stack.put_parquet(&key, i * 10..i * 10 + 4).await;
        events.push(stack.event(&key, size));
    }
    let mut outcomes = Vec::new();
    for e in &events {
        outcomes.push(loader.handle(e, &holder(), deadline()).await);
    }
    assert_eq!(loaded_files(&outcomes[0]), 6, "{:?}", outcomes[0]);
    for o in &outcomes[1..] {
        assert!(matches!(o, Ok(Outcome::UpToDate { .. })), "{o:?}");
    }
    assert_eq!(stack.rows(&loader, &t).await, 24);
    assert_eq!(stack.ledger_rows(&loader, &t).await, 6);
}

#[tokio::test]
async fn several_partitions_and_two_tables_with_multi_column_partitions() {
    let stack = Stack::new().await;
    let routes = format!(
        "{}\n[[routes]]\nbucket = \"{}\"\nprefix = \"events/\"\ntable = \"{}\"\nformat = \"parquet\"\n\
         partition_columns = [{{ name = \"year\", type = \"integer\" }}, {{ name = \"month\", type = \"integer\" }}, \
         {{ name = \"day\", type = \"integer\" }}]\n",
        orders_route(&stack, ""),
        stack.bucket,
        stack.table("events")
    );
    let loader = stack.loader(&routes).await;
    let orders = orders_table(&stack, &loader).await;
    let events = stack.table("events");
    stack
        .sql(&loader, &format!("CREATE TABLE {events} (year INTEGER, month INTEGER, day INTEGER, id BIGINT, name VARCHAR(64))"))
        .await;

    let mut evs = Vec::new();
    for (day, n) in [("2024-05-27", 2), ("2024-05-28", 5)] {
        let key = format!("orders/order_date={day}/part-0.parquet");
        let size = stack.put_parquet(&key, 0..n).await;
        evs.push(stack.event(&key, size));
    }
    for (d, n) in [("27", 1), ("28", 7)] {
        let key = format!("events/year=2024/month=05/day={d}/part-0.parquet");
        let size = stack.put_parquet(&key, 0..n).await;
        evs.push(stack.event(&key, size));
    }
    for e in &evs {
        let o = loader.handle(e, &holder(), deadline()).await;
        assert_eq!(loaded_files(&o), 1, "{o:?}");
    }
    let per_day = |d: &str| format!("SELECT COUNT(*) FROM {orders} WHERE order_date = '{d}'");
    assert_eq!(stack.count(&loader, &per_day("2024-05-27")).await, 2);
    assert_eq!(stack.count(&loader, &per_day("2024-05-28")).await, 5);
    let per_ev = |d: i32| {
        format!("SELECT COUNT(*) FROM {events} WHERE year = 2024 AND month = 5 AND day = {d}")
    };
    assert_eq!(stack.count(&loader, &per_ev(27)).await, 1);
    assert_eq!(stack.count(&loader, &per_ev(28)).await, 7);
    assert_eq!(stack.ledger_rows(&loader, &orders).await, 2);
    assert_eq!(stack.ledger_rows(&loader, &events).await, 2);
    let path = format!(
        "SELECT COUNT(*) FROM {}.loaded_files WHERE partition_path = 'year=2024/month=05/day=28/'",
        stack.loader_schema
    );
    assert_eq!(stack.count(&loader, &path).await, 1);
    for e in &evs {
        let o = loader.handle(e, &holder(), deadline()).await.unwrap();
        assert!(matches!(o, Outcome::UpToDate { .. }), "{o:?}");
    }
    assert_eq!(stack.rows(&loader, &orders).await, 7);
    assert_eq!(stack.rows(&loader, &events).await, 8);
}

#[tokio::test]
async fn replace_mode_rewrites_the_partition() {
    let stack = Stack::new().await;
    let loader = stack
        .loader(&orders_route(&stack, "mode = \"replace\""))
        .await;
    let t = orders_table(&stack, &loader).await;
    // A row of another partition must survive the rewrite.
    stack
        .sql(
            &loader,
            &format!("INSERT INTO {t} VALUES (99, 'other', '2024-05-01')"),
        )
        .await;
    let a = "orders/order_date=2024-05-28/part-a.parquet";
    let b = "orders/order_date=2024-05-28/part-b.parquet";
    let size = stack.put_parquet(a, 0..3).await;
    stack.put_parquet(b, 3..5).await;
    let o = loader
        .handle(&stack.event(a, size), &holder(), deadline())
        .await;
    assert_eq!(loaded_files(&o), 2, "{o:?}");
    assert_eq!(stack.rows(&loader, &t).await, 6);

    // The job overwrites part-a with different data.
    let size = stack.put_parquet(a, 100..110).await;
    let o = loader
        .handle(&stack.event(a, size), &holder(), deadline())
        .await;
    assert_eq!(loaded_files(&o), 2, "all files are reloaded: {o:?}");
    let part = "SELECT COUNT(*) FROM {t} WHERE order_date = '2024-05-28'".replace("{t}", &t);
    assert_eq!(stack.count(&loader, &part).await, 12);
    assert_eq!(stack.rows(&loader, &t).await, 13);
    assert_eq!(stack.ledger_rows(&loader, &t).await, 2);
    let o = loader
        .handle(&stack.event(b, 1), &holder(), deadline())
        .await
        .unwrap();
    assert!(matches!(o, Outcome::UpToDate { .. }), "{o:?}");
    assert_eq!(stack.rows(&loader, &t).await, 13);
}

#[tokio::test]
async fn form_encoded_key_and_direct_copy() {
    let stack = Stack::new().await;
    let loader = stack.loader(&orders_route(&stack, "")).await;
    // No partition column in the table: a plain COPY, no staging.
    let t = stack.table("orders");
    stack
        .sql(
            &loader,
            &format!("CREATE TABLE {t} (id BIGINT, name VARCHAR(64))"),
        )
        .await;
    let key = "orders/order_date=2024-05-28/run 2 part+x.parquet";
    let size = stack.put_parquet(key, 0..4).await;
    let event = stack.event(
        "orders/order_date%3D2024-05-28/run+2+part%2Bx.parquet",
        size,
    );
    let o = loader.handle(&event, &holder(), deadline()).await;
    assert_eq!(loaded_files(&o), 1, "{o:?}");
    assert_eq!(stack.rows(&loader, &t).await, 4);
    let url = format!(
        "SELECT COUNT(*) FROM {}.loaded_files WHERE s3_url = 's3://{}/{key}'",
        stack.loader_schema, stack.bucket
    );
    assert_eq!(stack.count(&loader, &url).await, 1);
}

#[tokio::test]
async fn markers_and_unrouted_keys_are_skipped() {
    let stack = Stack::new().await;
    let loader = stack.loader(&orders_route(&stack, "")).await;
    let t = orders_table(&stack, &loader).await;
    let data = "orders/order_date=2024-05-28/part-0.parquet";
    let size = stack.put_parquet(data, 0..2).await;
    stack
        .put("orders/order_date=2024-05-28/_SUCCESS", vec![])
        .await;
    stack
        .put(
            "orders/order_date=2024-05-28/.part-0.parquet.crc",
            vec![1, 2],
        )
        .await;
    stack
        .put("orders/order_date=2024-05-28/empty.parquet", vec![])
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
        match loader
            .handle(&stack.event(key, size), &holder(), deadline())
            .await
        {
            Ok(Outcome::Skipped { reason, key: k, .. }) => {
                assert!(reason.contains(why), "{key}: {reason}");
                assert_eq!(k, key);
            }
            other => panic!("{key}: expected skipped, got {other:?}"),
        }
    }
    assert_eq!(stack.rows(&loader, &t).await, 0);
    // The markers next to the data file are not loaded with it.
    let o = loader
        .handle(&stack.event(data, size), &holder(), deadline())
        .await;
    assert_eq!(loaded_files(&o), 1, "{o:?}");
    assert_eq!(stack.ledger_rows(&loader, &t).await, 1);
}

#[tokio::test]
async fn a_rewritten_object_in_append_mode_is_a_permanent_error() {
    let stack = Stack::new().await;
    let loader = stack.loader(&orders_route(&stack, "")).await;
    let t = orders_table(&stack, &loader).await;
    let key = "orders/order_date=2024-05-28/part-0.parquet";
    let size = stack.put_parquet(key, 0..3).await;
    assert_eq!(
        loaded_files(
            &loader
                .handle(&stack.event(key, size), &holder(), deadline())
                .await
        ),
        1
    );
    let size = stack.put_parquet(key, 0..5).await;
    let e = loader
        .handle(&stack.event(key, size), &holder(), deadline())
        .await
        .unwrap_err();
    assert!(matches!(e, LoaderError::Rewritten { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Permanent);
    assert!(e.to_string().contains("replace"), "{e}");
    assert_eq!(stack.rows(&loader, &t).await, 3);
    assert_eq!(stack.ledger_rows(&loader, &t).await, 1);
    assert_eq!(
        stack.lease_rows(&loader, &t).await,
        0,
        "lease released after the error"
    );
}

#[tokio::test]
async fn a_bad_partition_value_is_a_permanent_error() {
    let stack = Stack::new().await;
    let loader = stack.loader(&orders_route(&stack, "")).await;
    let t = orders_table(&stack, &loader).await;
    let key = "orders/order_date=2024-02-30/part-0.parquet";
    let size = stack.put_parquet(key, 0..1).await;
    let e = loader
        .handle(&stack.event(key, size), &holder(), deadline())
        .await
        .unwrap_err();
    assert_eq!(e.error_type(), "Permanent.BadPartition");
    assert!(e.to_string().contains(key), "{e}");
    let missing = "orders/part-0.parquet";
    let e = loader
        .handle(&stack.event(missing, 10), &holder(), deadline())
        .await
        .unwrap_err();
    assert_eq!(e.error_type(), "Permanent.BadPartition");
    assert_eq!(stack.lease_rows(&loader, &t).await, 0);
    assert_eq!(stack.rows(&loader, &t).await, 0);
}

#[tokio::test]
async fn a_missing_table_is_a_permanent_error_and_releases_the_lease() {
    let stack = Stack::new().await;
    let loader = stack.loader(&orders_route(&stack, "")).await;
    let key = "orders/order_date=2024-05-28/part-0.parquet";
    let size = stack.put_parquet(key, 0..1).await;
    let e = loader
        .handle(&stack.event(key, size), &holder(), deadline())
        .await
        .unwrap_err();
    assert_eq!(e.error_type(), "Permanent.TableMissing");
    assert!(e.to_string().contains("create it first"), "{e}");
    assert_eq!(stack.lease_rows(&loader, &stack.table("orders")).await, 0);
}

#[tokio::test]
async fn concurrent_invocations_load_each_file_once() {
    let stack = Stack::new().await;
    let loader = std::sync::Arc::new(stack.loader(&orders_route(&stack, "")).await);
    let t = orders_table(&stack, &loader).await;
    let mut events = Vec::new();
    for i in 0..5 {
        let key = format!("orders/order_date=2024-05-28/part-{i}.parquet");
        let size = stack.put_parquet(&key, i * 100..i * 100 + 3).await;
        events.push(stack.event(&key, size));
    }
    let mut tasks = Vec::new();
    for i in 0..8 {
        let loader = loader.clone();
        let event = events[i % events.len()].clone();
        tasks.push(tokio::spawn(async move {
            loader.handle(&event, &holder(), deadline()).await
        }));
    }
    let mut loaded = 0;
    for task in tasks {
        let outcome = task.await.unwrap();
        match &outcome {
            Ok(Outcome::Loaded { files, .. }) => loaded += files,
            Ok(Outcome::UpToDate { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(loaded, 5, "each file loaded by exactly one invocation");
    assert_eq!(stack.rows(&loader, &t).await, 15);
    assert_eq!(
        stack
            .count(&loader, &format!("SELECT COUNT(DISTINCT id) FROM {t}"))
            .await,
        15
    );
    assert_eq!(stack.ledger_rows(&loader, &t).await, 5);
    assert_eq!(stack.lease_rows(&loader, &t).await, 0);
}

#[tokio::test]
async fn a_failed_copy_releases_the_lease_and_leaves_the_ledger_unchanged() {
    let stack = Stack::new().await;
    let loader = stack.loader(&orders_route(&stack, "")).await;
    let t = stack.table("orders");
    stack
        .sql(
            &loader,
            &format!("CREATE TABLE {t} (id BIGINT, name VARCHAR(64))"),
        )
        .await;
    let key = "orders/order_date=2024-05-28/part-0.parquet";
    let size = stack.put_parquet(key, 0..3).await;
    stack
        .fault(json!({"fail_copies": [{"table": t, "count": 1, "message": "injected: S3 read failed"}]}))
        .await;
    let e = loader
        .handle(&stack.event(key, size), &holder(), deadline())
        .await
        .unwrap_err();
    assert_eq!(e.error_type(), "Permanent.LoadRejected", "{e}");
    assert!(e.to_string().contains("injected: S3 read failed"), "{e}");
    assert_eq!(stack.rows(&loader, &t).await, 0);
    assert_eq!(stack.ledger_rows(&loader, &t).await, 0);
    assert_eq!(
        stack.lease_rows(&loader, &t).await,
        0,
        "explicit release after the failure"
    );
    // The fault is used up: the retry loads.
    let o = loader
        .handle(&stack.event(key, size), &holder(), deadline())
        .await;
    assert_eq!(loaded_files(&o), 1, "{o:?}");
    assert_eq!(stack.rows(&loader, &t).await, 3);
}

#[tokio::test]
async fn throttling_is_retried() {
    let stack = Stack::new().await;
    let loader = stack.loader(&orders_route(&stack, "")).await;
    let t = orders_table(&stack, &loader).await;
    let key = "orders/order_date=2024-05-28/part-0.parquet";
    let size = stack.put_parquet(key, 0..3).await;
    stack.fault(json!({"throttle_fraction": 0.5})).await;
    let o = loader
        .handle(&stack.event(key, size), &holder(), deadline())
        .await;
    assert_eq!(loaded_files(&o), 1, "{o:?}");
    assert_eq!(stack.rows(&loader, &t).await, 3);
    assert_eq!(stack.ledger_rows(&loader, &t).await, 1);
}

#[tokio::test]
async fn a_lost_lease_cannot_commit() {
    let stack = Stack::new().await;
    let routes = orders_route(&stack, "");
    let loader = stack.loader(&routes).await;
    let t = orders_table(&stack, &loader).await;
    let key = "orders/order_date=2024-05-28/part-0.parquet";
    let size = stack.put_parquet(key, 0..3).await;

    // A 1-second lease and slow Data API calls: the lease expires between the acquire
    // and the load, so the fence inside the load transaction must refuse to commit.
    let mut config = stack.config(&routes);
    config.lease_ttl = std::time::Duration::from_secs(1);
    let slow = partition_loader::Loader::connect(config).await;
    stack.fault(json!({"latency_ms": 700})).await;
    let e = slow
        .handle(&stack.event(key, size), &holder(), deadline())
        .await
        .unwrap_err();
    assert_eq!(e.error_type(), "Retryable.LeaseLost", "{e}");
    assert_eq!(stack.rows(&loader, &t).await, 0, "the COPY was rolled back");
    assert_eq!(
        stack.ledger_rows(&loader, &t).await,
        0,
        "the ledger is unchanged"
    );

    // The next invocation (normal lease, another workgroup name: no latency) loads it once.
    let mut normal = stack.config(&routes);
    normal.redshift = partition_loader::config::RedshiftTarget::Serverless {
        workgroup: format!("{}-ok", stack.workgroup),
    };
    let normal = partition_loader::Loader::connect(normal).await;
    let o = normal
        .handle(&stack.event(key, size), &holder(), deadline())
        .await;
    assert_eq!(loaded_files(&o), 1, "{o:?}");
    assert_eq!(stack.rows(&loader, &t).await, 3);
    assert_eq!(stack.ledger_rows(&loader, &t).await, 1);
}

#[tokio::test]
async fn the_fence_refuses_a_lease_held_by_another_holder() {
    let stack = Stack::new().await;
    let loader = stack.loader(&orders_route(&stack, "")).await;
    let pl = &stack.loader_schema;
    stack
        .sql(
            &loader,
            &format!(
                "INSERT INTO {pl}.locks VALUES ('s.t', 'other', GETDATE(), GETDATE() + INTERVAL '600 seconds')"
            ),
        )
        .await;
    for call in [
        format!("CALL {pl}.release_lease('s.t', 'me')"),
        format!("CALL {pl}.renew_lease('s.t', 'me', 600)"),
    ] {
        let e = loader
            .execute(call.clone(), vec![], deadline())
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("lease on s.t is not held by me"),
            "{call}: {e}"
        );
    }
    // The holder itself may renew and release.
    stack
        .sql(
            &loader,
            &format!("CALL {pl}.renew_lease('s.t', 'other', 600)"),
        )
        .await;
    stack
        .sql(&loader, &format!("CALL {pl}.release_lease('s.t', 'other')"))
        .await;
    assert_eq!(stack.lease_rows(&loader, "s.t").await, 0);
    // An expired lease no longer fences for its old holder.
    stack
        .sql(
            &loader,
            &format!("INSERT INTO {pl}.locks VALUES ('s.t', 'late', GETDATE(), GETDATE() - INTERVAL '1 seconds')"),
        )
        .await;
    let e = loader
        .execute(
            format!("CALL {pl}.release_lease('s.t', 'late')"),
            vec![],
            deadline(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not held by late"), "{e}");
}

#[tokio::test]
async fn a_busy_lease_is_waited_for_then_reported() {
    let stack = Stack::new().await;
    let routes = orders_route(&stack, "");
    let loader = stack.loader(&routes).await;
    let t = orders_table(&stack, &loader).await;
    let pl = &stack.loader_schema;
    stack
        .sql(
            &loader,
            &format!("INSERT INTO {pl}.locks VALUES ('{t}', 'stuck-holder', GETDATE(), GETDATE() + INTERVAL '600 seconds')"),
        )
        .await;
    let key = "orders/order_date=2024-05-28/part-0.parquet";
    let size = stack.put_parquet(key, 0..3).await;
    let mut config = stack.config(&routes);
    config.lock_wait = std::time::Duration::from_secs(2);
    let impatient = partition_loader::Loader::connect(config).await;
    let started = std::time::Instant::now();
    let e = impatient
        .handle(&stack.event(key, size), &holder(), deadline())
        .await
        .unwrap_err();
    assert_eq!(e.error_type(), "Retryable.LockBusy", "{e}");
    assert!(e.to_string().contains("stuck-holder"), "{e}");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(500),
        "it waited"
    );
    assert_eq!(stack.rows(&loader, &t).await, 0);
}

#[tokio::test]
async fn a_large_partition_is_loaded_in_chunks_that_renew_the_lease() {
    let stack = Stack::new().await;
    let routes = orders_route(&stack, "");
    let loader = stack.loader(&routes).await;
    let t = orders_table(&stack, &loader).await;
    let mut size = 0;
    for i in 0..5 {
        let key = format!("orders/order_date=2024-05-28/part-{i}.parquet");
        size = stack.put_parquet(&key, i * 10..i * 10 + 2).await;
    }
    // Staged append = 5 fixed statements; 7 leaves room for two one-row ledger INSERTs.
    let limits = partition_loader::handler::BatchLimits {
        max_statements: 7,
        max_statement_bytes: 1,
    };
    let small = partition_loader::Loader::connect(stack.config(&routes))
        .await
        .with_limits(limits);
    let event = stack.event("orders/order_date=2024-05-28/part-4.parquet", size);
    let o = small.handle(&event, &holder(), deadline()).await;
    assert_eq!(loaded_files(&o), 5, "{o:?}");
    assert_eq!(stack.rows(&loader, &t).await, 10);
    assert_eq!(stack.ledger_rows(&loader, &t).await, 5);
    assert_eq!(
        stack.lease_rows(&loader, &t).await,
        0,
        "the last chunk released"
    );
    let manifests = stack
        .s3
        .list_objects_v2()
        .bucket(&stack.bucket)
        .prefix("_loader/")
        .send()
        .await
        .unwrap();
    assert_eq!(manifests.contents().len(), 3, "one manifest per chunk");

    // Replace mode must rewrite in one transaction: too many chunks is refused.
    stack
        .put_parquet("orders/order_date=2024-05-28/part-0.parquet", 50..53)
        .await;
    let replace = orders_route(&stack, "mode = \"replace\"");
    let small = partition_loader::Loader::connect(stack.config(&replace))
        .await
        .with_limits(limits);
    let e = small
        .handle(&event, &holder(), deadline())
        .await
        .unwrap_err();
    assert_eq!(e.error_type(), "Permanent.ReplaceTooLarge", "{e}");
    assert_eq!(stack.lease_rows(&loader, &t).await, 0);
    assert_eq!(stack.rows(&loader, &t).await, 10);
}

#[tokio::test]
async fn an_event_for_a_partition_with_no_files_is_not_silently_dropped() {
    let stack = Stack::new().await;
    let loader = stack.loader(&orders_route(&stack, "")).await;
    let t = orders_table(&stack, &loader).await;
    let key = "orders/order_date=2024-05-28/deleted.parquet";
    let e = loader
        .handle(&stack.event(key, 10), &holder(), deadline())
        .await
        .unwrap_err();
    assert_eq!(e.error_type(), "Permanent.NothingListed", "{e}");
    assert!(e.to_string().contains("order_date=2024-05-28/"), "{e}");
    assert_eq!(stack.lease_rows(&loader, &t).await, 0);
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
    let t = stack.table("people");
    stack
        .sql(
            &loader,
            &format!("CREATE TABLE {t} (region VARCHAR(16), id BIGINT, name VARCHAR(64))"),
        )
        .await;
    // Stored Hive-escaped (eu's → eu%27s); the event form-encodes the key once more.
    let key = "csv/region=eu%27s/part-0.csv";
    let size = stack.put(key, b"id,name\n1,Ann\n2,Bob\n".to_vec()).await;
    let event = stack.event("csv/region%3Deu%2527s/part-0.csv", size);
    let o = loader.handle(&event, &holder(), deadline()).await.unwrap();
    match &o {
        Outcome::Loaded {
            partition, files, ..
        } => {
            assert_eq!(*files, 1);
            assert_eq!(partition.0[0].1, "eu's", "Hive escape decoded");
        }
        other => panic!("{other:?}"),
    }
    let q = format!("SELECT COUNT(*) FROM {t} WHERE region = 'eu''s' AND name IN ('Ann', 'Bob')");
    assert_eq!(stack.count(&loader, &q).await, 2);
}

#[tokio::test]
async fn a_lease_taken_over_during_a_slow_load_fences_the_old_holder() {
    let stack = Stack::new().await;
    let routes = orders_route(&stack, "");
    let loader = stack.loader(&routes).await;
    let t = orders_table(&stack, &loader).await;
    let key = "orders/order_date=2024-05-28/part-0.parquet";
    let size = stack.put_parquet(key, 0..3).await;
    let event = stack.event(key, size);

    // A: slow Data API (its workgroup has latency) and a 1-second lease.
    let mut slow_config = stack.config(&routes);
    slow_config.lease_ttl = std::time::Duration::from_secs(1);
    let slow = partition_loader::Loader::connect(slow_config).await;
    stack.fault(json!({"latency_ms": 700})).await;
    // B: a normal invocation on another workgroup name, arriving after A's lease expired.
    let mut fast_config = stack.config(&routes);
    fast_config.redshift = partition_loader::config::RedshiftTarget::Serverless {
        workgroup: format!("{}-b", stack.workgroup),
    };
    let fast = partition_loader::Loader::connect(fast_config).await;

    let (a, b) = tokio::join!(slow.handle(&event, "holder-a", deadline()), async {
        tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
        fast.handle(&event, "holder-b", deadline()).await
    });
    assert_eq!(
        loaded_files(&b),
        1,
        "B took the lease over and loaded: {b:?}"
    );
    let a = a.unwrap_err();
    assert_eq!(a.error_type(), "Retryable.LeaseLost", "{a}");
    assert_eq!(stack.rows(&loader, &t).await, 3, "loaded once, by B only");
    assert_eq!(stack.ledger_rows(&loader, &t).await, 1);
    let holders = format!(
        "SELECT COUNT(*) FROM {}.loaded_files WHERE holder = 'holder-b'",
        stack.loader_schema
    );
    assert_eq!(stack.count(&loader, &holders).await, 1);
    assert_eq!(stack.lease_rows(&loader, &t).await, 0);
}

#[tokio::test]
async fn a_loader_schema_that_was_never_bootstrapped_is_named() {
    let stack = Stack::new().await;
    let loader = partition_loader::Loader::connect(stack.config(&orders_route(&stack, ""))).await;
    let key = "orders/order_date=2024-05-28/part-0.parquet";
    let e = loader
        .handle(&stack.event(key, 10), &holder(), deadline())
        .await
        .unwrap_err();
    assert_eq!(e.error_type(), "Permanent.Config", "{e}");
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
    let t = stack.table("clicks");
    stack
        .sql(
            &loader,
            &format!("CREATE TABLE {t} (id BIGINT, name VARCHAR(64), day DATE)"),
        )
        .await;
    let key = "json/day=2024-05-28/clicks.json";
    let body = b"{\"id\": 1, \"name\": \"a\"}\n{\"id\": 2, \"name\": \"b\"}\n".to_vec();
    let size = stack.put(key, body).await;
    let o = loader
        .handle(&stack.event(key, size), &holder(), deadline())
        .await;
    assert_eq!(loaded_files(&o), 1, "{o:?}");
    let q = format!("SELECT COUNT(*) FROM {t} WHERE day = '2024-05-28' AND id IN (1, 2)");
    assert_eq!(stack.count(&loader, &q).await, 2);
}
