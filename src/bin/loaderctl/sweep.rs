//! `loaderctl sweep [--days N]`: the scheduled sweep by hand ([`Loader::sweep_table`]
//! per table), one JSON outcome line per partition on stdout. Progress per table on
//! stderr: a bar on a terminal, else one plain line per partition
//! (`sweep sales.orders: 2/5 partitions, 3 files loaded, 1.5 files/s, ETA 4s:
//! order_date=2024-05-28/: loaded`).
//!
//! [`Loader::sweep_table`]: partition_loader::Loader::sweep_table

use std::io::IsTerminal;

use partition_loader::run::sweep::Step;
use partition_loader::{LoaderError, Outcome};
use serde_json::json;
use tokio::time::Instant;

use crate::progress::{self, Progress};
use crate::{print_result, Ctl};

#[derive(clap::Args)]
pub struct Args {
    /// Look-back window in days (default: SWEEP_LOOK_BACK_DAYS, else 3, as the
    /// function's scheduled sweep).
    #[arg(long)]
    pub days: Option<u32>,
}

pub async fn run(
    loader: &Ctl,
    args: Args,
    holder: &str,
    deadline: Instant,
) -> Result<bool, LoaderError> {
    let days = args.days.unwrap_or(loader.config().sweep_look_back_days);
    let terminal = std::io::stderr().is_terminal();
    let mut all_ok = true;
    for routes in partition_loader::run::sweep::sweep_order(&loader.config().routes, holder) {
        let name = format!("sweep {}", routes[0].table);
        let mut table = TableProgress::default();
        let results = loader
            .sweep_table_with(&routes, holder, days, deadline, |step| {
                table.step(&name, terminal, step)
            })
            .await;
        if let Some(p) = table.progress.take() {
            let last = figures(table.files, p.elapsed());
            p.finish(&last);
        }
        for r in results {
            all_ok &= print_result(r, json!({"sweep_days": days}));
        }
    }
    // A sweep by hand runs no upkeep and writes no clean watermark: the next scheduled
    // sweep queries (upkeep after what this one loaded).
    loader.mark_dirty("loaderctl sweep ran", holder).await;
    Ok(all_ok)
}

/// One table's sweep so far.
#[derive(Default)]
struct TableProgress {
    /// From the listing on.
    progress: Option<Progress>,
    partitions: u64,
    done: u64,
    /// Files loaded so far.
    files: u64,
}

impl TableProgress {
    fn step(&mut self, name: &str, terminal: bool, step: Step<'_>) {
        match step {
            Step::Listed { partitions } => {
                self.partitions = partitions as u64;
                self.progress = Some(Progress::new(
                    name,
                    "partitions",
                    Some(self.partitions),
                    terminal,
                ));
            }
            Step::Partition { partition, result } => {
                self.done += 1;
                let state = match result {
                    Ok(o) => {
                        if let Outcome::Loaded { files, .. } = o {
                            self.files += *files as u64;
                        }
                        o.to_json()["outcome"].as_str().unwrap_or("?").to_string()
                    }
                    Err(e) => e.error_type(),
                };
                if let Some(p) = &mut self.progress {
                    let figures = figures(self.files, p.elapsed());
                    p.step(
                        &figures,
                        (self.done, self.partitions),
                        &format!("{}: {state}", partition.path),
                    );
                }
            }
        }
    }
}

/// `3 files loaded, 1.5 files/s`
fn figures(files: u64, elapsed: std::time::Duration) -> String {
    format!(
        "{files} files loaded, {:.1} files/s",
        progress::per_second(files, elapsed)
    )
}
