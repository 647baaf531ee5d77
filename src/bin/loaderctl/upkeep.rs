//! `loaderctl upkeep [--table T] [--dry-run]`: per table `stats_off`, `unsorted`, rows,
//! deleted rows, the last ANALYZE and VACUUM (from SYS_ANALYZE_HISTORY, superusers
//! only, and SYS_VACUUM_HISTORY, one's own: null where not visible) and what upkeep
//! would run; without `--dry-run` it runs it (whatever the watermark), one JSON line
//! per table on stdout, a progress line per table on stderr. Run it as the tables'
//! owner when the function's user may not analyze or vacuum them.

use partition_loader::ops::upkeep;
use partition_loader::LoaderError;
use tokio::time::Instant;

use crate::{table_arg, Ctl};

#[derive(clap::Args)]
pub struct Args {
    /// Only this table (`schema.table`, one of the routes' tables).
    #[arg(long)]
    pub table: Option<String>,
    /// Show the state and what would run; run nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(loader: &Ctl, args: Args, deadline: Instant) -> Result<bool, LoaderError> {
    let only = args.table.as_deref().map(table_arg).transpose()?;
    if let Some(t) = &only {
        if !loader.config().table_routes().iter().any(|r| r.table == *t) {
            return Err(LoaderError::Config(format!(
                "{t} is not a configured route's table (or its route has upkeep off)"
            )));
        }
    }
    let report = loader
        .upkeep_now(only.as_ref(), args.dry_run, deadline)
        .await;
    let total = report.len();
    let mut all_ok = true;
    for (i, entry) in report.iter().enumerate() {
        let mut line = entry.to_json();
        line["dry_run"] = args.dry_run.into();
        if let Ok(table) = partition_loader::sql::TableName::parse(&entry.table) {
            for (key, analyze) in [("last_analyze", true), ("last_vacuum", false)] {
                let last = match upkeep::last_runs_sql(&table, analyze) {
                    Ok(sql) => loader
                        .query(sql, Vec::new(), deadline)
                        .await
                        .ok()
                        .and_then(|rows| rows.into_iter().next())
                        .and_then(|row| row.into_iter().next().flatten()),
                    Err(_) => None,
                };
                line[key] = last.into();
            }
        }
        all_ok &= entry.error.is_none();
        let did = if args.dry_run {
            "dry run".to_string()
        } else if entry.statements.is_empty() {
            "nothing to do".to_string()
        } else {
            format!(
                "analyzed: {}, vacuum: {}",
                entry.analyzed,
                match (entry.vacuum_submitted, &entry.deferred) {
                    (Some(true), _) => "finished".to_string(),
                    (Some(false), _) => "submitted, running".to_string(),
                    (None, Some(why)) => format!("deferred ({why})"),
                    (None, None) => "-".to_string(),
                }
            )
        };
        eprintln!("upkeep {}: {}/{total}: {did}", entry.table, i + 1);
        println!("{line}");
    }
    Ok(all_ok)
}
