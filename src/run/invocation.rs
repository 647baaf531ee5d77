//! One Lambda invocation with its metrics: the handler runs under
//! [`metrics::measure`], the rows its COPYs loaded are read from Redshift's load
//! history, and the EMF records are built. main.rs prints them; the integration tests
//! check them. Every entry shape is measured: one event ([`handle_measured`], one
//! record), an SQS batch ([`handle_batch_measured`]) and the sweep ([`sweep_measured`]),
//! the last two with one record per table they touched (see [`metrics::Share`]).

use std::time::{Duration, SystemTime};

use aws_lambda_events::sqs::SqsEvent;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::error::LoaderError;
use crate::io::storage::Storage;
use crate::io::warehouse::Warehouse;
use crate::lake::route::{self, Routed};
use crate::lake::watermark::Gate;
use crate::run::batch::BatchResult;
use crate::run::handler::Loader;
use crate::run::metrics::{self, Figures, Invocation, Settings, Share};
use crate::run::outcome::Outcome;
use crate::{lake::event, sql};

/// The sweep's outcome for a table whose lease, ledger and wake-up tables do not exist
/// yet, and what to do.
pub const NOT_BOOTSTRAPPED: &str = "not_bootstrapped";
const BOOTSTRAP_FIX: &str =
    "run `loaderctl bootstrap --grant-to <the function's database user>` (README, First deploy)";

/// Time granted to the load-history read after the work, even near the deadline.
const ROWS_GRACE: Duration = Duration::from_secs(2);

/// The result of one invocation and its EMF record.
#[derive(Debug)]
pub struct Measured {
    pub result: Result<Outcome, LoaderError>,
    pub figures: Figures,
    pub record: Value,
}

/// Runs [`Loader::handle`] and measures it.
pub async fn handle_measured<W: Warehouse, S: Storage>(
    loader: &Loader<W, S>,
    settings: &Settings,
    event: &Value,
    request_id: &str,
    deadline: Instant,
) -> Measured {
    let (result, mut figures) = metrics::measure(loader.handle(event, request_id, deadline)).await;
    if figures.committed_at.is_some() {
        let (history, extra) =
            metrics::measure(rows_loaded(loader, &figures.copy_query_ids, deadline)).await;
        figures.data_api_calls += extra.data_api_calls;
        history.apply(&mut figures);
    }
    let record = metrics::record(
        settings,
        &Invocation {
            result: result.as_ref(),
            table: table_of(loader, event),
            request_id: crate::protocol::lease::request_of(request_id),
            figures: &figures,
            now: SystemTime::now(),
        },
    );
    Measured {
        result,
        figures,
        record,
    }
}

/// An invocation of several events and its EMF records (one per table touched).
#[derive(Debug)]
pub struct MeasuredMany<T> {
    pub result: T,
    pub records: Vec<Value>,
}

/// Runs [`Loader::handle_batch`] and measures it: one record per table the batch's
/// messages reached, and one for the messages no table claims (skips, unparsable
/// bodies), each with its own figures, outcome counts (per message) and lags.
pub async fn handle_batch_measured<W: Warehouse, S: Storage>(
    loader: &Loader<W, S>,
    settings: &Settings,
    batch: &SqsEvent,
    request_id: &str,
    deadline: Instant,
) -> MeasuredMany<BatchResult> {
    let mut result = loader.handle_batch(batch, request_id, deadline).await;
    let mut shares: Vec<Share> = std::mem::take(&mut result.shares).into_values().collect();
    for share in &mut shares {
        add_rows(loader, share, deadline).await;
    }
    let records = metrics::records(
        settings,
        &shares,
        "sqs_batch",
        crate::protocol::lease::request_of(request_id),
        SystemTime::now(),
    );
    MeasuredMany { result, records }
}

/// The schedule's sweep over the last `days` days, measured: one record per table
/// (partitions counted by outcome; the freshness lag of every file it commits, from
/// the file's LastModified). The result fails, naming the first error, when any
/// table's sweep failed; every outcome is logged. A table not bootstrapped yet is an
/// outcome (`not_bootstrapped`, with the fix), not an error.
pub async fn sweep_measured<W: Warehouse, S: Storage>(
    loader: &Loader<W, S>,
    settings: &Settings,
    days: u32,
    request_id: &str,
    deadline: Instant,
) -> MeasuredMany<Result<Value, LoaderError>> {
    // S3 only: nothing new since a clean sweep and nothing left in Redshift means no
    // Data API call at all (issue 21 item 6; see `lake::watermark`).
    let (gate, opened) = loader.sweep_gate_open(days).await;
    let gate_reason = match gate {
        Gate::Idle => {
            tracing::info!(
                outcome = "idle",
                "sweep: nothing new in S3 since the last clean sweep; Redshift not queried"
            );
            let records = metrics::records(
                settings,
                &[],
                "sweep",
                crate::protocol::lease::request_of(request_id),
                SystemTime::now(),
            );
            let answer = json!({"outcome": "swept", "days": days, "idle": true,
                "outcomes": [], "upkeep": crate::ops::upkeep::report_json(&[], 0),
                "data_api_calls": 0});
            return MeasuredMany {
                result: Ok(answer),
                records,
            };
        }
        Gate::Query(reason) => reason,
    };
    let mut shares = Vec::new();
    let mut outcomes = Vec::new();
    let mut first_error = None;
    // Whether the sweep left nothing behind (the watermark may then be clean).
    let mut clean = true;
    let reserve = crate::run::sweep::sweep_reserve(deadline);
    for routes in crate::run::sweep::sweep_order(&loader.config().routes, request_id) {
        // As `Loader::sweep`: no table is started within the reserve.
        if Instant::now() + reserve >= deadline {
            tracing::info!(table = %routes[0].table,
                "sweep deadline near: this table and those after it wait for the next sweep");
            break;
        }
        let (results, figures) = metrics::measure(Box::pin(
            loader.sweep_table(&routes, request_id, days, deadline),
        ))
        .await;
        let mut share = Share::new(Some(routes[0].table.to_string()));
        share.figures = figures;
        for result in results {
            if let Err(LoaderError::NotBootstrapped { table, .. }) = &result {
                // Between deploy and `loaderctl bootstrap` every scheduled sweep would
                // fail, page and fill the failure queue: one clear outcome instead, not
                // an error (an event for the table still fails NotBootstrapped).
                tracing::warn!(
                    outcome = NOT_BOOTSTRAPPED,
                    table,
                    fix = BOOTSTRAP_FIX,
                    "sweep skipped a table"
                );
                outcomes.push(
                    json!({"outcome": NOT_BOOTSTRAPPED, "table": table, "fix": BOOTSTRAP_FIX}),
                );
                clean = false;
                continue;
            }
            clean &= leaves_nothing(&result);
            share.count(result.as_ref(), 1);
            match result {
                Ok(outcome) => {
                    outcome.log();
                    outcomes.push(outcome.to_json());
                }
                Err(e) => {
                    tracing::error!(error_type = %e.error_type(), error = %e, holder = request_id,
                        "sweep failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        add_rows(loader, &mut share, deadline).await;
        shares.push(share);
    }
    // After the loads, within the same deadline; never turns the sweep into a failure.
    let (upkept, upkeep_figures) = metrics::measure(loader.upkeep_after_loads(deadline)).await;
    let upkeep = crate::ops::upkeep::report_json(&upkept, upkeep_figures.data_api_calls);
    // Cut by its deadline (tables not reached, or a table's rest), or a VACUUM deferred
    // (another runs): the next sweep must query although S3 may show nothing new. An
    // upkeep error is not (a missing grant would keep every sweep querying; upkeep is
    // best effort, and the watermark's expiry retries it).
    clean &= Instant::now() + reserve < deadline && upkept.iter().all(|t| t.deferred.is_none());
    loader.sweep_gate_close(opened, clean, request_id).await;
    let data_api_calls = shares.iter().map(|s| s.figures.data_api_calls).sum::<u64>()
        + upkeep_figures.data_api_calls;
    let records = metrics::records(
        settings,
        &shares,
        "sweep",
        crate::protocol::lease::request_of(request_id),
        SystemTime::now(),
    );
    let result = match first_error {
        Some(e) => Err(e),
        None => Ok(
            json!({"outcome": "swept", "days": days, "idle": false, "queried_because": gate_reason,
                "outcomes": outcomes, "upkeep": upkeep, "data_api_calls": data_api_calls}),
        ),
    };
    MeasuredMany { result, records }
}

/// Whether a sweep result leaves no work in Redshift that S3's listing would not show:
/// loaded, up to date and skipped do; a table found busy (its holder may be cut by its
/// deadline), a failure, and any other outcome (say, a statement still running) do not.
fn leaves_nothing(result: &Result<Outcome, LoaderError>) -> bool {
    matches!(
        result,
        Ok(Outcome::Loaded { .. } | Outcome::UpToDate { .. } | Outcome::Skipped { .. })
    )
}

/// Reads the rows a share's COPYs loaded (one Data API round per table that loaded).
async fn add_rows<W: Warehouse, S: Storage>(
    loader: &Loader<W, S>,
    share: &mut Share,
    deadline: Instant,
) {
    if share.figures.committed_at.is_none() {
        return;
    }
    let (history, extra) =
        metrics::measure(rows_loaded(loader, &share.figures.copy_query_ids, deadline)).await;
    share.figures.data_api_calls += extra.data_api_calls;
    history.apply(&mut share.figures);
}

/// The route's table for the event, when it has one.
fn table_of<W: Warehouse, S: Storage>(loader: &Loader<W, S>, event: &Value) -> Option<String> {
    let object = event::parse(event).ok()?;
    if let Some((route, _)) =
        crate::lake::markers::marker_of(loader.config(), &object.bucket, &object.key)
    {
        return Some(route.table.to_string());
    }
    match route::route(loader.config(), &object.bucket, &object.key, object.size) {
        Routed::Load(route) => Some(route.table.to_string()),
        Routed::Skip(_) => None,
    }
}

/// What Redshift's history says about an invocation's COPYs.
#[derive(Debug, Default)]
struct CopyHistory {
    rows: Option<u64>,
    queue: Option<Duration>,
    execution: Option<Duration>,
}

impl CopyHistory {
    fn apply(self, figures: &mut Figures) {
        figures.rows = self.rows;
        figures.copy_queue_time = self.queue;
        figures.copy_execution_time = self.execution;
    }
}

/// Rows loaded by these COPY statements, from `SYS_LOAD_HISTORY`, and their queue and
/// execution time from `SYS_QUERY_HISTORY`, in one statement; each `None` (and a
/// warning) when it cannot be read: a metric is left out rather than guessed.
async fn rows_loaded<W: Warehouse, S: Storage>(
    loader: &Loader<W, S>,
    query_ids: &[i64],
    deadline: Instant,
) -> CopyHistory {
    let Some(sql) = sql::loaded_rows(query_ids) else {
        return CopyHistory::default();
    };
    let deadline = deadline.max(Instant::now() + ROWS_GRACE);
    match loader.query(sql, Vec::new(), deadline).await {
        Ok(rows) => {
            let Some(row) = rows.first() else {
                return CopyHistory::default();
            };
            let micros = |i: usize| -> Option<Duration> {
                let n: f64 = row.get(i)?.as_deref()?.parse().ok()?;
                (n >= 0.0).then(|| Duration::from_micros(n as u64))
            };
            CopyHistory {
                rows: rows_of(row, query_ids.len()),
                queue: micros(2),
                execution: micros(3),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the load history; RowsLoaded left out");
            CopyHistory::default()
        }
    }
}

/// The load history's rows of `expected` COPYs, when every one of them is there.
fn rows_of(row: &crate::io::warehouse::Row, expected: usize) -> Option<u64> {
    let found: usize = row.get(1)?.as_deref()?.parse().ok()?;
    if found < expected {
        // Not every COPY is in the history (yet): a partial sum would be a guess.
        tracing::warn!(
            found,
            expected,
            "load history incomplete; RowsLoaded left out"
        );
        return None;
    }
    row.first()?.as_deref()?.parse().ok()
}
