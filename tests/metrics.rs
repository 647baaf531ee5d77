//! The EMF record of real invocations against the local stack: a load (rows from the
//! emulator's SYS_LOAD_HISTORY), a failed COPY and a skip.

mod common;

use common::*;
use partition_loader::invocation::handle_measured;
use partition_loader::metrics::Settings;
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
            assert!(
                record[m["Name"].as_str().unwrap()].is_number(),
                "{m} in {record}"
            );
        }
    }
}

#[tokio::test]
async fn a_load_records_files_bytes_rows_from_load_history_and_freshness() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    let _ = stack.orders_file("part-0.parquet", 0..3).await;
    let mut event = stack.orders_file("part-1.parquet", 3..7).await;
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
    let sent = chrono::Utc::now() - chrono::Duration::seconds(5);
    event["time"] = json!(sent.to_rfc3339());
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
    let lag = r["FreshnessLag"]
        .as_f64()
        .expect("a lag for the loaded object");
    assert!((5.0..120.0).contains(&lag), "event 5 s ago: {lag}");

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
