//! loaderctl: the operator's tool. Same configuration (environment) as the Lambda.

// The SDK's nested futures exceed the default when the compiler computes their layout.
#![recursion_limit = "256"]

// One module per subcommand, beside this file (a crate root looks in src/bin/).
#[path = "loaderctl/backfill.rs"]
mod backfill;
#[path = "loaderctl/history.rs"]
mod history;
#[path = "loaderctl/progress.rs"]
mod progress;
#[path = "loaderctl/quarantine.rs"]
mod quarantine;
#[path = "loaderctl/redrive.rs"]
mod redrive;
#[path = "loaderctl/report.rs"]
mod report;
#[path = "loaderctl/status.rs"]
mod status;
#[path = "loaderctl/sweep.rs"]
mod sweep;
#[path = "loaderctl/upkeep.rs"]
mod upkeep;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use partition_loader::lake::config::Mode;
use partition_loader::sql::{self, DbUser, LeaseTables, TableName};
use partition_loader::{init_logging, ops::doctor, Loader, LoaderError};
use serde_json::{json, Value};
use tokio::time::Instant;

#[derive(Parser)]
#[command(
    version,
    about = "Operate partition-loader: schema, replays, backfills, leases, ledger"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the loader schema and, for every configured route's table, its lease,
    /// ledger and wake-up tables and lease procedures (idempotent; copies the table's
    /// rows of the shared `loaded_files` ledger of earlier versions the first time).
    Bootstrap {
        /// The function's database user (e.g. `IAMR:partition-loader-role` on Serverless
        /// with IAM): grant it what it needs on the loader schema, and print the GRANTs
        /// each route's target table needs (for the tables' owners to run). An IAM
        /// identity's user (`IAMR:…`, `IAM:…`) is created first when missing.
        #[arg(long, value_name = "USER")]
        grant_to: Option<String>,
    },
    /// Run the handler on event files (one or more JSON events per file); one JSON
    /// outcome line per event. Exits non-zero when any event failed.
    Replay {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Load every partition found under s3://bucket/prefix with the same protocol;
    /// progress on stderr, `--dry-run` to list what would be loaded.
    Backfill(backfill::Args),
    /// Check, with the function's configuration and identity, everything the first
    /// event needs: loader schema, each route's lease, ledger and wake-up tables and
    /// procedures, grants, route tables and their columns, the manifest prefix, the COPY
    /// role. One JSON line per check with the fix; exits 0 healthy, 1 findings, 2 could
    /// not check.
    Doctor,
    /// Show the lease of every configured route's table, with its pending wake-ups.
    Locks,
    /// Run the sweep by hand: list the partitions of the last DAYS dates and those the
    /// ledger loaded in that window, load what is missing, drain left-over wake-ups;
    /// progress per table on stderr.
    Sweep(sweep::Args),
    /// Release a table's lease by hand; a live lease only with --force.
    Unlock {
        table: String,
        #[arg(long)]
        force: bool,
    },
    /// Show the ledger of a table, optionally of one partition path (e.g. order_date=2024-05-28/).
    Ledger {
        table: String,
        partition: Option<String>,
    },
    /// Per table: last load, lag, lease, files in the last hour and day, recent load
    /// failures, quarantined files. Exits 1 when a table failed since its last load or
    /// has quarantined files.
    Status(status::Args),
    /// The loads of a table with Redshift's load history (rows, COPY time, query ids).
    History(history::Args),
    /// Replay a failure queue's messages through the handler (the function's on-failure
    /// queue, the rule's dead-letter queue or the batch dead-letter queue); a message is
    /// deleted only after its event succeeded. One JSON line per message; progress on
    /// stderr.
    Redrive(redrive::Args),
    /// Table upkeep by hand: per table stats_off, unsorted, rows, the last ANALYZE and
    /// VACUUM and what would run; runs it (ANALYZE waited for, VACUUM left to run)
    /// unless --dry-run. One JSON line per table; progress on stderr.
    Upkeep(upkeep::Args),
    /// Files Redshift refused to load, kept out of their partition's loads until
    /// rewritten: `list` them, or `release` one so that the next load tries it again.
    Quarantine(quarantine::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let sdk = partition_loader::io::sdk::load_config().await;
    let config = match partition_loader::lake::routes_source::config_from_env(&sdk).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loaderctl: {e}");
            return ExitCode::from(2);
        }
    };
    // Work must end well before the lease could expire under us.
    let budget = config.lease_ttl.mul_f64(0.8);
    let loader = Loader::connect(config).await;
    let holder = format!("loaderctl-{:08x}", fastrand::u32(..));
    if let Command::Doctor = cli.command {
        return match doctor::run(&loader, Instant::now() + budget).await {
            Ok(checks) => {
                for check in &checks {
                    println!("{}", check.to_json());
                }
                ExitCode::from(doctor::exit_code(&checks))
            }
            Err(e) => {
                eprintln!(
                    "loaderctl doctor: could not check: {e} ({}); is the Data API reachable \
                     with this identity and REDSHIFT_* configuration?",
                    e.error_type()
                );
                ExitCode::from(2)
            }
        };
    }
    match run(&loader, cli.command, &holder, budget).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loaderctl: {} ({})", e, e.error_type());
            ExitCode::FAILURE
        }
    }
}

pub(crate) type Ctl =
    Loader<partition_loader::io::warehouse::DataApi, partition_loader::io::storage::S3>;

pub(crate) fn print_result(
    result: Result<partition_loader::Outcome, LoaderError>,
    context: Value,
) -> bool {
    match result {
        Ok(outcome) => {
            outcome.log();
            // As the Lambda returns it: partition columns in route order.
            println!("{}", outcome.to_json_line());
            true
        }
        Err(e) => {
            let mut line =
                json!({"outcome": "error", "error_type": e.error_type(), "error": e.to_string()});
            if let (Some(obj), Value::Object(ctx)) = (line.as_object_mut(), context) {
                obj.extend(ctx);
            }
            println!("{line}");
            false
        }
    }
}

fn table_arg(table: &str) -> Result<TableName, LoaderError> {
    TableName::parse(table).map_err(LoaderError::Config)
}

async fn run(
    loader: &Ctl,
    command: Command,
    holder: &str,
    budget: Duration,
) -> Result<bool, LoaderError> {
    let deadline = || Instant::now() + budget;
    let schema = loader.config().loader_schema.quoted();
    match command {
        Command::Bootstrap { grant_to } => {
            let user = grant_to
                .map(|u| {
                    DbUser::parse(&u).map_err(|e| LoaderError::Config(format!("--grant-to: {e}")))
                })
                .transpose()?;
            let id = loader.bootstrap(deadline()).await?;
            println!(
                "{}",
                json!({"bootstrapped": loader.config().loader_schema.as_str(), "statement_id": id})
            );
            if let Some(user) = user {
                // `IAMR:<role>` exists only after the role's first call: create it, so
                // the grants can come before the function ever ran.
                if loader.create_iam_user_if_missing(&user, deadline()).await? {
                    println!("{}", json!({"created_user": user.as_str()}));
                }
                let id = loader.grant_loader(&user, deadline()).await?;
                println!(
                    "{}",
                    json!({"granted_to": user.as_str(), "schema": loader.config().loader_schema.as_str(), "statement_id": id})
                );
                for route in &loader.config().routes {
                    let mut grants = sql::route_grants(
                        &route.table,
                        !route.partition_columns.is_empty() || route.file_columns.is_some(),
                        route.mode == Mode::Replace,
                        route.statupdate,
                        &loader.config().database,
                        &user,
                    );
                    if route.add_new_columns {
                        grants.push(sql::add_columns_right(&route.table, &user));
                    }
                    println!(
                        "{}",
                        json!({"table": route.table.to_string(), "run_as_table_owner": grants})
                    );
                }
            }
            Ok(true)
        }
        Command::Replay { files } => {
            let mut all_ok = true;
            for file in files {
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    LoaderError::BadEvent(format!("cannot read {}: {e}", file.display()))
                })?;
                for event in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
                    let ctx = json!({"file": file.display().to_string()});
                    let result = match event {
                        Ok(event) => loader.handle_direct(&event, holder, deadline()).await,
                        Err(e) => Err(LoaderError::BadEvent(format!("not JSON: {e}"))),
                    };
                    all_ok &= print_result(result, ctx);
                }
            }
            Ok(all_ok)
        }
        Command::Backfill(args) => backfill::run(loader, args, holder, budget).await,
        Command::Doctor => Ok(true), // handled in main: it has its own exit codes
        Command::Locks => {
            for route in loader.config().table_routes() {
                let t = LeaseTables::for_target(&route.table);
                let rows = loader
                    .query_utc(
                        format!(
                            "SELECT holder, acquired_at, expires_at, \
                             CASE WHEN holder IS NULL THEN 'free' \
                             WHEN expires_at > GETDATE() THEN 'live' ELSE 'expired' END, \
                             (SELECT COUNT(*) FROM {schema}.{wakeup}) FROM {schema}.{lease}",
                            wakeup = t.wakeup.quoted(),
                            lease = t.lease.quoted()
                        ),
                        deadline(),
                    )
                    .await?;
                for r in rows {
                    println!(
                        "{}",
                        json!({"table": route.table.to_string(), "holder": r[0],
                               "acquired_at": r[1], "expires_at": r[2], "state": r[3],
                               "pending_wake_ups": r[4]})
                    );
                }
            }
            Ok(true)
        }
        Command::Sweep(args) => sweep::run(loader, args, holder, deadline()).await,
        Command::Unlock { table, force } => {
            let table = table_arg(&table)?;
            let t = LeaseTables::for_target(&table);
            let lease = format!("{schema}.{}", t.lease.quoted());
            let live = loader
                .query_utc(
                    format!(
                        "SELECT holder, expires_at FROM {lease} \
                         WHERE holder IS NOT NULL AND expires_at > GETDATE()"
                    ),
                    deadline(),
                )
                .await?;
            if let (Some(row), false) = (live.first(), force) {
                eprintln!(
                    "loaderctl: the lease on {table} is live (holder {}, expires {} UTC); \
                     wait for it or use --force if that holder is surely dead",
                    row[0].as_deref().unwrap_or("?"),
                    row[1].as_deref().unwrap_or("?")
                );
                return Ok(false);
            }
            // The row stays (free): exclusivity depends on exactly one lease row.
            loader
                .execute(
                    format!(
                        "UPDATE {lease} SET holder = NULL, acquired_at = NULL, expires_at = NULL"
                    ),
                    vec![],
                    deadline(),
                )
                .await?;
            println!(
                "{}",
                json!({"unlocked": table.to_string(), "forced": force})
            );
            Ok(true)
        }
        Command::Status(args) => status::run(loader, args, deadline()).await,
        Command::History(args) => history::run(loader, args, deadline()).await,
        Command::Redrive(args) => redrive::run(loader, args, holder, budget).await,
        Command::Upkeep(args) => upkeep::run(loader, args, deadline()).await,
        Command::Quarantine(args) => quarantine::run(loader, args, deadline()).await,
        Command::Ledger { table, partition } => {
            let table = table_arg(&table)?;
            let t = LeaseTables::for_target(&table);
            let mut sql = format!(
                "SELECT partition_path, s3_url, etag, size_bytes, loaded_at, holder, load_id \
                 FROM {schema}.{}",
                t.ledger.quoted()
            );
            let mut params = vec![];
            // A Data API parameter may not be empty: the unpartitioned path '' is inlined.
            match partition.as_deref() {
                Some("") => sql.push_str(" WHERE partition_path = ''"),
                Some(p) => {
                    sql.push_str(sql::EXACT_PARTITION);
                    params.push(("partition", p.to_string()));
                }
                None => {}
            }
            sql.push_str(" ORDER BY partition_path, s3_url");
            for r in loader.query(sql, params, deadline()).await? {
                println!(
                    "{}",
                    json!({"partition": r[0], "s3_url": r[1], "etag": r[2], "size_bytes": r[3],
                           "loaded_at": r[4], "holder": r[5], "load_id": r[6]})
                );
            }
            Ok(true)
        }
    }
}
