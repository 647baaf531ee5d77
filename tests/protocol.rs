//! The lease protocol against the local stack: tables independent of each other under
//! Redshift's table-level serializable rule, hand-off, sweep, chaos.

mod common;

use std::sync::{Arc, Mutex};

use aws_sdk_redshiftdata::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_redshiftdata::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
use common::*;
use partition_loader::io::storage::S3;
use partition_loader::io::warehouse::DataApi;
use partition_loader::run::handler::Loader;
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
            let failed = d
                .sub_statements()
                .iter()
                .any(|s| s.error().is_some_and(|e| e.contains("1023")))
                || d.error().is_some_and(|e| e.contains("1023"));
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
    counted_loader_with(config, counter, CallCounter::default()).await
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
            .create_table(
                &format!("t{i}"),
                "id BIGINT, name VARCHAR(64), order_date DATE",
            )
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

/// Invocations that find the lease busy while its holder's load runs never make that
/// load fail with 1023: they lock and write only the wake-up table, which no load batch
/// touches, so a busy acquirer and the load are never a cycle, even when Redshift counts
/// a LOCK as a write (undocumented; the emulator's default). While acquirers locked the
/// lease table, whose row the load's fence reads and writes, they were. It shows on a
/// SERIALIZABLE database: `scripts/test` runs this suite on one.
#[tokio::test]
async fn busy_acquirers_during_a_load_never_conflict_with_it() {
    const FILES: i64 = 120;
    const BUSY: i64 = 8;
    let stack = Stack::new().await;
    let routes = stack.orders_route("");
    drop(stack.loader(&routes).await);
    let t = stack.orders_table().await;
    for i in 0..FILES {
        stack
            .put_parquet(
                &format!("{ORDERS_DAY}/part-{i:03}.parquet"),
                i * 10..i * 10 + 10,
            )
            .await;
    }
    let counter = ConflictCounter::default();
    let loader = Arc::new(counted_loader(stack.config(&routes), counter.clone()).await);
    let first = stack
        .parquet_event(
            &format!("{ORDERS_DAY}/part-{FILES:03}.parquet"),
            FILES * 10..FILES * 10 + 10,
        )
        .await;
    let holder = {
        let loader = loader.clone();
        tokio::spawn(async move { handle(&loader, &first).await })
    };
    // While the holder lists and loads its 121 files, events for other days arrive.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut busy = Vec::new();
    for d in 0..BUSY {
        let key = format!("orders/order_date=2024-06-{:02}/part-0.parquet", d + 1);
        let event = stack
            .parquet_event(&key, 10_000 + d * 10..10_000 + d * 10 + 10)
            .await;
        let loader = loader.clone();
        busy.push(tokio::spawn(async move { handle(&loader, &event).await }));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut queued = 0;
    for task in busy {
        match task.await.expect("task") {
            Ok(Outcome::Queued { .. }) => queued += 1,
            Ok(_) => {}
            Err(e) => panic!("a busy acquirer failed: {e}"),
        }
    }
    match holder.await.expect("holder") {
        Ok(Outcome::Loaded { .. }) => {}
        other => panic!("the holder: {other:?}"),
    }
    eprintln!("{queued} of {BUSY} acquirers found the lease busy");
    assert_eq!(stack.rows(&t).await, (FILES + 1) * 10 + BUSY * 10);
    assert_eq!(stack.ledger_rows(&t).await, FILES + 1 + BUSY);
    assert_eq!(stack.wakeup_rows(&t).await, 0);
    assert_eq!(
        counter.count(),
        0,
        "a busy acquirer made the load fail with 1023"
    );
}

/// Chaos: holders are killed (their invocation dropped, as a Lambda timeout or crash
/// does) at every point of the acquire, load and drain, one event in ten never arrives,
/// then one sweep runs: every file is loaded exactly once, no lease and no wake-up left.
#[tokio::test]
async fn killed_holders_and_lost_events_then_one_sweep_load_everything_once() {
    const FILES: i64 = 24;
    let stack = Stack::new().await;
    let routes = stack.orders_route("");
    let (_, t) = stack.orders("").await;
    // Partitions of today and yesterday: inside the sweep's look-back window.
    let today = chrono::Utc::now().date_naive();
    let days = [today, today - chrono::Days::new(1)];
    let mut events = Vec::new();
    for i in 0..FILES {
        let day = days[(i % 2) as usize].format("%Y-%m-%d");
        let key = format!("orders/order_date={day}/part-{i}.parquet");
        events.push(stack.parquet_event(&key, i * 10..i * 10 + 3).await);
    }
    // Short leases so that killed holders' leases expire during the test; slow calls
    // so that the kill times below fall on different steps.
    let mut config = stack.config(&routes);
    config.lease_ttl = std::time::Duration::from_secs(3);
    let chaotic = Arc::new(Loader::connect(config).await);
    stack.fault(json!({"latency_ms": 120})).await;
    let mut rng = fastrand::Rng::with_seed(12);
    let kills_ms = [
        None,
        Some(150),
        Some(400),
        Some(700),
        Some(1100),
        Some(1600),
        Some(2500),
    ];
    let mut tasks = Vec::new();
    let mut dropped = 0;
    for (i, event) in events.into_iter().enumerate() {
        if rng.u32(..10) == 0 {
            dropped += 1; // S3 never delivered this one.
            continue;
        }
        let kill = kills_ms[i % kills_ms.len()];
        let loader = chaotic.clone();
        tasks.push(tokio::spawn(async move {
            let id = holder();
            let run = loader.handle(&event, &id, deadline());
            match kill {
                Some(ms) => tokio::time::timeout(std::time::Duration::from_millis(ms), run)
                    .await
                    .ok(),
                None => Some(run.await),
            }
        }));
        tokio::time::sleep(std::time::Duration::from_millis(rng.u64(0..150))).await;
    }
    for task in tasks {
        // A surviving invocation may still fail retryably (its lease was taken over
        // after expiring): Lambda would retry it; the sweep covers it here.
        if let Some(Err(e)) = task.await.expect("task") {
            assert_eq!(
                e.kind(),
                partition_loader::ErrorKind::Retryable,
                "only retryable failures: {e}"
            );
        }
    }
    assert!(dropped > 0, "the seed drops some events");
    // Let every killed holder's lease expire, and statements it left running end.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let mut config = stack.config(&routes);
    config.redshift = partition_loader::lake::config::RedshiftTarget::Serverless {
        workgroup: format!("{}-sweep", stack.workgroup),
    };
    let sweeper = Loader::connect(config).await;
    for r in sweeper.sweep(&holder(), 3, deadline()).await {
        assert!(r.is_ok(), "sweep: {r:?}");
    }
    assert_eq!(stack.rows(&t).await, FILES * 3, "every file once");
    let distinct = format!("SELECT COUNT(DISTINCT id) FROM {t}");
    assert_eq!(stack.count(&distinct).await, FILES * 3);
    let per_file = format!(
        "SELECT COUNT(*) FROM (SELECT id / 10 AS file, COUNT(*) AS n FROM {t} GROUP BY 1) x \
         WHERE n <> 3"
    );
    assert_eq!(stack.count(&per_file).await, 0, "3 rows for every file");
    assert_eq!(stack.ledger_rows(&t).await, FILES);
    assert_eq!(stack.lease_rows(&t).await, 0, "no lease left");
    assert_eq!(stack.wakeup_rows(&t).await, 0, "no wake-up left");
}

/// The sweep's cost does not grow with the route's history: 10,000 date partitions
/// (27 years), one file each, nothing loaded yet; a sweep with a 3-day window lists 3
/// prefixes and loads exactly the 3 newest partitions. Run by hand (it writes 10,000
/// objects): `cargo test --test protocol sweep_cost -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn sweep_cost_on_ten_thousand_partitions() {
    const PARTITIONS: u64 = 10_000;
    let stack = Stack::new().await;
    let routes = stack.orders_route("");
    let (_, t) = stack.orders("").await;
    let today = chrono::Utc::now().date_naive();
    let body = Arc::new(common::parquet_bytes(0..1));
    let started = std::time::Instant::now();
    for chunk in (0..PARTITIONS).collect::<Vec<_>>().chunks(50) {
        let mut puts = Vec::new();
        for &back in chunk {
            let day = (today - chrono::Days::new(back)).format("%Y-%m-%d");
            let key = format!("orders/order_date={day}/part-0.parquet");
            let (s3, bucket, body) = (stack.s3.clone(), stack.bucket.clone(), body.clone());
            puts.push(tokio::spawn(async move {
                common::put_object(&s3, &bucket, &key, body.to_vec()).await
            }));
        }
        for p in puts {
            p.await.expect("task").expect("put");
        }
    }
    eprintln!("wrote {PARTITIONS} partitions in {:?}", started.elapsed());
    let counter = ConflictCounter::default();
    let calls = CallCounter::default();
    let loader = counted_loader_with(stack.config(&routes), counter, calls.clone()).await;
    let started = std::time::Instant::now();
    let results = loader.sweep(&holder(), 3, deadline()).await;
    let took = started.elapsed();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let loaded = results
        .iter()
        .filter(|r| matches!(r, Ok(Outcome::Loaded { .. })))
        .count();
    eprintln!(
        "sweep over {PARTITIONS} partitions, 3-day window: {took:?}, {} Data API requests, \
         {loaded} partitions loaded",
        calls.count()
    );
    assert_eq!(loaded, 3, "only the window's partitions");
    assert_eq!(stack.ledger_rows(&t).await, 3);
}

/// Counts every Data API request.
#[derive(Debug, Clone, Default)]
struct CallCounter(Arc<std::sync::atomic::AtomicUsize>);

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_sdk_redshiftdata::config::interceptors::BeforeTransmitInterceptorContextRef<
            '_,
        >,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_redshiftdata::error::BoxError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

impl CallCounter {
    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

async fn counted_loader_with(
    config: Config,
    conflicts: ConflictCounter,
    calls: CallCounter,
) -> TestLoader {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let rsd = aws_sdk_redshiftdata::Client::from_conf(
        aws_sdk_redshiftdata::config::Builder::from(&sdk)
            .interceptor(conflicts)
            .interceptor(calls)
            .build(),
    );
    let warehouse = DataApi::new(rsd, config.redshift.clone(), config.database.clone());
    Loader::new(config, warehouse, S3::new(s3))
}

/// Upgrading from the shared ledger: `loaderctl bootstrap` copies the table's rows of
/// `loaded_files` into its own ledger once, so nothing already loaded loads again.
#[tokio::test]
async fn bootstrap_copies_the_shared_ledger_of_earlier_versions_once() {
    let stack = Stack::new().await;
    let routes = stack.orders_route("");
    let t = stack.orders_table().await;
    let key = format!("{ORDERS_DAY}/part-0.parquet");
    let (size, etag) = stack.put_object(&key, common::parquet_bytes(0..3)).await;
    // What an earlier version left: the shared ledger with this object loaded.
    let pl = &stack.loader_schema;
    stack.sql(&format!("CREATE SCHEMA {pl}")).await;
    stack
        .sql(&format!(
            "CREATE TABLE {pl}.loaded_files (table_name VARCHAR(256), \
             partition_path VARCHAR(1024), s3_url VARCHAR(2048), etag VARCHAR(128), \
             size_bytes BIGINT, loaded_at TIMESTAMP, holder VARCHAR(256), load_id VARCHAR(64))"
        ))
        .await;
    let old_row = |table: &str| {
        format!(
            "INSERT INTO {}.loaded_files VALUES ('{table}', 'order_date=2024-05-28/', \
             's3://{}/{key}', '{}', {size}, GETDATE(), 'old', 'old-load')",
            stack.loader_schema,
            stack.bucket,
            etag.trim_matches('"')
        )
    };
    stack.sql(&old_row(&t)).await;
    stack.sql(&old_row("other.table")).await;
    let loader = stack.loader(&routes).await;
    assert_eq!(stack.ledger_rows(&t).await, 1, "this table's row only");
    stack.bootstrap_as_admin(&routes).await; // bootstrap again
    assert_eq!(stack.ledger_rows(&t).await, 1, "copied once");
    let event = common::object_created(&stack.bucket, &key, size, Some(&etag));
    let o = handle(&loader, &event).await;
    assert!(matches!(o, Ok(Outcome::UpToDate { .. })), "{o:?}");
    assert_eq!(stack.rows(&t).await, 0, "not loaded again");
}
