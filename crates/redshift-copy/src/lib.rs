//! Redshift's `COPY ... FROM 's3://...'` executed against PostgreSQL.
//!
//! The emulator (`redshift-data-local`) hands every statement to [`parse`]; when it
//! is a COPY, it runs [`execute`] on the connection that holds the statement's
//! transaction. Everything Redshift checks, this checks too, with Redshift's
//! error words: a permissive emulator would hide the loader's bugs.
//!
//! INTERFACE CONTRACT (stable; `redshift-data-local` is written against it):
//! - [`parse`]: `None` for a statement that is not a COPY (pass it to
//!   PostgreSQL); `Some(Err(CopyError::Syntax | Rejected))` for a COPY Redshift
//!   would refuse (unknown option → `syntax error at or near "FOO"`, `FROM
//!   STDIN`, REGION with PARQUET, ...); `Some(Ok(cmd))` otherwise.
//! - [`execute`]: resolves the target table through PostgreSQL's catalog (so
//!   `search_path` and quoting behave as for any statement), lists or reads the
//!   manifest in S3, decodes each file, loads it with `COPY ... FROM STDIN` on
//!   `client` and writes the history rows. It never begins or ends a
//!   transaction. Errors: `Rejected` (Redshift refused the source or the data),
//!   `Syntax` (e.g. ORC, unsupported by the emulator), `S3` (S3 unreachable or
//!   refused), `Postgres` (anything PostgreSQL raised that is not a data error;
//!   the SQLSTATE is kept, e.g. 40001).
//! - [`HISTORY_DDL`]: run once at start-up; idempotent and safe to run
//!   concurrently.
//!
//! Modules: `parse` (statement), `source` (prefix / manifest rules against S3),
//! `table` (target columns from the catalog), `decode` (Parquet, CSV/text, JSON
//! → text rows; `decode::convert`: DATEFORMAT/TIMEFORMAT, TRUNCATECOLUMNS, MAXERROR),
//! `load` (rows into PostgreSQL, history).

mod decode;
mod load;
mod parse;
mod source;
mod table;

use thiserror::Error;

/// A parsed `COPY` from S3.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyCommand {
    /// Target table as written, e.g. `sales.orders` or `"Sales"."Orders"`.
    pub table: String,
    /// Optional column list `COPY t (a, b)`, names folded as PostgreSQL folds them.
    pub columns: Option<Vec<String>>,
    /// `s3://bucket/key-or-prefix`.
    pub source: String,
    pub manifest: bool,
    pub format: Format,
    /// `IAM_ROLE`, `CREDENTIALS` or `ACCESS_KEY_ID`/`SECRET_ACCESS_KEY` was given.
    pub has_credentials: bool,
    pub delimiter: Option<char>,
    pub ignore_header: u32,
    pub gzip: bool,
    pub stat_update: Option<bool>,
    /// `TIMEFORMAT`: absent = Redshift's strict `YYYY-MM-DD HH:MI:SS`; `'auto'` =
    /// PostgreSQL's input functions; a format string or `epochsecs`/`epochmillisecs`.
    pub time_format: Option<String>,
    /// `DATEFORMAT`: absent = strict `YYYY-MM-DD`; `'auto'`; or a format string.
    pub date_format: Option<String>,
    /// `JSON 'auto ignorecase'`.
    pub json_ignore_case: bool,
    pub empty_as_null: bool,
    pub blanks_as_null: bool,
    /// `NULL AS '...'`; text format defaults to `\N`.
    pub null_as: Option<String>,
    /// `FILLRECORD`: missing trailing fields load as NULL.
    pub fill_record: bool,
    /// `MAXERROR n`: rows the emulator's own checks reject (field counts, dates,
    /// times, VARCHAR byte lengths) are skipped until more than `n` were.
    pub max_error: u32,
    /// `TRUNCATECOLUMNS`: VARCHAR values longer than the column (in bytes) are cut.
    pub truncate_columns: bool,
    /// `ACCEPTINVCHARS [AS 'c']`: invalid UTF-8 becomes `c` (default `?`).
    pub accept_inv_chars: Option<char>,
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

/// Returns `None` when `sql` is not a `COPY` statement (the emulator then
/// passes it to PostgreSQL as it is), `Some(Err)` when it is a COPY that
/// Redshift would refuse to parse.
pub fn parse(sql: &str) -> Option<Result<CopyCommand, CopyError>> {
    parse::is_copy(sql).then(|| parse::parse_copy(sql))
}

/// Redshift's error for a COPY without authorization. Redshift documents this
/// text for a malformed CREDENTIALS string; for no authorization at all its
/// wording is undocumented, so the documented one is reused.
pub const MISSING_CREDENTIALS: &str = "Invalid credentials. Must be of the format: credentials \
     'aws_iam_role=...' or 'aws_access_key_id=...;aws_secret_access_key=...[;token=...]'";

/// Runs `command` on `client`, which is inside the caller's open transaction.
/// Writes one `stl_load_commits` row per file and one `sys_load_history` row,
/// tagged with `query_id`, in the same transaction (see [`HISTORY_DDL`]).
pub async fn execute(
    command: &CopyCommand,
    s3: &aws_sdk_s3::Client,
    client: &tokio_postgres::Client,
    query_id: i64,
) -> Result<CopyReport, CopyError> {
    let start = chrono::Utc::now().naive_utc();
    let mut loaded = Vec::new();
    let report = load_files(command, s3, client, &mut loaded).await?;
    load::write_history(client, command, query_id, &loaded, start).await?;
    Ok(report)
}

/// What a COPY did, for the load history: written by [`write_history`] once the
/// loading transaction has ended (Redshift records loads outside the transaction,
/// aborted ones included).
#[derive(Debug, Clone)]
pub struct LoadHistory {
    pub command: CopyCommand,
    pub query_id: i64,
    /// The user who ran the COPY (`None`: the connection's current user).
    pub user: Option<String>,
    /// The backend that ran the COPY (SYS_LOAD_HISTORY.session_id).
    pub session_id: i32,
    pub start: chrono::NaiveDateTime,
    pub end: chrono::NaiveDateTime,
    files: Vec<load::LoadedFile>,
}

/// SYS_LOAD_HISTORY.status: `running`, `completed` or `aborted`
/// (<https://docs.aws.amazon.com/redshift/latest/dg/SYS_LOAD_HISTORY.html>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadStatus {
    Completed,
    Aborted,
}

/// Like [`execute`], but writes no history: the returned [`LoadHistory`] (also on
/// failure, with the files loaded so far) is for [`write_history`] on another
/// connection once the transaction has committed or rolled back.
pub async fn execute_unrecorded(
    command: &CopyCommand,
    s3: &aws_sdk_s3::Client,
    client: &tokio_postgres::Client,
    query_id: i64,
    user: Option<String>,
    session_id: i32,
) -> (Result<CopyReport, CopyError>, LoadHistory) {
    let mut history = LoadHistory {
        command: command.clone(),
        query_id,
        user,
        session_id,
        start: chrono::Utc::now().naive_utc(),
        end: chrono::Utc::now().naive_utc(),
        files: Vec::new(),
    };
    let result = load_files(command, s3, client, &mut history.files).await;
    history.end = chrono::Utc::now().naive_utc();
    (result, history)
}

/// Writes `history` with `status` (on any connection of the same database):
/// one `sys_load_history` row, and for a completed load one `stl_load_commits`
/// row per file.
pub async fn write_history(
    client: &tokio_postgres::Client,
    history: &LoadHistory,
    status: LoadStatus,
) -> Result<(), CopyError> {
    load::write_history_row(client, history, status).await
}

async fn load_files(
    command: &CopyCommand,
    s3: &aws_sdk_s3::Client,
    client: &tokio_postgres::Client,
    loaded: &mut Vec<load::LoadedFile>,
) -> Result<CopyReport, CopyError> {
    if !command.has_credentials {
        return Err(CopyError::Rejected(MISSING_CREDENTIALS.into()));
    }
    if command.format == Format::Orc {
        return Err(decode::orc_unsupported());
    }
    let target = table::resolve(client, &command.table, command.columns.as_deref()).await?;
    let files = source::resolve(&command.source, command.manifest, command.format, s3).await?;
    for file in &files {
        let bytes = source::fetch(s3, file).await?;
        let rows = decode::decode(command, &target, &file.url, &bytes)?;
        let stored = load::copy_rows(client, &target, &file.url, &rows).await?;
        tracing::debug!(file = %file.url, rows = stored, "COPY loaded file");
        loaded.push(load::LoadedFile {
            url: file.url.clone(),
            bytes: file.size,
            rows: stored,
        });
    }
    if command.stat_update == Some(true) {
        load::analyze(client, &target).await?;
    }
    Ok(CopyReport {
        rows: loaded.iter().map(|f| f.rows).sum(),
        files: loaded.iter().map(|f| f.url.clone()).collect(),
    })
}

/// DDL the emulator runs once at start-up (idempotent): Redshift's load history
/// tables `stl_load_commits` and `sys_load_history`, in schema `public`, with
/// Redshift's column names (a subset of its columns). The advisory lock makes
/// concurrent runs safe (`CREATE TABLE IF NOT EXISTS` alone can race).
pub const HISTORY_DDL: &str = "\
DO $$
BEGIN
  PERFORM pg_advisory_xact_lock(735301);
  CREATE TABLE IF NOT EXISTS public.stl_load_commits (
    userid integer,
    query bigint,
    slice integer,
    name character(256),
    filename character(256),
    byte_offset integer,
    lines_scanned integer,
    errors integer,
    curtime timestamp,
    status integer,
    file_format character(16)
  );
  CREATE TABLE IF NOT EXISTS public.sys_load_history (
    user_id integer,
    query_id bigint,
    transaction_id bigint,
    session_id integer,
    database_name character(128),
    status character(30),
    table_name character(136),
    start_time timestamp,
    end_time timestamp,
    duration bigint,
    data_source character(256),
    file_format character(16),
    loaded_rows bigint,
    loaded_bytes bigint,
    source_file_count integer,
    source_file_bytes bigint,
    file_count_scanned integer,
    file_bytes_scanned bigint,
    error_count bigint,
    copy_job_id bigint
  );
END
$$;";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ignores_non_copy_statements() {
        assert!(parse("SELECT 1").is_none());
        assert!(parse("INSERT INTO copy VALUES (1)").is_none());
        assert!(matches!(
            parse("COPY t FROM 's3://b/k' IAM_ROLE default"),
            Some(Ok(_))
        ));
        assert!(matches!(
            parse("COPY t FROM STDIN"),
            Some(Err(CopyError::Syntax(_)))
        ));
    }
}
