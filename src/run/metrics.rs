//! Metrics of one invocation in CloudWatch Embedded Metric Format (EMF): one JSON log
//! record per invocation, which CloudWatch Logs turns into metrics.
//!
//! Specification: <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>
//!
//! - [`Figures`] are what an invocation measured. The warehouse adapter and the handler
//!   add to them through [`add`], which writes into the figures of the invocation that
//!   runs [`measure`] (a tokio task-local), and does nothing anywhere else (loaderctl,
//!   tests that do not measure). So the figures travel without new arguments through
//!   the load path.
//! - [`record`] is pure: outcome (or error) + figures + [`Settings`] → the EMF record.
//!
//! Every record carries two dimension sets: the configured one (default `Table`) and the
//! empty set, whose metrics aggregate over all tables (the alarms watch those). An
//! error also carries a second directive with the `ErrorType` dimension and the metric
//! `Errors`, so errors can be graphed by type. Records without a table (a skipped key,
//! an unparsable event) carry only the empty set, because every dimension key of a
//! directive must be a member of the record.
//!
//! Invariant: no metric value is guessed. Rows come from Redshift's load history
//! (`SYS_LOAD_HISTORY.loaded_rows` of the load's COPY statements) and are left out when
//! it could not be read. Freshness lag is measured per file this invocation committed,
//! from the object's S3 LastModified (when it was written, which is when S3 emits the
//! event) to the commit of its load: so objects handed off to a holder, loaded while it
//! drains, and files the sweep finds without an event are measured too, by whoever
//! commits them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::error::{ErrorKind, LoaderError};
use crate::run::outcome::Outcome;

/// Namespace when `METRICS_NAMESPACE` is not set.
pub const DEFAULT_NAMESPACE: &str = "PartitionLoader";

/// Outcomes that every record counts (0 or 1), so that sums over time are right even for
/// outcomes that did not happen. An outcome not listed (a newer one) is counted too,
/// under its CamelCase name.
pub const OUTCOMES: [&str; 5] = ["loaded", "up_to_date", "queued", "skipped", "waiting"];

/// A dimension the user can choose in `METRICS_DIMENSIONS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// The target table, `schema.table`.
    Table,
    /// The Lambda function (`AWS_LAMBDA_FUNCTION_NAME`), for several loaders in one
    /// namespace.
    FunctionName,
}

impl Dimension {
    fn key(self) -> &'static str {
        match self {
            Dimension::Table => "Table",
            Dimension::FunctionName => "FunctionName",
        }
    }
}

/// Where and how metrics are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub namespace: String,
    /// The configured dimension set (may be empty: aggregate metrics only).
    pub dimensions: Vec<Dimension>,
    /// Value of the `FunctionName` dimension.
    pub function_name: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            namespace: DEFAULT_NAMESPACE.into(),
            dimensions: vec![Dimension::Table],
            function_name: None,
        }
    }
}

impl Settings {
    /// `METRICS_NAMESPACE` (default `PartitionLoader`), `METRICS_DIMENSIONS` (comma
    /// list of `Table`, `FunctionName`; default `Table`; empty = none),
    /// `AWS_LAMBDA_FUNCTION_NAME`.
    pub fn from_env() -> Result<Settings, LoaderError> {
        let var = |name: &str| std::env::var(name).ok();
        Settings::parse(
            var("METRICS_NAMESPACE").as_deref(),
            var("METRICS_DIMENSIONS").as_deref(),
            var("AWS_LAMBDA_FUNCTION_NAME"),
        )
    }

    /// [`Settings::from_env`] on given values.
    pub fn parse(
        namespace: Option<&str>,
        dimensions: Option<&str>,
        function_name: Option<String>,
    ) -> Result<Settings, LoaderError> {
        let namespace = namespace.unwrap_or(DEFAULT_NAMESPACE).trim().to_string();
        check_namespace(&namespace).map_err(|reason| {
            LoaderError::Config(format!("METRICS_NAMESPACE {namespace:?}: {reason}"))
        })?;
        let dimensions = dimensions
            .unwrap_or("Table")
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| match d {
                "Table" => Ok(Dimension::Table),
                "FunctionName" => Ok(Dimension::FunctionName),
                other => Err(LoaderError::Config(format!(
                    "METRICS_DIMENSIONS: unknown dimension {other:?} (use Table, FunctionName, \
                     comma-separated, or an empty value for none)"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Settings {
            namespace,
            dimensions,
            function_name: function_name.filter(|f| !f.is_empty()),
        })
    }
}

/// CloudWatch's namespace rule: 1 to 255 characters of letters, digits and `.-_/#: `,
/// not starting with `AWS/` (reserved for AWS services).
fn check_namespace(ns: &str) -> Result<(), &'static str> {
    if ns.is_empty() || ns.len() > 255 {
        return Err("must be 1 to 255 characters");
    }
    if !ns
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ".-_/#: ".contains(c))
    {
        return Err("may hold only letters, digits, spaces and . - _ / # :");
    }
    if ns.starts_with("AWS/") {
        return Err("AWS/ is reserved for AWS services");
    }
    Ok(())
}

/// What one invocation measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Files and bytes committed by this invocation's load batches.
    pub files: u64,
    pub bytes: u64,
    /// Rows loaded, from Redshift's load history (`None`: not read).
    pub rows: Option<u64>,
    /// Time from the first acquire attempt until the lease was held (or the wait ended).
    pub lease_wait: Duration,
    /// Time spent in load batches (COPY, ledger, fence), submit to end.
    pub copy_time: Duration,
    /// The COPYs' time waiting in a WLM queue and running, from `SYS_QUERY_HISTORY`
    /// (`None`: not read). Beside `copy_time`, they tell a slow load from a queued one.
    pub copy_queue_time: Option<Duration>,
    pub copy_execution_time: Option<Duration>,
    /// Data API requests sent (submits, polls, result pages, retries included).
    pub data_api_calls: u64,
    /// Redshift query ids of the COPY statements of finished batches.
    pub copy_query_ids: Vec<i64>,
    /// When the last load batch was seen committed.
    pub committed_at: Option<SystemTime>,
    /// Seconds from each committed file's S3 LastModified to its load's commit.
    pub freshness_lags: Vec<f64>,
    /// The longest a partition seen here has waited for its ready marker (since its
    /// oldest waiting file was written); `Some(0)` when a sweep of a route with a
    /// marker found none waiting, `None` when no such route was looked at.
    pub oldest_marker_wait: Option<Duration>,
    /// Files Redshift refused that this invocation quarantined (`QuarantinedFiles`).
    pub quarantined: u64,
}

tokio::task_local! {
    static FIGURES: RefCell<Figures>;
}

/// Runs `work` with fresh figures that [`add`] writes into, and returns them with its
/// output. Figures added by tasks that `work` spawns are not seen.
pub async fn measure<F: Future>(work: F) -> (F::Output, Figures) {
    FIGURES
        .scope(RefCell::new(Figures::default()), async move {
            let out = work.await;
            (out, FIGURES.with(|f| f.take()))
        })
        .await
}

/// Adds to the figures of the invocation being measured; nothing outside [`measure`].
pub fn add(f: impl FnOnce(&mut Figures)) {
    let _ = FIGURES.try_with(|figures| f(&mut figures.borrow_mut()));
}

/// One invocation, as the record describes it.
#[derive(Debug)]
pub struct Invocation<'a> {
    pub result: Result<&'a Outcome, &'a LoaderError>,
    /// The route's table, when the event reached one.
    pub table: Option<String>,
    /// The Lambda request id (a property, not a dimension).
    pub request_id: &'a str,
    pub figures: &'a Figures,
    /// The record's `_aws.Timestamp`.
    pub now: SystemTime,
}

/// One failed event of a [`Share`].
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// [`LoaderError::error_type`], the `ErrorType` dimension.
    pub error_type: String,
    pub kind: ErrorKind,
    /// The error's words (a record property, for Logs Insights).
    pub message: String,
}

/// One table's share of an invocation (or the share of the events no table claims:
/// skipped or unparsable ones): what one record describes. A single event is one share;
/// an SQS batch or a sweep has one per table it touched, because a record can carry
/// only one value per dimension (one `Table`), and freshness is asked per table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Share {
    /// The route's table; `None` for events that reached no table.
    pub table: Option<String>,
    /// Events per outcome name (`loaded`, `up_to_date`, …): a batch group of three
    /// messages loaded by one COPY counts 3 `loaded`.
    pub outcomes: BTreeMap<String, u64>,
    /// One per failed event.
    pub failures: Vec<Failure>,
    /// What the share's work measured.
    pub figures: Figures,
}

impl Share {
    pub fn new(table: Option<String>) -> Share {
        Share {
            table,
            ..Share::default()
        }
    }

    /// Counts `events` events that ended in `result`.
    pub fn count(&mut self, result: Result<&Outcome, &LoaderError>, events: u64) {
        match result {
            Ok(outcome) => *self.outcomes.entry(outcome_name(outcome)).or_default() += events,
            Err(e) => {
                let failure = Failure {
                    error_type: e.error_type(),
                    kind: e.kind(),
                    message: e.to_string(),
                };
                self.failures
                    .extend(std::iter::repeat_n(failure, events as usize));
            }
        }
    }
}

impl Figures {
    /// Adds `other` (measured by a part of the same invocation) to these figures.
    pub fn merge(&mut self, other: &Figures) {
        self.files += other.files;
        self.bytes += other.bytes;
        self.rows = match (self.rows, other.rows) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.lease_wait += other.lease_wait;
        self.copy_time += other.copy_time;
        let add = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.copy_queue_time = add(self.copy_queue_time, other.copy_queue_time);
        self.copy_execution_time = add(self.copy_execution_time, other.copy_execution_time);
        self.data_api_calls += other.data_api_calls;
        self.copy_query_ids.extend(&other.copy_query_ids);
        self.committed_at = self.committed_at.max(other.committed_at);
        self.freshness_lags.extend(&other.freshness_lags);
        self.oldest_marker_wait = self.oldest_marker_wait.max(other.oldest_marker_wait);
        self.quarantined += other.quarantined;
    }
}

/// `loaded`, `up_to_date`, … as the outcome's JSON says it.
fn outcome_name(outcome: &Outcome) -> String {
    outcome.to_json()["outcome"]
        .as_str()
        .unwrap_or("unknown")
        .to_string()
}

/// `loaded` → `Loaded`, `up_to_date` → `UpToDate`.
fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|first| first.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Seconds from an object's LastModified to the commit of its load; `None` without a
/// LastModified, 0 under clock skew.
pub fn freshness_lag(written: Option<SystemTime>, committed: SystemTime) -> Option<f64> {
    let lag = committed.duration_since(written?).unwrap_or_default();
    Some(lag.as_millis() as f64 / 1000.0)
}

/// Values in one metric's array: the specification (module documentation) allows an
/// array of numbers, at most 100 of them; AWS's own EMF libraries split at the same
/// limit (`MAX_DATAPOINTS_PER_METRIC = 100` in aws-embedded-metrics).
const MAX_VALUES: usize = 100;

/// The EMF record of one event's invocation (see the module documentation for its
/// shape).
pub fn record(settings: &Settings, inv: &Invocation<'_>) -> Value {
    let mut share = Share::new(inv.table.clone());
    share.count(inv.result, 1);
    share.figures = inv.figures.clone();
    let mut records = share_records(settings, &share, inv.request_id, inv.now);
    let mut record = records.swap_remove(0);
    if let Value::Object(root) = &mut record {
        let outcome = match inv.result {
            Ok(o) => outcome_name(o),
            Err(_) => "error".to_string(),
        };
        root.insert("outcome".into(), json!(outcome));
        if let Ok(Outcome::Loaded { statement_id, .. }) = inv.result {
            root.insert("statement_id".into(), json!(statement_id));
        }
    }
    record
}

/// The record of a function that cannot start (bad routes, an unreadable routes source,
/// bad metrics settings): printed before the process exits, so that `PermanentErrors`
/// (and `Errors` by `ErrorType`) count it like any failed invocation. Without it the
/// failure is only in the logs: no invocation runs, so no other record is printed.
pub fn startup_record(settings: &Settings, error: &LoaderError, now: SystemTime) -> Value {
    let mut record = record(
        settings,
        &Invocation {
            result: Err(error),
            table: None,
            request_id: "",
            figures: &Figures::default(),
            now,
        },
    );
    if let Value::Object(root) = &mut record {
        root.remove("request_id");
        root.insert("invocation".into(), json!("startup"));
    }
    record
}

/// The EMF records of an invocation of several events (an SQS batch, a sweep): one per
/// share, each with `invocation` = `kind`, in the order given; plus, for a share whose
/// failures have more than one error type, one small record per type (the `ErrorType`
/// dimension takes one value per record).
pub fn records(
    settings: &Settings,
    shares: &[Share],
    kind: &str,
    request_id: &str,
    now: SystemTime,
) -> Vec<Value> {
    let mut out = Vec::new();
    for share in shares {
        for mut record in share_records(settings, share, request_id, now) {
            if let Value::Object(root) = &mut record {
                root.insert("invocation".into(), json!(kind));
            }
            out.push(record);
        }
    }
    out
}

/// The record of one share, then the per-type error records it needs.
fn share_records(
    settings: &Settings,
    share: &Share,
    request_id: &str,
    now: SystemTime,
) -> Vec<Value> {
    let f = &share.figures;
    let mut root = Map::new();
    let mut metrics: Vec<(String, &str, Value)> = Vec::new();
    let mut metric = |name: &str, unit: &'static str, value: Value| {
        metrics.push((name.to_string(), unit, value))
    };

    for name in OUTCOMES {
        let n = share.outcomes.get(name).copied().unwrap_or_default();
        metric(&camel(name), "Count", json!(n));
    }
    for (name, n) in &share.outcomes {
        if !OUTCOMES.contains(&name.as_str()) {
            metric(&camel(name), "Count", json!(n));
        }
    }
    let of_kind = |k: ErrorKind| share.failures.iter().filter(|e| e.kind == k).count();
    metric("Errors", "Count", json!(share.failures.len()));
    metric(
        "PermanentErrors",
        "Count",
        json!(of_kind(ErrorKind::Permanent)),
    );
    metric(
        "RetryableErrors",
        "Count",
        json!(of_kind(ErrorKind::Retryable)),
    );
    metric("FilesLoaded", "Count", json!(f.files));
    metric("BytesLoaded", "Bytes", json!(f.bytes));
    // Every record has it (0 when nothing was refused): the alarm on it never lacks data.
    metric("QuarantinedFiles", "Count", json!(f.quarantined));
    // Files far from COPY's liking (loaderctl status advises) show here first.
    if let Some(mean) = f.bytes.checked_div(f.files) {
        metric("MeanFileSize", "Bytes", json!(mean));
    }
    if let Some(rows) = f.rows {
        metric("RowsLoaded", "Count", json!(rows));
    }
    metric("LeaseWait", "Milliseconds", json!(millis(f.lease_wait)));
    metric("CopyTime", "Milliseconds", json!(millis(f.copy_time)));
    if let Some(queue) = f.copy_queue_time {
        metric("CopyQueueTime", "Milliseconds", json!(millis(queue)));
    }
    if let Some(execution) = f.copy_execution_time {
        metric(
            "CopyExecutionTime",
            "Milliseconds",
            json!(millis(execution)),
        );
    }
    metric("DataApiCalls", "Count", json!(f.data_api_calls));
    // One value per committed file; several as an array (each is a sample for the
    // statistics), the largest kept when there are more than the format allows.
    match f.freshness_lags.as_slice() {
        [] => {}
        [lag] => metric("FreshnessLag", "Seconds", json!(lag)),
        lags => {
            let mut lags = lags.to_vec();
            lags.sort_by(|a, b| b.total_cmp(a));
            lags.truncate(MAX_VALUES);
            metric("FreshnessLag", "Seconds", json!(lags));
        }
    }

    // Alarm on it: a job that never writes its marker leaves its partitions unloaded.
    if let Some(wait) = f.oldest_marker_wait {
        metric("OldestMarkerWaitSeconds", "Seconds", json!(wait.as_secs()));
    }

    // Dimension values: a configured dimension without a value (no table for a skip)
    // drops the whole configured set, keeping the aggregate one.
    let values: Option<Vec<(&str, String)>> = settings
        .dimensions
        .iter()
        .map(|d| {
            let value = match d {
                Dimension::Table => share.table.clone(),
                Dimension::FunctionName => settings.function_name.clone(),
            };
            value.map(|v| (d.key(), v))
        })
        .collect();
    let mut sets: Vec<Vec<&str>> = Vec::new();
    if let Some(values) = values.filter(|v| !v.is_empty()) {
        sets.push(values.iter().map(|(k, _)| *k).collect());
        for (k, v) in values {
            root.insert(k.to_string(), json!(v));
        }
    }
    sets.push(Vec::new());

    let definitions: Vec<Value> = metrics
        .iter()
        .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
        .collect();
    let mut directives = vec![json!({
        "Namespace": settings.namespace,
        "Dimensions": sets,
        "Metrics": definitions,
    })];
    for (name, _, value) in metrics {
        root.insert(name, value);
    }
    let mut types: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &share.failures {
        *types.entry(e.error_type.as_str()).or_default() += 1;
    }
    let mut extra = Vec::new();
    if let Some(first) = share.failures.first() {
        root.insert("error".into(), json!(first.message));
    }
    if types.len() == 1 {
        // Errors by type: its own directive, so that only error records carry the key.
        root.insert("ErrorType".into(), json!(first_key(&types)));
        directives.push(error_directive(settings));
    } else {
        for (error_type, n) in &types {
            let mut r = Map::new();
            r.insert("ErrorType".into(), json!(error_type));
            r.insert("Errors".into(), json!(n));
            extra.push(r);
        }
    }
    root.insert("request_id".into(), json!(request_id));
    if let Some(table) = &share.table {
        root.entry("Table").or_insert_with(|| json!(table));
    }
    let timestamp = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    root.insert(
        "_aws".into(),
        json!({"Timestamp": timestamp, "CloudWatchMetrics": directives}),
    );
    let mut out = vec![Value::Object(root)];
    for mut r in extra {
        r.insert("request_id".into(), json!(request_id));
        if let Some(table) = &share.table {
            r.insert("Table".into(), json!(table));
        }
        r.insert(
            "_aws".into(),
            json!({"Timestamp": timestamp, "CloudWatchMetrics": [error_directive(settings)]}),
        );
        out.push(Value::Object(r));
    }
    out
}

fn first_key<'a>(types: &BTreeMap<&'a str, u64>) -> &'a str {
    types.keys().next().copied().unwrap_or_default()
}

/// `Errors` by `ErrorType`.
fn error_directive(settings: &Settings) -> Value {
    json!({
        "Namespace": settings.namespace,
        "Dimensions": [["ErrorType"]],
        "Metrics": [{"Name": "Errors", "Unit": "Count"}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::outcome::PartitionValues;

    const NOW_MS: u64 = 1_716_890_460_000; // 2024-05-28T10:01:00Z

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(NOW_MS)
    }

    fn figures() -> Figures {
        Figures {
            files: 3,
            bytes: 4096,
            rows: Some(120),
            lease_wait: Duration::from_millis(250),
            copy_time: Duration::from_millis(1500),
            copy_queue_time: Some(Duration::from_millis(200)),
            copy_execution_time: Some(Duration::from_millis(1100)),
            data_api_calls: 9,
            copy_query_ids: vec![7],
            committed_at: Some(now()),
            freshness_lags: vec![60.0],
            oldest_marker_wait: Some(Duration::from_secs(90)),
            quarantined: 1,
        }
    }

    /// Checks the specification's required fields, then returns the metric names of
    /// the first directive with their units.
    fn check_spec(record: &Value) -> Vec<(String, String)> {
        let aws = &record["_aws"];
        assert_eq!(
            aws["Timestamp"],
            json!(NOW_MS),
            "_aws.Timestamp in epoch ms"
        );
        let directives = aws["CloudWatchMetrics"].as_array().expect("an array");
        assert!(!directives.is_empty());
        for d in directives {
            assert!(d["Namespace"].is_string());
            for set in d["Dimensions"].as_array().expect("DimensionSet array") {
                for key in set.as_array().expect("a set is an array of keys") {
                    let key = key.as_str().expect("keys are strings");
                    assert!(
                        record[key].is_string(),
                        "dimension {key} is a string member of the root"
                    );
                }
            }
            for m in d["Metrics"].as_array().expect("Metrics array") {
                let name = m["Name"].as_str().expect("Name");
                assert!(!name.is_empty() && name.len() <= 255);
                assert!(m["Unit"].is_string());
                let value = &record[name];
                let numeric = match value.as_array() {
                    Some(values) => values.len() <= 100 && values.iter().all(Value::is_number),
                    None => value.is_number(),
                };
                assert!(
                    numeric,
                    "metric {name} is a number (or up to 100 numbers) at the root: {record}"
                );
            }
        }
        directives
            .iter()
            .find(|d| d["Dimensions"] != json!([["ErrorType"]]))
            .map(|d| d["Metrics"].as_array().unwrap().clone())
            .unwrap_or_default()
            .iter()
            .map(|m| {
                (
                    m["Name"].as_str().unwrap().to_string(),
                    m["Unit"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn unit<'a>(metrics: &'a [(String, String)], name: &str) -> Option<&'a str> {
        metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, u)| u.as_str())
    }

    #[test]
    fn a_load_record_carries_every_figure_per_table_and_in_aggregate() {
        let outcome = Outcome::Loaded {
            table: "sales.orders".into(),
            partition: PartitionValues(vec![("order_date".into(), Some("2024-05-28".into()))]),
            files: 3,
            statement_id: "stmt-1".into(),
            quarantined: Vec::new(),
        };
        let figures = figures();
        let r = record(
            &Settings::default(),
            &Invocation {
                result: Ok(&outcome),
                table: Some("sales.orders".into()),
                request_id: "req-1",
                figures: &figures,
                now: now(),
            },
        );
        let metrics = check_spec(&r);
        let d = &r["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(d["Namespace"], "PartitionLoader");
        assert_eq!(d["Dimensions"], json!([["Table"], []]));
        assert_eq!(r["_aws"]["CloudWatchMetrics"].as_array().unwrap().len(), 1);
        assert_eq!(r["Table"], "sales.orders");
        assert_eq!(r["Loaded"], 1);
        assert_eq!(r["UpToDate"], 0);
        assert_eq!(r["Queued"], 0);
        assert_eq!(r["Skipped"], 0);
        assert_eq!(r["Waiting"], 0);
        assert_eq!(r["OldestMarkerWaitSeconds"], 90);
        assert_eq!(unit(&metrics, "OldestMarkerWaitSeconds"), Some("Seconds"));
        assert_eq!(r["Errors"], 0);
        assert_eq!(r["PermanentErrors"], 0);
        assert_eq!(r["FilesLoaded"], 3);
        assert_eq!(r["BytesLoaded"], 4096);
        assert_eq!(r["QuarantinedFiles"], 1);
        assert_eq!(r["RowsLoaded"], 120);
        assert_eq!(r["LeaseWait"], 250.0);
        assert_eq!(r["CopyTime"], 1500.0);
        assert_eq!(r["DataApiCalls"], 9);
        assert_eq!(
            r["FreshnessLag"], 60.0,
            "one file, written 60 s before the commit"
        );
        assert_eq!(unit(&metrics, "FreshnessLag"), Some("Seconds"));
        assert_eq!(unit(&metrics, "BytesLoaded"), Some("Bytes"));
        assert_eq!(unit(&metrics, "LeaseWait"), Some("Milliseconds"));
        assert_eq!(unit(&metrics, "Queued"), Some("Count"));
        assert_eq!(r["statement_id"], "stmt-1");
        assert_eq!(r["request_id"], "req-1");
        assert_eq!(r["outcome"], "loaded");
        assert!(r.get("ErrorType").is_none());
    }

    #[test]
    fn a_function_that_cannot_start_counts_a_permanent_error() {
        let error = LoaderError::Config("routes[0].table: \"x\" is not schema.table".into());
        let settings = Settings::parse(Some("Lake/Loads"), None, None).unwrap();
        let r = startup_record(&settings, &error, now());
        check_spec(&r);
        assert_eq!(r["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Lake/Loads");
        assert_eq!(r["PermanentErrors"], 1);
        assert_eq!(r["Errors"], 1);
        assert_eq!(r["ErrorType"], "Permanent.Config");
        assert_eq!(r["invocation"], "startup");
        assert!(r["error"].as_str().unwrap().contains("routes[0].table"));
        assert!(r.get("Table").is_none(), "no table: aggregate only");
    }

    #[test]
    fn an_error_record_counts_the_error_by_kind_and_by_type() {
        let error = LoaderError::LoadRejected {
            table: "sales.orders".into(),
            statement_id: "s".into(),
            message: "Unmatched number of columns".into(),
        };
        let figures = Figures {
            rows: None,
            committed_at: None,
            files: 0,
            bytes: 0,
            freshness_lags: Vec::new(),
            ..figures()
        };
        let settings = Settings::parse(Some("Lake/Loads"), None, None).unwrap();
        let r = record(
            &settings,
            &Invocation {
                result: Err(&error),
                table: Some("sales.orders".into()),
                request_id: "req-2",
                figures: &figures,
                now: now(),
            },
        );
        let metrics = check_spec(&r);
        assert_eq!(r["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Lake/Loads");
        let by_type = &r["_aws"]["CloudWatchMetrics"][1];
        assert_eq!(by_type["Namespace"], "Lake/Loads");
        assert_eq!(by_type["Dimensions"], json!([["ErrorType"]]));
        assert_eq!(
            by_type["Metrics"],
            json!([{"Name": "Errors", "Unit": "Count"}])
        );
        assert_eq!(r["ErrorType"], "Permanent.LoadRejected");
        assert_eq!(r["Errors"], 1);
        assert_eq!(r["PermanentErrors"], 1);
        assert_eq!(r["RetryableErrors"], 0);
        assert_eq!(r["Loaded"], 0);
        assert_eq!(r["FilesLoaded"], 0);
        assert_eq!(r["outcome"], "error");
        assert!(r["error"].as_str().unwrap().contains("Unmatched"));
        assert!(
            unit(&metrics, "RowsLoaded").is_none(),
            "rows not read: absent"
        );
        assert!(
            unit(&metrics, "FreshnessLag").is_none(),
            "nothing committed"
        );
        assert!(r.get("RowsLoaded").is_none());
    }

    #[test]
    fn a_skip_record_has_only_the_aggregate_dimension_set() {
        let outcome = Outcome::Skipped {
            reason: "marker file".into(),
            bucket: "b".into(),
            key: "orders/_SUCCESS".into(),
        };
        let figures = Figures::default();
        let r = record(
            &Settings::default(),
            &Invocation {
                result: Ok(&outcome),
                table: None,
                request_id: "req-3",
                figures: &figures,
                now: now(),
            },
        );
        let metrics = check_spec(&r);
        assert_eq!(
            r["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([[]]),
            "no Table member, so no Table set"
        );
        assert!(r.get("Table").is_none());
        assert_eq!(r["Skipped"], 1);
        assert_eq!(r["Loaded"], 0);
        assert_eq!(r["Errors"], 0);
        assert_eq!(r["DataApiCalls"], 0);
        assert!(unit(&metrics, "FreshnessLag").is_none());
    }

    #[test]
    fn a_share_of_several_events_counts_them_and_splits_error_types() {
        let loaded = Outcome::Loaded {
            table: "s.t".into(),
            partition: PartitionValues::default(),
            files: 2,
            statement_id: "x".into(),
            quarantined: Vec::new(),
        };
        let mut share = Share::new(Some("s.t".into()));
        share.count(Ok(&loaded), 3);
        share.count(Err(&LoaderError::NotStarted), 2);
        share.count(Err(&LoaderError::BadEvent("b".into())), 1);
        share.figures = figures();
        share.figures.freshness_lags = (0..150).map(f64::from).collect();
        let empty = Share::new(None);
        let rs = records(
            &Settings::default(),
            &[share, empty],
            "sqs_batch",
            "r",
            now(),
        );
        assert_eq!(
            rs.len(),
            4,
            "table record, two error-type records, no-table record"
        );
        for r in &rs {
            check_spec(r);
            assert_eq!(r["invocation"], "sqs_batch");
        }
        let r = &rs[0];
        assert_eq!(r["Loaded"], 3, "per event");
        assert_eq!(r["Errors"], 3);
        assert_eq!(r["PermanentErrors"], 1);
        assert_eq!(r["RetryableErrors"], 2);
        assert!(r.get("ErrorType").is_none(), "two types: not in the record");
        assert_eq!(r["_aws"]["CloudWatchMetrics"].as_array().unwrap().len(), 1);
        let lags = r["FreshnessLag"].as_array().unwrap();
        assert_eq!(lags.len(), 100, "at most 100 values");
        assert_eq!(lags[0], 149.0, "the largest kept");
        assert_eq!(lags[99], 50.0);
        let by_type: Vec<(&str, &Value)> = rs[1..3]
            .iter()
            .map(|r| (r["ErrorType"].as_str().unwrap(), &r["Errors"]))
            .collect();
        assert_eq!(
            by_type,
            [
                ("Permanent.BadEvent", &json!(1)),
                ("Retryable.NotStarted", &json!(2))
            ]
        );
        assert_eq!(
            rs[1]["_aws"]["CloudWatchMetrics"],
            json!([{"Namespace": "PartitionLoader", "Dimensions": [["ErrorType"]],
                    "Metrics": [{"Name": "Errors", "Unit": "Count"}]}])
        );
        assert_eq!(rs[1]["Table"], "s.t");
        assert!(rs[3].get("Table").is_none());
        assert_eq!(rs[3]["Loaded"], 0);
        assert_eq!(rs[3]["Errors"], 0);
    }

    proptest::proptest! {
        /// Whatever a share holds, its records are valid EMF, `ErrorType` records count
        /// every failure exactly once, and a lag array stays within the format's limit.
        #[test]
        fn any_share_gives_valid_records_counting_each_error_once(
            loaded in 0u64..4,
            skipped in 0u64..4,
            failures in proptest::collection::vec(0usize..3, 0..7),
            lags in proptest::collection::vec(0u32..100_000, 0..250),
            table in proptest::option::of(0u8..3),
        ) {
            let errors = [
                LoaderError::NotStarted,
                LoaderError::BadEvent("b".into()),
                LoaderError::Config("c".into()),
            ];
            let mut share = Share::new(table.map(|t| format!("s.t{t}")));
            let outcome = Outcome::Skipped { reason: "r".into(), bucket: "b".into(), key: "k".into() };
            share.count(Ok(&outcome), skipped);
            *share.outcomes.entry("loaded".into()).or_default() += loaded;
            for f in &failures {
                share.count(Err(&errors[*f]), 1);
            }
            share.figures.freshness_lags = lags.iter().map(|l| f64::from(*l) / 10.0).collect();
            let rs = records(&Settings::default(), &[share], "sqs_batch", "r", now());
            for r in &rs {
                check_spec(r);
            }
            let by_type: u64 = rs
                .iter()
                .filter(|r| r.get("ErrorType").is_some())
                .map(|r| r["Errors"].as_u64().unwrap_or_default())
                .sum();
            proptest::prop_assert_eq!(by_type, failures.len() as u64);
            proptest::prop_assert_eq!(&rs[0]["Errors"], &json!(failures.len()));
            proptest::prop_assert_eq!(&rs[0]["Skipped"], &json!(skipped));
            let values = match &rs[0]["FreshnessLag"] {
                Value::Null => 0,
                Value::Array(a) => a.len(),
                _ => 1,
            };
            proptest::prop_assert_eq!(values, lags.len().min(MAX_VALUES));
        }
    }

    #[test]
    fn settings_are_checked() {
        let s = Settings::parse(None, Some("Table, FunctionName"), Some("fn".into())).unwrap();
        assert_eq!(s.namespace, "PartitionLoader");
        assert_eq!(s.dimensions, [Dimension::Table, Dimension::FunctionName]);
        assert!(Settings::parse(None, Some(""), None)
            .unwrap()
            .dimensions
            .is_empty());
        for bad in ["", "AWS/Lambda", "a{b}", &"x".repeat(256)] {
            let e = Settings::parse(Some(bad), None, None).unwrap_err();
            assert!(e.to_string().contains("METRICS_NAMESPACE"), "{bad}: {e}");
        }
        let e = Settings::parse(None, Some("Table,Partition"), None).unwrap_err();
        assert!(e.to_string().contains("\"Partition\""));
    }

    #[test]
    fn function_name_dimension_and_newer_outcomes() {
        let outcome = Outcome::UpToDate {
            table: "s.t".into(),
            partition: PartitionValues::default(),
        };
        let settings =
            Settings::parse(None, Some("Table,FunctionName"), Some("loader".into())).unwrap();
        let figures = Figures::default();
        let r = record(
            &settings,
            &Invocation {
                result: Ok(&outcome),
                table: Some("s.t".into()),
                request_id: "r",
                figures: &figures,
                now: now(),
            },
        );
        check_spec(&r);
        assert_eq!(
            r["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Table", "FunctionName"], []])
        );
        assert_eq!(r["FunctionName"], "loader");
        assert_eq!(r["UpToDate"], 1);
        assert!(
            r.get("FreshnessLag").is_none(),
            "up to date on its own (a repeated event): no lag"
        );
        assert_eq!(camel("queued"), "Queued");
        assert_eq!(camel("up_to_date"), "UpToDate");
    }

    #[test]
    fn freshness_lag_runs_from_last_modified_to_the_commit() {
        let written = UNIX_EPOCH + Duration::from_secs(1_716_890_400);
        assert_eq!(
            freshness_lag(Some(written), written + Duration::from_millis(61_500)),
            Some(61.5)
        );
        assert_eq!(
            freshness_lag(None, written),
            None,
            "no LastModified: no lag"
        );
        assert_eq!(
            freshness_lag(Some(written), written - Duration::from_secs(10)),
            Some(0.0),
            "clock skew never gives a negative lag"
        );
    }

    #[tokio::test]
    async fn figures_are_collected_only_inside_measure() {
        add(|f| f.files += 100);
        let ((), figures) = measure(async {
            add(|f| f.files += 2);
            tokio::task::yield_now().await;
            add(|f| f.data_api_calls += 1);
        })
        .await;
        assert_eq!(figures.files, 2);
        assert_eq!(figures.data_api_calls, 1);
    }

    /// The dashboard and alarms in template.yaml name only metrics a record carries.
    #[test]
    fn the_template_watches_metrics_that_exist() {
        let template = include_str!("../../template.yaml");
        let error = LoaderError::Config("x".into());
        let outcome = Outcome::Loaded {
            table: "s.t".into(),
            partition: PartitionValues::default(),
            files: 1,
            statement_id: "x".into(),
            quarantined: Vec::new(),
        };
        let figures = Figures {
            rows: Some(1),
            committed_at: Some(now()),
            freshness_lags: vec![1.0],
            files: 1,
            bytes: 10,
            copy_queue_time: Some(Duration::from_millis(1)),
            copy_execution_time: Some(Duration::from_millis(2)),
            ..Figures::default()
        };
        let mut emitted = Vec::new();
        for result in [Ok(&outcome), Err(&error)] {
            let r = record(
                &Settings::default(),
                &Invocation {
                    result,
                    table: Some("s.t".into()),
                    request_id: "r",
                    figures: &figures,
                    now: now(),
                },
            );
            for d in r["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
                for m in d["Metrics"].as_array().unwrap() {
                    emitted.push(m["Name"].as_str().unwrap().to_string());
                }
            }
        }
        let mut watched = Vec::new();
        for (marker, end) in [
            ("MetricName=\\\"", '\\'),
            ("\"${MetricsNamespace}\", \"", '"'),
        ] {
            for (at, _) in template.match_indices(marker) {
                let rest = &template[at + marker.len()..];
                watched.push(rest[..rest.find(end).unwrap()].to_string());
            }
        }
        let alarms = template.split("Namespace: !Ref MetricsNamespace").skip(1);
        for alarm in alarms {
            let line = alarm
                .lines()
                .find(|l| l.trim().starts_with("MetricName:"))
                .unwrap();
            watched.push(line.trim()["MetricName:".len()..].trim().to_string());
        }
        assert!(watched.len() >= 8, "{watched:?}");
        for name in &watched {
            assert!(
                emitted.contains(name),
                "template watches {name}, never emitted"
            );
        }
    }
}
