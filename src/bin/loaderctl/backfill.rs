//! `loaderctl backfill URL [--dry-run]`: loads every partition found under
//! s3://bucket/prefix with the loader's protocol, one after the other; one JSON
//! outcome line per partition on stdout. Progress goes to stderr: a bar on a terminal
//! (partitions done of total, files, bytes, rate, ETA), plain lines otherwise (CI, a
//! pipe, a log file). `--dry-run` lists per partition what would be loaded.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use partition_loader::backfill::PartitionWork;
use partition_loader::config::{Mode, S3Location};
use partition_loader::plan::{self, LoadedFile, Plan};
use partition_loader::{sql, LoaderError};
use serde_json::json;
use tokio::time::Instant;

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
    let mut progress = Progress::new(totals, std::io::stderr().is_terminal());
    for w in &work {
        let label = format!("{} {}", w.route.table, w.partition.path);
        progress.start(&label);
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
        progress.done(
            w.files.len() as u64,
            w.bytes(),
            &format!("{label}: {state}"),
        );
        // Stdout and the bar may share a terminal: the line goes out with the bar lifted.
        all_ok &= progress.suspend(|| print_result(result, json!({})));
    }
    progress.finish();
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
    let base = json!({"dry_run": true, "table": table, "partition_path": w.partition.path});
    let line = match plan::plan(w.route.mode, bucket, w.files.clone(), &ledger) {
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

/// What the whole backfill holds.
#[derive(Debug, Clone, Copy)]
struct Totals {
    partitions: u64,
    files: u64,
    bytes: u64,
}

/// Progress so far: a bar on a terminal, else one line per finished partition.
struct Progress {
    totals: Totals,
    done: Totals,
    started: std::time::Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(totals: Totals, terminal: bool) -> Progress {
        let bar = terminal.then(|| {
            let bar = ProgressBar::new(totals.partitions);
            let style = ProgressStyle::with_template(
                "{spinner} {bar:30} {pos}/{len} partitions {msg} [{elapsed}, ETA {eta}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            totals,
            done: Totals {
                partitions: 0,
                files: 0,
                bytes: 0,
            },
            started: std::time::Instant::now(),
            bar,
        }
    }

    fn start(&self, label: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{} | {label}", figures(self.done, self.totals)));
        }
    }

    fn done(&mut self, files: u64, bytes: u64, label: &str) {
        self.done.partitions += 1;
        self.done.files += files;
        self.done.bytes += bytes;
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.done.partitions);
                bar.set_message(figures(self.done, self.totals));
            }
            None => eprintln!(
                "{}",
                progress_line(self.done, self.totals, self.started.elapsed(), label)
            ),
        }
    }

    fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_with_message(figures(self.done, self.totals));
        }
    }
}

/// `files 3/10, 1.2 KB/4.0 KB`
fn figures(done: Totals, totals: Totals) -> String {
    format!(
        "files {}/{}, {}/{}",
        done.files,
        totals.files,
        human_bytes(done.bytes as i64),
        human_bytes(totals.bytes as i64)
    )
}

/// The plain progress line written after each partition when stderr is not a terminal.
fn progress_line(done: Totals, totals: Totals, elapsed: Duration, label: &str) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = done.bytes as f64 / secs;
    // ETA by bytes when there are any (partitions differ in size), else by partitions.
    let eta = if totals.bytes > 0 && done.bytes > 0 {
        (totals.bytes - done.bytes.min(totals.bytes)) as f64 / rate
    } else if done.partitions > 0 {
        (totals.partitions - done.partitions.min(totals.partitions)) as f64 * secs
            / done.partitions as f64
    } else {
        0.0
    };
    format!(
        "backfill: {}/{} partitions, {}, {}/s, ETA {}s: {label}",
        done.partitions,
        totals.partitions,
        figures(done, totals),
        human_bytes(rate as i64),
        eta.round() as u64
    )
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
        let line = progress_line(done, totals, Duration::from_secs(2), "s.t d=1/: loaded");
        assert_eq!(
            line,
            "backfill: 1/4 partitions, files 2/8, 1.0 KB/4.0 KB, 512 B/s, ETA 6s: s.t d=1/: loaded"
        );
        let none = Totals {
            partitions: 2,
            files: 0,
            bytes: 0,
        };
        let half = Totals {
            partitions: 1,
            ..none
        };
        assert!(progress_line(half, none, Duration::from_secs(3), "x").contains("ETA 3s"));
    }
}
