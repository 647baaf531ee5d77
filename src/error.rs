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
    #[error("lease on {table} is held by {holder} until {expires_at} UTC; gave up waiting")]
    LockBusy {
        table: String,
        holder: String,
        expires_at: String,
    },
    #[error(
        "lease on {table} was lost before the load committed; the load was rolled back: {message}"
    )]
    LeaseLost { table: String, message: String },
    #[error("load into {table} rejected by Redshift (statement {statement_id}): {message}")]
    LoadRejected {
        table: String,
        statement_id: String,
        message: String,
    },
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
}

impl LoaderError {
    pub fn kind(&self) -> ErrorKind {
        use LoaderError::*;
        match self {
            LockBusy { .. }
            | LeaseLost { .. }
            | SerializationConflict(_)
            | Throttled(_)
            | Timeout { .. } => ErrorKind::Retryable,
            Warehouse { retryable, .. } | Storage { retryable, .. } if *retryable => {
                ErrorKind::Retryable
            }
            _ => ErrorKind::Permanent,
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
            LockBusy { .. } => "LockBusy",
            LeaseLost { .. } => "LeaseLost",
            LoadRejected { .. } => "LoadRejected",
            StatementFailed { .. } => "StatementFailed",
            SerializationConflict(_) => "SerializationConflict",
            Throttled(_) => "Throttled",
            Timeout { .. } => "Timeout",
            Warehouse { .. } => "Warehouse",
            Storage { .. } => "Storage",
        }
    }

    /// `Retryable.LockBusy`, `Permanent.BadPartition`, ...
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
        let busy = LoaderError::LockBusy {
            table: "s.t".into(),
            holder: "h".into(),
            expires_at: "x".into(),
        };
        assert_eq!(busy.error_type(), "Retryable.LockBusy");
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
