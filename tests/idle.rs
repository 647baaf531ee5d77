//! An idle deployment costs nothing in Redshift (issue 21 item 6), against the local
//! stack through the real sweep (`sweep_measured`, as the schedule runs it): a sweep
//! that sees nothing new in S3 since a clean sweep makes no Data API call, counted by
//! the sweep's own figures and by the emulator (SYS_QUERY_HISTORY of the loader's user);
//! a new or rewritten object, a wake-up a deadline-forced release left, a watermark
//! that cannot be written or has expired all make it query.

mod common;

use std::time::Duration;

use common::*;
use partition_loader::io::storage::{Storage, S3};
use partition_loader::io::warehouse::{DataApi, Warehouse};
use partition_loader::lake::config::Config;
use partition_loader::lake::watermark::Watermark;
use partition_loader::protocol::plan::ListedObject;
use partition_loader::run::handler::Loader;
use partition_loader::run::invocation::sweep_measured;
use partition_loader::run::metrics::Settings;
use partition_loader::{LoaderError, Outcome};
use serde_json::Value;
use tokio::time::Instant;

/// One scheduled sweep of the last day: its JSON answer (an error is the test's failure).
async fn sweep<W: Warehouse, S: Storage>(loader: &Loader<W, S>) -> Value {
    sweep_measured(loader, &Settings::default(), 1, &holder(), deadline())
        .await
        .result
        .expect("swept")
}

fn today_key(file: &str) -> String {
    format!(
        "orders/order_date={}/{file}",
        chrono::Utc::now().date_naive()
    )
}

/// Statements the emulator ran for the loader's database user (the admin sees all).
async fn statements_of_loader(stack: &Stack) -> i64 {
    stack
        .count(&format!(
            "SELECT COUNT(*) FROM sys_query_history WHERE user_id = \
             (SELECT usesysid FROM pg_user WHERE usename = '{}')",
            stack.db_user
        ))
        .await
}

/// [`statements_of_loader`] once it stopped growing: on a loaded machine the emulator's
/// history may list the last statements of the sweep before a little after it returned
/// (seen once under SERIALIZABLE with another build running: 31, then 42).
async fn settled_statements_of_loader(stack: &Stack) -> i64 {
    let mut seen = statements_of_loader(stack).await;
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let now = statements_of_loader(stack).await;
        if now == seen {
            break;
        }
        seen = now;
    }
    seen
}

async fn watermark_text(stack: &Stack) -> Option<String> {
    let out = stack
        .s3
        .get_object()
        .bucket(&stack.bucket)
        .key("_loader/sweep-watermark.json")
        .send()
        .await
        .ok()?;
    let bytes = out.body.collect().await.ok()?.into_bytes();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

async fn put_watermark(stack: &Stack, text: &str) {
    stack
        .put("_loader/sweep-watermark.json", text.as_bytes().to_vec())
        .await;
}

#[tokio::test]
async fn a_second_sweep_with_nothing_new_makes_no_data_api_call_and_a_new_file_is_loaded_next() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    stack.put_parquet(&today_key("a.parquet"), 0..10).await;

    let first = sweep(&loader).await;
    assert_eq!(first["idle"], false, "{first:#}");
    assert!(
        first["data_api_calls"].as_u64().unwrap_or(0) > 0,
        "{first:#}"
    );
    assert_eq!(stack.rows(&t).await, 10);
    let clean = Watermark::parse(&watermark_text(&stack).await.expect("watermark written"))
        .expect("a watermark");
    assert_eq!(clean.state, "clean");

    let before = settled_statements_of_loader(&stack).await;
    let idle = sweep(&loader).await;
    assert_eq!(idle["idle"], true, "{idle:#}");
    assert_eq!(idle["data_api_calls"], 0, "{idle:#}");
    assert_eq!(idle["upkeep"]["data_api_calls"], 0, "{idle:#}");
    assert_eq!(
        statements_of_loader(&stack).await,
        before,
        "the emulator saw a statement of an idle sweep"
    );

    // A new file: the next sweep notices it in the listing and loads it.
    stack.put_parquet(&today_key("b.parquet"), 10..15).await;
    let next = sweep(&loader).await;
    assert_eq!(next["idle"], false, "{next:#}");
    assert_eq!(
        next["queried_because"], "S3 shows something new since the last sweep",
        "{next:#}"
    );
    assert_eq!(stack.rows(&t).await, 15);
    assert_eq!(sweep(&loader).await["idle"], true);
}

#[tokio::test]
async fn a_rewritten_object_same_key_new_etag_is_noticed() {
    let stack = Stack::new().await;
    let (loader, _) = stack.orders("mode = \"replace\"").await;
    let key = today_key("a.parquet");
    stack.put_parquet(&key, 0..10).await;
    assert_eq!(sweep(&loader).await["idle"], false);
    assert_eq!(sweep(&loader).await["idle"], true);

    // Same key, same size class, new content: only the ETag tells.
    stack.put_parquet(&key, 100..110).await;
    let before = statements_of_loader(&stack).await;
    let m = sweep_measured(&loader, &Settings::default(), 1, &holder(), deadline()).await;
    assert!(
        statements_of_loader(&stack).await > before,
        "a rewritten object went unnoticed: {:?}",
        m.result
    );
}

#[tokio::test]
async fn a_wake_up_left_by_a_deadline_forced_release_is_drained_although_s3_shows_nothing_new() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    // The Redshift path's wake-up (the S3 gate's own is tests/gate.rs's).
    let loader = loader.with_gate(false);
    // Two partitions outside the sweep's one-day window: S3's window listing never
    // shows them, so only Redshift knows of the wake-up below.
    let old_a = "orders/order_date=2024-05-27/a.parquet";
    let old_b = "orders/order_date=2024-05-28/b.parquet";
    let event_a = stack.parquet_event(old_a, 0..3).await;
    let event_b = stack.parquet_event(old_b, 3..7).await;
    stack.put_parquet(&today_key("t.parquet"), 7..10).await;
    assert_eq!(sweep(&loader).await["idle"], false);
    assert_eq!(stack.rows(&t).await, 3);
    let clean = watermark_text(&stack).await.expect("clean watermark");

    // Holder X loads partition b with a COPY held 15.5 s of its 20 s: it commits before
    // X would leave it running (at the deadline less RELEASE_GRACE, 3 s; issue 21.1),
    // and after it less than X's reserve (a quarter: 5 s) is left, so X releases with
    // wake-ups left.
    stack
        .fault(serde_json::json!({"hold_statements": [
            {"sql_contains": "MANIFEST", "count": 1, "hold_ms": 15500}]}))
        .await;
    let x = loader.handle(
        &event_b,
        "holder-x",
        Instant::now() + Duration::from_secs(20),
    );
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let queued = handle(&loader, &event_a).await;
        assert!(matches!(queued, Ok(Outcome::Queued { .. })), "{queued:?}");
        // The queued event's own dirty mark is lost (as a failed PUT would lose it):
        // only X's release can tell the sweep now.
        put_watermark(&stack, &clean).await;
    };
    let (x, ()) = tokio::join!(x, meanwhile);
    assert!(matches!(x, Ok(Outcome::Loaded { .. })), "{x:?}");
    assert_eq!(stack.wakeup_rows(&t).await, 1, "X left the wake-up");
    let mark = Watermark::parse(&watermark_text(&stack).await.expect("watermark")).expect("json");
    assert_eq!(mark.state, "dirty", "{mark:?}");
    assert!(mark.reason.contains("deadline-forced release"), "{mark:?}");

    let swept = sweep(&loader).await;
    assert_eq!(swept["idle"], false, "{swept:#}");
    assert_eq!(stack.wakeup_rows(&t).await, 0, "{swept:#}");
    assert_eq!(stack.rows(&t).await, 10, "partition a drained");
    assert_eq!(sweep(&loader).await["idle"], true, "clean again");
}

/// S3 with the watermark's writes failing (as a missing s3:PutObject would).
struct UnwritableWatermark(S3);

fn is_watermark(key: &str) -> bool {
    key.ends_with("sweep-watermark.json")
}

fn refused(key: &str) -> LoaderError {
    LoaderError::Storage {
        message: format!("writing {key}: AccessDenied"),
        retryable: false,
    }
}

impl Storage for UnwritableWatermark {
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>, LoaderError> {
        self.0.list(bucket, prefix).await
    }

    async fn put(&self, bucket: &str, key: &str, body: String) -> Result<(), LoaderError> {
        if is_watermark(key) {
            return Err(refused(key));
        }
        self.0.put(bucket, key, body).await
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, LoaderError> {
        self.0.exists(bucket, key).await
    }

    async fn tail(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        len: u64,
    ) -> Result<Vec<u8>, LoaderError> {
        self.0.tail(bucket, key, etag, len).await
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Option<(String, String)>, LoaderError> {
        self.0.get(bucket, key).await
    }

    async fn put_if(
        &self,
        _bucket: &str,
        key: &str,
        _body: String,
        _expected: Option<&str>,
    ) -> Result<bool, LoaderError> {
        Err(refused(key))
    }
}

async fn loader_with_unwritable_watermark(config: Config) -> Loader<DataApi, UnwritableWatermark> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let warehouse = DataApi::new(
        aws_sdk_redshiftdata::Client::new(&sdk),
        config.redshift.clone(),
        config.database.clone(),
    );
    Loader::new(config, warehouse, UnwritableWatermark(S3::new(s3)))
}

#[tokio::test]
async fn a_watermark_that_cannot_be_written_or_has_expired_makes_the_sweep_query() {
    let stack = Stack::new().await;
    let route = stack.orders_route("");
    stack.bootstrap_as_admin(&route).await;
    let t = stack.orders_table().await;
    let loader = loader_with_unwritable_watermark(stack.config(&route)).await;
    stack.put_parquet(&today_key("a.parquet"), 0..10).await;
    assert_eq!(sweep(&loader).await["idle"], false);
    assert_eq!(stack.rows(&t).await, 10);
    let before = statements_of_loader(&stack).await;
    let again = sweep(&loader).await;
    assert_eq!(again["idle"], false, "{again:#}");
    assert_eq!(again["queried_because"], "no watermark", "{again:#}");
    assert!(statements_of_loader(&stack).await > before);

    // The fallback for a dirty mark that could not be written: a clean watermark of the
    // very same listing is trusted only until it expires.
    let writer = Loader::connect(stack.config(&route)).await;
    assert_eq!(sweep(&writer).await["idle"], false);
    assert_eq!(sweep(&writer).await["idle"], true);
    let mut w = Watermark::parse(&watermark_text(&stack).await.expect("written")).expect("json");
    w.expires_at = w.written_at;
    put_watermark(&stack, &w.to_json()).await;
    let expired = sweep(&writer).await;
    assert_eq!(expired["idle"], false, "{expired:#}");
    assert!(
        expired["queried_because"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{expired:#}"
    );
}

/// BENCHMARKS.md's figures: the Data API calls of a sweep that finds nothing new, with
/// the gate off (every sweep before issue 21 item 6) and on.
#[tokio::test]
async fn an_idle_sweep_costs_its_calls_with_the_gate_off_and_none_with_it_on() {
    let stack = Stack::new().await;
    let route = stack.orders_route("");
    stack.bootstrap_as_admin(&route).await;
    let t = stack.orders_table().await;
    let mut env = stack.env(&route);
    env.push(("SWEEP_WATERMARK_MAX_AGE_HOURS".into(), "0".into()));
    let off = Config::from_lookup(|k| {
        env.iter()
            .find(|(n, v)| n == k && !v.is_empty())
            .map(|(_, v)| v.clone())
    })
    .expect("config");
    let gate_off = Loader::connect(off).await;
    stack.put_parquet(&today_key("a.parquet"), 0..10).await;
    let first = sweep(&gate_off).await;
    assert_eq!(stack.rows(&t).await, 10);
    let idle_off = sweep(&gate_off).await;
    assert_eq!(idle_off["idle"], false, "{idle_off:#}");
    let calls_off = idle_off["data_api_calls"].as_u64().unwrap_or(0);
    let upkeep_off = idle_off["upkeep"]["data_api_calls"].as_u64().unwrap_or(0);
    assert!(calls_off > 0 && upkeep_off > 0, "{idle_off:#}");

    let gate_on = Loader::connect(stack.config(&route)).await;
    assert_eq!(sweep(&gate_on).await["idle"], false, "no watermark yet");
    let idle_on = sweep(&gate_on).await;
    assert_eq!(idle_on["data_api_calls"], 0, "{idle_on:#}");
    eprintln!(
        "figures: loading sweep {} calls; idle sweep, gate off: {calls_off} calls ({upkeep_off} of them upkeep's); gate on: 0",
        first["data_api_calls"]
    );
}
