//! Soak: many files, concurrent invocations, hostile delivery and random faults, then
//! exactly-once checked from the tables, the ledger and the emulator's load history.
//!
//! Written against the public `Loader` API so it runs on whichever lease protocol is in
//! place; every non-error outcome (`loaded`, `up_to_date`, a hand-off such as `queued`)
//! counts as a successful invocation. Size and mix from the environment:
//! `SOAK_FILES` (default 150; `scripts/soak` runs 2,400), `SOAK_CONCURRENCY` (16),
//! `SOAK_LEASE_TTL` (seconds, default 30; invocations get 5 s less),
//! `SOAK_SEED`, `SOAK_ISOLATION` (a label for the report: the emulator's isolation is
//! its own start-up flag), `SOAK_REPORT` (a file to append the JSON report to).
//!
//! Faults: redshift-data-local's fault sets (failed COPY, throttling, serialization
//! conflicts at COMMIT, 200 ms latency per call) are redrawn every 1-3 s by a chaos task;
//! S3 listing errors come from [`FlakyStorage`], a `Storage` wrapper around the real S3
//! adapter (moto cannot inject faults); invocations are killed by dropping the handler's
//! future after a random time, which lands before the acquire commits, after it, during
//! the COPY and after the load batch was submitted. Every seventh file is written with
//! its columns in another order (a reordered writer), which loads by name. File
//! [`CORRUPT`] (in the append table `staged`, beside good files of its partition) has a
//! sound footer and garbage pages: Redshift refuses it, the loader quarantines it (issue
//! 20 item 2), and the checker counts it as quarantined, not missing.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use partition_loader::io::storage::{Storage, S3};
use partition_loader::io::warehouse::DataApi;
use partition_loader::protocol::plan::ListedObject;
use partition_loader::run::handler::Loader;
use partition_loader::LoaderError;
use serde_json::{json, Value};
use tokio::time::Instant;

const TABLES: [(&str, &str); 3] = [
    ("plain", ""),
    ("staged", ""),
    ("replaced", "mode = \"replace\""),
];
const DAYS: [&str; 4] = ["2024-05-01", "2024-05-02", "2024-05-03", "2024-05-04"];
/// The file whose pages are garbage (table `staged`, append mode): quarantined, never
/// loaded; its partition's other files load.
const CORRUPT: usize = 1;
/// Lambda retries a failed asynchronous invocation twice.
const ATTEMPTS: u32 = 3;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The real S3 adapter with listings that fail at random (a retryable S3 error, as
/// S3's `SlowDown` or a dropped connection would give).
struct FlakyStorage {
    inner: S3,
    /// Set by the chaos task.
    fail_fraction: Arc<Mutex<f64>>,
    failures: Arc<AtomicU64>,
}

impl Storage for FlakyStorage {
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>, LoaderError> {
        let fraction = *self.fail_fraction.lock().unwrap_or_else(|e| e.into_inner());
        if fastrand::f64() < fraction {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(LoaderError::Storage {
                message: format!("listing s3://{bucket}/{prefix}: SlowDown: injected by the soak"),
                retryable: true,
            });
        }
        self.inner.list(bucket, prefix).await
    }

    async fn put(&self, bucket: &str, key: &str, body: String) -> Result<(), LoaderError> {
        self.inner.put(bucket, key, body).await
    }

    /// Parquet footers, never failed here (the listing's faults stand for S3's).
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

type SoakLoader = Loader<DataApi, FlakyStorage>;

struct File {
    table: usize,
    key: String,
    ids: std::ops::Range<i64>,
}

/// File `j`: table `j % 3`, day `(j / 3) % 4`, ids `j*1000 ..` (1-5 rows), so a row's
/// file is `id / 1000`.
fn files(n: usize) -> Vec<File> {
    (0..n)
        .map(|j| {
            let table = j % 3;
            let day = DAYS[(j / 3) % 4];
            let start = j as i64 * 1000;
            File {
                table,
                key: format!("{}/day={day}/part-{j:05}.parquet", TABLES[table].0),
                ids: start..start + 1 + (j % 5) as i64,
            }
        })
        .collect()
}

#[derive(Clone)]
struct Delivery {
    event: Value,
    attempt: u32,
}

enum Ended {
    Done(Result<partition_loader::Outcome, LoaderError>),
    Killed,
}

#[derive(Default)]
struct Tally {
    events: u64,
    duplicated: u64,
    dropped: u64,
    invocations: u64,
    killed: u64,
    gave_up: u64,
    results: BTreeMap<String, u64>,
}

async fn invoke(
    loader: Arc<SoakLoader>,
    d: Delivery,
    kill_fraction: f64,
    timeout: Duration,
) -> (Delivery, Ended) {
    let holder = format!("soak-{}", uuid::Uuid::new_v4());
    let work = loader.handle(&d.event, &holder, Instant::now() + timeout);
    let ended = if fastrand::f64() < kill_fraction {
        let after = Duration::from_millis(fastrand::u64(0..1500));
        match tokio::time::timeout(after, work).await {
            Ok(r) => Ended::Done(r),
            Err(_) => Ended::Killed,
        }
    } else {
        Ended::Done(work.await)
    };
    (d, ended)
}

/// Redraws the fault sets of the loader's workgroup every 1-3 s until stopped.
async fn chaos(
    stack_workgroup: String,
    tables: Vec<String>,
    storage: Arc<Mutex<f64>>,
    stop: Arc<tokio::sync::Notify>,
) {
    loop {
        let pause = Duration::from_millis(fastrand::u64(1000..3000));
        tokio::select! {
            _ = stop.notified() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        admin(
            "DELETE",
            &format!("/_admin/faults?workgroup={stack_workgroup}"),
            "",
        )
        .await;
        let mut set = json!({"workgroup": stack_workgroup});
        if fastrand::f64() < 0.25 {
            set["latency_ms"] = json!(200);
        }
        if fastrand::f64() < 0.4 {
            set["throttle_fraction"] = json!(0.05);
        }
        if fastrand::f64() < 0.4 {
            set["conflict_fraction"] = json!(0.1);
        }
        if fastrand::f64() < 0.4 {
            let table = &tables[fastrand::usize(..tables.len())];
            set["fail_copies"] = json!([{"table": table, "count": 1,
                "message": "ERROR: Load into table failed (injected by the soak). Check 'sys_load_error_detail'."}]);
        }
        let (status, body) = admin("POST", "/_admin/faults", &set.to_string()).await;
        assert!(status.starts_with("HTTP/1.1 2"), "{status} {body}");
        *storage.lock().unwrap_or_else(|e| e.into_inner()) =
            if fastrand::f64() < 0.3 { 0.25 } else { 0.0 };
    }
}

fn label(result: &Result<partition_loader::Outcome, LoaderError>) -> String {
    match result {
        Ok(o) => o.to_json()["outcome"].as_str().unwrap_or("?").to_string(),
        Err(e) => format!("error.{}", e.name()),
    }
}

// `cargo test` runs it at a reduced size (150 files); `scripts/soak` at full size.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_exactly_once_under_faults() {
    let n = env_num("SOAK_FILES", 150) as usize;
    let concurrency = env_num("SOAK_CONCURRENCY", 16) as usize;
    let seed = env_num("SOAK_SEED", fastrand::u64(..));
    fastrand::seed(seed);
    let isolation = std::env::var("SOAK_ISOLATION").unwrap_or_else(|_| "serializable".into());
    let started = std::time::Instant::now();

    let stack = Stack::new().await;
    let mut routes = String::new();
    let mut tables = Vec::new();
    for (name, extra) in TABLES {
        routes.push_str(&format!(
            "[[routes]]\nbucket = \"{}\"\nprefix = \"{name}/\"\ntable = \"{}\"\nformat = \"parquet\"\n\
             partition_columns = [{{ name = \"day\", type = \"date\" }}]\n{extra}\n",
            stack.bucket,
            stack.table(name)
        ));
        // `plain` has no partition column (a direct COPY); the others fill `day`
        // through staging.
        let columns = if name == "plain" {
            "id BIGINT, name VARCHAR(64)"
        } else {
            "id BIGINT, name VARCHAR(64), day DATE"
        };
        tables.push(stack.create_table(name, columns).await);
    }
    let mut config = stack.config(&routes);
    // Killed invocations leave their lease to its TTL: a short one keeps the run short.
    // (Config refuses TTLs under 900 s from the environment; the fences keep a load
    // that outlives its lease from committing, which this run exercises.)
    // The TTL must exceed the longest load: a load that outlives it is fenced (rolled
    // back), and a backlog that always takes longer than the TTL never commits.
    let ttl = env_num("SOAK_LEASE_TTL", 30);
    config.lease_ttl = Duration::from_secs(ttl);
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let fail_fraction = Arc::new(Mutex::new(0.0));
    let warehouse = DataApi::new(
        aws_sdk_redshiftdata::Client::new(&sdk),
        config.redshift.clone(),
        config.database.clone(),
    );
    let listing_errors = Arc::new(AtomicU64::new(0));
    let storage = FlakyStorage {
        inner: S3::new(s3.clone()),
        fail_fraction: fail_fraction.clone(),
        failures: listing_errors.clone(),
    };
    // The operator bootstraps and grants; the loader runs as a user that owns nothing.
    stack.bootstrap_as_admin(&routes).await;
    let loader = Arc::new(Loader::new(config, warehouse, storage));

    let files = files(n);
    let mut order: Vec<usize> = (0..n).collect();
    fastrand::shuffle(&mut order);
    let queue: Arc<Mutex<Vec<Delivery>>> = Arc::new(Mutex::new(Vec::new()));
    let tally = Arc::new(Mutex::new(Tally::default()));

    // The writer: files land one after the other while invocations run; each one's
    // event is dropped (5%), sent once, or sent twice (10%); the dispatcher takes
    // events in random order.
    let writer = {
        let (queue, tally, bucket, s3) = (
            queue.clone(),
            tally.clone(),
            stack.bucket.clone(),
            s3.clone(),
        );
        let keys: Vec<(usize, String, std::ops::Range<i64>)> = order
            .iter()
            .map(|&j| (j, files[j].key.clone(), files[j].ids.clone()))
            .collect();
        tokio::spawn(async move {
            for (j, key, ids) in keys {
                // Every seventh file comes from a writer that reordered its columns
                // (issue 20): loaded by name, its rows count like any other's.
                let body = if j == CORRUPT {
                    let mut bytes = parquet_bytes(ids);
                    bytes[4..24].fill(0xFF);
                    bytes
                } else if j % 7 == 3 {
                    parquet_bytes_name_first(ids)
                } else {
                    parquet_bytes(ids)
                };
                let (size, etag) = put_object(&s3, &bucket, &key, body)
                    .await
                    .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
                let event = object_created(&bucket, &key, size, Some(&etag));
                let copies = match fastrand::f64() {
                    x if x < 0.05 => 0,
                    x if x < 0.15 => 2,
                    _ => 1,
                };
                let mut t = tally.lock().unwrap();
                t.dropped += (copies == 0) as u64;
                t.duplicated += (copies == 2) as u64;
                t.events += copies;
                drop(t);
                let mut q = queue.lock().unwrap();
                for _ in 0..copies {
                    q.push(Delivery {
                        event: event.clone(),
                        attempt: 1,
                    });
                }
            }
        })
    };

    let stop_chaos = Arc::new(tokio::sync::Notify::new());
    let chaos_task = tokio::spawn(chaos(
        stack.workgroup.clone(),
        tables.clone(),
        fail_fraction.clone(),
        stop_chaos.clone(),
    ));
    let mut running = tokio::task::JoinSet::new();
    let kill_fraction = 0.08;
    // As a Lambda timeout below the lease TTL.
    let invocation_timeout = Duration::from_secs(ttl.saturating_sub(5).max(5));
    loop {
        let next = {
            let mut q = queue.lock().unwrap();
            (!q.is_empty()).then(|| {
                let i = fastrand::usize(..q.len());
                q.swap_remove(i)
            })
        };
        match next {
            Some(d) if running.len() < concurrency => {
                running.spawn(invoke(loader.clone(), d, kill_fraction, invocation_timeout));
                continue;
            }
            Some(d) => queue.lock().unwrap().push(d),
            None if running.is_empty() && writer.is_finished() => break,
            None if running.is_empty() => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            None => {}
        }
        let Some(done) = running.join_next().await else {
            continue;
        };
        let (d, ended) = done.expect("invocation task");
        let mut t = tally.lock().unwrap();
        t.invocations += 1;
        let failed = match &ended {
            Ended::Killed => {
                t.killed += 1;
                true
            }
            Ended::Done(r) => {
                *t.results.entry(label(r)).or_default() += 1;
                r.is_err()
            }
        };
        if failed {
            if d.attempt < ATTEMPTS {
                queue.lock().unwrap().push(Delivery {
                    attempt: d.attempt + 1,
                    ..d
                });
            } else {
                t.gave_up += 1;
            }
        }
    }
    writer.await.expect("writer");
    stop_chaos.notify_one();
    chaos_task.await.expect("chaos");
    admin(
        "DELETE",
        &format!("/_admin/faults?workgroup={}", stack.workgroup),
        "",
    )
    .await;
    *fail_fraction.lock().unwrap() = 0.0;
    let run_secs = started.elapsed().as_secs_f64();

    // A killed holder keeps its lease (and the wake-ups queued behind it) until the
    // lease's TTL: wait that out, then run the sweep the schedule would run, which
    // drains expired leases' wake-ups. Without this wait the backfill below would be
    // answered `queued` by a dead holder, as a real backfill would be.
    tokio::time::sleep(Duration::from_secs(ttl + 1)).await;
    let sweep = loader
        .sweep(
            "soak-sweep",
            0,
            tokio::time::Instant::now() + Duration::from_secs(120),
        )
        .await;
    let mut swept = BTreeMap::<String, u64>::new();
    for r in &sweep {
        *swept.entry(label(r)).or_default() += 1;
    }
    // The backfill at the end loads what dropped events and exhausted retries left.
    let mut backfill = BTreeMap::<String, u64>::new();
    for (name, _) in TABLES {
        let results = loader
            .backfill(
                &stack.bucket,
                &format!("{name}/"),
                "soak-backfill",
                Duration::from_secs(60),
            )
            .await
            .expect("backfill lists");
        for r in &results {
            assert!(r.is_ok(), "backfill of {name}: {r:?}");
            *backfill.entry(label(r)).or_default() += 1;
        }
    }

    // Exactly once: rows per file, ledger rows per file.
    let mut duplicates = 0;
    let mut missing = 0;
    // The quarantine tables: exactly the corrupt file, with no rows loaded.
    let mut quarantine: Vec<String> = Vec::new();
    for table in &tables {
        let t = partition_loader::sql::LeaseTables::for_target(
            &partition_loader::sql::TableName::parse(table).expect("schema.table"),
        );
        for r in stack
            .select(&format!(
                "SELECT DISTINCT s3_url FROM {}.{}",
                stack.loader_schema,
                t.quarantine.quoted()
            ))
            .await
        {
            quarantine.push(r[0].clone().unwrap_or_default());
        }
    }
    let corrupt_url =
        (n > CORRUPT).then(|| format!("s3://{}/{}", stack.bucket, files[CORRUPT].key));
    let mut quarantined = 0;
    let mut strays = 0;
    for (t, table) in tables.iter().enumerate() {
        let counts: HashMap<i64, i64> = stack
            .select(&format!(
                "SELECT id / 1000, COUNT(*) FROM {table} GROUP BY 1"
            ))
            .await
            .into_iter()
            .map(|r| {
                let n = |i: usize| {
                    r[i].as_deref()
                        .and_then(|v| v.parse().ok())
                        .expect("a number")
                };
                (n(0), n(1))
            })
            .collect();
        for (j, f) in files.iter().enumerate().filter(|(_, f)| f.table == t) {
            let want = f.ids.end - f.ids.start;
            match counts.get(&(j as i64)).copied().unwrap_or(0) {
                0 if j == CORRUPT
                    && corrupt_url.as_ref().is_some_and(|u| quarantine.contains(u)) =>
                {
                    quarantined += 1
                }
                got if got == want && j != CORRUPT => {}
                0 => missing += 1,
                got => {
                    eprintln!("{}: {got} rows, expected {want}", f.key);
                    duplicates += 1
                }
            }
        }
        strays += counts
            .keys()
            .filter(|&&j| j as usize >= n || files[j as usize].table != t)
            .count();
    }
    // Each table has its ledger and lease table of its own.
    let mut ledger: HashMap<String, i64> = HashMap::new();
    let mut leases = 0;
    let mut wakeups = 0;
    for table in &tables {
        let rows = stack
            .select(&format!(
                "SELECT s3_url, COUNT(*) FROM {} GROUP BY 1",
                stack.loader_table(table, "ledger")
            ))
            .await;
        for r in rows {
            let count: i64 = r[1].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
            *ledger.entry(r[0].clone().unwrap_or_default()).or_default() += count;
        }
        leases += stack.lease_rows(table).await;
        wakeups += stack.wakeup_rows(table).await;
    }
    let ledger_twice = ledger.values().filter(|&&c| c != 1).count();
    let ledger_missing = files
        .iter()
        .enumerate()
        .filter(|(j, f)| {
            *j != CORRUPT && !ledger.contains_key(&format!("s3://{}/{}", stack.bucket, f.key))
        })
        .count();
    let corrupt_in_ledger = corrupt_url.as_ref().is_some_and(|u| ledger.contains_key(u));

    // COPYs from the load history: the manifest URL names the target table.
    let history = stack
        .select(&format!(
            "SELECT data_source, start_time, end_time FROM public.sys_load_history \
             WHERE data_source LIKE 's3://{}/_loader/%' ORDER BY start_time",
            stack.bucket
        ))
        .await;
    let parse_ts = |v: &Option<String>| {
        chrono::NaiveDateTime::parse_from_str(
            v.as_deref().unwrap_or_default(),
            "%Y-%m-%d %H:%M:%S%.f",
        )
        .expect("a timestamp")
    };
    let mut copies: Vec<(String, chrono::NaiveDateTime, chrono::NaiveDateTime)> = history
        .iter()
        .map(|r| {
            let source = r[0].clone().unwrap_or_default();
            let table = source
                .split("/_loader/")
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .unwrap_or_default()
                .to_string();
            (table, parse_ts(&r[1]), parse_ts(&r[2]))
        })
        .collect();
    copies.sort_by_key(|c| c.1);
    let mut same_table_overlaps = 0;
    let mut cross_table_overlaps = 0;
    for (i, a) in copies.iter().enumerate() {
        for b in copies[i + 1..].iter().take_while(|b| b.1 < a.2) {
            if a.0 == b.0 {
                eprintln!("overlapping COPYs into {}: {a:?} and {b:?}", a.0);
                same_table_overlaps += 1;
            } else {
                cross_table_overlaps += 1;
            }
        }
    }

    let (_, injected) = admin("GET", "/_admin/faults/injected", "").await;
    let injected: Value = serde_json::from_str(&injected).unwrap_or(Value::Null);
    let t = tally.lock().unwrap();
    let report = json!({
        "isolation": isolation,
        "seed": seed,
        "files": n,
        "tables": TABLES.len(),
        "partitions_per_table": DAYS.len(),
        "concurrency": concurrency,
        "events_sent": t.events,
        "events_duplicated": t.duplicated,
        "events_dropped": t.dropped,
        "invocations": t.invocations,
        "invocations_killed": t.killed,
        "events_given_up_after_retries": t.gave_up,
        "results": t.results,
        "sweep": swept,
        "backfill": backfill,
        "faults_injected": {
            "emulator": injected[stack.workgroup.as_str()].clone(),
            "s3_listing_errors": listing_errors.load(Ordering::Relaxed),
            "killed_invocations": t.killed,
        },
        "copies": copies.len(),
        "copy_overlaps_same_table": same_table_overlaps,
        "copy_overlaps_across_tables": cross_table_overlaps,
        "duplicates": duplicates,
        "missing": missing,
        "quarantined": quarantined,
        "quarantine_rows": quarantine,
        "corrupt_in_ledger": corrupt_in_ledger,
        "stray_rows_files": strays,
        "ledger_not_once": ledger_twice,
        "ledger_missing": ledger_missing,
        "leases_left": leases,
        "wakeups_left": wakeups,
        "run_seconds": (run_secs * 10.0).round() / 10.0,
    });
    println!("SOAK REPORT {report}");
    if let Ok(path) = std::env::var("SOAK_REPORT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("report file");
        writeln!(f, "{report}").expect("write report");
    }
    assert_eq!(duplicates, 0, "{report}");
    assert_eq!(missing, 0, "{report}");
    // The corrupt file is quarantined (not missing), and nothing else is.
    assert_eq!(quarantined, usize::from(n > CORRUPT), "{report}");
    assert_eq!(quarantine.len(), usize::from(n > CORRUPT), "{report}");
    assert!(!corrupt_in_ledger, "{report}");
    assert_eq!(strays, 0, "{report}");
    assert_eq!(ledger_twice, 0, "{report}");
    assert_eq!(ledger_missing, 0, "{report}");
    assert_eq!(ledger.len(), n - usize::from(n > CORRUPT), "{report}");
    assert_eq!(leases, 0, "{report}");
    assert_eq!(wakeups, 0, "{report}");
    assert_eq!(same_table_overlaps, 0, "{report}");
    assert!(!copies.is_empty(), "{report}");
    // COPYs into different tables overlapping is reported, not asserted: a COPY is
    // short next to the rest of a load (a 600-file run had 23 COPYs and none
    // overlapped; 150-file runs had 1 and 4), so its absence proves no serialisation.
    // Same-table overlap above is the safety property.
}
