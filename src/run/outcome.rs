//! The result of one event, returned by the Lambda and logged as one JSON line.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

/// Partition values in route order (a JSON object whose keys keep that order); a NULL
/// partition value is JSON `null`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionValues(pub Vec<(String, Option<String>)>);

impl Serialize for PartitionValues {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Loaded {
        table: String,
        partition: PartitionValues,
        files: usize,
        /// The Data API id of the (last) load batch.
        statement_id: String,
    },
    UpToDate {
        table: String,
        partition: PartitionValues,
    },
    Skipped {
        reason: String,
        bucket: String,
        key: String,
    },
    /// The table's lease was held by a live holder: the object (or, for a backfill, the
    /// partition) was handed to it as a wake-up, and that holder loads it.
    Queued {
        table: String,
        partition: PartitionValues,
        /// The invocation holding the lease (its Lambda request id).
        holder: String,
    },
    /// The load batch did not end before the invocation's deadline: it runs on in
    /// Redshift and holds the table's lease (issue 21.1); its completion event, a later
    /// acquirer or the sweep finishes the protocol.
    Running {
        table: String,
        partition: PartitionValues,
        /// The Data API id of the load batch left running.
        statement_id: String,
    },
    /// A completion event of a load batch ("Redshift Data Statement Status Change")
    /// was handled: `state` is the statement's end (FINISHED / FAILED / ABORTED), and
    /// `taken_over` whether the lease was still the statement's and this invocation
    /// finished its protocol (drained the wake-ups and released it).
    Completed {
        table: String,
        statement_id: String,
        state: String,
        taken_over: bool,
    },
}

impl Outcome {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The outcome as one JSON line, exactly as the Lambda returns it: `partition` keeps
    /// the route's column order (a `serde_json::Value` would sort its keys).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The structured log line of this outcome.
    pub fn log(&self) {
        match self {
            Outcome::Loaded {
                table,
                partition,
                files,
                statement_id,
            } => tracing::info!(
                outcome = "loaded",
                table,
                partition = %json(partition),
                files,
                statement_id,
                "loaded"
            ),
            Outcome::UpToDate { table, partition } => tracing::info!(
                outcome = "up_to_date",
                table,
                partition = %json(partition),
                "up to date"
            ),
            Outcome::Skipped {
                reason,
                bucket,
                key,
            } => tracing::info!(outcome = "skipped", reason, bucket, key, "skipped"),
            Outcome::Queued {
                table,
                partition,
                holder,
            } => tracing::info!(
                outcome = "queued",
                table,
                partition = %json(partition),
                holder,
                "queued: handed to the lease holder"
            ),
            Outcome::Running {
                table,
                partition,
                statement_id,
            } => tracing::info!(
                outcome = "running",
                table,
                partition = %json(partition),
                statement_id,
                "running: the load statement holds the lease"
            ),
            Outcome::Completed {
                table,
                statement_id,
                state,
                taken_over,
            } => tracing::info!(
                outcome = "completed",
                table,
                statement_id,
                state,
                taken_over,
                "completion of a load statement handled"
            ),
        }
    }
}

fn json(p: &PartitionValues) -> String {
    serde_json::to_string(p).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loaded_outcome_shape_keeps_partition_order() {
        let o = Outcome::Loaded {
            table: "sales.orders".into(),
            partition: PartitionValues(vec![
                ("year".into(), Some("2024".into())),
                ("month".into(), Some("05".into())),
                ("day".into(), Some("28".into())),
                ("region".into(), None),
            ]),
            files: 3,
            statement_id: "abc".into(),
        };
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"outcome":"loaded","table":"sales.orders","partition":{"year":"2024","month":"05","day":"28","region":null},"files":3,"statement_id":"abc"}"#
        );
        assert_eq!(o.to_json_line(), serde_json::to_string(&o).unwrap());
    }

    #[test]
    fn other_outcomes() {
        let u = Outcome::UpToDate {
            table: "s.t".into(),
            partition: PartitionValues::default(),
        };
        assert_eq!(u.to_json()["outcome"], "up_to_date");
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            r#"{"outcome":"up_to_date","table":"s.t","partition":{}}"#
        );
        let s = Outcome::Skipped {
            reason: "no route claims this key".into(),
            bucket: "b".into(),
            key: "k".into(),
        };
        assert_eq!(s.to_json()["reason"], "no route claims this key");
        assert_eq!(s.to_json()["outcome"], "skipped");
        let q = Outcome::Queued {
            table: "s.t".into(),
            partition: PartitionValues(vec![("d".into(), Some("2024-05-28".into()))]),
            holder: "req-9".into(),
        };
        assert_eq!(
            serde_json::to_string(&q).unwrap(),
            r#"{"outcome":"queued","table":"s.t","partition":{"d":"2024-05-28"},"holder":"req-9"}"#
        );
    }
}
