//! The completion step (issue 21.2): a load batch is submitted with `WithEvent` and a
//! StatementName that names its table and lease holder ([`lease::statement_name`]);
//! when it ends, Redshift sends "Redshift Data Statement Status Change" to EventBridge,
//! and a rule (`template.yaml`) brings it here. If the statement was left running by
//! its invocation (outcome `running`) and still holds the table's lease, this step
//! finishes that holder's protocol: it takes the lease over (the statement ended) and
//! drains the wake-ups queued meanwhile, then releases.
//!
//! Invariant: a completion event is only a hint. This step decides from the warehouse
//! (DescribeStatement, the lease row, ListStatements), never from the event's `state`,
//! so a lost, late or duplicated event changes nothing but latency: the sweep and any
//! later acquirer complete an expired lease whose statement ended the same way
//! ([`lease::acquire_if_free`], [`lease::acquire_for_event`]).
//! Invariant: a lease still live is left alone: its holder may be alive (every load
//! batch sends an event, also those its invocation waited for), and an expired lease
//! means the holder's invocation is over ([`lease::LEASE_MARGIN`]).

use serde_json::Value;
use tokio::time::Instant;

use crate::error::{ErrorKind, LoaderError};
use crate::io::storage::Storage;
use crate::io::warehouse::Warehouse;
use crate::lake::config::Route;
use crate::protocol::lease::{self, Acquired, Ctx};
use crate::run::handler::Loader;
use crate::run::outcome::{Outcome, PartitionValues};
use crate::sql::LeaseTables;

/// The event's `source` and `detail-type`
/// (<https://docs.aws.amazon.com/redshift/latest/mgmt/data-api-monitoring-events.html>).
pub const SOURCE: &str = "aws.redshift-data";
pub const DETAIL_TYPE: &str = "Redshift Data Statement Status Change";

/// What a status-change event says. Its `detail` carries `statementName`,
/// `statementId`, `state` (FINISHED / FAILED / ABORTED), `principal`, `redshiftQueryId`,
/// `rows` and `expireAt`, and no error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementChange {
    pub statement_id: String,
    pub statement_name: String,
    pub state: String,
}

/// The event, if it is a Data API status change of one of this function's statements
/// (its StatementName starts with [`lease::STATEMENT_NAME_PREFIX`]).
pub fn parse(event: &Value) -> Option<StatementChange> {
    if event.get("source").and_then(Value::as_str) != Some(SOURCE)
        || event.get("detail-type").and_then(Value::as_str) != Some(DETAIL_TYPE)
    {
        return None;
    }
    let detail = event.get("detail")?;
    let text = |k: &str| detail.get(k).and_then(Value::as_str).map(str::to_string);
    let statement_name = text("statementName")?;
    if !statement_name.starts_with(lease::STATEMENT_NAME_PREFIX) {
        return None;
    }
    Some(StatementChange {
        // An event per sub-statement would name `<batch id>:<n>` (not documented
        // either way): the batch is what holds the lease.
        statement_id: text("statementId")?
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string(),
        statement_name,
        state: text("state").unwrap_or_default(),
    })
}

impl<W: Warehouse, S: Storage> Loader<W, S> {
    /// Handles one status change of a load batch as the invocation `me`.
    pub async fn complete(
        &self,
        change: &StatementChange,
        me: &str,
        deadline: Instant,
    ) -> Result<Outcome, LoaderError> {
        let Some((route, holder)) = self.statement_route(&change.statement_name) else {
            return Ok(Outcome::Skipped {
                reason: "statement of no configured table".into(),
                bucket: String::new(),
                key: change.statement_name.clone(),
            });
        };
        let table = route.table.to_string();
        let tenure = self.tenure(me);
        let ctx = Ctx::new(
            self.warehouse(),
            self.config(),
            &route.table,
            &tenure,
            deadline,
        );
        let (state, error) = self
            .warehouse()
            .statement_status(change.statement_id.clone(), deadline)
            .await?;
        let completed = |taken_over| Outcome::Completed {
            table: table.clone(),
            statement_id: change.statement_id.clone(),
            state: state.clone(),
            taken_over,
        };
        if !matches!(state.as_str(), "FINISHED" | "FAILED" | "ABORTED") {
            // Not ended (a duplicate of an event from before a resubmit, or an event
            // of a sub-statement): its own end sends another.
            return Ok(completed(false));
        }
        let failure = (state != "FINISHED").then(|| {
            crate::run::handler::load_failure(
                &route.table,
                &change.statement_id,
                &state,
                error.as_deref(),
            )
        });
        let (current, live) = lease::lease_now(&ctx).await?;
        if current.as_deref() != Some(holder) || live {
            // Its invocation waited for it and reported its end, or whoever took the
            // lease over reloads its partition (the wake-up its invocation left) and
            // reports what that finds: nothing to report twice here.
            return Ok(completed(false));
        }
        if let Some(e) = &failure {
            tracing::error!(table, statement_id = change.statement_id, error = %e,
                error_type = %e.error_type(), "a load statement left running failed");
        }
        let taken_over = match lease::acquire_if_free(&ctx).await? {
            Acquired::Held(_) => {
                let drained = Ok(Outcome::UpToDate {
                    table: table.clone(),
                    partition: PartitionValues::default(),
                });
                self.finish_holding(&ctx, route, drained).await?;
                true
            }
            Acquired::Queued { .. } => false,
        };
        match failure {
            // Reported as a failed load is today (the invocation fails, named); the
            // partition's wake-up was drained above (and failed again, permanently).
            // A retry of this event finds the lease no longer the statement's.
            Some(e) if taken_over && e.kind() == ErrorKind::Permanent => Err(e),
            _ => Ok(completed(taken_over)),
        }
    }

    /// The route into the table a StatementName names, and the holder token in it.
    fn statement_route<'n>(&self, name: &'n str) -> Option<(&Route, &'n str)> {
        self.config().routes.iter().find_map(|r| {
            let tables = LeaseTables::for_target(&r.table);
            lease::holder_of_statement(&tables, name).map(|h| (r, h))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The example of the Redshift Management Guide's page, with our name.
    fn event(name: &str, id: &str, state: &str) -> Value {
        json!({
            "version": "0", "id": "18e7079c-dd4b-dd64-caf9-e2a31640dab0",
            "detail-type": "Redshift Data Statement Status Change",
            "source": "aws.redshift-data", "account": "123456789012",
            "time": "2020-10-01T21:14:26Z", "region": "us-east-1",
            "resources": ["arn:aws:redshift:us-east-1:123456789012:cluster:redshift-cluster-1"],
            "detail": {"principal": "arn:aws:iam::123456789012:user/myuser",
                "statementName": name, "statementId": id, "redshiftQueryId": -1,
                "state": state, "rows": 1, "expireAt": 1601673265}
        })
    }

    #[test]
    fn recognises_our_status_changes_only() {
        let ours = event(
            "partition-loader:sales.orders:req-1~0000abcd",
            "dd2e1ec9-2ee3-49a0-819f-905fa7d75a4a",
            "FINISHED",
        );
        assert_eq!(
            parse(&ours),
            Some(StatementChange {
                statement_id: "dd2e1ec9-2ee3-49a0-819f-905fa7d75a4a".into(),
                statement_name: "partition-loader:sales.orders:req-1~0000abcd".into(),
                state: "FINISHED".into(),
            })
        );
        assert_eq!(parse(&event("test.testtable", "x", "FINISHED")), None);
        let mut s3 = ours.clone();
        s3["source"] = json!("aws.s3");
        assert_eq!(parse(&s3), None);
        let sub = parse(&event("partition-loader:s.t:h", "abc:2", "FAILED"));
        assert_eq!(sub.map(|c| c.statement_id), Some("abc".to_string()));
    }
}
