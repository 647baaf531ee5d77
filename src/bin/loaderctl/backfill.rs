//! `loaderctl backfill URL [--dry-run]`: loads every partition found under
//! s3://bucket/prefix with the loader's protocol, one after the other; one JSON
//! outcome line per partition on stdout. Progress goes to stderr: a bar on a terminal
//! (partitions done of total, files, bytes, rate, ETA), plain lines otherwise (CI, a
//! pipe, a log file). `--dry-run` lists per partition what would be loaded.

use std::io::IsTerminal;
use std::time::Duration;

use partition_loader::lake::config::{Mode, S3Location};
use partition_loader::protocol::plan::{self, LoadedFile, Plan};
use partition_loader::run::backfill::PartitionWork;
use partition_loader::{sql, LoaderError};
use serde_json::json;
use tokio::time::Instant;

use crate::progress::{self, Progress};
use crate::report::human_bytes;
use crate::{print_result, Ctl};

#[derive(clap::Args)]
pub struct Args {
    /// Where to look: s3://bucket/prefix (every route claiming keys below it).
    pub url: String,
    /// List per partition the files that would be loaded, and load nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(
    loader: &Ctl,
    args: Args,
    holder: &str,
    budget: Duration,
) -> Result<bool, LoaderError> {
    let location = S3Location::parse(&args.url).map_err(LoaderError::Config)?;
    let bucket = &location.bucket;
    let (work, errors) = loader.backfill_partitions(bucket, &location.prefix).await?;
    let mut all_ok = errors.is_empty();
    for e in errors {
        print_result(Err(e), json!({}));
    }
    if args.dry_run {
        for w in &work {
            all_ok &= dry_run(loader, bucket, w, Instant::now() + budget).await?;
        }
        return Ok(all_ok);
    }
    let totals = Totals {
        partitions: work.len() as u64,
        files: work.iter().map(|w| w.files.len() as u64).sum(),
        bytes: work.iter().map(PartitionWork::bytes).sum(),
    };
    let mut progress = Progress::new(
        "backfill",
        "partitions",
        Some(totals.partitions),
        std::io::stderr().is_terminal(),
    );
    let mut done = Totals::default();
    for w in &work {
        let label = format!("{} {}", w.route.table, w.partition.path);
        progress.start(&figures(done, totals, progress.elapsed()), &label);
        let result = loader
            .load_partition(
                w.route,
                bucket,
                &w.partition,
                None,
                holder,
                Instant::now() + budget,
            )
            .await;
        let state = match &result {
            Ok(o) => o.to_json()["outcome"].as_str().unwrap_or("?").to_string(),
            Err(e) => e.error_type(),
        };
        done.partitions += 1;
        done.files += w.files.len() as u64;
        done.bytes += w.bytes();
        progress.step(
            &figures(done, totals, progress.elapsed()),
            eta_work(done, totals),
            &format!("{label}: {state}"),
        );
        // Stdout and the bar may share a terminal: the line goes out with the bar lifted.
        all_ok &= progress.suspend(|| print_result(result, json!({})));
    }
    let last = figures(done, totals, progress.elapsed());
    progress.finish(&last);
    if !work.is_empty() {
        // Loads outside the sweep's window leave S3's window listing unchanged: the
        // next scheduled sweep must query (and run upkeep after these loads).
        loader.mark_dirty("loaderctl backfill loaded", holder).await;
    }
    Ok(all_ok)
}

/// One partition of a dry run: the listing diffed against the ledger, without the
/// lease (so a load running meanwhile may make it stale).
async fn dry_run(
    loader: &Ctl,
    bucket: &str,
    w: &PartitionWork<'_>,
    deadline: Instant,
) -> Result<bool, LoaderError> {
    let schema = &loader.config().loader_schema;
    let table = w.route.table.to_string();
    let mut params = vec![];
    let sql = if w.partition.path.is_empty() {
        sql::unpartitioned_ledger(schema, &w.route.table)
    } else {
        params.push(("partition", w.partition.path.clone()));
        sql::partition_ledger(schema, &w.route.table)
    };
    let ledger: Vec<LoadedFile> = loader
        .query(sql, params, deadline)
        .await?
        .into_iter()
        .filter_map(|r| match r.as_slice() {
            [Some(url), Some(etag), ..] => Some(LoadedFile {
                s3_url: url.clone(),
                etag: etag.clone(),
            }),
            _ => None,
        })
        .collect();
    // What the load would see under the lease: with a ready marker, only the files a
    // marker covers (the others are listed as waiting, as the load leaves them).
    let (files, waiting) = if w.route.ready_marker.is_some() {
        let prefix = w.partition.list_prefix(w.route);
        let (_, ready, waiting) = loader.list_ready(w.route, bucket, &prefix).await?;
        (ready, waiting)
    } else {
        (w.files.clone(), Vec::new())
    };
    let mut base = json!({"dry_run": true, "table": table, "partition_path": w.partition.path});
    if !waiting.is_empty() {
        base["waiting_for_marker"] = waiting
            .iter()
            .map(|f| plan::s3_url(bucket, &f.key))
            .collect::<Vec<_>>()
            .into();
    }
    let line = match plan::plan(w.route.mode, bucket, files, &ledger) {
        Ok(Plan::UpToDate) if !waiting.is_empty() => {
            json!({"action": "waiting", "files": [], "bytes": 0})
        }
        Ok(Plan::UpToDate) => json!({"action": "up_to_date", "files": [], "bytes": 0}),
        Ok(Plan::Load(files)) => json!({
            "action": if w.route.mode == Mode::Replace { "replace" } else { "load" },
            "bytes": files.iter().map(|f| f.size.max(0)).sum::<i64>(),
            "files": files.iter().map(|f| plan::s3_url(bucket, &f.key)).collect::<Vec<_>>(),
        }),
        Err(e) => json!({"action": "error", "error_type": e.error_type(), "error": e.to_string()}),
    };
    let ok = line["action"] != "error";
    let mut out = base;
    if let (Some(o), Some(l)) = (out.as_object_mut(), line.as_object()) {
        o.extend(l.clone());
    }
    println!("{out}");
    Ok(ok)
}

/// What the whole backfill holds, or has done so far.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    partitions: u64,
    files: u64,
    bytes: u64,
}

/// `files 3/10, 1.2 KB/4.0 KB, 310 B/s`
fn figures(done: Totals, totals: Totals, elapsed: Duration) -> String {
    format!(
        "files {}/{}, {}/{}, {}/s",
        done.files,
        totals.files,
        human_bytes(done.bytes as i64),
        human_bytes(totals.bytes as i64),
        human_bytes(progress::per_second(done.bytes, elapsed) as i64)
    )
}

/// The ETA's measure: bytes when there are any (partitions differ in size), else
/// partitions.
fn eta_work(done: Totals, totals: Totals) -> (u64, u64) {
    if totals.bytes > 0 && done.bytes > 0 {
        (done.bytes, totals.bytes)
    } else {
        (done.partitions, totals.partitions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_says_how_far_and_how_long() {
        let totals = Totals {
            partitions: 4,
            files: 8,
            bytes: 4096,
        };
        let done = Totals {
            partitions: 1,
            files: 2,
            bytes: 1024,
        };
        let elapsed = Duration::from_secs(2);
        let line = progress::line(
            "backfill",
            (done.partitions, Some(totals.partitions)),
            "partitions",
            &figures(done, totals, elapsed),
            Some(progress::eta(eta_work(done, totals), elapsed)),
            "s.t d=1/: loaded",
        );
        assert_eq!(
            line,
            "backfill: 1/4 partitions, files 2/8, 1.0 KB/4.0 KB, 512 B/s, ETA 6s: s.t d=1/: loaded"
        );
        let none = Totals {
            partitions: 2,
            ..Totals::default()
        };
        let half = Totals {
            partitions: 1,
            ..none
        };
        assert_eq!(
            progress::eta(eta_work(half, none), Duration::from_secs(3)),
            3,
            "by partitions when there are no bytes"
        );
    }
}
