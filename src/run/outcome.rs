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
        /// Files Redshift refused, quarantined by this load (append mode; their
        /// partition's other files loaded): `s3://` URLs. Left out of the JSON when empty.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        quarantined: Vec<String>,
    },
    UpToDate {
        table: String,
        partition: PartitionValues,
    },
    /// The route has a `ready_marker` and the partition's pending files are covered by
    /// none yet: nothing loaded, not an error; the marker's event (or the sweep once it
    /// exists) loads them.
    Waiting {
        table: String,
        partition: PartitionValues,
        /// Data files waiting.
        files: usize,
        /// The marker that would load them (`s3://bucket/prefix/d=…/_SUCCESS`).
        marker: String,
        /// Seconds since the oldest of them was written.
        waiting_seconds: u64,
    },
    /// A root marker (`<prefix>_SUCCESS`) loaded the partitions of the job it ends.
    #[serde(rename = "loaded")]
    LoadedJob {
        table: String,
        /// The root marker, `s3://bucket/prefix/_SUCCESS`.
        marker: String,
        /// Partitions with files loaded.
        partitions: usize,
        files: usize,
        /// Load transactions: 1 when the job's partitions fit one load batch (its output
        /// appears at once); more means it was loaded in chunks.
        transactions: usize,
        /// Partitions the marker found that waited for nothing (already loaded).
        up_to_date: usize,
        /// The Data API id of the (last) load batch; empty when nothing loaded.
        statement_id: String,
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
                quarantined,
            } if quarantined.is_empty() => tracing::info!(
                outcome = "loaded",
                table,
                partition = %json(partition),
                files,
                statement_id,
                "loaded"
            ),
            Outcome::Loaded {
                table,
                partition,
                files,
                statement_id,
                quarantined,
            } => tracing::warn!(
                outcome = "loaded",
                table,
                partition = %json(partition),
                files,
                statement_id,
                quarantined = %serde_json::to_string(quarantined).unwrap_or_default(),
                "loaded; files Redshift refused were quarantined"
            ),
            Outcome::UpToDate { table, partition } => tracing::info!(
                outcome = "up_to_date",
                table,
                partition = %json(partition),
                "up to date"
            ),
            Outcome::Waiting {
                table,
                partition,
                files,
                marker,
                waiting_seconds,
            } => tracing::info!(
                outcome = "waiting",
                table,
                partition = %json(partition),
                files,
                marker,
                waiting_seconds,
                "waiting for the ready marker"
            ),
            Outcome::LoadedJob {
                table,
                marker,
                partitions,
                files,
                transactions,
                up_to_date,
                statement_id,
            } => tracing::info!(
                outcome = "loaded",
                table,
                marker,
                partitions,
                files,
                transactions,
                up_to_date,
                statement_id,
                chunked = *transactions > 1,
                "loaded the job a root marker ended"
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
            quarantined: Vec::new(),
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
        let w = Outcome::Waiting {
            table: "s.t".into(),
            partition: PartitionValues(vec![("d".into(), Some("2024-05-28".into()))]),
            files: 2,
            marker: "s3://b/o/d=2024-05-28/_SUCCESS".into(),
            waiting_seconds: 7,
        };
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            r#"{"outcome":"waiting","table":"s.t","partition":{"d":"2024-05-28"},"files":2,"marker":"s3://b/o/d=2024-05-28/_SUCCESS","waiting_seconds":7}"#
        );
        let j = Outcome::LoadedJob {
            table: "s.t".into(),
            marker: "s3://b/o/_SUCCESS".into(),
            partitions: 3,
            files: 6,
            transactions: 1,
            up_to_date: 0,
            statement_id: "x".into(),
        };
        assert_eq!(j.to_json()["outcome"], "loaded");
        assert_eq!(j.to_json()["transactions"], 1);
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
