//! One error type for the whole loader. Every variant is either retryable (Lambda's
//! retry may succeed later) or permanent (a retry would fail the same way); both fail
//! the invocation so the event is kept, but logs and the Lambda error type tell them apart.

use lambda_runtime::Diagnostic;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Retryable,
    Permanent,
}

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("bad event: {0}")]
    BadEvent(String),
    #[error("bad partition in key {key:?}: {reason}")]
    BadPartition { key: String, reason: String },
    #[error("value cannot be used in SQL: {0}")]
    BadValue(String),
    #[error("table {0} does not exist; create it first")]
    TableMissing(String),
    #[error("table {table} does not match the route: {reason}")]
    TableMismatch { table: String, reason: String },
    #[error(
        "{url} was rewritten (ETag {etag}, loaded as {loaded_etag}); append mode loads an object \
         once — use mode = \"replace\" for partitions that are overwritten"
    )]
    Rewritten {
        url: String,
        etag: String,
        loaded_etag: String,
    },
    #[error(
        "replace mode must load a partition in one transaction, but {files} files need {batches} \
         load batches; split the partition or use append mode"
    )]
    ReplaceTooLarge { files: usize, batches: usize },
    #[error(
        "no data files under {url} although an object was reported there: it was deleted \
         since, or the event's key is encoded differently from the stored key"
    )]
    NothingListed { url: String },
    /// The table's lease, ledger or wake-up table (or a lease procedure) does not
    /// exist: the route was added after the last `loaderctl bootstrap`.
    #[error(
        "the loader's lease, ledger and wake-up tables for {table} are missing; run \
         `loaderctl bootstrap` (it creates them for every configured route): {message}"
    )]
    NotBootstrapped { table: String, message: String },
    /// The table's lease table does not hold exactly one row (someone inserted or
    /// deleted rows by hand). Never "pick the first": exclusivity depends on one row.
    #[error(
        "the lease table of {table} is damaged ({detail}); stop loads into it, delete its \
         rows and run `loaderctl bootstrap` to put the single free row back"
    )]
    LeaseRows { table: String, detail: String },
    #[error(
        "lease on {table} was lost before the load committed; the load was rolled back: {message}"
    )]
    LeaseLost { table: String, message: String },
    /// A Parquet file whose footer the loader could not read (truncated, not Parquet,
    /// bad magic): Redshift's COPY would refuse it too. Append mode quarantines it
    /// ([`crate::protocol::isolate`]); replace mode fails with it.
    #[error("load into {table}: file {url} is not a Parquet file Redshift can read: {reason}")]
    UnreadableFile {
        table: String,
        url: String,
        reason: String,
    },
    #[error("load into {table} rejected by Redshift (statement {statement_id}): {message}")]
    LoadRejected {
        table: String,
        statement_id: String,
        message: String,
    },
    /// A load batch failed for a transient cause (S3 throttled inside the COPY, a WLM
    /// abort, a restart, a write conflict: [`crate::protocol::failure`]); everything rolled
    /// back, and a retry loads the files.
    #[error(
        "load into {table} interrupted ({cause}; statement {statement_id}), rolled back; a \
         retry loads it: {message}"
    )]
    LoadInterrupted {
        table: String,
        statement_id: String,
        cause: &'static str,
        message: String,
    },
    /// The load batch found some of its files in the ledger under another load: an
    /// earlier attempt of the same request (whose batch outlived it) loaded them. Rolled
    /// back; the retry plans again from the ledger and finds them loaded.
    #[error(
        "load into {table} rolled back: its files were loaded meanwhile by another load: {message}"
    )]
    LoadedElsewhere { table: String, message: String },
    /// The Data API ended a statement ABORTED: cancelled by someone else than this
    /// invocation (an operator, WLM) or cut by a restart. Nothing of it committed.
    #[error("statement {statement_id} was aborted: {message}")]
    StatementAborted {
        statement_id: String,
        message: String,
    },
    /// A statement failed; its class follows its words ([`crate::protocol::failure::classify`]).
    #[error("statement {statement_id} failed: {message}")]
    StatementFailed {
        statement_id: String,
        message: String,
    },
    #[error("serialization conflict (Redshift error 1023), retries exhausted: {0}")]
    SerializationConflict(String),
    #[error("Redshift Data API throttled the request, retries exhausted: {0}")]
    Throttled(String),
    #[error("deadline reached while statement {statement_id} was {status}; cancelled it")]
    Timeout {
        statement_id: String,
        status: String,
    },
    #[error("Redshift Data API: {message}")]
    Warehouse { message: String, retryable: bool },
    #[error("S3: {message}")]
    Storage { message: String, retryable: bool },
    /// Part of a batch that the invocation's deadline left unstarted; its messages go
    /// back to the queue and come again.
    #[error("not started before the invocation's deadline; the queue delivers it again")]
    NotStarted,
    /// An SQS call (`loaderctl redrive`) failed.
    #[error("SQS: {message}")]
    Queue { message: String, retryable: bool },
}

impl LoaderError {
    pub fn kind(&self) -> ErrorKind {
        use LoaderError::*;
        match self {
            LeaseLost { .. }
            | SerializationConflict(_)
            | Throttled(_)
            | Timeout { .. }
            | LoadInterrupted { .. }
            | LoadedElsewhere { .. }
            | StatementAborted { .. }
            | NotStarted => ErrorKind::Retryable,
            StatementFailed { message, .. } => crate::protocol::failure::classify(message).kind,
            Warehouse { retryable, .. } | Storage { retryable, .. } | Queue { retryable, .. }
                if *retryable =>
            {
                ErrorKind::Retryable
            }
            Warehouse { .. } | Storage { .. } | Queue { .. } => ErrorKind::Permanent,
            Config(_)
            | BadEvent(_)
            | BadPartition { .. }
            | BadValue(_)
            | TableMissing(_)
            | TableMismatch { .. }
            | Rewritten { .. }
            | ReplaceTooLarge { .. }
            | NothingListed { .. }
            | NotBootstrapped { .. }
            | LeaseRows { .. }
            | UnreadableFile { .. }
            | LoadRejected { .. } => ErrorKind::Permanent,
        }
    }

    /// The variant name, used in the Lambda error type and the log line.
    pub fn name(&self) -> &'static str {
        use LoaderError::*;
        match self {
            Config(_) => "Config",
            BadEvent(_) => "BadEvent",
            BadPartition { .. } => "BadPartition",
            BadValue(_) => "BadValue",
            TableMissing(_) => "TableMissing",
            TableMismatch { .. } => "TableMismatch",
            Rewritten { .. } => "Rewritten",
            ReplaceTooLarge { .. } => "ReplaceTooLarge",
            NothingListed { .. } => "NothingListed",
            NotBootstrapped { .. } => "NotBootstrapped",
            LeaseRows { .. } => "LeaseRows",
            LeaseLost { .. } => "LeaseLost",
            UnreadableFile { .. } => "UnreadableFile",
            LoadRejected { .. } => "LoadRejected",
            LoadInterrupted { .. } => "LoadInterrupted",
            LoadedElsewhere { .. } => "LoadedElsewhere",
            StatementAborted { .. } => "StatementAborted",
            StatementFailed { .. } => "StatementFailed",
            SerializationConflict(_) => "SerializationConflict",
            Throttled(_) => "Throttled",
            Timeout { .. } => "Timeout",
            Warehouse { .. } => "Warehouse",
            Storage { .. } => "Storage",
            NotStarted => "NotStarted",
            Queue { .. } => "Queue",
        }
    }

    /// `Retryable.LeaseLost`, `Permanent.BadPartition`, ...
    pub fn error_type(&self) -> String {
        format!("{:?}.{}", self.kind(), self.name())
    }
}

impl From<LoaderError> for Diagnostic {
    fn from(e: LoaderError) -> Self {
        Diagnostic {
            error_type: e.error_type(),
            error_message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_type_tells_retryable_from_permanent() {
        let lost = LoaderError::LeaseLost {
            table: "s.t".into(),
            message: "m".into(),
        };
        assert_eq!(lost.error_type(), "Retryable.LeaseLost");
        let bad = LoaderError::BadPartition {
            key: "k".into(),
            reason: "r".into(),
        };
        assert_eq!(bad.error_type(), "Permanent.BadPartition");
        let net = LoaderError::Storage {
            message: "timeout".into(),
            retryable: true,
        };
        assert_eq!(net.kind(), ErrorKind::Retryable);
        let d: Diagnostic = bad.into();
        assert!(d.error_message.contains("\"k\""));
    }
}
