//! Burst benchmark: does a burst of N files in one partition cost a few COPYs, not N?
//!
//! ```text
//! scripts/local-stack up && eval "$(scripts/local-stack env)"
//! cargo run --release --example burst_bench -- --files 10,100 --runs 1 --latency-ms 50 --sqs-batch 10,100
//! ```
//! (a debug build, `cargo run --example burst_bench`, measures the same: the time goes
//! into Data API round trips and PostgreSQL, not into the loader's own code.)
//!
//! For each N and each emulator latency (0, and `--latency-ms` per Data API call, a
//! fault scoped to the scenario's workgroup), the library's real handler loads one
//! partition twice, into two tables:
//! - burst: N Parquet files are written, then N `handle` calls run concurrently, one
//!   per object event, each with its own holder id (N Lambda invocations);
//! - sqs B (for each `--sqs-batch` size B): the same N events, as the SQS event source
//!   mapping delivers them: ceil(N / B) batches of up to B records (10 is the mapping's
//!   default batch size; more than 10 needs a batching window), all batches invoked
//!   concurrently, each through the Lambda's own SQS entry (`batch::classify`, then
//!   `Loader::handle_batch`) with its own holder id. Every batch must answer with no
//!   `batchItemFailures`;
//! - baseline: the naive per-event loader: write file i, handle its event, repeat.
//!
//! COPYs are the committed loads in `sys_load_history` whose manifest lies in the
//! scenario's bucket. Load time is the time spent in `handle` (writes excluded): the
//! whole concurrent burst, the sum of the sequential baseline calls. Each scenario is
//! checked for exactly-once (rows = N × rows per file, all ids distinct, N ledger
//! rows, files reported loaded = N, no lease left) before its figures count; a failed
//! check ends the run with an error instead of a table.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_redshiftdata::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_redshiftdata::config::{ConfigBag, Intercept, RuntimeComponents};

use aws_lambda_events::sqs::SqsEvent;
use clap::Parser;
use partition_loader::io::storage::S3;
use partition_loader::io::warehouse::DataApi;
use partition_loader::run::batch::{self, Invocation};
use partition_loader::run::handler::Loader;
use partition_loader::sql::{LeaseTables, TableName};
use partition_loader::{Config, Outcome};
use serde_json::{json, Value};
use tokio::time::Instant;

// The integration tests' event, Parquet and admin-API helpers.
#[path = "../tests/common/mod.rs"]
mod common;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Bench = Loader<DataApi, S3>;

const PARTITION: &str = "order_date=2024-05-28";

#[derive(Parser)]
struct Args {
    /// Files per burst, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 50])]
    files: Vec<usize>,
    /// Runs per scenario; the table shows medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value_t = 100)]
    rows_per_file: i64,
    /// Added emulator latency per Data API call in the latency variant (0: skip it).
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// Run the naive baseline only for bursts up to this size (it is N sequential
    /// invocations: about 20 minutes at N = 1000 on a shared 2-core machine).
    #[arg(long, default_value_t = usize::MAX)]
    baseline_max: usize,
    /// SQS delivery modes: records per batch, comma-separated (none: `--sqs-batch ''`).
    #[arg(long, value_delimiter = ',', default_values_t = [10, 100])]
    sqs_batch: Vec<usize>,
    /// Also the `serial` mode (see [`Mode::Serial`]).
    #[arg(long)]
    serial: bool,
    /// Without the S3 gate (the Redshift path alone, as before issue 21 item 4).
    #[arg(long)]
    no_gate: bool,
    /// The function's concurrency (0: unlimited, every invocation at once): at most this
    /// many invocations of the burst and SQS modes run at a time. The others wait
    /// unbilled, as Lambda keeps EventBridge's asynchronous events of a function at its
    /// reserved concurrency in its own queue, and an SQS mapping's `MaximumConcurrency`
    /// keeps messages in the queue; only the time after an invocation started counts.
    #[arg(long, default_value_t = 0)]
    concurrency: usize,
}

/// Counts every HTTP request the loader's Data API client sends (submissions, status
/// polls, result pages, retries): what the account's request quotas count.
#[derive(Debug, Clone, Default)]
struct CallCounter(Arc<Mutex<Vec<Instant>>>);

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_redshiftdata::error::BoxError> {
        if let Ok(mut calls) = self.0.lock() {
            calls.push(Instant::now());
        }
        Ok(())
    }
}

impl CallCounter {
    /// All calls, and the most calls that fell into one one-second window.
    fn totals(&self) -> (usize, usize) {
        let calls = self.0.lock().map(|c| c.clone()).unwrap_or_default();
        let mut peak = 0;
        let mut first = 0;
        for (i, t) in calls.iter().enumerate() {
            while *t - calls[first] >= Duration::from_secs(1) {
                first += 1;
            }
            peak = peak.max(i + 1 - first);
        }
        (calls.len(), peak)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// One invocation per event, all at once.
    Burst,
    /// One invocation per event, one after another, while the table's S3 gate is held
    /// (by the bench, standing in for a holder whose load outlasts them): N − 1 queue;
    /// then the bench drops the gate and the last event is the holder that loads and
    /// hands on the others' wake-ups. Each invocation's own cost, without the local
    /// emulators' queueing under N simultaneous callers.
    Serial,
    /// SQS batches of up to this many records, all at once.
    Sqs(usize),
    /// One invocation per event, one after another.
    Baseline,
}

impl Mode {
    fn name(self) -> String {
        match self {
            Mode::Burst => "burst".to_string(),
            Mode::Serial => "serial".to_string(),
            Mode::Sqs(b) => format!("sqs{b}"),
            Mode::Baseline => "base".to_string(),
        }
    }
}

/// What one scenario measured, after its exactly-once check passed.
#[derive(Clone, Copy)]
struct Measured {
    copies: i64,
    /// Invocations whose outcome was `loaded` (the others found nothing pending).
    loading_calls: usize,
    /// Until every invocation returned.
    seconds: f64,
    /// Until the last invocation that loaded returned: all data is in.
    data_seconds: f64,
    /// Sum of the invocations' durations: what Lambda bills.
    invocation_seconds: f64,
    /// Data API requests sent by the loader (all kinds, retries included).
    api_calls: usize,
    /// Most Data API requests within one second.
    api_peak_per_second: usize,
    /// Invocations that returned `queued` (handed their object to the holder).
    queued: usize,
    /// S3 requests of the loader (listings, manifests, footers, the S3 gate's calls).
    s3_calls: usize,
    /// Most S3 requests within one second.
    s3_peak_per_second: usize,
}

/// One line of the table: every run of one (N, latency, mode), and the baseline's
/// runs of the same (N, latency).
struct Line {
    n: usize,
    latency_ms: u64,
    mode: String,
    burst: Vec<Measured>,
    baseline: Vec<Measured>,
}

/// Names shared by all scenarios of one benchmark run.
struct Run {
    suffix: String,
    schema: String,
    loader_schema: String,
    s3: aws_sdk_s3::Client,
    /// Runs the checks, on a workgroup without faults.
    checker: Bench,
    /// `--concurrency`.
    concurrency: usize,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    std::env::var("AWS_ENDPOINT_URL_REDSHIFT_DATA").map_err(|_| {
        "AWS_ENDPOINT_URL_REDSHIFT_DATA is not set: run \
         `scripts/local-stack up && eval \"$(scripts/local-stack env)\"` first"
    })?;
    let mut run = Run::new().await?;
    run.concurrency = args.concurrency;
    let mut latencies = vec![0];
    if args.latency_ms > 0 {
        latencies.push(args.latency_ms);
    }

    let mut lines = Vec::new();
    for &n in &args.files {
        for &latency in &latencies {
            let mut modes = vec![Mode::Burst];
            if args.serial {
                modes.push(Mode::Serial);
            }
            modes.extend(
                args.sqs_batch
                    .iter()
                    .filter(|&&b| b > 0)
                    .map(|&b| Mode::Sqs(b)),
            );
            let mut measured: Vec<Vec<Measured>> = vec![Vec::new(); modes.len()];
            let mut baseline = Vec::new();
            for r in 0..args.runs {
                for mode in modes.iter().copied().chain([Mode::Baseline]) {
                    if mode == Mode::Baseline && n > args.baseline_max {
                        continue;
                    }
                    let m = run
                        .scenario(mode, n, latency, r, args.rows_per_file, !args.no_gate)
                        .await?;
                    let name = mode.name();
                    eprintln!(
                        "N={n:<4} latency={:>3} ms run {r} {name:<8} copies={:<4} \
                         loading calls={:<4} queued={:<4} api calls={:<6} \
                         peak/s={:<5} s3 calls={:<6} s3 peak/s={:<5} all returned {:.2} s, \
                         data in {:.2} s, invocation-seconds {:.2}",
                        latency,
                        m.copies,
                        m.loading_calls,
                        m.queued,
                        m.api_calls,
                        m.api_peak_per_second,
                        m.s3_calls,
                        m.s3_peak_per_second,
                        m.seconds,
                        m.data_seconds,
                        m.invocation_seconds
                    );
                    match modes.iter().position(|&x| x == mode) {
                        Some(k) => measured[k].push(m),
                        None => baseline.push(m),
                    }
                }
            }
            for (mode, burst) in modes.iter().zip(measured) {
                lines.push(Line {
                    n,
                    latency_ms: latency,
                    mode: mode.name(),
                    burst,
                    baseline: baseline.clone(),
                });
            }
        }
    }
    print_table(&lines, args.runs);
    Ok(())
}

impl Run {
    async fn new() -> Result<Run, Error> {
        let suffix = format!("{:08x}", fastrand::u32(..));
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        );
        let schema = format!("bench_{suffix}");
        let loader_schema = format!("bench_pl_{suffix}");
        let bucket = format!("bench-{suffix}-check");
        s3.create_bucket().bucket(&bucket).send().await?;
        let checker = Loader::connect(config(
            &format!("bench-{suffix}-check"),
            &loader_schema,
            &bucket,
            &format!("{schema}.unused"),
        )?)
        .await;
        checker.bootstrap(deadline()).await?;
        checker
            .execute(format!("CREATE SCHEMA {schema}"), vec![], deadline())
            .await?;
        Ok(Run {
            suffix,
            schema,
            loader_schema,
            s3,
            checker,
            concurrency: 0,
        })
    }

    async fn scenario(
        &self,
        mode: Mode,
        n: usize,
        latency_ms: u64,
        run: usize,
        rows_per_file: i64,
        gate: bool,
    ) -> Result<Measured, Error> {
        // The function's concurrency: an invocation is billed from when it gets a slot.
        let slots = Arc::new(tokio::sync::Semaphore::new(match self.concurrency {
            0 => tokio::sync::Semaphore::MAX_PERMITS,
            c => c,
        }));
        let tag = format!("{}{n}l{latency_ms}r{run}", mode.name());
        let bucket = format!("bench-{}-{tag}", self.suffix);
        let workgroup = format!("bench-{}-{tag}", self.suffix);
        let table = format!("{}.orders_{tag}", self.schema);
        self.s3.create_bucket().bucket(&bucket).send().await?;
        // Like Glue's Hive partitions, the files lack order_date: loads go through staging.
        self.checker
            .execute(
                format!("CREATE TABLE {table} (id BIGINT, name VARCHAR(64), order_date DATE)"),
                vec![],
                deadline(),
            )
            .await?;
        if latency_ms > 0 {
            let spec = json!({"workgroup": workgroup, "latency_ms": latency_ms}).to_string();
            let (status, body) = common::admin("POST", "/_admin/faults", &spec).await;
            if !status.starts_with("HTTP/1.1 2") {
                return Err(format!("adding fault {spec}: {status} {body}").into());
            }
        }
        // The table's own lease, ledger and wake-up tables (not counted below).
        Loader::connect(config(&workgroup, &self.loader_schema, &bucket, &table)?)
            .await
            .bootstrap(deadline())
            .await?;
        let counter = CallCounter::default();
        let s3_counter = CallCounter::default();
        let loader = Arc::new(
            counted_loader(
                config(&workgroup, &self.loader_schema, &bucket, &table)?,
                counter.clone(),
                s3_counter.clone(),
            )
            .await
            .with_gate(gate),
        );

        let file = |i: usize| {
            let first = i as i64 * rows_per_file;
            (
                format!("orders/{PARTITION}/part-{i:05}.parquet"),
                common::parquet_bytes(first..first + rows_per_file),
            )
        };
        // (outcome, seconds from the start of the load phase to its return, its duration)
        let mut outcomes = Vec::new();
        match mode {
            Mode::Burst => {
                let mut events = Vec::new();
                for i in 0..n {
                    let (key, body) = file(i);
                    events.push(self.put(&bucket, &key, body).await?);
                }
                let start = Instant::now();
                let tasks: Vec<_> = events
                    .into_iter()
                    .enumerate()
                    .map(|(i, event)| {
                        let loader = loader.clone();
                        let holder = format!("bench-{tag}-{i}");
                        let slots = slots.clone();
                        tokio::spawn(async move {
                            let slot = slots.acquire_owned().await;
                            let began = start.elapsed().as_secs_f64();
                            let outcome = loader.handle(&event, &holder, deadline()).await;
                            drop(slot);
                            let end = start.elapsed().as_secs_f64();
                            (outcome, end, end - began)
                        })
                    })
                    .collect();
                for task in tasks {
                    outcomes.push(task.await?);
                }
            }
            Mode::Serial => {
                let mut events = Vec::new();
                for i in 0..n {
                    let (key, body) = file(i);
                    events.push(self.put(&bucket, &key, body).await?);
                }
                let keys = loader.gate_keys(&TableName::parse(&table)?);
                let stand_in = partition_loader::protocol::gate::GateDoc::new(
                    "bench-stand-in",
                    std::time::SystemTime::now(),
                    Duration::from_secs(3600),
                );
                common::put_object(
                    &self.s3,
                    &bucket,
                    &keys.gate,
                    stand_in.to_json().into_bytes(),
                )
                .await?;
                let mut clock = 0.0;
                for (i, event) in events.iter().enumerate() {
                    if i + 1 == n {
                        // The stand-in holder ends (it lists nothing: the last event's
                        // exit lists every wake-up after it holds the gate).
                        self.s3
                            .delete_object()
                            .bucket(&bucket)
                            .key(&keys.gate)
                            .send()
                            .await?;
                    }
                    let start = Instant::now();
                    let outcome = loader
                        .handle(event, &format!("bench-{tag}-{i}"), deadline())
                        .await;
                    let took = start.elapsed().as_secs_f64();
                    clock += took;
                    outcomes.push((outcome, clock, took));
                }
            }
            Mode::Sqs(size) => {
                let mut events = Vec::new();
                for i in 0..n {
                    let (key, body) = file(i);
                    events.push(self.put(&bucket, &key, body).await?);
                }
                let batches: Vec<SqsEvent> = events
                    .chunks(size)
                    .enumerate()
                    .map(|(j, chunk)| sqs_batch(&tag, j, chunk))
                    .collect::<Result<_, _>>()?;
                let start = Instant::now();
                let tasks: Vec<_> = batches
                    .into_iter()
                    .enumerate()
                    .map(|(j, records)| {
                        let loader = loader.clone();
                        let holder = format!("bench-{tag}-b{j}");
                        let slots = slots.clone();
                        tokio::spawn(async move {
                            let slot = slots.acquire_owned().await;
                            let began = start.elapsed().as_secs_f64();
                            let result = loader.handle_batch(&records, &holder, deadline()).await;
                            drop(slot);
                            let end = start.elapsed().as_secs_f64();
                            (result, end, end - began)
                        })
                    })
                    .collect();
                for task in tasks {
                    let (result, end, billed) = task.await?;
                    if !result.response.batch_item_failures.is_empty() {
                        return Err(format!(
                            "{tag}: batch item failures {:?}: {:?}",
                            result.response.batch_item_failures, result.errors
                        )
                        .into());
                    }
                    // The batch's duration is one invocation's; its first outcome carries
                    // it, the others (more groups in one batch) add nothing to the bill.
                    let mut took = billed;
                    for outcome in result.outcomes {
                        outcomes.push((Ok(outcome), end, took));
                        took = 0.0;
                    }
                }
            }
            Mode::Baseline => {
                // Writes are excluded: the clock only runs inside handle().
                let mut clock = 0.0;
                for i in 0..n {
                    let (key, body) = file(i);
                    let event = self.put(&bucket, &key, body).await?;
                    let start = Instant::now();
                    let outcome = loader
                        .handle(&event, &format!("bench-{tag}-{i}"), deadline())
                        .await;
                    let took = start.elapsed().as_secs_f64();
                    clock += took;
                    outcomes.push((outcome, clock, took));
                }
            }
        }

        let mut files_loaded = 0;
        let mut loading_calls = 0;
        let mut queued = 0;
        let (mut seconds, mut data_seconds, mut invocation_seconds) = (0.0_f64, 0.0_f64, 0.0);
        for (outcome, end, took) in outcomes {
            seconds = seconds.max(end);
            invocation_seconds += took;
            match outcome? {
                Outcome::Loaded { files, .. } => {
                    files_loaded += files;
                    loading_calls += 1;
                    data_seconds = data_seconds.max(end);
                }
                Outcome::UpToDate { .. } => {}
                Outcome::Queued { .. } => queued += 1,
                other => return Err(format!("{tag}: unexpected outcome {other:?}").into()),
            }
        }
        let expected_rows = n as i64 * rows_per_file;
        let checks = [
            ("files reported loaded", files_loaded as i64, n as i64),
            (
                "table rows",
                self.count(&format!("SELECT COUNT(*) FROM {table}")).await?,
                expected_rows,
            ),
            (
                "distinct ids",
                self.count(&format!("SELECT COUNT(DISTINCT id) FROM {table}"))
                    .await?,
                expected_rows,
            ),
            (
                "ledger rows",
                self.count(&format!(
                    "SELECT COUNT(*) FROM {}.{}",
                    self.loader_schema,
                    loader_tables(&table)?.ledger.quoted()
                ))
                .await?,
                n as i64,
            ),
            (
                "leases left",
                self.count(&format!(
                    "SELECT COUNT(*) FROM {}.{} WHERE holder IS NOT NULL",
                    self.loader_schema,
                    loader_tables(&table)?.lease.quoted()
                ))
                .await?,
                0,
            ),
        ];
        for (what, got, want) in checks {
            if got != want {
                return Err(format!("{tag}: {what} = {got}, expected {want}").into());
            }
        }
        let copies = self
            .count(&format!(
                "SELECT COUNT(*) FROM sys_load_history WHERE data_source LIKE 's3://{bucket}/%'"
            ))
            .await?;
        if copies < 1 || copies > n as i64 {
            return Err(format!("{tag}: {copies} COPYs for {n} files").into());
        }
        // The S3 gate (issue 21 item 4) leaves no gate and no S3 wake-up behind.
        let gates = self
            .s3
            .list_objects_v2()
            .bucket(&bucket)
            .prefix("_loader/gates/")
            .send()
            .await?;
        if !gates.contents().is_empty() {
            return Err(format!("{tag}: {} S3 gate objects left", gates.contents().len()).into());
        }
        let (api_calls, api_peak_per_second) = counter.totals();
        let (s3_calls, s3_peak_per_second) = s3_counter.totals();
        Ok(Measured {
            copies,
            loading_calls,
            seconds,
            data_seconds,
            invocation_seconds,
            api_calls,
            api_peak_per_second,
            queued,
            s3_calls,
            s3_peak_per_second,
        })
    }

    /// Writes one object and returns the EventBridge event S3 would send for it.
    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<Value, Error> {
        let (size, etag) = common::put_object(&self.s3, bucket, key, body).await?;
        Ok(common::object_created(bucket, key, size, Some(&etag)))
    }

    async fn count(&self, sql: &str) -> Result<i64, Error> {
        let rows = self
            .checker
            .query(sql.to_string(), vec![], deadline())
            .await?;
        let cell = rows
            .first()
            .and_then(|r| r.first())
            .and_then(|c| c.as_deref())
            .ok_or_else(|| format!("no count from {sql}"))?;
        Ok(cell.parse()?)
    }
}

fn loader_tables(table: &str) -> Result<LeaseTables, Error> {
    Ok(LeaseTables::for_target(&TableName::parse(table)?))
}

/// What the SQS event source mapping hands the function for `events`: the Lambda
/// payload of one batch, parsed by the function's own entry (`batch::classify`).
fn sqs_batch(tag: &str, j: usize, events: &[Value]) -> Result<SqsEvent, Error> {
    let records: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            json!({
                "messageId": format!("{tag}-{j}-{i}"),
                "receiptHandle": format!("rh-{tag}-{j}-{i}"),
                "body": event.to_string(),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:partition-loader-batch",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    match batch::classify(json!({ "Records": records }))? {
        Invocation::SqsBatch(batch) => Ok(batch),
        _ => Err(format!("{tag}: batch {j} was not read as an SQS batch").into()),
    }
}

/// `Loader::connect`, with a Data API client that counts its requests.
async fn counted_loader(config: Config, counter: CallCounter, s3_counter: CallCounter) -> Bench {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .interceptor(s3_counter)
            .build(),
    );
    let rsd = aws_sdk_redshiftdata::Client::from_conf(
        aws_sdk_redshiftdata::config::Builder::from(&sdk)
            .interceptor(counter)
            .build(),
    );
    let warehouse = DataApi::new(rsd, config.redshift.clone(), config.database.clone());
    Loader::new(config, warehouse, S3::new(s3))
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(600)
}

/// The loader's configuration for one scenario: `orders/` in `bucket` → `table`.
fn config(
    workgroup: &str,
    loader_schema: &str,
    bucket: &str,
    table: &str,
) -> Result<Config, Error> {
    let routes = format!(
        "[[routes]]\nbucket = \"{bucket}\"\nprefix = \"orders/\"\ntable = \"{table}\"\n\
         format = \"parquet\"\npartition_columns = [{{ name = \"order_date\", type = \"date\" }}]\n"
    );
    let manifest = format!("s3://{bucket}/_loader/");
    let env = |name: &str| std::env::var(name).ok();
    Ok(Config::from_lookup(|name| match name {
        "REDSHIFT_WORKGROUP" => Some(workgroup.to_string()),
        "LOADER_SCHEMA" => Some(loader_schema.to_string()),
        "MANIFEST_PREFIX" => Some(manifest.clone()),
        "LOADER_CONFIG" => Some(routes.clone()),
        // N invocations queue for one lease; none may give up while the others load.
        "LOCK_WAIT_SECONDS" => Some("500".to_string()),
        "REDSHIFT_DATABASE" | "COPY_IAM_ROLE" => env(name),
        _ => None,
    })?)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn print_table(lines: &[Line], runs: usize) {
    println!("\nmedians of {runs} run(s); seconds spent inside handle(); ratio = burst / baseline");
    println!(
        "{:>5} {:>7} {:>8} | {:^22} | {:^22} | {:^22} | {:^22} | {:^22} | {:^22}",
        "N",
        "latency",
        "mode",
        "COPYs",
        "data loaded after s",
        "all returned after s",
        "invocation-seconds",
        "Data API calls",
        "peak calls/s"
    );
    let group = format!("{:>7} {:>7} {:>6}", "mode", "base", "ratio");
    println!(
        "{:>5} {:>7} {:>8} | {group} | {group} | {group} | {group} | {group} | {group}",
        "", "ms", ""
    );
    for Line {
        n,
        latency_ms,
        mode,
        burst,
        baseline,
    } in lines
    {
        let med = |ms: &[Measured], f: fn(&Measured) -> f64| median(ms.iter().map(f).collect());
        let metrics: [fn(&Measured) -> f64; 6] = [
            |m| m.copies as f64,
            |m| m.data_seconds,
            |m| m.seconds,
            |m| m.invocation_seconds,
            |m| m.api_calls as f64,
            |m| m.api_peak_per_second as f64,
        ];
        let mut line = format!("{n:>5} {latency_ms:>7} {mode:>8}");
        for (k, metric) in metrics.into_iter().enumerate() {
            let (b, base) = (med(burst, metric), med(baseline, metric));
            let precision = if k == 0 || k >= 4 { 0 } else { 2 };
            line.push_str(&format!(
                " | {b:>7.precision$} {base:>7.precision$} {:>6.3}",
                b / base
            ));
        }
        println!("{line}");
    }
}
