//! Every sample event in `events/` through the real handler, with the routes of
//! `events/routes.toml`; only the bucket and the schemas are the test's own.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use common::*;
use partition_loader::{LoaderError, Outcome};
use serde_json::{json, Value};

const EVENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/events");
/// S3's smallest part (but the last) of a multipart upload.
const PART_SIZE: usize = 5 * 1024 * 1024;

/// What each sample must produce the first time.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Loaded one file; the partition values in route order.
    Loaded(&'static [(&'static str, &'static str)]),
    /// Loaded one file written by a multipart upload.
    LoadedMultipart,
    /// Skipped, the reason containing this.
    Skipped(&'static str),
    BadEvent,
}

fn expectation(file: &str) -> Expect {
    match file {
        "parquet-partition.json" => Expect::Loaded(&[("order_date", "2024-05-28")]),
        "multi-column-partition.json" => {
            Expect::Loaded(&[("year", "2024"), ("month", "05"), ("day", "28")])
        }
        "form-encoded-key.json" => Expect::Loaded(&[("order_date", "2024-05-29")]),
        "marker-success.json" => Expect::Skipped("_SUCCESS"),
        "unrouted-key.json" => Expect::Skipped("no route"),
        "multipart-upload.json" => Expect::LoadedMultipart,
        "malformed.json" => Expect::BadEvent,
        other => panic!("events/{other} has no expectation here: add one"),
    }
}

/// `events/routes.toml` with the test's bucket, and each `schema.table` moved into the
/// test's schema (`sales.orders` → `<schema>.orders`).
fn routes(stack: &Stack) -> String {
    let text = std::fs::read_to_string(Path::new(EVENTS).join("routes.toml")).unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    let routes = doc
        .get_mut("routes")
        .and_then(toml::Value::as_array_mut)
        .expect("[[routes]]");
    for route in routes {
        let route = route.as_table_mut().unwrap();
        assert_eq!(route["bucket"].as_str(), Some("lake"));
        route.insert("bucket".into(), stack.bucket.clone().into());
        let table = route["table"].as_str().unwrap().to_string();
        let (_, name) = table.split_once('.').expect("schema.table");
        route.insert("table".into(), stack.table(name).into());
    }
    toml::to_string(&doc).unwrap()
}

/// The sample events by file name, their bucket replaced by the test's.
fn sample_events(stack: &Stack) -> BTreeMap<String, Value> {
    let mut events = BTreeMap::new();
    for entry in std::fs::read_dir(EVENTS).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let mut event: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        // An SQS batch of events (sqs-batch.json): tests/edges.rs and the replay check
        // (tests/replay_check.py) cover it.
        if event.get("Records").is_some() {
            continue;
        }
        assert_eq!(event["detail"]["bucket"]["name"], "lake", "{path:?}");
        event["detail"]["bucket"]["name"] = json!(stack.bucket);
        event["resources"] = json!([format!("arn:aws:s3:::{}", stack.bucket)]);
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        events.insert(name, event);
    }
    events
}

/// The key as stored in S3: EventBridge form-encodes it (`+` for a space, `%XX`).
fn stored_key(event: &Value) -> Option<String> {
    let key = event["detail"]["object"]["key"].as_str()?.replace('+', " ");
    Some(
        percent_encoding::percent_decode_str(&key)
            .decode_utf8()
            .unwrap()
            .into_owned(),
    )
}

/// Writes the object an event names, as its producer would have.
async fn write_object(stack: &Stack, key: &str, expect: Expect) {
    match expect {
        Expect::Loaded(_) => {
            stack.put_parquet(key, 0..5).await;
        }
        Expect::LoadedMultipart => put_multipart(stack, key).await,
        Expect::Skipped(_) if key.ends_with("_SUCCESS") => {
            stack.put(key, vec![]).await;
        }
        Expect::Skipped(_) => {
            stack.put(key, b"{\"not\": \"routed\"}\n".to_vec()).await;
        }
        Expect::BadEvent => unreachable!("a malformed event names no object"),
    }
}

/// A Parquet file just over one part, uploaded in two parts: S3 (and moto) give it a
/// multipart ETag `<md5 of the part md5s>-2`.
async fn put_multipart(stack: &Stack, key: &str) {
    let body = parquet_bytes_named(0..30_000, |i| format!("{i:0>200}"));
    assert!(body.len() > PART_SIZE, "{} bytes", body.len());
    let upload = stack
        .s3
        .create_multipart_upload()
        .bucket(&stack.bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap();
    let mut parts = Vec::new();
    for (i, chunk) in body.chunks(PART_SIZE).enumerate() {
        let number = i as i32 + 1;
        let part = stack
            .s3
            .upload_part()
            .bucket(&stack.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await
            .unwrap();
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(part.e_tag().unwrap())
                .build(),
        );
    }
    stack
        .s3
        .complete_multipart_upload()
        .bucket(&stack.bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
}

fn assert_first_outcome(
    file: &str,
    expect: Expect,
    stack: &Stack,
    outcome: &Result<Outcome, LoaderError>,
) {
    match (expect, outcome) {
        (
            Expect::Loaded(want),
            Ok(Outcome::Loaded {
                partition, files, ..
            }),
        ) => {
            assert_eq!(*files, 1, "{file}");
            let want: Vec<_> = want
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.to_string())))
                .collect();
            assert_eq!(partition.0, want, "{file}");
        }
        (Expect::LoadedMultipart, Ok(Outcome::Loaded { files, .. })) => {
            assert_eq!(*files, 1, "{file}")
        }
        (Expect::Skipped(why), Ok(Outcome::Skipped { reason, bucket, .. })) => {
            assert!(reason.contains(why), "{file}: {reason}");
            assert_eq!(bucket, &stack.bucket);
        }
        (Expect::BadEvent, Err(e)) => assert_eq!(e.error_type(), "Permanent.BadEvent", "{e}"),
        (expect, outcome) => panic!("{file}: expected {expect:?}, got {outcome:?}"),
    }
}

#[tokio::test]
async fn every_sample_event_has_its_outcome_and_a_replay_changes_nothing() {
    let stack = Stack::new().await;
    let loader = stack.loader(&routes(&stack)).await;
    let orders = stack
        .create_table("orders", "id BIGINT, name VARCHAR(256), order_date DATE")
        .await;
    let events_table = stack
        .create_table(
            "events",
            "year INTEGER, month INTEGER, day INTEGER, id BIGINT, name VARCHAR(256)",
        )
        .await;
    let samples = sample_events(&stack);
    assert_eq!(samples.len(), 7, "{:?}", samples.keys());

    // Each event's object is written just before its event is handled, as in S3.
    for (file, event) in &samples {
        let expect = expectation(file);
        if let Some(key) = stored_key(event) {
            write_object(&stack, &key, expect).await;
        }
        let outcome = handle(&loader, event).await;
        assert_first_outcome(file, expect, &stack, &outcome);
    }

    let ledger = |table: &str| {
        format!(
            "SELECT COUNT(*) FROM {} WHERE s3_url = ",
            stack.loader_table(table, "ledger")
        )
    };
    let url = |file: &str| {
        format!(
            "'s3://{}/{}'",
            stack.bucket,
            stored_key(&samples[file]).unwrap()
        )
    };
    // The form-encoded key is loaded under its decoded name and partition.
    let decoded = url("form-encoded-key.json");
    assert!(
        decoded.contains("order_date=2024-05-29/run 2 part-"),
        "{decoded}"
    );
    assert_eq!(
        stack.count(&format!("{}{decoded}", ledger(&orders))).await,
        1
    );
    let day = |d: &str| format!("SELECT COUNT(*) FROM {orders} WHERE order_date = '{d}'");
    assert_eq!(stack.count(&day("2024-05-29")).await, 5);
    // parquet-partition (5 rows) and the multipart upload (30 000 rows) share 2024-05-28.
    assert_eq!(stack.count(&day("2024-05-28")).await, 5 + 30_000);
    let hive =
        format!("SELECT COUNT(*) FROM {events_table} WHERE year = 2024 AND month = 5 AND day = 28");
    assert_eq!(stack.count(&hive).await, 5);

    // The ledger keeps the multipart ETag as S3 lists it, not the event's.
    let multipart = stored_key(&samples["multipart-upload.json"]).unwrap();
    let head = stack
        .s3
        .head_object()
        .bucket(&stack.bucket)
        .key(&multipart)
        .send()
        .await
        .unwrap();
    let etag = head.e_tag().unwrap().trim_matches('"').to_string();
    assert!(etag.ends_with("-2"), "a multipart ETag: {etag}");
    let with_etag = format!(
        "{}{} AND etag = '{etag}'",
        ledger(&orders),
        url("multipart-upload.json")
    );
    assert_eq!(stack.count(&with_etag).await, 1);

    let before = (
        stack.rows(&orders).await,
        stack.rows(&events_table).await,
        stack.ledger_rows(&orders).await,
        stack.ledger_rows(&events_table).await,
    );
    assert_eq!(before, (30_010, 5, 3, 1));
    for (file, event) in &samples {
        let outcome = handle(&loader, event).await;
        match (expectation(file), &outcome) {
            (Expect::Loaded(_) | Expect::LoadedMultipart, Ok(Outcome::UpToDate { .. })) => {}
            (Expect::Skipped(_), Ok(Outcome::Skipped { .. })) => {}
            (Expect::BadEvent, Err(e)) => assert_eq!(e.error_type(), "Permanent.BadEvent"),
            (_, outcome) => panic!("{file} replayed: {outcome:?}"),
        }
    }
    let after = (
        stack.rows(&orders).await,
        stack.rows(&events_table).await,
        stack.ledger_rows(&orders).await,
        stack.ledger_rows(&events_table).await,
    );
    assert_eq!(after, before, "the replay changed nothing");
}
