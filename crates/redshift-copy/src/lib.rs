//! Redshift's `COPY ... FROM 's3://...'` executed against PostgreSQL.
//!
//! The emulator (`redshift-data-local`) hands every statement to [`parse`]; when it
//! is a COPY from S3, it runs [`execute`] on the connection that holds the
//! statement's transaction. Everything Redshift checks, this checks too, with
//! Redshift's error words: a permissive emulator would hide the loader's bugs.
//!
//! INTERFACE CONTRACT (stable; `redshift-data-local` is written against it).

use thiserror::Error;

/// A parsed `COPY` from S3.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyCommand {
    /// Target table as written, e.g. `sales.orders` or `"Sales"."Orders"`.
    pub table: String,
    /// Optional column list `COPY t (a, b)`.
    pub columns: Option<Vec<String>>,
    /// `s3://bucket/key-or-prefix`.
    pub source: String,
    pub manifest: bool,
    pub format: Format,
    /// `IAM_ROLE '...'` or `CREDENTIALS '...'` was given.
    pub has_credentials: bool,
    pub delimiter: Option<char>,
    pub ignore_header: u32,
    pub gzip: bool,
    pub stat_update: Option<bool>,
    pub time_format: Option<String>,
    pub date_format: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Pipe-delimited text, Redshift's default when no FORMAT is given.
    Text,
    Csv,
    JsonAuto,
    Parquet,
    Orc,
}

/// What one COPY did; the emulator reports `rows` as the statement's ResultRows.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyReport {
    pub rows: u64,
    /// Full `s3://` URLs of the files loaded, in load order.
    pub files: Vec<String>,
}

/// A COPY failure. `Display` is the message Redshift would give.
#[derive(Debug, Error)]
pub enum CopyError {
    /// The statement is a COPY but malformed or unsupported (e.g. ORC).
    #[error("{0}")]
    Syntax(String),
    /// Redshift rejected the source or the data (column count, manifest, ...).
    #[error("{0}")]
    Rejected(String),
    /// S3 could not be read.
    #[error("{0}")]
    S3(String),
    /// PostgreSQL refused the rows (type does not fit, ...). Keeps the
    /// original error so the emulator can map SQLSTATEs (e.g. 40001).
    #[error("{0}")]
    Postgres(#[from] tokio_postgres::Error),
}

/// Returns `None` when `sql` is not a `COPY ... FROM 's3://...'` statement (the
/// emulator then passes it to PostgreSQL as it is), `Some(Err)` when it is one
/// but cannot be parsed.
pub fn parse(sql: &str) -> Option<Result<CopyCommand, CopyError>> {
    let _ = sql;
    None
}

/// Runs `command` on `client`, which is inside the caller's open transaction.
/// Writes one `stl_load_commits` row per file and one `sys_load_history` row,
/// tagged with `query_id`, in the same transaction (see [`HISTORY_DDL`]).
pub async fn execute(
    command: &CopyCommand,
    s3: &aws_sdk_s3::Client,
    client: &tokio_postgres::Client,
    query_id: i64,
) -> Result<CopyReport, CopyError> {
    let _ = (command, s3, client, query_id);
    Err(CopyError::Syntax("COPY is not implemented yet".into()))
}

/// DDL the emulator runs once at start-up (idempotent): Redshift's load history
/// tables `stl_load_commits` and `sys_load_history`, in schema `public`.
pub const HISTORY_DDL: &str = "";
