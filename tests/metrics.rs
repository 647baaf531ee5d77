//! The EMF records of real invocations against the local stack: a load (rows from the
//! emulator's SYS_LOAD_HISTORY), a failed COPY and a skip; an SQS batch and a sweep
//! (one record per table).

mod common;

use common::*;
use partition_loader::run::invocation::handle_measured;
use partition_loader::run::metrics::Settings;
use serde_json::{json, Value};

/// Every metric a directive names is a number at the top level, every dimension key a
/// string there (the specification's required fields).
fn assert_emf(record: &Value) {
    assert!(record["_aws"]["Timestamp"].is_u64(), "{record}");
    for d in record["_aws"]["CloudWatchMetrics"]
        .as_array()
        .expect("directives")
    {
        assert_eq!(d["Namespace"], "PartitionLoader");
        for set in d["Dimensions"].as_array().expect("dimension sets") {
            for key in set.as_array().expect("a set") {
                assert!(
                    record[key.as_str().unwrap()].is_string(),
                    "{key} in {record}"
                );
            }
        }
        for m in d["Metrics"].as_array().expect("metrics") {
            assert!(m["Unit"].is_string());
            // A number, or an array of at most 100 numbers.
            let value = &record[m["Name"].as_str().unwrap()];
            let numbers = match value.as_array() {
                Some(values) => values.len() <= 100 && values.iter().all(Value::is_number),
                None => value.is_number(),
            };
            assert!(numbers, "{m} in {record}");
        }
    }
}

#[tokio::test]
async fn a_load_records_files_bytes_rows_from_load_history_and_freshness() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    let _ = stack.orders_file("part-0.parquet", 0..3).await;
    let event = stack.orders_file("part-1.parquet", 3..7).await;
    let sizes: i64 = {
        let keys = stack.keys(ORDERS_DAY).await;
        assert_eq!(keys.len(), 2);
        let mut total = 0;
        for k in keys {
            let head = stack
                .s3
                .head_object()
                .bucket(&stack.bucket)
                .key(k)
                .send()
                .await;
            total += head.expect("head").content_length().unwrap_or_default();
        }
        total
    };
    // The lag runs from each file's LastModified (S3 keeps whole seconds) to the commit.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let m = handle_measured(&loader, &Settings::default(), &event, &holder(), deadline()).await;
    let r = &m.record;
    assert_emf(r);
    assert!(m.result.is_ok(), "{:?}", m.result);
    assert_eq!(r["outcome"], "loaded");
    assert_eq!(r["Table"], t.as_str());
    assert_eq!(r["Loaded"], 1);
    assert_eq!(r["FilesLoaded"], 2);
    assert_eq!(r["BytesLoaded"], sizes);
    assert_eq!(r["RowsLoaded"], 7, "from SYS_LOAD_HISTORY.loaded_rows: {r}");
    assert_eq!(stack.rows(&t).await, 7);
    assert_eq!(m.figures.copy_query_ids.len(), 1, "one COPY statement");
    let calls = r["DataApiCalls"].as_u64().unwrap();
    assert!(calls >= 5, "acquire, load and history calls: {calls}");
    assert!(r["CopyTime"].as_f64().unwrap() > 0.0);
    let lags = r["FreshnessLag"]
        .as_array()
        .unwrap_or_else(|| panic!("one lag per committed file: {r}"));
    assert_eq!(lags.len(), 2, "{r}");
    for lag in lags {
        let lag = lag.as_f64().unwrap();
        assert!((1.0..120.0).contains(&lag), "written 2 s before: {lag}");
    }

    // The same event again: up to date, nothing loaded, no lag, no rows.
    let m = handle_measured(&loader, &Settings::default(), &event, &holder(), deadline()).await;
    assert_emf(&m.record);
    assert_eq!(m.record["UpToDate"], 1);
    assert_eq!(m.record["FilesLoaded"], 0);
    assert!(m.record.get("RowsLoaded").is_none());
    assert!(m.record.get("FreshnessLag").is_none());
}

#[tokio::test]
async fn a_failed_copy_and_a_skip_are_recorded_by_type() {
    let stack = Stack::new().await;
    let loader = stack.loader(&stack.orders_route("")).await;
    // Without the partition column, so the COPY goes straight into the table the
    // fault names (not into a staging table).
    let t = stack
        .create_table("orders", "id BIGINT, name VARCHAR(64)")
        .await;
    let event = stack.orders_file("part-0.parquet", 0..3).await;
    stack
        .fault(json!({"fail_copies": [{"table": t, "count": 1, "message": "injected: disk full"}]}))
        .await;
    let m = handle_measured(&loader, &Settings::default(), &event, &holder(), deadline()).await;
    let r = &m.record;
    assert_emf(r);
    assert_eq!(r["ErrorType"], "Permanent.LoadRejected");
    assert_eq!(r["Errors"], 1);
    assert_eq!(r["PermanentErrors"], 1);
    assert_eq!(r["Loaded"], 0);
    assert_eq!(r["FilesLoaded"], 0);
    assert_eq!(r["Table"], t.as_str());
    assert_eq!(
        r["_aws"]["CloudWatchMetrics"][1]["Dimensions"],
        json!([["ErrorType"]])
    );
    assert!(r.get("RowsLoaded").is_none());

    let marker = stack.event(&format!("{ORDERS_DAY}/_SUCCESS"), 0);
    let m = handle_measured(
        &loader,
        &Settings::default(),
        &marker,
        &holder(),
        deadline(),
    )
    .await;
    assert_emf(&m.record);
    assert_eq!(m.record["Skipped"], 1);
    assert_eq!(m.record["DataApiCalls"], 0, "a skip never calls Redshift");
    assert_eq!(
        m.record["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([[]])
    );
}

#[tokio::test]
async fn a_queued_invocation_records_its_outcome_without_waiting() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    stack.insert_lease(&t, "loading-holder", 600).await;
    let key = format!("{ORDERS_DAY}/part-0.parquet");
    let (size, etag) = stack.put_object(&key, parquet_bytes(0..3)).await;
    let event = object_created(&stack.bucket, &key, size, Some(&etag));
    let settings = Settings::default();
    let m = handle_measured(&loader, &settings, &event, &holder(), deadline()).await;
    let r = &m.record;
    assert_emf(r);
    assert_eq!(r["Queued"], 1, "{r}");
    assert_eq!(r["FilesLoaded"], 0);
    assert!(r["LeaseWait"].as_f64().is_some(), "{r}");
    assert!(
        r.get("FreshnessLag").is_none(),
        "not loaded yet: no lag: {r}"
    );
    assert_eq!(stack.wakeup_rows(&t).await, 1);
}

fn sqs_record(id: &str, body: &str) -> Value {
    json!({"messageId": id, "receiptHandle": format!("rh-{id}"), "body": body,
           "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs",
           "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:events", "awsRegion": "us-east-1"})
}

fn sqs_batch(records: Vec<Value>) -> aws_lambda_events::sqs::SqsEvent {
    match partition_loader::run::batch::classify(json!({ "Records": records })) {
        Ok(partition_loader::run::batch::Invocation::SqsBatch(b)) => b,
        other => panic!("not an SQS batch: {other:?}"),
    }
}

/// An SQS batch: two messages of one partition (one load), a marker (skipped), a
/// partition that does not parse (a failure of the orders table) and a body that is
/// not JSON (a failure of no table). One record for the orders table, one for the
/// messages no table claims; each counts its messages.
#[tokio::test]
async fn an_sqs_batch_records_each_table_it_touched() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    let a = stack.orders_file("a.parquet", 0..4).await;
    let b = stack.orders_file("b.parquet", 4..10).await;
    let marker = stack.event(&format!("{ORDERS_DAY}/_SUCCESS"), 0);
    let bad = stack
        .parquet_event("orders/order_date=someday/e.parquet", 0..1)
        .await;
    let batch = sqs_batch(vec![
        sqs_record("m-a", &a.to_string()),
        sqs_record("m-marker", &marker.to_string()),
        sqs_record("m-bad", &bad.to_string()),
        sqs_record("m-b", &b.to_string()),
        sqs_record("m-garbage", "{not json"),
    ]);
    let m = partition_loader::run::invocation::handle_batch_measured(
        &loader,
        &Settings::default(),
        &batch,
        "req-batch",
        deadline(),
    )
    .await;
    let failed: Vec<String> = m
        .result
        .response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, ["m-bad", "m-garbage"]);
    assert_eq!(stack.rows(&t).await, 10);
    assert_eq!(m.records.len(), 2, "{:#?}", m.records);
    for r in &m.records {
        assert_emf(r);
        assert_eq!(r["invocation"], "sqs_batch");
        assert_eq!(r["request_id"], "req-batch");
    }

    // The messages no table claims come first: a skip and an unparsable body.
    let none = &m.records[0];
    assert!(none.get("Table").is_none(), "{none}");
    assert_eq!(
        none["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([[]])
    );
    assert_eq!(none["Skipped"], 1);
    assert_eq!(none["Loaded"], 0);
    assert_eq!(none["Errors"], 1);
    assert_eq!(none["PermanentErrors"], 1);
    assert_eq!(none["RetryableErrors"], 0);
    assert_eq!(none["ErrorType"], "Permanent.BadEvent");
    assert_eq!(
        none["_aws"]["CloudWatchMetrics"][1]["Dimensions"],
        json!([["ErrorType"]])
    );
    assert_eq!(none["DataApiCalls"], 0, "nothing of it reached Redshift");
    assert_eq!(none["FilesLoaded"], 0);
    assert!(none.get("FreshnessLag").is_none());

    // The orders table: one load of both messages' files, one bad partition.
    let orders = &m.records[1];
    assert_eq!(orders["Table"], t.as_str());
    assert_eq!(
        orders["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Table"], []])
    );
    assert_eq!(orders["Loaded"], 2, "two messages, both loaded: {orders}");
    assert_eq!(orders["UpToDate"], 0);
    assert_eq!(orders["Queued"], 0);
    assert_eq!(orders["Skipped"], 0);
    assert_eq!(orders["Errors"], 1);
    assert_eq!(orders["PermanentErrors"], 1);
    assert_eq!(orders["ErrorType"], "Permanent.BadPartition");
    assert!(
        orders["error"].as_str().unwrap().contains("someday"),
        "{orders}"
    );
    assert_eq!(orders["FilesLoaded"], 2);
    assert_eq!(orders["RowsLoaded"], 10, "from SYS_LOAD_HISTORY: {orders}");
    assert!(orders["BytesLoaded"].as_u64().unwrap() > 0);
    assert!(orders["CopyTime"].as_f64().unwrap() > 0.0);
    assert!(orders["LeaseWait"].as_f64().is_some());
    let calls = orders["DataApiCalls"].as_u64().unwrap();
    assert!(
        calls >= 5,
        "acquire, load, drain and history calls: {calls}"
    );
    // One lag per committed file, largest first, each from the file's LastModified.
    let lags: Vec<f64> = orders["FreshnessLag"]
        .as_array()
        .unwrap_or_else(|| panic!("an array of lags: {orders}"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(lags.len(), 2, "{orders}");
    assert!(lags[0] >= lags[1], "{lags:?}");
    assert!(lags.iter().all(|l| (0.0..120.0).contains(l)), "{lags:?}");
}

/// The scheduled sweep: one record per table, counting the partitions it looked at;
/// a file it finds without an event has its lag measured like any other.
#[tokio::test]
async fn a_sweep_records_each_table() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    let today = chrono::Utc::now().date_naive();
    stack
        .put_parquet(&format!("orders/order_date={today}/lost.parquet"), 0..6)
        .await;
    let m = partition_loader::run::invocation::sweep_measured(
        &loader,
        &Settings::default(),
        1,
        "req-sweep",
        deadline(),
    )
    .await;
    let answer = m.result.expect("swept");
    assert_eq!(answer["outcome"], "swept");
    assert_eq!(stack.rows(&t).await, 6);
    assert_eq!(m.records.len(), 1, "{:#?}", m.records);
    let r = &m.records[0];
    assert_emf(r);
    assert_eq!(r["invocation"], "sweep");
    assert_eq!(r["Table"], t.as_str());
    assert_eq!(r["Loaded"], 1);
    assert_eq!(r["Errors"], 0);
    assert_eq!(r["FilesLoaded"], 1);
    assert_eq!(r["RowsLoaded"], 6);
    assert!(r["DataApiCalls"].as_u64().unwrap() >= 4);
    let lag = r["FreshnessLag"].as_f64().expect("the swept file's lag");
    assert!((0.0..120.0).contains(&lag), "{r}");
    assert!(r.get("ErrorType").is_none());
}

/// An object handed off to a live holder: its own invocation records `queued` and no
/// lag; the invocation that later commits it (here the sweep draining the wake-up left
/// by a holder that died) records its lag, from the file's LastModified.
#[tokio::test]
async fn a_handed_off_file_is_measured_by_whoever_commits_it() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    stack.insert_lease(&t, "dead-holder", 600).await;
    let event = stack.orders_file("handed.parquet", 0..5).await;
    let m = handle_measured(&loader, &Settings::default(), &event, &holder(), deadline()).await;
    assert_eq!(m.record["Queued"], 1, "{}", m.record);
    assert!(m.record.get("FreshnessLag").is_none());
    assert_eq!(stack.wakeup_rows(&t).await, 1);

    // The holder dies: its lease expires; the sweep takes the free lease and drains.
    stack.insert_lease(&t, "dead-holder", -1).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let m = partition_loader::run::invocation::sweep_measured(
        &loader,
        &Settings::default(),
        1,
        "req-sweep",
        deadline(),
    )
    .await;
    assert!(m.result.is_ok(), "{:?}", m.result);
    assert_eq!(stack.rows(&t).await, 5);
    assert_eq!(stack.wakeup_rows(&t).await, 0);
    let r = m
        .records
        .iter()
        .find(|r| r["Table"] == t.as_str())
        .unwrap_or_else(|| panic!("a record for {t}: {:#?}", m.records));
    assert_emf(r);
    assert_eq!(r["FilesLoaded"], 1, "{r}");
    let lag = r["FreshnessLag"]
        .as_f64()
        .expect("the handed-off file's lag");
    assert!(
        (1.0..120.0).contains(&lag),
        "written 2 s before the drain: {r}"
    );
}
