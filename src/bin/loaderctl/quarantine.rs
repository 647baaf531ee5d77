//! `loaderctl quarantine list [TABLE]` and `loaderctl quarantine release URL`: the files
//! Redshift refused to load, kept out of their partition's loads
//! (`partition_loader::protocol::isolate`) until rewritten (a new ETag loads) or released here.

use partition_loader::io::warehouse::Row;
use partition_loader::sql::{self, LeaseTables, TableName};
use partition_loader::LoaderError;
use serde::Serialize;
use tokio::time::Instant;

use crate::report::{self, text, timestamp};
use crate::Ctl;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(clap::Subcommand)]
pub enum Sub {
    /// The quarantined files not loaded since (every configured table, or TABLE), oldest
    /// first, one JSON line each: table, partition, URL, ETag, Redshift's error, when.
    List {
        /// Only this table (schema.table).
        table: Option<String>,
    },
    /// Forget the quarantine of one file (every ETag of its URL), so that the next load
    /// of its partition (an event, the sweep, `loaderctl backfill`) tries it again.
    /// Exits 1 when the file was not quarantined.
    #[command(alias = "retry")]
    Release {
        /// The file's `s3://bucket/key` URL, as `quarantine list` shows it.
        url: String,
        /// The table it was quarantined for; default: the table of the route that
        /// claims the URL.
        #[arg(long)]
        table: Option<String>,
    },
}

/// One quarantined file, as `list` and `loaderctl status` show it.
#[derive(Debug, Clone, Serialize)]
pub struct Quarantined {
    pub table: String,
    pub partition: String,
    pub url: String,
    pub etag: String,
    pub error: String,
    pub quarantined_at: String,
}

/// The quarantined files of `tables` not loaded since.
pub async fn read(
    loader: &Ctl,
    tables: &[TableName],
    deadline: Instant,
) -> Result<Vec<Quarantined>, LoaderError> {
    let schema = &loader.config().loader_schema;
    let rows = loader
        .query(sql::quarantine_list(schema, tables), vec![], deadline)
        .await
        .map_err(|e| report::hint_bootstrap(schema.as_str(), e))?;
    Ok(rows.iter().map(quarantined).collect())
}

fn quarantined(r: &Row) -> Quarantined {
    let s = |i| text(r, i).unwrap_or_default().to_string();
    Quarantined {
        table: s(0),
        partition: s(2),
        url: s(3),
        etag: s(4),
        error: s(5),
        quarantined_at: timestamp(text(r, 6))
            .map(report::show_time)
            .unwrap_or_default(),
    }
}

pub async fn run(loader: &Ctl, args: Args, deadline: Instant) -> Result<bool, LoaderError> {
    let config = loader.config();
    match args.command {
        Sub::List { table } => {
            let tables = match table {
                Some(t) => vec![TableName::parse(&t).map_err(LoaderError::Config)?],
                None => config
                    .table_routes()
                    .iter()
                    .map(|r| r.table.clone())
                    .collect(),
            };
            for q in read(loader, &tables, deadline).await? {
                println!("{}", serde_json::to_string(&q).unwrap_or_default());
            }
            Ok(true)
        }
        Sub::Release { url, table } => {
            let table = match table {
                Some(t) => TableName::parse(&t).map_err(LoaderError::Config)?,
                None => {
                    let (bucket, key) = url
                        .strip_prefix("s3://")
                        .and_then(|u| u.split_once('/'))
                        .ok_or_else(|| {
                        LoaderError::Config(format!("{url} is not an s3://bucket/key URL"))
                    })?;
                    config
                        .routes
                        .iter()
                        .find(|r| r.claims(bucket, key))
                        .map(|r| r.table.clone())
                        .ok_or_else(|| {
                            LoaderError::Config(format!(
                                "no route claims {url}; name the table with --table"
                            ))
                        })?
                }
            };
            let held: Vec<Quarantined> = read(loader, std::slice::from_ref(&table), deadline)
                .await?
                .into_iter()
                .filter(|q| q.url == url)
                .collect();
            let t = LeaseTables::for_target(&table);
            loader
                .execute(
                    sql::quarantine_release(&config.loader_schema, &t),
                    vec![("url", url.clone())],
                    deadline,
                )
                .await?;
            if held.is_empty() {
                eprintln!("loaderctl: {url} is not quarantined for {table}");
                return Ok(false);
            }
            let partition = held
                .first()
                .map(|q| q.partition.clone())
                .unwrap_or_default();
            let prefix = url.rfind('/').map(|i| &url[..=i]).unwrap_or(&url);
            println!(
                "{}",
                serde_json::json!({"released": url, "table": table.to_string(),
                    "partition": partition,
                    "next": format!("the next event or sweep of the partition loads it; now: loaderctl backfill {prefix}")})
            );
            Ok(true)
        }
    }
}
