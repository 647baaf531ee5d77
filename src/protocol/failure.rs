//! Why a statement failed, by cause: one table from Redshift's (or the Data API's)
//! words to Retryable or Permanent.
//!
//! A transient failure is one a later run of the same statement can pass: Lambda's
//! retry (or the next holder) runs it again, and the work (the wake-up, the event) is
//! kept. A permanent one is about the data, the table or the grants: it is reported
//! once, named, and the wake-up is forgotten. Rows are matched in order, the first
//! wins, case-insensitively; every row is explicit, and so is the last one: a text no
//! row knows is Permanent (reported once with Redshift's words, never retried in a loop).
//!
//! Sources of the texts, each quoted in a test below:
//! - S3 throttling inside COPY: Parquet COPY reads through Redshift Spectrum
//!   (<https://docs.aws.amazon.com/redshift/latest/dg/copy-usage_notes-copy-from-columnar.html>),
//!   whose S3 errors read `S3ServiceException:Please reduce your request rate.,Status
//!   503,Error SlowDown` or `Slow Down (Service: Amazon S3; Status Code: 503; Error
//!   Code: 503 Slow Down ...)`; S3's own advice is to retry 500 and 503
//!   (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/ErrorBestPractices.html>).
//! - A WLM query monitoring rule's abort: `ERROR: Query (500029) cancelled by WLM
//!   abort action of Query Monitoring Rule "testrule".`
//!   (<https://repost.aws/knowledge-center/redshift-query-abort>).
//! - A restart or a cancel by someone else (the Data API's status ABORTED): `Query
//!   (123) cancelled on user's request`, `terminating connection due to administrator
//!   command`; an ABORTED status is Retryable whatever its text
//!   ([`LoaderError::StatementAborted`]).
//! - The Data API's `BatchExecuteStatementException`/`ExecuteStatementException`: "An
//!   SQL statement encountered an environmental error while running" (their API
//!   description), so transient.
//! - Serialization: `ERROR: 1023 DETAIL: Serializable isolation violation on table`
//!   (<https://docs.aws.amazon.com/redshift/latest/dg/c_serial_isolation.html>); the
//!   words SNAPSHOT isolation uses for two writers of one row are not documented there,
//!   so the stricter reading retries every conflict wording seen (`could not serialize
//!   access due to concurrent update`, PostgreSQL's and the local Redshift's;
//!   `conflict with concurrent transaction`), and deadlocks.
//!
//! [`LoaderError::StatementAborted`]: crate::error::LoaderError::StatementAborted

use crate::error::ErrorKind;

/// One row of the table: a text the failure's message contains, its class and cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// Matched case-insensitively anywhere in the message.
    pub contains: &'static str,
    pub kind: ErrorKind,
    /// Short name of the cause, for logs.
    pub cause: &'static str,
}

const fn retry(contains: &'static str, cause: &'static str) -> Row {
    Row {
        contains,
        kind: ErrorKind::Retryable,
        cause,
    }
}

const fn permanent(contains: &'static str, cause: &'static str) -> Row {
    Row {
        contains,
        kind: ErrorKind::Permanent,
        cause,
    }
}

/// The table, in matching order. Retryable rows come first: a permanent-looking frame
/// (`Spectrum Scan Error`) around a throttled S3 read is still a throttled read.
pub const ROWS: &[Row] = &[
    retry("status 503", "S3 throttled (503) inside COPY"),
    retry("error slowdown", "S3 throttled (SlowDown) inside COPY"),
    retry("503 slow down", "S3 throttled (Slow Down) inside COPY"),
    retry(
        "please reduce your request rate",
        "S3 throttled inside COPY",
    ),
    retry("status 500", "S3 internal error inside COPY"),
    retry("status code: 503", "S3 throttled (503) inside COPY"),
    retry("status code: 500", "S3 internal error inside COPY"),
    retry("s3 query exception (fetch)", "S3 fetch failed inside COPY"),
    retry("timed out", "a read timed out"),
    retry(
        "cancelled by wlm",
        "WLM abort (query monitoring rule or timeout)",
    ),
    retry("cancelled on user's request", "cancelled by someone else"),
    retry("query was cancelled", "cancelled"),
    retry("query was terminated", "terminated (restart)"),
    retry("terminating connection", "terminated (restart)"),
    retry("server closed the connection", "connection lost (restart)"),
    retry(
        "batchexecutestatementexception",
        "Data API environmental error",
    ),
    retry("executestatementexception", "Data API environmental error"),
    retry(
        "serializable isolation violation",
        "serialization conflict (1023)",
    ),
    retry("could not serialize access", "write conflict"),
    retry("conflict with concurrent transaction", "write conflict"),
    retry("deadlock detected", "deadlock"),
    permanent("permission denied", "missing grant"),
    permanent("does not exist", "missing object"),
    permanent("check 'stl_load_errors'", THE_DATA),
    permanent("spectrum scan error", THE_DATA),
    permanent("invalid parquet file", THE_DATA),
    permanent("not a valid parquet file", THE_DATA),
    permanent("", "unrecognised: reported once"),
];

/// The cause of the rows about the data itself (a file Redshift cannot read or parse),
/// as opposed to the table, the grants or the service: only such a failure is about a
/// file, and only it sends a load to find the file ([`crate::protocol::isolate`]).
pub const THE_DATA: &str = "the data";

/// Whether a failed load's `message` is Redshift refusing the data (Permanent, cause
/// [`THE_DATA`]): a transient failure never is, whatever file it names.
pub fn about_the_data(message: &str) -> bool {
    let row = classify(message);
    row.kind == ErrorKind::Permanent && row.cause == THE_DATA
}

/// The row `message` matches (the last row matches every message).
pub fn classify(message: &str) -> Row {
    let lower = message.to_lowercase();
    ROWS.iter()
        .copied()
        .find(|r| lower.contains(r.contains))
        .unwrap_or(ROWS[ROWS.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(message: &str) -> ErrorKind {
        classify(message).kind
    }

    #[test]
    fn s3_throttling_and_timeouts_inside_copy_are_retryable() {
        for m in [
            "ERROR: Spectrum Scan Error DETAIL: error: Spectrum Scan Error code: 15001 \
             context: Error while reading Ion/JSON int value: S3ServiceException:Please \
             reduce your request rate.,Status 503,Error SlowDown,Rid 1,ExtRid 2",
            "S3ServiceException:Slow Down,Status 503,Error SlowDown,Rid X",
            "AmazonS3Exception: Slow Down (Service: Amazon S3; Status Code: 503; Error Code: \
             503 Slow Down; Request ID: A4DBBEXAMPLE2C4D)",
            "AmazonS3Exception: Internal Error (Service: Amazon S3; Status Code: 500; Error \
             Code: 500 Internal Error; Request ID: A4DBBEXAMPLE2C4D)",
            "ERROR: S3 Query Exception (Fetch) DETAIL: Timed out after 60000 ms",
            "ERROR: Spectrum Scan Error DETAIL: S3 Query Exception (Fetch)",
        ] {
            assert_eq!(kind(m), ErrorKind::Retryable, "{m}");
        }
    }

    #[test]
    fn aborts_restarts_and_environmental_errors_are_retryable() {
        for m in [
            "ERROR:  Query (500029) cancelled by WLM abort action of Query Monitoring Rule \
             \"testrule\".",
            "Query (812) cancelled on user's request",
            "Query was cancelled",
            "Query was terminated",
            "FATAL: terminating connection due to administrator command",
            "server closed the connection unexpectedly",
            "BatchExecuteStatementException: An SQL statement encountered an environmental \
             error while running.",
            "ExecuteStatementException: The SQL statement encountered an environmental error \
             while running.",
        ] {
            assert_eq!(kind(m), ErrorKind::Retryable, "{m}");
        }
    }

    #[test]
    fn conflicts_and_deadlocks_are_retryable() {
        for m in [
            "ERROR: 1023 DETAIL: Serializable isolation violation on table - 1234, \
             transactions forming the cycle are: 5, 6 (pid:7)",
            "ERROR: could not serialize access due to concurrent update",
            "ERROR: could not complete because of conflict with concurrent transaction",
            "ERROR: deadlock detected DETAIL: Process 1 waits for ShareLock",
        ] {
            assert_eq!(kind(m), ErrorKind::Retryable, "{m}");
        }
    }

    #[test]
    fn the_data_the_schema_and_grants_are_permanent() {
        for m in [
            "ERROR: Load into table 'orders' failed. Check 'stl_load_errors' system table \
             for details.",
            "ERROR: Spectrum Scan Error DETAIL: File has an invalid version number",
            "ERROR: permission denied for relation orders",
            "ERROR: relation \"sales.orders\" does not exist",
            "Unmatched number of columns between table and file",
            "injected: S3 read failed",
        ] {
            assert_eq!(kind(m), ErrorKind::Permanent, "{m}");
        }
        // "unterminated" is not "terminated": a CSV quoting error is the data.
        assert_eq!(
            kind("ERROR: Load into table 't' failed: Unterminated quoted field"),
            ErrorKind::Permanent
        );
    }

    #[test]
    fn only_refused_data_is_about_a_file() {
        for m in [
            // The context of Redshift's Spectrum errors names the file as an HTTPS URL
            // (code 15007, https://www.parsnips.net/2025/10/21/redshift-parquet-column-order.html,
            // rudderlabs/rudder-server#3178); the emulator's as s3://.
            "ERROR: Spectrum Scan Error DETAIL: error: Spectrum Scan Error code: 15007 \
             context: File 'https://s3.us-east-1.amazonaws.com/bucket/file.parquet' has an \
             incompatible Parquet s query: 146667179",
            "ERROR: Spectrum Scan Error. File 's3://b/k.parquet' is not a valid Parquet file: \
             EOF: file size of 3 is less than footer",
            "ERROR: Load into table 'orders' failed. Check 'stl_load_errors' system table \
             for details.",
            "Invalid Parquet file s3://b/k",
        ] {
            assert!(about_the_data(m), "{m}");
        }
        for m in [
            "ERROR: Spectrum Scan Error DETAIL: S3ServiceException:Please reduce your request \
             rate.,Status 503,Error SlowDown, File 's3://b/k.parquet'",
            "ERROR: permission denied for relation orders",
            "ERROR: relation \"sales.orders\" does not exist",
            "injected: S3 read failed",
        ] {
            assert!(!about_the_data(m), "{m}");
        }
    }

    #[test]
    fn every_row_is_reachable_and_the_last_catches_all() {
        for (i, row) in ROWS.iter().enumerate() {
            assert_eq!(classify(row.contains), ROWS[i], "row {i} is shadowed");
        }
        assert_eq!(
            classify("anything else").cause,
            "unrecognised: reported once"
        );
    }
}
