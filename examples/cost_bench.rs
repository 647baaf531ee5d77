//! What one invocation costs: the plan/manifest work for a 10,000-object partition, and
//! Data API / S3 calls, bytes and poll overshoot against the local stack.
//!
//! ```text
//! cargo run --release --example cost_bench                 # pure part only
//! scripts/local-stack up && eval "$(scripts/local-stack env)"
//! cargo run --release --example cost_bench -- --stack      # plus the stack runs
//! ```
//! Pure part: the handler's own steps after listing (diff against the ledger, ledger
//! tuples, INSERT packing, batching, manifest JSON, load batch SQL) for 10,000 listed
//! objects against a ledger of 10,000 rows, in three mixes (all loaded, all new, half),
//! timed (median of 5) and with the peak heap measured by a counting allocator.
//! Stack part: (1) 10,000 objects in moto and 10,000 ledger rows, one event: the whole
//! `handle` (acquire, list 10 pages, diff, release) timed, with its peak heap; (2) one
//! event loading 10 new Parquet files with 50 ms added to every Data API call: Data API
//! calls (counted by the emulator), submissions and SQL bytes (a counting `Warehouse`),
//! S3 calls (a counting `Storage`), and the time from the load batch's end (its
//! `UpdatedAt`) until `handle` returned.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use partition_loader::io::storage::{Storage, S3};
use partition_loader::io::warehouse::{DataApi, Row, Warehouse};
use partition_loader::lake::config::Mode;
use partition_loader::protocol::plan::{self, ListedObject, LoadedFile, Plan};
use partition_loader::run::handler::Loader;
use partition_loader::sql::{self, CopyTarget, FileFormat, Ident, LedgerRow, TableName};
use partition_loader::{lake::manifest, LoaderError, Outcome};
use serde_json::{json, Value};
use tokio::time::Instant;

#[path = "../tests/common/mod.rs"]
mod common;

/// The system allocator, counting live bytes and their peak.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result, its time and the heap it added at its peak.
fn measured<T>(f: impl FnOnce() -> T) -> (T, Duration, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let start = std::time::Instant::now();
    let out = f();
    let elapsed = start.elapsed();
    (out, elapsed, PEAK.load(Ordering::Relaxed) - base)
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

const BUCKET: &str = "lake";
const PARTITION: &str = "order_date=2024-05-28/";

fn key(i: usize) -> String {
    format!("transformed/orders/{PARTITION}part-{i:05}-9f1c2e4a-5b6d-4e7f-8a9b-0c1d2e3f4a5b-c000.snappy.parquet")
}

fn listed(range: std::ops::Range<usize>) -> Vec<ListedObject> {
    range
        .map(|i| ListedObject {
            key: key(i),
            size: 48_000_000,
            etag: format!("{:032x}", i),
            last_modified: None,
        })
        .collect()
}

fn ledger(range: std::ops::Range<usize>) -> Vec<LoadedFile> {
    range
        .map(|i| LoadedFile {
            s3_url: plan::s3_url(BUCKET, &key(i)),
            etag: format!("{:032x}", i),
        })
        .collect()
}

/// What the handler submits for a plan: (submissions, SQL bytes, manifest bytes).
fn load_statements(files: &[ListedObject]) -> Result<(usize, usize, usize), LoaderError> {
    let schema = Ident::parse("partition_loader").map_err(LoaderError::Config)?;
    let table = TableName::parse("analytics.orders").map_err(LoaderError::Config)?;
    let tables = sql::LeaseTables::for_target(&table);
    let holder = "8f0e2b1c-7d3a-4c5e-9b6f-1a2b3c4d5e6f";
    let load_id = "0c9d8e7f-6a5b-4c3d-2e1f-0a9b8c7d6e5f";
    let tuples = files
        .iter()
        .map(|f| {
            let row = LedgerRow {
                s3_url: plan::s3_url(BUCKET, &f.key),
                etag: f.etag.clone(),
                size_bytes: f.size,
            };
            sql::ledger_tuple(PARTITION, holder, load_id, &row)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let limits = partition_loader::run::handler::BatchLimits::default();
    let inserts = sql::ledger_inserts(
        &sql::table_ledger_insert_head(&schema, &tables),
        &tuples,
        limits.max_statement_bytes,
    );
    let target = CopyTarget::Direct(None);
    let room = limits.max_statements - sql::fixed_statements(std::slice::from_ref(&target), false);
    let batches = plan::batches(inserts, room);
    let (mut sql_bytes, mut manifest_bytes, mut offset) = (0, 0, 0);
    for (n, (inserts, count)) in batches.iter().enumerate() {
        let chunk = &files[offset..offset + count];
        offset += count;
        manifest_bytes += manifest::manifest_json(BUCKET, chunk).len();
        let sqls = sql::load_batch(&sql::LoadBatch {
            schema: &schema,
            tables: &tables,
            table: &table,
            partition_path: PARTITION,
            holder,
            iam_role: "arn:aws:iam::123456789012:role/redshift-copy",
            format: FileFormat::Parquet,
            copies: &[sql::CopyStep {
                manifest_url:
                    "s3://lake/_loader/analytics.orders/order_date=2024-05-28/x-0.manifest",
                target: &target,
            }],
            replace: None,
            ledger_inserts: inserts,
            load_id,
            ttl_seconds: 960,
            stage_suffix: n,
            copy_options: &[],
            statupdate: false,
        })?;
        sql_bytes += sqls.iter().map(String::len).sum::<usize>();
    }
    Ok((batches.len(), sql_bytes, manifest_bytes))
}

fn pure_part() -> Result<(), LoaderError> {
    println!("## plan and manifest for 10,000 listed objects (release build, median of 5)\n");
    println!("| ledger rows | pending | diff | render load SQL + manifests | total | peak heap | submissions | SQL bytes | manifest bytes |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mixes: [(&str, std::ops::Range<usize>); 3] = [
        ("10,000 (all loaded)", 0..10_000),
        ("10,000 (other files)", 10_000..20_000),
        ("10,000 (half loaded)", 5_000..15_000),
    ];
    for (name, ledger_range) in mixes {
        let mut runs = Vec::new();
        for _ in 0..5 {
            let list = listed(0..10_000);
            let led = ledger(ledger_range.clone());
            let ((diff, load), total, peak) = measured(|| {
                let t = std::time::Instant::now();
                let plan = plan::plan(Mode::Append, BUCKET, list, &led);
                let diff = t.elapsed();
                let t = std::time::Instant::now();
                let load = match plan {
                    Ok(Plan::Load(files)) => Some((files.len(), load_statements(&files))),
                    _ => None,
                };
                (diff, (t.elapsed(), load))
            });
            runs.push((diff, load, total, peak));
        }
        runs.sort_by_key(|r| r.2);
        let (diff, (render, load), total, peak) = &runs[2];
        let (pending, subs, sql_bytes, man_bytes) = match load {
            Some((n, Ok((s, b, m)))) => (*n, *s, *b, *m),
            Some((_, Err(e))) => return Err(LoaderError::BadValue(e.to_string())),
            None => (0, 0, 0, 0),
        };
        println!(
            "| {name} | {pending} | {diff:.1?} | {render:.1?} | {total:.1?} | {} | {subs} | {sql_bytes} | {man_bytes} |",
            mib(*peak)
        );
    }
    Ok(())
}

/// What the loader asked of the Data API and S3.
#[derive(Default)]
struct Counters {
    submissions: AtomicU64,
    sql_bytes: AtomicU64,
    result_reads: AtomicU64,
    list_pages: AtomicU64,
    puts: AtomicU64,
    /// Time spent in S3 listing and in Data API calls, microseconds.
    list_us: AtomicU64,
    warehouse_us: AtomicU64,
}

/// Counts what the loader asks of the Data API.
struct CountingWarehouse {
    inner: DataApi,
    c: Arc<Counters>,
}

impl Warehouse for CountingWarehouse {
    async fn run_batch(&self, sqls: Vec<String>, deadline: Instant) -> Result<String, LoaderError> {
        self.c.submissions.fetch_add(1, Ordering::Relaxed);
        let bytes: usize = sqls.iter().map(String::len).sum();
        self.c.sql_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let t = std::time::Instant::now();
        let out = self.inner.run_batch(sqls, deadline).await;
        self.c
            .warehouse_us
            .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        out
    }
    async fn run(
        &self,
        sql: String,
        params: Vec<(&'static str, String)>,
        deadline: Instant,
    ) -> Result<String, LoaderError> {
        self.c.submissions.fetch_add(1, Ordering::Relaxed);
        self.c
            .sql_bytes
            .fetch_add(sql.len() as u64, Ordering::Relaxed);
        self.inner.run(sql, params, deadline).await
    }
    async fn rows(&self, id: String, deadline: Instant) -> Result<Vec<Row>, LoaderError> {
        self.c.result_reads.fetch_add(1, Ordering::Relaxed);
        let t = std::time::Instant::now();
        let out = self.inner.rows(id, deadline).await;
        self.c
            .warehouse_us
            .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        out
    }
}

/// Counts S3 calls: ListObjectsV2 pages (1,000 keys each) and PutObject.
struct CountingStorage {
    inner: S3,
    c: Arc<Counters>,
}

impl Storage for CountingStorage {
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>, LoaderError> {
        let t = std::time::Instant::now();
        let out = self.inner.list(bucket, prefix).await?;
        self.c
            .list_us
            .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        let pages = out.len().div_ceil(1000).max(1);
        self.c.list_pages.fetch_add(pages as u64, Ordering::Relaxed);
        Ok(out)
    }
    async fn put(&self, bucket: &str, key: &str, body: String) -> Result<(), LoaderError> {
        self.c.puts.fetch_add(1, Ordering::Relaxed);
        self.inner.put(bucket, key, body).await
    }

    /// Parquet footers (not counted here: one small ranged GET per new file).
    async fn tail(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        len: u64,
    ) -> Result<Vec<u8>, LoaderError> {
        self.inner.tail(bucket, key, etag, len).await
    }
}

type Counted = Loader<CountingWarehouse, CountingStorage>;

async fn counted_loader(
    stack: &common::Stack,
    routes: &str,
    c: Arc<Counters>,
) -> (Counted, aws_sdk_redshiftdata::Client) {
    counted_loader_with(stack, routes, c, false).await
}

/// `polling`: DescribeStatement without WaitTimeSeconds, as before issue 21.3.
async fn counted_loader_with(
    stack: &common::Stack,
    routes: &str,
    c: Arc<Counters>,
    polling: bool,
) -> (Counted, aws_sdk_redshiftdata::Client) {
    let config = stack.config(routes);
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let rsd = aws_sdk_redshiftdata::Client::new(&sdk);
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let inner = DataApi::new(
        rsd.clone(),
        config.redshift.clone(),
        config.database.clone(),
    );
    let warehouse = CountingWarehouse {
        inner: if polling { inner.polling_only() } else { inner },
        c: c.clone(),
    };
    let storage = CountingStorage {
        inner: S3::new(s3),
        c,
    };
    // The operator bootstraps and grants; the loader runs as a user that owns nothing.
    stack.bootstrap_as_admin(routes).await;
    let loader = Loader::new(config, warehouse, storage);
    (loader, rsd)
}

/// Data API calls the emulator saw for the workgroup (every call is delayed by the
/// latency fault, and each delay is counted).
async fn api_calls(workgroup: &str) -> u64 {
    let (_, body) = common::admin("GET", "/_admin/faults/injected", "").await;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v[workgroup]["latency"].as_u64().unwrap_or(0)
}

fn counts(c: &Counters) -> (u64, u64, u64, u64, u64) {
    let take = |a: &AtomicU64| a.swap(0, Ordering::Relaxed);
    (
        take(&c.submissions),
        take(&c.sql_bytes),
        take(&c.result_reads),
        take(&c.list_pages),
        take(&c.puts),
    )
}

async fn stack_part() -> Result<(), LoaderError> {
    let stack = common::Stack::new().await;
    let routes = stack.orders_route("");
    let table = stack.orders_table().await;
    let counters = Arc::new(Counters::default());
    let (loader, rsd) = counted_loader(&stack, &routes, counters.clone()).await;
    // Latency 1 ms: only so that the emulator counts the calls.
    stack.fault(json!({"latency_ms": 1})).await;

    // (1) 10,000 objects, all in the ledger (`--loads-only` skips it: its set-up puts
    // 10,000 objects).
    let n = if std::env::args().any(|a| a == "--loads-only") {
        0
    } else {
        10_000
    };
    let body = b"x".to_vec();
    let started = std::time::Instant::now();
    let mut etag = String::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        let mut puts = Vec::new();
        for &i in chunk {
            let (s3, bucket, body) = (stack.s3.clone(), stack.bucket.clone(), body.clone());
            puts.push(tokio::spawn(async move {
                common::put_object(
                    &s3,
                    &bucket,
                    &format!("{}/part-{i:05}.parquet", common::ORDERS_DAY),
                    body,
                )
                .await
            }));
        }
        for p in puts {
            let (_, e) = p.await.expect("put task").expect("put");
            etag = e;
        }
    }
    let etag = plan::normalise_etag(&etag);
    let runs_10k = if n == 0 { 0 } else { 3 };
    for start in (0..n).step_by(400) {
        let values: Vec<String> = (start..start + 400)
            .map(|i| {
                format!(
                    "('order_date=2024-05-28/', 's3://{}/{}/part-{i:05}.parquet', '{etag}', 1, GETDATE(), 'bench', 'bench')",
                    stack.bucket,
                    common::ORDERS_DAY
                )
            })
            .collect();
        stack
            // The table's own ledger (the shared `loaded_files` is only read once, by a
            // bootstrap that finds the table's ledger empty).
            .sql(&format!(
                "INSERT INTO {} (partition_path, s3_url, etag, size_bytes, loaded_at, holder, \
                 load_id) VALUES {}",
                stack.loader_table(&table, "ledger"),
                values.join(", ")
            ))
            .await;
    }
    eprintln!(
        "set-up of 10,000 objects and ledger rows: {:.1?}",
        started.elapsed()
    );
    let event = common::object_created(
        &stack.bucket,
        &format!("{}/part-00042.parquet", common::ORDERS_DAY),
        1,
        Some(&etag),
    );
    println!("\n## one event, partition of 10,000 objects, ledger of 10,000 rows (local stack)\n");
    println!("| run | outcome | handle time | of which S3 list | of which Data API | peak heap | Data API calls | submissions | SQL bytes | result reads | S3 list pages | S3 puts |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for run in 1..=runs_10k {
        let before = api_calls(&stack.workgroup).await;
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let t = std::time::Instant::now();
        let o = loader
            .handle(&event, &format!("bench-{run}"), common::deadline())
            .await?;
        let elapsed = t.elapsed();
        let peak = PEAK.load(Ordering::Relaxed) - base;
        let calls = api_calls(&stack.workgroup).await - before;
        let list = Duration::from_micros(counters.list_us.swap(0, Ordering::Relaxed));
        let api = Duration::from_micros(counters.warehouse_us.swap(0, Ordering::Relaxed));
        let (subs, bytes, reads, pages, puts) = counts(&counters);
        println!(
            "| {run} | {} | {elapsed:.1?} | {list:.1?} | {api:.1?} | {} | {calls} | {subs} | {bytes} | {reads} | {pages} | {puts} |",
            o.to_json()["outcome"].as_str().unwrap_or("?"),
            mib(peak)
        );
    }

    // (1b) Data API calls per event, DescribeStatement polled (before issue 21.3) and
    // with WaitTimeSeconds (after), in this run: up to date against the 10,000-row
    // ledger, queued behind a live lease, and loading one new file.
    if n > 0 {
        let (polling, _) = counted_loader_with(&stack, &routes, counters.clone(), true).await;
        println!(
            "\n## Data API calls per event: polling vs WaitTimeSeconds (ledger of 10,000 rows)\n"
        );
        println!("| event | polled (before) | WaitTimeSeconds (after) |");
        println!("|---|---|---|");
        let mut rows: Vec<(String, u64, u64)> = Vec::new();
        for (label, kind) in [("up to date", 0), ("queued", 1), ("loaded (1 new file)", 2)] {
            let mut pair = [0u64; 2];
            for (k, l) in [&polling, &loader].into_iter().enumerate() {
                let ev = match kind {
                    2 => {
                        stack
                            .parquet_event(
                                &format!("{}/new-{k}.parquet", common::ORDERS_DAY),
                                0..10,
                            )
                            .await
                    }
                    _ => event.clone(),
                };
                if kind == 1 {
                    stack.insert_lease(&table, "someone-else", 600).await;
                }
                let before = api_calls(&stack.workgroup).await;
                let o = l
                    .handle(&ev, &format!("calls-{kind}-{k}"), common::deadline())
                    .await?;
                pair[k] = api_calls(&stack.workgroup).await - before;
                let _ = counts(&counters);
                eprintln!("{label} ({}): {}", ["polled", "wait"][k], o.to_json());
                if kind == 1 {
                    stack.insert_lease(&table, "someone-else", -1).await;
                    stack
                        .sql(&format!(
                            "UPDATE {} SET holder = NULL, acquired_at = NULL, expires_at = NULL",
                            stack.loader_table(&table, "lease")
                        ))
                        .await;
                    stack
                        .sql(&format!(
                            "DELETE FROM {}",
                            stack.loader_table(&table, "wakeup")
                        ))
                        .await;
                }
            }
            rows.push((label.to_string(), pair[0], pair[1]));
        }
        for (label, before, after) in rows {
            println!("| {label} | {before} | {after} |");
        }
    }

    // (2) Loads of 10 new files with 50 ms per Data API call.
    stack.fault(json!({"latency_ms": 49})).await;
    println!("\n## one event loading 10 new Parquet files, 50 ms added per Data API call\n");
    println!("| run | outcome | handle time | Data API calls | submissions | SQL bytes | result reads | S3 list pages | S3 puts | load end → return |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for run in 1..=5 {
        let day = format!("orders/order_date=2024-06-{run:02}");
        let mut event = Value::Null;
        for f in 0..10 {
            event = stack
                .parquet_event(&format!("{day}/part-{f}.parquet"), f * 100..f * 100 + 100)
                .await;
        }
        let _ = counts(&counters);
        counters.list_us.store(0, Ordering::Relaxed);
        counters.warehouse_us.store(0, Ordering::Relaxed);
        let before = api_calls(&stack.workgroup).await;
        let t = std::time::Instant::now();
        let o = loader
            .handle(&event, &format!("load-{run}"), common::deadline())
            .await?;
        let returned = SystemTime::now();
        let elapsed = t.elapsed();
        let calls = api_calls(&stack.workgroup).await - before;
        let (subs, bytes, reads, pages, puts) = counts(&counters);
        let overshoot = match &o {
            Outcome::Loaded { statement_id, .. } => {
                let d = rsd
                    .describe_statement()
                    .id(statement_id)
                    .send()
                    .await
                    .map_err(|e| LoaderError::Warehouse {
                        message: e.to_string(),
                        retryable: false,
                    })?;
                d.updated_at().map(|u| {
                    let end = SystemTime::UNIX_EPOCH
                        + Duration::from_secs(u.secs() as u64)
                        + Duration::from_nanos(u.subsec_nanos() as u64);
                    returned.duration_since(end).unwrap_or_default()
                })
            }
            _ => None,
        };
        println!(
            "| {run} | {} | {elapsed:.1?} | {calls} | {subs} | {bytes} | {reads} | {pages} | {puts} | {} |",
            o.to_json()["outcome"].as_str().unwrap_or("?"),
            overshoot.map(|d| format!("{d:.1?}")).unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    pure_part()?;
    if std::env::args().any(|a| a == "--stack" || a == "--loads-only") {
        stack_part().await?;
    }
    Ok(())
}
