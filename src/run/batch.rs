//! The function's entry shapes: a bare EventBridge event, an SQS batch of them (the
//! template's `EventBatching=sqs`), or the scheduled sweep. A batch is grouped by table
//! and partition so that each partition is loaded once per invocation, and the answer
//! names only the messages that failed (Lambda's `ReportBatchItemFailures`:
//! <https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html>).
//! Skipped objects are successes: retrying them would skip them again.

use std::collections::BTreeMap;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use serde_json::Value;
use tokio::time::Instant;

use crate::error::LoaderError;
use crate::io::storage::Storage;
use crate::io::warehouse::Warehouse;
use crate::lake::config::Config;
use crate::lake::event::{self, ObjectCreated};
use crate::lake::partition::{self, Partition};
use crate::lake::route::{self, Routed};
use crate::run::handler::Loader;
use crate::run::metrics::{self, Share};
use crate::run::outcome::Outcome;

/// The fixed payload of the template's sweep schedule.
pub const SWEEP_KEY: &str = "partition-loader";
pub const SWEEP_VALUE: &str = "sweep";

/// What one invocation was given.
#[derive(Debug)]
pub enum Invocation {
    /// One EventBridge event (direct invocation, a replay).
    Event(Value),
    /// Messages from the batch queue, each body an EventBridge event.
    SqsBatch(SqsEvent),
    /// `{"partition-loader": "sweep"}` from the schedule, optionally with
    /// `"look_back_days": N` (else the configured `SWEEP_LOOK_BACK_DAYS`).
    Sweep { look_back_days: Option<u32> },
}

/// Tells the shapes apart. An SQS batch is a `Records` array whose records say
/// `"eventSource": "aws:sqs"`; anything else is handed on as one event (whose parser
/// names what is wrong with it).
pub fn classify(payload: Value) -> Result<Invocation, LoaderError> {
    if payload.get(SWEEP_KEY).and_then(Value::as_str) == Some(SWEEP_VALUE) {
        let look_back_days = match payload.get("look_back_days") {
            None => None,
            Some(days) => {
                let days = days
                    .as_u64()
                    .and_then(|d| u32::try_from(d).ok())
                    .ok_or_else(|| {
                        LoaderError::BadEvent(format!(
                            "sweep event: look_back_days must be a whole number of days, \
                             not {days}"
                        ))
                    })?;
                // Any invoker may send it, and the sweep's cost grows with it.
                if days > crate::run::sweep::MAX_LOOK_BACK_DAYS {
                    return Err(LoaderError::BadEvent(format!(
                        "sweep event: look_back_days is {days}, above the cap of {} days",
                        crate::run::sweep::MAX_LOOK_BACK_DAYS
                    )));
                }
                Some(days)
            }
        };
        return Ok(Invocation::Sweep { look_back_days });
    }
    let is_sqs = payload
        .get("Records")
        .and_then(Value::as_array)
        .is_some_and(|records| {
            records
                .iter()
                .any(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs"))
        });
    if !is_sqs {
        return Ok(Invocation::Event(payload));
    }
    serde_json::from_value(payload)
        .map(Invocation::SqsBatch)
        .map_err(|e| LoaderError::BadEvent(format!("not an SQS batch: {e}")))
}

/// One partition's share of a batch.
#[derive(Debug)]
pub struct Group {
    /// Index of the route in the configuration.
    pub route: usize,
    pub bucket: String,
    pub partition: Partition,
    /// The objects the group's messages reported, in message order.
    pub objects: Vec<ObjectCreated>,
    /// Their message ids.
    pub message_ids: Vec<String>,
    /// The first message's event, loaded as is when the group has one message.
    pub first_event: Value,
}

/// How each message of a batch is to be handled, before any I/O.
#[derive(Debug, Default)]
pub struct BatchPlan {
    /// Keyed by (table, bucket, partition path): each is loaded once.
    pub groups: BTreeMap<(String, String, String), Group>,
    /// Messages that need no load: message id and outcome.
    pub skipped: Vec<(String, Outcome)>,
    /// Messages that cannot be loaded as they are: message id, the route's table when
    /// one claimed the key, and why.
    pub failed: Vec<(String, Option<String>, LoaderError)>,
    /// Completion events of load batches ([`crate::run::completion`]): message id and event,
    /// each handled on its own after the groups.
    pub completions: Vec<(String, Value)>,
}

/// Parses, routes and groups the messages of a batch (pure: no I/O).
pub fn plan(config: &Config, batch: &SqsEvent) -> BatchPlan {
    let mut plan = BatchPlan::default();
    for (i, record) in batch.records.iter().enumerate() {
        // Lambda always sends a message id; a hand-written batch might not.
        let id = record
            .message_id
            .clone()
            .unwrap_or_else(|| format!("record-{i}"));
        let event = match record.body.as_deref().map(serde_json::from_str::<Value>) {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                plan.failed.push((
                    id,
                    None,
                    LoaderError::BadEvent(format!("body is not JSON: {e}")),
                ));
                continue;
            }
            None => {
                plan.failed.push((
                    id,
                    None,
                    LoaderError::BadEvent("message has no body".into()),
                ));
                continue;
            }
        };
        if crate::run::completion::parse(&event).is_some() {
            plan.completions.push((id, event));
            continue;
        }
        let object = match event::parse(&event) {
            Ok(o) => o,
            Err(e) => {
                plan.failed.push((id, None, e));
                continue;
            }
        };
        let marker = crate::lake::markers::marker_of(config, &object.bucket, &object.key);
        let route = match marker
            .map(|(route, _)| Routed::Load(route))
            .unwrap_or_else(|| route::route(config, &object.bucket, &object.key, object.size))
        {
            Routed::Skip(reason) => {
                plan.skipped.push((
                    id,
                    Outcome::Skipped {
                        reason: reason.to_string(),
                        bucket: object.bucket,
                        key: object.key,
                    },
                ));
                continue;
            }
            Routed::Load(route) => route,
        };
        let root = matches!(marker, Some((_, crate::lake::markers::MarkerAt::Root)));
        let parsed = if root {
            Ok(crate::run::job::job_partition())
        } else {
            partition::parse(route, &object.key)
        };
        let partition = match parsed {
            Ok(p) => p,
            Err(e) => {
                plan.failed.push((id, Some(route.table.to_string()), e));
                continue;
            }
        };
        let index = config.route_index(route);
        let key = (
            route.table.to_string(),
            object.bucket.clone(),
            partition.path.clone(),
        );
        let group = plan.groups.entry(key).or_insert_with(|| Group {
            route: index,
            bucket: object.bucket.clone(),
            partition,
            objects: Vec::new(),
            message_ids: Vec::new(),
            first_event: event,
        });
        group.objects.push(object);
        group.message_ids.push(id);
    }
    plan
}

/// The result of one batch: the response for Lambda and what happened to each part.
#[derive(Debug, Default)]
pub struct BatchResult {
    pub response: SqsBatchResponse,
    pub outcomes: Vec<Outcome>,
    pub errors: Vec<LoaderError>,
    /// The batch's messages by table (the share of messages no table claims first),
    /// each with what its groups measured: one EMF record each
    /// ([`crate::run::invocation::handle_batch_measured`]).
    pub shares: BTreeMap<Option<String>, Share>,
}

impl BatchResult {
    fn share(&mut self, table: Option<String>) -> &mut Share {
        self.shares
            .entry(table.clone())
            .or_insert_with(|| Share::new(table))
    }
}

impl<W: Warehouse, S: Storage> Loader<W, S> {
    /// Loads an SQS batch: each (table, partition) once, one after another (groups of
    /// one table would only contend for its lease). A group of one message is handled
    /// exactly as that event alone; a larger group is loaded like a backfill of its
    /// partition (everything pending is listed and loaded), so no message of it can be
    /// answered by another message's object. Groups not started by `deadline` fail,
    /// so their messages come back after the queue's visibility timeout.
    pub async fn handle_batch(
        &self,
        batch: &SqsEvent,
        holder: &str,
        deadline: Instant,
    ) -> BatchResult {
        let plan = plan(self.config(), batch);
        let mut result = BatchResult::default();
        for (id, outcome) in plan.skipped {
            tracing::debug!(message_id = id, "skipped");
            result.share(None).count(Ok(&outcome), 1);
            result.outcomes.push(outcome);
        }
        for (id, table, error) in plan.failed {
            result.share(table).count(Err(&error), 1);
            fail(&mut result, &[id], error);
        }
        for ((table, _, _), group) in plan.groups {
            let messages = group.message_ids.len() as u64;
            if Instant::now() >= deadline {
                let error = LoaderError::NotStarted;
                result.share(Some(table)).count(Err(&error), messages);
                fail(&mut result, &group.message_ids, error);
                continue;
            }
            // Measured per group, so each table's record has its own figures; added to
            // the caller's figures too, when the caller measures.
            let (loaded, figures) = metrics::measure(async {
                // A root marker's group (its event delivered twice) is one job.
                let root = crate::lake::markers::marker_of(
                    self.config(),
                    &group.bucket,
                    &group.objects[0].key,
                )
                .is_some_and(|(_, at)| at == crate::lake::markers::MarkerAt::Root);
                if group.objects.len() == 1 || root {
                    self.handle(&group.first_event, holder, deadline).await
                } else {
                    let route = &self.config().routes[group.route];
                    self.load_partition(
                        route,
                        &group.bucket,
                        &group.partition,
                        None,
                        holder,
                        deadline,
                    )
                    .await
                }
            })
            .await;
            metrics::add(|f| f.merge(&figures));
            let share = result.share(Some(table));
            share.figures.merge(&figures);
            share.count(loaded.as_ref(), messages);
            match loaded {
                Ok(outcome) => {
                    outcome.log();
                    result.outcomes.push(outcome);
                }
                Err(e) => fail(&mut result, &group.message_ids, e),
            }
        }
        // After the loads: a completion takes over a lease only if its statement ended,
        // and the groups above may have queued behind it.
        for (id, event) in plan.completions {
            let ids = [id];
            if Instant::now() >= deadline {
                let error = LoaderError::NotStarted;
                result.share(None).count(Err(&error), 1);
                fail(&mut result, &ids, error);
                continue;
            }
            let (done, figures) = metrics::measure(self.handle(&event, holder, deadline)).await;
            metrics::add(|f| f.merge(&figures));
            let share = result.share(None);
            share.figures.merge(&figures);
            share.count(done.as_ref(), 1);
            match done {
                Ok(outcome) => {
                    outcome.log();
                    result.outcomes.push(outcome);
                }
                Err(e) => fail(&mut result, &ids, e),
            }
        }
        result
    }
}

/// Logs the failure as the direct invocation does (the permanent-errors alarm counts
/// these lines) and names its messages in the response.
fn fail(result: &mut BatchResult, message_ids: &[String], error: LoaderError) {
    tracing::error!(
        error_type = %error.error_type(),
        error = %error,
        message_ids = ?message_ids,
        "batch messages failed"
    );
    for id in message_ids {
        result.response.add_failure(id.clone());
    }
    result.errors.push(error);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> Config {
        Config::for_tests(
            r#"
            [[routes]]
            bucket = "lake"
            prefix = "orders/"
            table = "s.orders"
            format = "parquet"
            partition_columns = [{ name = "order_date", type = "date" }]

            [[routes]]
            bucket = "lake"
            prefix = "events/"
            table = "s.events"
            format = "parquet"
            partition_columns = [{ name = "day", type = "date" }]
        "#,
        )
    }

    fn event(key: &str) -> Value {
        json!({
            "version": "0", "id": "e", "detail-type": "Object Created", "source": "aws.s3",
            "account": "123456789012", "time": "2024-05-29T02:14:07Z", "region": "us-east-1",
            "resources": [], "detail": {"bucket": {"name": "lake"},
            "object": {"key": key, "size": 10, "etag": "abc"}}
        })
    }

    fn record(id: &str, body: &str) -> Value {
        json!({"messageId": id, "receiptHandle": "r", "body": body, "attributes": {},
               "messageAttributes": {}, "eventSource": "aws:sqs",
               "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "awsRegion": "us-east-1"})
    }

    fn batch(records: Vec<Value>) -> SqsEvent {
        match classify(json!({ "Records": records })).expect("classify") {
            Invocation::SqsBatch(b) => b,
            other => panic!("not a batch: {other:?}"),
        }
    }

    #[test]
    fn classify_tells_the_three_shapes_apart() {
        assert!(matches!(
            classify(json!({"partition-loader": "sweep"})),
            Ok(Invocation::Sweep {
                look_back_days: None
            })
        ));
        assert!(matches!(
            classify(json!({"partition-loader": "sweep", "look_back_days": 7})),
            Ok(Invocation::Sweep {
                look_back_days: Some(7)
            })
        ));
        let e = classify(json!({"partition-loader": "sweep", "look_back_days": 400})).unwrap_err();
        assert_eq!(e.error_type(), "Permanent.BadEvent");
        assert!(e.to_string().contains("cap of 31 days"), "{e}");
        assert!(matches!(
            classify(json!({"partition-loader": "sweep", "look_back_days": 31})),
            Ok(Invocation::Sweep {
                look_back_days: Some(31)
            })
        ));
        for bad in [json!(-1), json!("7"), json!(1.5)] {
            let e = classify(json!({"partition-loader": "sweep", "look_back_days": bad}));
            assert!(
                matches!(&e, Err(LoaderError::BadEvent(m)) if m.contains("look_back_days")),
                "{e:?}"
            );
        }
        assert!(matches!(
            classify(event("orders/order_date=2024-05-28/a.parquet")),
            Ok(Invocation::Event(_))
        ));
        // Records that are not from SQS (an S3 notification) stay one event, whose
        // parser then says what is wrong.
        assert!(matches!(
            classify(json!({"Records": [{"eventSource": "aws:s3"}]})),
            Ok(Invocation::Event(_))
        ));
        assert!(matches!(
            classify(json!({"Records": [record("m1", "{}")]})),
            Ok(Invocation::SqsBatch(_))
        ));
        assert!(matches!(
            classify(json!({"Records": [{"eventSource": "aws:sqs", "body": 5}]})),
            Err(LoaderError::BadEvent(_))
        ));
    }

    #[test]
    fn ready_markers_join_their_partition_and_a_root_marker_is_one_job() {
        let config = Config::for_tests(
            r#"
            [[routes]]
            bucket = "lake"
            prefix = "orders/"
            table = "s.orders"
            format = "parquet"
            partition_columns = [{ name = "order_date", type = "date" }]
            ready_marker = "_SUCCESS"
        "#,
        );
        let e = |k: &str| event(k).to_string();
        let b = batch(vec![
            record("m1", &e("orders/order_date=2024-05-28/a.parquet")),
            record("m2", &e("orders/order_date=2024-05-28/_SUCCESS")),
            record("m3", &e("orders/_SUCCESS")),
            record("m4", &e("orders/_SUCCESS")),
            record("m5", &e("orders/._SUCCESS.crc")),
        ]);
        let plan = plan(&config, &b);
        let groups: Vec<(&str, usize)> = plan
            .groups
            .iter()
            .map(|((_, _, path), g)| (path.as_str(), g.message_ids.len()))
            .collect();
        assert_eq!(groups, [("", 2), ("order_date=2024-05-28/", 2)]);
        assert_eq!(plan.skipped.len(), 1);
        assert!(plan.failed.is_empty(), "{:?}", plan.failed);
    }

    #[test]
    fn groups_by_table_and_partition_and_sorts_out_skips_and_failures() {
        let e = |k: &str| event(k).to_string();
        let b = batch(vec![
            record("m1", &e("orders/order_date=2024-05-28/a.parquet")),
            record("m2", &e("orders/order_date=2024-05-28/b.parquet")),
            record("m3", &e("orders/order_date=2024-05-29/c.parquet")),
            record("m4", &e("events/day=2024-05-28/d.parquet")),
            record("m5", &e("orders/order_date=2024-05-28/_SUCCESS")),
            record("m6", &e("elsewhere/x.parquet")),
            record("m7", "not json"),
            record("m8", &e("orders/order_date=yesterday/e.parquet")),
            record("m9", &json!({"source": "aws.ec2"}).to_string()),
        ]);
        let plan = plan(&config(), &b);
        let groups: Vec<_> = plan
            .groups
            .iter()
            .map(|((t, _, p), g)| (t.as_str(), p.as_str(), g.message_ids.join(",")))
            .collect();
        assert_eq!(
            groups,
            [
                ("s.events", "day=2024-05-28/", "m4".to_string()),
                ("s.orders", "order_date=2024-05-28/", "m1,m2".to_string()),
                ("s.orders", "order_date=2024-05-29/", "m3".to_string()),
            ]
        );
        let skipped: Vec<_> = plan.skipped.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(skipped, ["m5", "m6"]);
        let failed: Vec<_> = plan
            .failed
            .iter()
            .map(|(id, table, e)| (id.as_str(), table.as_deref(), e.name()))
            .collect();
        assert_eq!(
            failed,
            [
                ("m7", None, "BadEvent"),
                ("m8", Some("s.orders"), "BadPartition"),
                ("m9", None, "BadEvent")
            ]
        );
    }
}
