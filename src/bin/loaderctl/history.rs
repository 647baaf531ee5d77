//! `loaderctl history TABLE [PARTITION]`: the loads of a table, newest first, from the
//! ledger (load id, partition, files, bytes, holder) joined with Redshift's load
//! history (COPY query ids, transaction, rows, COPY duration).

use partition_loader::sql::{self, TableName};
use partition_loader::{lake::manifest, LoaderError};
use serde::Serialize;
use tokio::time::Instant;

use crate::report::{self, number, text, timestamp, Copies};
use crate::Ctl;

#[derive(clap::Args)]
pub struct Args {
    /// The table, schema.table.
    pub table: String,
    /// Only this partition path, as the ledger stores it (e.g. order_date=2024-05-28/).
    pub partition: Option<String>,
    /// One JSON object per load and line, instead of a text table.
    #[arg(long)]
    pub json: bool,
    /// How many loads to show.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Debug, Serialize)]
struct Load {
    load_id: String,
    partition: String,
    loaded_at: String,
    files: i64,
    bytes: i64,
    holder: String,
    /// From `SYS_LOAD_HISTORY`; `None` when Redshift has no record of the COPY.
    rows: Option<i64>,
    duration_ms: Option<i64>,
    /// Time the COPYs waited in a WLM queue and ran (SYS_QUERY_HISTORY).
    queue_ms: Option<i64>,
    execution_ms: Option<i64>,
    /// Redshift query ids of the load's COPY statements (one per batch).
    query_ids: Vec<i64>,
    transaction_ids: Vec<i64>,
}

pub async fn run(loader: &Ctl, args: Args, deadline: Instant) -> Result<bool, LoaderError> {
    let config = loader.config();
    let table = TableName::parse(&args.table).map_err(LoaderError::Config)?;
    let mut params = vec![];
    // Never an empty parameter value: Redshift rejects it.
    let partition = args.partition.filter(|p| !p.is_empty());
    if let Some(p) = &partition {
        params.push(("partition", p.clone()));
    }
    let sql = sql::history_loads(
        &config.loader_schema,
        &table,
        partition.is_some(),
        args.limit,
    );
    let loads = loader
        .query(sql, params, deadline)
        .await
        .map_err(|e| report::hint_bootstrap(config.loader_schema.as_str(), e))?;
    let manifests = manifest::table_manifest_url(&config.manifest, &table);
    let copies = loader
        .query(
            sql::history_copies(),
            vec![("manifests", manifests)],
            deadline,
        )
        .await?;
    let copies = report::copies_by_load(&copies);
    let loads: Vec<Load> = loads
        .iter()
        .map(|r| {
            let load_id = text(r, 0).unwrap_or_default().to_string();
            let c: Option<&Copies> = copies.get(&load_id);
            Load {
                partition: text(r, 1).unwrap_or_default().to_string(),
                loaded_at: timestamp(text(r, 2))
                    .map(report::show_time)
                    .unwrap_or_default(),
                files: number(r, 3).unwrap_or(0),
                bytes: number(r, 4).unwrap_or(0),
                holder: text(r, 5).unwrap_or_default().to_string(),
                rows: c.map(|c| c.rows),
                duration_ms: c.map(|c| c.duration_ms),
                queue_ms: c.and_then(|c| c.queue_ms),
                execution_ms: c.and_then(|c| c.execution_ms),
                query_ids: c.map(|c| c.query_ids.clone()).unwrap_or_default(),
                transaction_ids: c.map(|c| c.transaction_ids.clone()).unwrap_or_default(),
                load_id,
            }
        })
        .collect();
    if args.json {
        for l in &loads {
            println!("{}", serde_json::to_string(l).unwrap_or_default());
        }
    } else {
        let dash = || "-".to_string();
        let rows: Vec<Vec<String>> = loads
            .iter()
            .map(|l| {
                vec![
                    l.loaded_at.clone(),
                    l.partition.clone(),
                    l.files.to_string(),
                    report::human_bytes(l.bytes),
                    l.rows.map(|r| r.to_string()).unwrap_or_else(dash),
                    l.duration_ms
                        .map(|d| format!("{d} ms"))
                        .unwrap_or_else(dash),
                    l.queue_ms.map(|d| format!("{d} ms")).unwrap_or_else(dash),
                    l.execution_ms
                        .map(|d| format!("{d} ms"))
                        .unwrap_or_else(dash),
                    l.load_id.clone(),
                    if l.query_ids.is_empty() {
                        dash()
                    } else {
                        l.query_ids
                            .iter()
                            .map(i64::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    },
                    l.holder.clone(),
                ]
            })
            .collect();
        print!(
            "{}",
            report::render_table(
                &[
                    "LOADED (UTC)",
                    "PARTITION",
                    "FILES",
                    "BYTES",
                    "ROWS",
                    "COPY TIME",
                    "QUEUED",
                    "EXECUTING",
                    "LOAD ID",
                    "QUERY",
                    "HOLDER",
                ],
                &rows,
            )
        );
    }
    Ok(true)
}
