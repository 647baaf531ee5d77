//! Ready markers (route option `ready_marker`, issue 20 item 1) against the local stack:
//! files wait for their partition's marker, a partition marker loads its partition, a
//! root marker (Spark's `partitionBy` layout, from `tests/writers/fixtures/spark/`, real
//! Spark output) loads the whole job in one transaction, late files, the sweep, the
//! drain of a queued marker and `loaderctl status`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use partition_loader::run::handler::BatchLimits;
use partition_loader::{LoaderError, Outcome};
use serde_json::Value;

const MARKER: &str = "ready_marker = \"_SUCCESS\"";

/// Writes an empty marker object and returns its event.
async fn marker(stack: &Stack, key: &str) -> Value {
    let (size, etag) = stack.put_object(key, Vec::new()).await;
    object_created(&stack.bucket, key, size, Some(&etag))
}

fn waiting_files(outcome: &Result<Outcome, LoaderError>) -> usize {
    match outcome {
        Ok(Outcome::Waiting { files, .. }) => *files,
        other => panic!("expected waiting: {other:?}"),
    }
}

async fn load_ids(stack: &Stack, table: &str) -> i64 {
    stack
        .count(&format!(
            "SELECT COUNT(DISTINCT load_id) FROM {}",
            stack.loader_table(table, "ledger")
        ))
        .await
}

#[tokio::test]
async fn files_wait_for_their_partition_marker_which_loads_them_once() {
    let stack = Stack::new().await;
    let (loader, table) = stack.orders(MARKER).await;
    let first = stack.orders_file("part-0.parquet", 0..3).await;
    assert_eq!(waiting_files(&handle(&loader, &first).await), 1);
    let second = stack.orders_file("part-1.parquet", 3..5).await;
    let outcome = handle(&loader, &second).await;
    assert_eq!(waiting_files(&outcome), 2);
    match outcome.unwrap() {
        Outcome::Waiting { marker, .. } => assert_eq!(
            marker,
            format!("s3://{}/{ORDERS_DAY}/_SUCCESS", stack.bucket)
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(stack.rows(&table).await, 0);
    assert_eq!(stack.ledger_rows(&table).await, 0);

    let done = marker(&stack, &format!("{ORDERS_DAY}/_SUCCESS")).await;
    let loaded = handle(&loader, &done).await;
    assert_eq!(loaded_files(&loaded), 2, "{loaded:?}");
    assert_eq!(stack.rows(&table).await, 5);
    // The marker again, or a data file's event again: nothing more.
    assert!(matches!(
        handle(&loader, &done).await,
        Ok(Outcome::UpToDate { .. })
    ));
    assert!(matches!(
        handle(&loader, &first).await,
        Ok(Outcome::UpToDate { .. })
    ));
    assert_eq!(stack.rows(&table).await, 5);
    assert_eq!(stack.ledger_rows(&table).await, 2);

    // A file landing after the marker loads on its own event (append).
    let late = stack.orders_file("part-2.parquet", 5..6).await;
    assert_eq!(loaded_files(&handle(&loader, &late).await), 1);
    assert_eq!(stack.rows(&table).await, 6);
}

#[tokio::test]
async fn a_late_file_after_the_marker_reloads_the_partition_in_replace_mode() {
    let stack = Stack::new().await;
    let (loader, table) = stack.orders(&format!("{MARKER}\nmode = \"replace\"")).await;
    let first = stack.orders_file("part-0.parquet", 0..3).await;
    assert_eq!(waiting_files(&handle(&loader, &first).await), 1);
    let done = marker(&stack, &format!("{ORDERS_DAY}/_SUCCESS")).await;
    assert_eq!(loaded_files(&handle(&loader, &done).await), 1);
    assert_eq!(stack.rows(&table).await, 3);
    let late = stack.orders_file("part-1.parquet", 3..5).await;
    assert_eq!(loaded_files(&handle(&loader, &late).await), 2);
    assert_eq!(stack.rows(&table).await, 5, "replaced, not appended");
    assert_eq!(stack.ledger_rows(&table).await, 2);
}

/// The Spark job's output as Spark's committer leaves it, in the order it writes it:
/// every data file and `.crc` first, then `_SUCCESS` at the root: `(key, bytes)`.
fn spark_job(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/writers/fixtures/spark");
    let mut files: Vec<_> = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("fixture directory") {
            let path = entry.expect("fixture entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    let key_of = |p: &Path| {
        format!(
            "{prefix}{}",
            p.strip_prefix(&root).unwrap().to_string_lossy()
        )
    };
    // The root's files (_SUCCESS and its .crc) last, as the committer writes them.
    files.sort_by_key(|p| (p.parent() == Some(root.as_path()), key_of(p)));
    files
        .iter()
        .map(|p| (key_of(p), std::fs::read(p).expect("fixture file")))
        .collect()
}

#[tokio::test]
async fn a_spark_jobs_root_marker_loads_all_its_partitions_in_one_transaction() {
    let stack = Stack::new().await;
    let (loader, table) = stack.orders(MARKER).await;
    let mut success = None;
    // Each object's event as it lands.
    for (key, bytes) in spark_job("orders/") {
        let key = &key;
        let (size, etag) = stack.put_object(key, bytes).await;
        let event = &object_created(&stack.bucket, key, size, Some(&etag));
        let outcome = handle(&loader, event).await.expect(key);
        let name = key.rsplit('/').next().unwrap();
        match outcome {
            Outcome::Waiting { .. } => assert!(name.starts_with("part-"), "{key}"),
            Outcome::Skipped { reason, .. } => {
                assert!(name.ends_with(".crc"), "{key}: {reason}");
                assert_eq!(reason, "checksum file (.crc)");
            }
            // The root marker comes last.
            Outcome::LoadedJob {
                partitions,
                files,
                transactions,
                up_to_date,
                ..
            } => {
                assert_eq!(key, "orders/_SUCCESS");
                assert_eq!((partitions, files, transactions, up_to_date), (3, 4, 1, 0));
                success = Some(event.clone());
            }
            other => panic!("{key}: {other:?}"),
        }
        if name != "_SUCCESS" {
            assert_eq!(
                stack.rows(&table).await,
                0,
                "loaded before the marker: {key}"
            );
        }
    }
    let success = success.expect("the root marker loaded the job");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/writers/fixtures/spark.expected.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let rows = stack
        .select(&format!(
            "SELECT id, name, order_date FROM {table} ORDER BY id"
        ))
        .await;
    let want: Vec<Vec<Option<String>>> = expected["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            vec![
                Some(r["id"].to_string()),
                r["name"].as_str().map(str::to_string),
                r["order_date"].as_str().map(str::to_string),
            ]
        })
        .collect();
    assert_eq!(rows, want);
    // One load: every ledger row under one load id, written by one batch.
    assert_eq!(stack.ledger_rows(&table).await, 4);
    assert_eq!(load_ids(&stack, &table).await, 1);
    // The marker's event again (a duplicate delivery): nothing more.
    assert!(matches!(
        handle(&loader, &success).await,
        Ok(Outcome::UpToDate { .. })
    ));
    assert_eq!(stack.rows(&table).await, 6);
}

#[tokio::test]
async fn a_root_marker_whose_partitions_do_not_fit_one_batch_loads_them_in_chunks() {
    let stack = Stack::new().await;
    let route = stack.orders_route(MARKER);
    // A staged COPY (4 statements), one ledger INSERT and a fence per partition: one
    // partition per batch of 8.
    let loader = stack.loader(&route).await.with_limits(BatchLimits {
        max_statements: 8,
        ..BatchLimits::default()
    });
    let table = stack.orders_table().await;
    for (day, ids) in [("01", 0..2), ("02", 2..4), ("03", 4..5)] {
        stack
            .put_parquet(
                &format!("orders/order_date=2024-06-{day}/part-0.parquet"),
                ids,
            )
            .await;
    }
    let done = marker(&stack, "orders/_SUCCESS").await;
    match handle(&loader, &done).await.unwrap() {
        Outcome::LoadedJob {
            partitions,
            transactions,
            ..
        } => assert_eq!((partitions, transactions), (3, 3)),
        other => panic!("{other:?}"),
    }
    assert_eq!(stack.rows(&table).await, 5);
    assert_eq!(load_ids(&stack, &table).await, 3);
}

#[tokio::test]
async fn a_root_marker_covers_only_files_not_newer_than_itself() {
    let stack = Stack::new().await;
    let (loader, table) = stack.orders(MARKER).await;
    stack
        .put_parquet("orders/order_date=2024-06-01/part-0.parquet", 0..2)
        .await;
    let done = marker(&stack, "orders/_SUCCESS").await;
    // S3 times have whole seconds: the next job's file is written a second later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let next = stack
        .parquet_event("orders/order_date=2024-06-02/part-0.parquet", 2..5)
        .await;
    assert_eq!(waiting_files(&handle(&loader, &next).await), 1);
    match handle(&loader, &done).await.unwrap() {
        Outcome::LoadedJob { partitions, .. } => assert_eq!(partitions, 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(stack.rows(&table).await, 2);
    // The next job's marker (Spark overwrites _SUCCESS) loads its partition.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = marker(&stack, "orders/_SUCCESS").await;
    match handle(&loader, &again).await.unwrap() {
        Outcome::LoadedJob {
            partitions,
            up_to_date,
            ..
        } => assert_eq!((partitions, up_to_date), (1, 1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(stack.rows(&table).await, 5);
}

#[tokio::test]
async fn a_wake_up_loads_a_partition_only_once_its_marker_exists() {
    let stack = Stack::new().await;
    let (loader, table) = stack.orders(MARKER).await;
    // A data file's event waits without touching Redshift (decided from S3 alone).
    let unmarked = stack.orders_file("part-0.parquet", 0..3).await;
    assert_eq!(waiting_files(&handle(&loader, &unmarked).await), 1);
    // Another invocation holds the lease: a whole-partition load (a backfill's, an SQS
    // group's, the sweep's) is queued as a wake-up.
    stack.insert_lease(&table, "other~1", 300).await;
    let route = &loader.config().routes[0];
    let partition =
        partition_loader::lake::partition::parse(route, &format!("{ORDERS_DAY}/part-0.parquet"))
            .unwrap();
    let queued = loader
        .load_partition(
            route,
            &stack.bucket,
            &partition,
            None,
            &holder(),
            deadline(),
        )
        .await;
    assert!(matches!(queued, Ok(Outcome::Queued { .. })), "{queued:?}");
    assert_eq!(stack.wakeup_rows(&table).await, 1);
    stack.insert_lease(&table, "other~1", -10).await;
    // The next holder loads its own (marked) partition and drains the wake-up of the
    // unmarked one without loading it.
    stack
        .put_parquet("orders/order_date=2024-05-29/part-0.parquet", 10..12)
        .await;
    let marked = marker(&stack, "orders/order_date=2024-05-29/_SUCCESS").await;
    assert_eq!(loaded_files(&handle(&loader, &marked).await), 1);
    assert_eq!(stack.rows(&table).await, 2);
    assert_eq!(stack.wakeup_rows(&table).await, 0);
    assert_eq!(stack.lease_rows(&table).await, 0);

    // A root marker queued behind a live holder: the drain (here the sweep's, its
    // partitions outside the sweep's window) loads the job.
    stack.insert_lease(&table, "other~2", 300).await;
    let done = marker(&stack, "orders/_SUCCESS").await;
    assert!(matches!(
        handle(&loader, &done).await,
        Ok(Outcome::Queued { .. })
    ));
    assert_eq!(stack.rows(&table).await, 2);
    stack.insert_lease(&table, "other~2", -10).await;
    let swept = loader.sweep(&holder(), 1, deadline()).await;
    assert!(swept.iter().all(Result::is_ok), "{swept:?}");
    assert_eq!(stack.rows(&table).await, 5);
    assert_eq!(stack.wakeup_rows(&table).await, 0);
}

#[tokio::test]
async fn the_sweep_loads_only_marked_partitions_and_status_shows_the_wait() {
    let stack = Stack::new().await;
    let route = stack.orders_route(MARKER);
    let loader = stack.loader(&route).await;
    let table = stack.orders_table().await;
    let today = chrono::Utc::now().date_naive();
    let yesterday = today.pred_opt().unwrap();
    // No events at all: the sweep finds both partitions.
    let marked = format!("orders/order_date={today}/");
    stack
        .put_parquet(&format!("{marked}part-0.parquet"), 0..2)
        .await;
    stack.put(&format!("{marked}_SUCCESS"), Vec::new()).await;
    let unmarked = format!("orders/order_date={yesterday}/");
    stack
        .put_parquet(&format!("{unmarked}part-0.parquet"), 2..5)
        .await;
    stack
        .put_parquet(&format!("{unmarked}part-1.parquet"), 5..6)
        .await;

    let measured = partition_loader::run::invocation::sweep_measured(
        &loader,
        &partition_loader::run::metrics::Settings::default(),
        3,
        &holder(),
        deadline(),
    )
    .await;
    let outcome = measured.result.expect("the sweep succeeds");
    let outcomes = outcome["outcomes"].as_array().unwrap();
    let named = |word: &str| outcomes.iter().filter(|o| o["outcome"] == word).count();
    assert_eq!((named("loaded"), named("waiting")), (1, 1), "{outcome}");
    assert_eq!(stack.rows(&table).await, 2);
    let record = measured
        .records
        .iter()
        .find(|r| r["Waiting"] == 1)
        .expect("the table's record counts the waiting partition");
    assert!(
        record["OldestMarkerWaitSeconds"].as_u64().is_some(),
        "{record}"
    );

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loaderctl"))
        .args(["status", "--json"])
        .env_remove("LOADER_CONFIG_FILE")
        .env_remove("REDSHIFT_WORKGROUP")
        .env("RUST_LOG", "warn")
        .envs(stack.env(&route).into_iter().filter(|(_, v)| !v.is_empty()))
        .output()
        .await
        .expect("run loaderctl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let status: Value = serde_json::from_str(stdout.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
    let waits = status["waiting_for_marker"].as_array().unwrap();
    assert_eq!(waits.len(), 1, "{status}");
    assert_eq!(
        waits[0]["partition"],
        format!("s3://{}/{unmarked}", stack.bucket).as_str()
    );
    assert_eq!(waits[0]["files"], 2);
    assert_eq!(waits[0]["marker"], "_SUCCESS");
    assert!(waits[0]["waiting_seconds"].as_u64().is_some());
}

/// What a root marker saves: the Spark job's files loaded as their events arrive
/// (no marker: one load per event) against the same events on a route with the marker
/// (data files wait, the root marker loads the job in one batch). Prints the figures.
#[tokio::test]
async fn a_root_marker_loads_a_job_in_fewer_data_api_calls_than_file_by_file() {
    let mut figures = Vec::new();
    for extra in ["", MARKER] {
        let stack = Stack::new().await;
        let (loader, table) = stack.orders(extra).await;
        let (_, measured) = partition_loader::run::metrics::measure(async {
            for (key, bytes) in spark_job("orders/") {
                let (size, etag) = stack.put_object(&key, bytes).await;
                let event = object_created(&stack.bucket, &key, size, Some(&etag));
                handle(&loader, &event).await.expect(&key);
            }
        })
        .await;
        assert_eq!(stack.rows(&table).await, 6);
        figures.push((
            load_ids(&stack, &table).await,
            measured.data_api_calls,
            measured.copy_time,
        ));
    }
    println!("file by file: load batches, Data API calls, time in load batches {:?}; with the root marker {:?}", figures[0], figures[1]);
    assert_eq!(figures[0].0, 4, "one load per data file's event");
    assert_eq!(figures[1].0, 1, "one load for the job");
    assert!(figures[1].1 < figures[0].1, "{figures:?}");
}

/// A marker with content and a name without `_` (`READY` holding the job's summary, as
/// some writers leave it) triggers the load and is never loaded as data.
#[tokio::test]
async fn a_marker_with_content_is_never_loaded_as_data() {
    let stack = Stack::new().await;
    let (loader, table) = stack.orders("ready_marker = \"READY\"").await;
    let file = stack.orders_file("part-0.parquet", 0..3).await;
    assert_eq!(waiting_files(&handle(&loader, &file).await), 1);
    let key = format!("{ORDERS_DAY}/READY");
    let (size, etag) = stack
        .put_object(&key, br#"{"job": "daily", "files": 1}"#.to_vec())
        .await;
    let ready = object_created(&stack.bucket, &key, size, Some(&etag));
    let loaded = handle(&loader, &ready).await;
    assert_eq!(loaded_files(&loaded), 1, "{loaded:?}");
    assert_eq!(stack.rows(&table).await, 3);
}
