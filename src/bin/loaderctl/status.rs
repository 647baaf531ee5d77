//! `loaderctl status [TABLE]`: is every table fresh, is anything stuck, what failed.
//! Per table: the last load (time, files, bytes, rows from Redshift's load history),
//! the lag of its newest object (S3 LastModified → ledger commit), the lease (holder,
//! age, expiry), files loaded in the last hour and day, and the newest load failures
//! Redshift recorded in `SYS_LOAD_ERROR_DETAIL` (file and reason).

use std::collections::BTreeSet;

use chrono::NaiveDateTime;
use partition_loader::io::storage::Storage;
use partition_loader::sql::{self, TableName};
use partition_loader::{
    lake::file_sizes, lake::manifest, lake::markers, protocol::plan, LoaderError,
};
use serde::Serialize;
use tokio::time::Instant;

use crate::report::{self, number, text, timestamp};
use crate::Ctl;

#[derive(clap::Args)]
pub struct Args {
    /// Only this table (schema.table); default: every table of the routes, the ledger
    /// and the lease table.
    pub table: Option<String>,
    /// One JSON object per table and line, instead of a text table.
    #[arg(long)]
    pub json: bool,
    /// How many recent load failures to show per table.
    #[arg(long, default_value_t = 5)]
    pub failures: u32,
}

#[derive(Debug, Serialize)]
struct TableStatus {
    table: String,
    last_load: Option<LastLoad>,
    /// Seconds from the S3 LastModified of the last load's newest object to its commit.
    newest_object_lag_seconds: Option<i64>,
    lease: Option<Lease>,
    /// Objects queued for the lease's holder (hand-off wake-ups) not drained yet.
    pending_wakeups: i64,
    /// Wake-ups waiting in S3 behind the table's gate (issue 21 item 4), not yet handed
    /// to Redshift: one LIST of the table's gate folder (`None`: not listable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_s3_wakeups: Option<usize>,
    files_last_hour: i64,
    files_last_day: i64,
    files_total: i64,
    recent_failures: Vec<Failure>,
    /// Files and bytes per COPY over the newest loads, with advice when they fall
    /// outside AWS's guidance for COPY (`partition_loader::lake::file_sizes`).
    file_sizes: Option<FileSizes>,
    /// Partitions of routes with a `ready_marker` whose files wait for it (within the
    /// look-back window), the longest wait first.
    waiting_for_marker: Vec<MarkerWait>,
    /// Files Redshift refused, kept out of loads (`loaderctl quarantine`): any makes the
    /// status fail.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    quarantined: Vec<crate::quarantine::Quarantined>,
}

#[derive(Debug, Serialize)]
struct MarkerWait {
    /// `s3://bucket/prefix/d=…/`.
    partition: String,
    marker: String,
    files: usize,
    waiting_seconds: u64,
}

#[derive(Debug, Serialize)]
struct FileSizes {
    loads: i64,
    files_per_copy: f64,
    mean_file_bytes: i64,
    advice: Option<String>,
}

#[derive(Debug, Serialize)]
struct LastLoad {
    load_id: String,
    loaded_at: String,
    /// Seconds since the commit, by the warehouse's clock.
    age_seconds: Option<i64>,
    files: i64,
    bytes: i64,
    /// From `SYS_LOAD_HISTORY`; `None` when Redshift has no record of the COPY (any more).
    rows: Option<i64>,
    holder: String,
}

#[derive(Debug, Serialize)]
struct Lease {
    holder: String,
    acquired_at: String,
    expires_at: String,
    age_seconds: Option<i64>,
    /// `live`, or `expired` (the next acquire deletes it).
    state: &'static str,
}

#[derive(Debug, Serialize)]
struct Failure {
    at: String,
    file: String,
    reason: String,
    query_id: Option<i64>,
}

/// Prints the status; `Ok(true)` unless a table has a failure newer than its last
/// load, so scripts can alert on the exit code.
pub async fn run(loader: &Ctl, args: Args, deadline: Instant) -> Result<bool, LoaderError> {
    let config = loader.config();
    let schema = &config.loader_schema;
    let one = match &args.table {
        Some(t) => Some(TableName::parse(t).map_err(LoaderError::Config)?),
        None => None,
    };
    // Each table has its own ledger and lease table: the configured routes' tables.
    let mut names: Vec<TableName> = Vec::new();
    match &one {
        Some(t) => names.push(t.clone()),
        None => {
            for r in &config.routes {
                if !names.contains(&r.table) {
                    names.push(r.table.clone());
                }
            }
        }
    }
    let (ledger_sql, lease_sql) = (
        sql::status_ledger(schema, &names),
        sql::leases(schema, &names),
    );
    let ledger = loader
        .query(ledger_sql, vec![], deadline)
        .await
        .map_err(|e| report::hint_bootstrap(schema.as_str(), e))?;
    let leases = loader.query_utc(lease_sql, deadline).await?;
    let wakeups = loader
        .query(sql::pending_wakeups(schema, &names), vec![], deadline)
        .await?;

    let quarantined = crate::quarantine::read(loader, &names, deadline).await?;

    let mut tables: BTreeSet<String> = BTreeSet::new();
    match &one {
        Some(t) => {
            tables.insert(t.to_string());
        }
        None => {
            tables.extend(config.routes.iter().map(|r| r.table.to_string()));
            tables.extend(ledger.iter().filter_map(|r| text(r, 0).map(str::to_string)));
            tables.extend(leases.iter().filter_map(|r| text(r, 0).map(str::to_string)));
        }
    }
    let s3 = s3_client().await;
    let mut all_ok = true;
    let mut statuses = Vec::new();
    for table in tables {
        let mut status = TableStatus {
            table: table.clone(),
            last_load: None,
            newest_object_lag_seconds: None,
            lease: None,
            pending_wakeups: wakeups
                .iter()
                .find(|r| text(r, 0) == Some(table.as_str()))
                .and_then(|r| number(r, 1))
                .unwrap_or(0),
            pending_s3_wakeups: None,
            files_last_hour: 0,
            files_last_day: 0,
            files_total: 0,
            recent_failures: Vec::new(),
            file_sizes: None,
            waiting_for_marker: Vec::new(),
            quarantined: quarantined
                .iter()
                .filter(|q| q.table == table)
                .cloned()
                .collect(),
        };
        if !status.quarantined.is_empty() {
            all_ok = false;
        }
        let Ok(name) = TableName::parse(&table) else {
            statuses.push(status);
            continue;
        };
        let gate = loader.gate_keys(&name);
        status.pending_s3_wakeups = loader
            .storage()
            .list(&gate.bucket, &gate.wakeups)
            .await
            .ok()
            .map(|listed| listed.len());
        let manifests = manifest::table_manifest_url(&config.manifest, &name);
        if let Some(row) = ledger.iter().find(|r| text(r, 0) == Some(table.as_str())) {
            status.files_total = number(row, 1).unwrap_or(0);
            status.files_last_hour = number(row, 2).unwrap_or(0);
            status.files_last_day = number(row, 3).unwrap_or(0);
            let loaded_at = timestamp(text(row, 5));
            let load_id = text(row, 4).unwrap_or_default().to_string();
            let rows = if load_id.is_empty() {
                None
            } else {
                let copies = loader
                    .query(
                        sql::load_copies(),
                        vec![
                            ("manifests", manifests.clone()),
                            ("load_id", load_id.clone()),
                        ],
                        deadline,
                    )
                    .await?;
                report::copies_by_load(&copies)
                    .get(&load_id)
                    .map(|c| c.rows)
            };
            if let (Some(url), Some(at)) = (text(row, 9), loaded_at) {
                status.newest_object_lag_seconds = object_lag(&s3, url, at).await;
            }
            let now = timestamp(text(row, 10));
            status.last_load = Some(LastLoad {
                load_id,
                loaded_at: loaded_at.map(report::show_time).unwrap_or_default(),
                age_seconds: now.zip(loaded_at).map(|(n, a)| (n - a).num_seconds()),
                files: number(row, 6).unwrap_or(0),
                bytes: number(row, 7).unwrap_or(0),
                rows,
                holder: text(row, 8).unwrap_or_default().to_string(),
            });
        }
        if let Some(row) = leases.iter().find(|r| text(r, 0) == Some(table.as_str())) {
            let (acquired, expires, now) = (
                timestamp(text(row, 2)),
                timestamp(text(row, 3)),
                timestamp(text(row, 4)),
            );
            status.lease = Some(Lease {
                holder: text(row, 1).unwrap_or_default().to_string(),
                acquired_at: acquired.map(report::show_time).unwrap_or_default(),
                expires_at: expires.map(report::show_time).unwrap_or_default(),
                age_seconds: now.zip(acquired).map(|(n, a)| (n - a).num_seconds()),
                state: if expires > now { "live" } else { "expired" },
            });
        }
        if let Some(route) = config.routes.iter().find(|r| r.table == name) {
            let sizes = loader
                .query(
                    file_sizes::recent_sizes_sql(schema, &name),
                    vec![],
                    deadline,
                )
                .await?;
            if let Some(r) = sizes.first() {
                let (loads, files) = (number(r, 0).unwrap_or(0), number(r, 1).unwrap_or(0));
                let (bytes, compressed) = (number(r, 2).unwrap_or(0), number(r, 3).unwrap_or(0));
                if loads > 0 && files > 0 {
                    status.file_sizes = Some(FileSizes {
                        loads,
                        files_per_copy: files as f64 / loads as f64,
                        mean_file_bytes: bytes / files,
                        advice: file_sizes::advice(route.format, loads, files, bytes, compressed),
                    });
                }
            }
        }
        status.waiting_for_marker = marker_waits(loader, &name).await?;
        // Failures under the table's data prefixes (Redshift names the data file) and
        // its manifest prefix (a failure before any file, or the emulator).
        let mut prefixes = vec![manifests];
        for route in config.routes.iter().filter(|r| r.table == name) {
            if let Some(bucket) = &route.bucket {
                prefixes.push(plan::s3_url(bucket, &route.prefix));
            }
        }
        prefixes.truncate(sql::URL_PREFIX_PARAMS.len());
        let params = sql::URL_PREFIX_PARAMS
            .iter()
            .copied()
            .zip(prefixes.iter().cloned())
            .collect();
        let failures = loader
            .query(
                sql::load_errors(prefixes.len(), args.failures),
                params,
                deadline,
            )
            .await?;
        status.recent_failures = failures
            .iter()
            .map(|r| Failure {
                at: timestamp(text(r, 0))
                    .map(report::show_time)
                    .unwrap_or_default(),
                file: text(r, 1).unwrap_or_default().to_string(),
                reason: text(r, 2).unwrap_or_default().to_string(),
                query_id: number(r, 3),
            })
            .collect();
        let last_load_at = status
            .last_load
            .as_ref()
            .map(|l| l.loaded_at.clone())
            .unwrap_or_default();
        // Times have whole seconds: a failure in the second of the last load counts
        // as not yet followed by a load (the stricter reading).
        if status.recent_failures.iter().any(|f| f.at >= last_load_at) {
            all_ok = false;
        }
        statuses.push(status);
    }

    if args.json {
        for s in &statuses {
            println!("{}", serde_json::to_string(s).unwrap_or_default());
        }
    } else {
        print!("{}", render(&statuses));
    }
    Ok(all_ok)
}

/// The partitions of the table's routes with a ready marker that wait for it: one
/// listing of each route prefix (in the route's bucket or `SWEEP_BUCKET`), files within
/// the sweep's look-back window.
async fn marker_waits(loader: &Ctl, table: &TableName) -> Result<Vec<MarkerWait>, LoaderError> {
    let config = loader.config();
    let now = std::time::SystemTime::now();
    let window = std::time::Duration::from_secs(u64::from(config.sweep_look_back_days) * 86_400);
    let since = now.checked_sub(window).unwrap_or(std::time::UNIX_EPOCH);
    let mut out = Vec::new();
    for route in config.routes.iter().filter(|r| r.table == *table) {
        let (Some(marker), Some(bucket)) = (&route.ready_marker, config.sweep_bucket_of(route))
        else {
            continue;
        };
        let listing = loader.storage().list(bucket, &route.prefix).await?;
        for w in markers::waiting_partitions(route, &listing, since, now) {
            out.push(MarkerWait {
                partition: plan::s3_url(bucket, &format!("{}{}", route.prefix, w.partition_path)),
                marker: marker.clone(),
                files: w.files,
                waiting_seconds: w.waited.as_secs(),
            });
        }
    }
    out.sort_by_key(|w| std::cmp::Reverse(w.waiting_seconds));
    Ok(out)
}

/// The text table, then each table's failures indented below it.
fn render(statuses: &[TableStatus]) -> String {
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|s| {
            let last = s.last_load.as_ref();
            vec![
                s.table.clone(),
                last.map(|l| l.loaded_at.clone())
                    .unwrap_or_else(|| "never".into()),
                last.and_then(|l| l.age_seconds)
                    .map(report::human_seconds)
                    .unwrap_or_else(|| "-".into()),
                last.map(|l| format!("{} ({})", l.files, report::human_bytes(l.bytes)))
                    .unwrap_or_else(|| "-".into()),
                last.and_then(|l| l.rows)
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.newest_object_lag_seconds
                    .map(report::human_seconds)
                    .unwrap_or_else(|| "-".into()),
                match &s.lease {
                    Some(l) => format!(
                        "{} {} ({})",
                        l.state,
                        l.holder,
                        l.age_seconds
                            .map(report::human_seconds)
                            .unwrap_or_else(|| "?".into())
                    ),
                    None => "free".into(),
                },
                match s.pending_s3_wakeups {
                    Some(n) if n > 0 => format!("{} (+{n} in S3)", s.pending_wakeups),
                    _ => s.pending_wakeups.to_string(),
                },
                s.files_last_hour.to_string(),
                s.files_last_day.to_string(),
                s.recent_failures.len().to_string(),
            ]
        })
        .collect();
    let mut out = report::render_table(
        &[
            "TABLE",
            "LAST LOAD (UTC)",
            "AGE",
            "FILES",
            "ROWS",
            "LAG",
            "LEASE",
            "QUEUED",
            "1H",
            "24H",
            "FAILURES",
        ],
        &rows,
    );
    for s in statuses.iter() {
        if let Some(advice) = s.file_sizes.as_ref().and_then(|f| f.advice.as_ref()) {
            out.push_str(&format!("\nfile sizes of {}: {advice}\n", s.table));
        }
    }
    for s in statuses.iter().filter(|s| !s.waiting_for_marker.is_empty()) {
        out.push_str(&format!(
            "\npartitions of {} waiting for their marker:\n",
            s.table
        ));
        for w in &s.waiting_for_marker {
            out.push_str(&format!(
                "  {}  {} file(s) waiting {} for {}\n",
                w.partition,
                w.files,
                report::human_seconds(w.waiting_seconds as i64),
                w.marker
            ));
        }
    }
    for s in statuses.iter().filter(|s| !s.recent_failures.is_empty()) {
        out.push_str(&format!("\nrecent load failures of {}:\n", s.table));
        for f in &s.recent_failures {
            out.push_str(&format!("  {}  {}\n    {}\n", f.at, f.file, f.reason));
        }
    }
    for s in statuses.iter().filter(|s| !s.quarantined.is_empty()) {
        out.push_str(&format!(
            "\nquarantined files of {} (loaded again when rewritten, or after `loaderctl \
             quarantine release URL`):\n",
            s.table
        ));
        for q in &s.quarantined {
            out.push_str(&format!(
                "  {}  {}\n    {}\n",
                q.quarantined_at, q.url, q.error
            ));
        }
    }
    out
}

/// An S3 client like the loader's (path-style for a custom endpoint).
async fn s3_client() -> aws_sdk_s3::Client {
    let sdk = partition_loader::io::sdk::load_config().await;
    let mut s3 = aws_sdk_s3::config::Builder::from(&sdk);
    if std::env::var_os("AWS_ENDPOINT_URL_S3").is_some() {
        s3 = s3.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(s3.build())
}

/// Seconds from the object's LastModified to `loaded_at`; `None` when the object is
/// gone or unreadable (the status still shows everything else).
async fn object_lag(s3: &aws_sdk_s3::Client, url: &str, loaded_at: NaiveDateTime) -> Option<i64> {
    let (bucket, key) = url.strip_prefix("s3://")?.split_once('/')?;
    let head = s3.head_object().bucket(bucket).key(key).send().await.ok()?;
    let modified = head.last_modified()?;
    let modified = chrono::DateTime::from_timestamp(modified.secs(), 0)?.naive_utc();
    Some((loaded_at - modified).num_seconds().max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_table_shows_each_table_then_its_failures() {
        let stuck = TableStatus {
            table: "sales.orders".into(),
            last_load: Some(LastLoad {
                load_id: "l1".into(),
                loaded_at: "2024-05-28 10:00:00".into(),
                age_seconds: Some(600),
                files: 3,
                bytes: 2048,
                rows: Some(120),
                holder: "req-1".into(),
            }),
            newest_object_lag_seconds: Some(42),
            lease: Some(Lease {
                holder: "req-9".into(),
                acquired_at: "2024-05-28 10:05:00".into(),
                expires_at: "2024-05-28 10:21:00".into(),
                age_seconds: Some(300),
                state: "live",
            }),
            pending_wakeups: 2,
            pending_s3_wakeups: Some(3),
            files_last_hour: 3,
            files_last_day: 40,
            files_total: 900,
            recent_failures: vec![Failure {
                at: "2024-05-28 10:06:00".into(),
                file: "s3://lake/orders/order_date=2024-05-28/bad.parquet".into(),
                reason: "Unmatched number of columns".into(),
                query_id: Some(7),
            }],
            file_sizes: Some(FileSizes {
                loads: 20,
                files_per_copy: 50.0,
                mean_file_bytes: 40,
                advice: Some("50.0 files of 0 KB on average per COPY: compact them".into()),
            }),
            waiting_for_marker: vec![MarkerWait {
                partition: "s3://lake/orders/order_date=2024-05-29/".into(),
                marker: "_SUCCESS".into(),
                files: 2,
                waiting_seconds: 600,
            }],
            quarantined: Vec::new(),
        };
        let idle = TableStatus {
            table: "sales.refunds".into(),
            last_load: None,
            newest_object_lag_seconds: None,
            lease: None,
            pending_wakeups: 0,
            pending_s3_wakeups: None,
            files_last_hour: 0,
            files_last_day: 0,
            files_total: 0,
            recent_failures: Vec::new(),
            file_sizes: None,
            waiting_for_marker: Vec::new(),
            quarantined: vec![crate::quarantine::Quarantined {
                table: "sales.refunds".into(),
                partition: "d=1/".into(),
                url: "s3://lake/refunds/d=1/bad.parquet".into(),
                etag: "e".into(),
                error: "Spectrum Scan Error".into(),
                quarantined_at: "2024-05-28 10:07:00".into(),
            }],
        };
        let text = render(&[stuck, idle]);
        assert!(
            text.contains("quarantined files of sales.refunds")
                && text.contains("  2024-05-28 10:07:00  s3://lake/refunds/d=1/bad.parquet\n    Spectrum Scan Error"),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("TABLE"));
        assert!(
            lines[1].starts_with("sales.orders   2024-05-28 10:00:00  10m"),
            "{text}"
        );
        assert!(lines[1].contains("3 (2.0 KB)  120"), "{text}");
        assert!(
            lines[1].contains("42s  live req-9 (5m)  2 (+3 in S3)  3   40   1"),
            "{text}"
        );
        assert!(lines[2].starts_with("sales.refunds  never"), "{text}");
        assert!(lines[2].contains("free"), "{text}");
        assert_eq!(
            lines[4],
            "file sizes of sales.orders: 50.0 files of 0 KB on average per COPY: compact them"
        );
        assert_eq!(
            lines[6],
            "partitions of sales.orders waiting for their marker:"
        );
        assert_eq!(
            lines[7],
            "  s3://lake/orders/order_date=2024-05-29/  2 file(s) waiting 10m for _SUCCESS"
        );
        assert_eq!(lines[9], "recent load failures of sales.orders:");
        assert!(lines[10].contains("bad.parquet") && lines[11].contains("Unmatched"));
    }
}
