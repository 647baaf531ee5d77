//! One Lambda invocation with its metrics: the handler runs under
//! [`metrics::measure`], the rows its COPYs loaded are read from Redshift's load
//! history, and the EMF record is built. main.rs prints the record; the integration
//! tests check it.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::time::Instant;

use crate::error::LoaderError;
use crate::handler::Loader;
use crate::metrics::{self, Figures, Invocation, Settings};
use crate::outcome::Outcome;
use crate::route::{self, Routed};
use crate::storage::Storage;
use crate::warehouse::Warehouse;
use crate::{event, sql};

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
        let (rows, extra) =
            metrics::measure(rows_loaded(loader, &figures.copy_query_ids, deadline)).await;
        figures.data_api_calls += extra.data_api_calls;
        figures.rows = rows;
    }
    let record = metrics::record(
        settings,
        &Invocation {
            result: result.as_ref(),
            table: table_of(loader, event),
            event_time: metrics::event_time(event),
            request_id,
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

/// The route's table for the event, when it has one.
fn table_of<W: Warehouse, S: Storage>(loader: &Loader<W, S>, event: &Value) -> Option<String> {
    let object = event::parse(event).ok()?;
    match route::route(loader.config(), &object.bucket, &object.key, object.size) {
        Routed::Load(route) => Some(route.table.to_string()),
        Routed::Skip(_) => None,
    }
}

/// Rows loaded by these COPY statements, from `SYS_LOAD_HISTORY`; `None` (and a
/// warning) when it cannot be read: a metric is left out rather than guessed.
async fn rows_loaded<W: Warehouse, S: Storage>(
    loader: &Loader<W, S>,
    query_ids: &[i64],
    deadline: Instant,
) -> Option<u64> {
    let sql = sql::loaded_rows(query_ids)?;
    let deadline = deadline.max(Instant::now() + ROWS_GRACE);
    match loader.query(sql, Vec::new(), deadline).await {
        Ok(rows) => {
            let row = rows.first()?;
            let found: usize = row.get(1)?.as_deref()?.parse().ok()?;
            if found < query_ids.len() {
                // Not every COPY is in the history (yet): a partial sum would be a guess.
                tracing::warn!(
                    found,
                    expected = query_ids.len(),
                    "load history incomplete; RowsLoaded left out"
                );
                return None;
            }
            row.first()?.as_deref()?.parse().ok()
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the load history; RowsLoaded left out");
            None
        }
    }
}
