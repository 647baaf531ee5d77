//! Rows into PostgreSQL through `COPY ... FROM STDIN`, and the load history.
//!
//! Everything runs on the caller's connection inside the caller's transaction:
//! a COPY that fails or is rolled back leaves neither rows nor history, as on
//! Redshift where the load commit never happened.

use std::pin::pin;

use bytes::Bytes;
use chrono::NaiveDateTime;
use futures::SinkExt;
use tokio_postgres::Client;

use crate::decode::{load_error, Row};
use crate::table::{quote_ident, Target};
use crate::{CopyCommand, CopyError, Format};

/// Encodes rows as PostgreSQL CSV: every value quoted (so '' stays an empty
/// string), NULL as an unquoted empty field.
pub(crate) fn csv_payload(rows: &[Row]) -> Vec<u8> {
    let mut out = Vec::new();
    for row in rows {
        for (i, value) in row.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if let Some(v) = value {
                out.push(b'"');
                out.extend_from_slice(v.replace('"', "\"\"").as_bytes());
                out.push(b'"');
            }
        }
        out.push(b'\n');
    }
    out
}

/// Loads one file's rows; returns how many PostgreSQL stored.
pub(crate) async fn copy_rows(
    client: &Client,
    target: &Target,
    url: &str,
    rows: &[Row],
) -> Result<u64, CopyError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let columns: Vec<String> = target
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect();
    let statement = format!(
        "COPY {} ({}) FROM STDIN (FORMAT csv)",
        target.qualified,
        columns.join(", ")
    );
    let result = async {
        let mut sink = pin!(client.copy_in::<_, Bytes>(&statement).await?);
        sink.send(Bytes::from(csv_payload(rows))).await?;
        sink.as_mut().finish().await
    }
    .await;
    result.map_err(|e| data_rejection(e, &target.name, url))
}

/// PostgreSQL's data errors (SQLSTATE classes 22 and 23: bad value, out of
/// range, NOT NULL) become Redshift's load failure; anything else (40001,
/// connection loss, ...) stays a PostgreSQL error for the emulator to map.
fn data_rejection(err: tokio_postgres::Error, table: &str, url: &str) -> CopyError {
    let Some(db) = err.as_db_error() else {
        return CopyError::Postgres(err);
    };
    let class = &db.code().code()[..2];
    if class != "22" && class != "23" {
        return CopyError::Postgres(err);
    }
    let line = db.where_().and_then(copy_line);
    let reason = match db.where_() {
        Some(w) => format!("{} [{}]", db.message(), w),
        None => db.message().to_string(),
    };
    load_error(table, url, line, &reason)
}

/// The line number in PostgreSQL's COPY context ("COPY t, line 3, column a: ...").
fn copy_line(context: &str) -> Option<u64> {
    let after = context.split(", line ").nth(1)?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The values Redshift shows in `file_format`: `stl_load_commits` uses
/// Text/JSON/Parquet/ORC, `sys_load_history` txt/csv/json/parquet/orc.
pub(crate) fn file_format_names(format: Format) -> (&'static str, &'static str) {
    match format {
        Format::Text => ("Text", "txt"),
        Format::Csv => ("Text", "csv"),
        Format::JsonAuto => ("JSON", "json"),
        Format::Parquet => ("Parquet", "parquet"),
        Format::Orc => ("ORC", "orc"),
    }
}

/// What one loaded file contributes to the history.
#[derive(Debug, Clone)]
pub(crate) struct LoadedFile {
    pub url: String,
    pub bytes: u64,
    pub rows: u64,
}

/// One `stl_load_commits` row per file and one `sys_load_history` row.
pub(crate) async fn write_history(
    client: &Client,
    cmd: &CopyCommand,
    query_id: i64,
    files: &[LoadedFile],
    start: NaiveDateTime,
) -> Result<(), CopyError> {
    let (format, history_format) = file_format_names(cmd.format);
    for f in files {
        client
            .execute(
                "INSERT INTO public.stl_load_commits \
                 (userid, query, slice, name, filename, byte_offset, lines_scanned, errors, \
                  curtime, status, file_format) \
                 VALUES ((SELECT usesysid::int FROM pg_user WHERE usename = current_user), \
                         $1, 0, $2, $3, 0, $4, 0, \
                         clock_timestamp() AT TIME ZONE 'UTC', 1, $5)",
                &[
                    &query_id,
                    &cmd.table,
                    &f.url,
                    &i32::try_from(f.rows).unwrap_or(i32::MAX),
                    &format,
                ],
            )
            .await?;
    }
    let rows: u64 = files.iter().map(|f| f.rows).sum();
    let bytes: u64 = files.iter().map(|f| f.bytes).sum();
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let file_count = i32::try_from(files.len()).unwrap_or(i32::MAX);
    client
        .execute(
            "INSERT INTO public.sys_load_history \
             (user_id, query_id, transaction_id, session_id, database_name, status, table_name, \
              start_time, end_time, duration, data_source, file_format, loaded_rows, loaded_bytes, \
              source_file_count, source_file_bytes, file_count_scanned, file_bytes_scanned, \
              error_count, copy_job_id) \
             SELECT (SELECT usesysid::int FROM pg_user WHERE usename = current_user), \
                    $1, txid_current(), pg_backend_pid(), current_database(), 'completed', $2, \
                    $3, t.end_time, \
                    (EXTRACT(EPOCH FROM (t.end_time - $3)) * 1000000)::bigint, \
                    $4, $5, $6, $7, $8, $7, $8, $7, 0, 0 \
             FROM (SELECT clock_timestamp() AT TIME ZONE 'UTC' AS end_time) t",
            &[
                &query_id,
                &cmd.table,
                &start,
                &cmd.source,
                &history_format,
                &as_i64(rows),
                &as_i64(bytes),
                &file_count,
            ],
        )
        .await?;
    Ok(())
}

/// [`crate::write_history`]: the rows of a load whose transaction has ended.
pub(crate) async fn write_history_row(
    client: &Client,
    h: &crate::LoadHistory,
    status: crate::LoadStatus,
) -> Result<(), CopyError> {
    let (format, history_format) = file_format_names(h.command.format);
    let user_id = "(SELECT usesysid::int FROM pg_user WHERE usename = COALESCE($9::text, current_user::text))";
    let completed = status == crate::LoadStatus::Completed;
    if completed {
        for f in &h.files {
            client
                .execute(
                    &format!(
                        "INSERT INTO public.stl_load_commits \
                         (userid, query, slice, name, filename, byte_offset, lines_scanned, errors, \
                          curtime, status, file_format) \
                         VALUES ({}, $1, 0, $2, $3, 0, $4, 0, $6, 1, $5)",
                        user_id.replace("$9", "$7")
                    ),
                    &[
                        &h.query_id,
                        &h.command.table,
                        &f.url,
                        &i32::try_from(f.rows).unwrap_or(i32::MAX),
                        &format,
                        &h.end,
                        &h.user,
                    ],
                )
                .await?;
        }
    }
    let rows: u64 = h.files.iter().map(|f| f.rows).sum();
    let bytes: u64 = h.files.iter().map(|f| f.bytes).sum();
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let file_count = i32::try_from(h.files.len()).unwrap_or(i32::MAX);
    let duration = (h.end - h.start).num_microseconds().unwrap_or(i64::MAX);
    let status_text = if completed { "completed" } else { "aborted" };
    client
        .execute(
            &format!(
                "INSERT INTO public.sys_load_history \
                 (user_id, query_id, transaction_id, session_id, database_name, status, table_name, \
                  start_time, end_time, duration, data_source, file_format, loaded_rows, loaded_bytes, \
                  source_file_count, source_file_bytes, file_count_scanned, file_bytes_scanned, \
                  error_count, copy_job_id) \
                 VALUES ({user_id}, $1, 0, $10, current_database(), $11, $2, $3, $12, $13, \
                         $4, $5, $6, $7, $8, $7, $8, $7, 0, 0)"
            ),
            &[
                &h.query_id,
                &h.command.table,
                &h.start,
                &h.command.source,
                &history_format,
                &as_i64(rows),
                &as_i64(bytes),
                &file_count,
                &h.user,
                &h.session_id,
                &status_text,
                &h.end,
                &duration,
            ],
        )
        .await?;
    Ok(())
}

/// `STATUPDATE ON`: refresh planner statistics, PostgreSQL's equivalent.
pub(crate) async fn analyze(client: &Client, target: &Target) -> Result<(), CopyError> {
    client
        .batch_execute(&format!("ANALYZE {}", target.qualified))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::error::SqlState;

    #[test]
    fn csv_payload_quotes_values_and_leaves_nulls_bare() {
        let rows = vec![
            vec![Some("1".to_string()), None, Some(String::new())],
            vec![Some("a\"b,\nc".to_string()), Some("x".into()), None],
        ];
        assert_eq!(
            String::from_utf8(csv_payload(&rows)).unwrap(),
            "\"1\",,\"\"\n\"a\"\"b,\nc\",\"x\",\n"
        );
    }

    #[test]
    fn reads_line_from_copy_context() {
        assert_eq!(
            copy_line("COPY orders, line 3, column amount: \"abc\""),
            Some(3)
        );
        assert_eq!(copy_line("COPY orders, line 12"), Some(12));
        assert_eq!(copy_line("SQL statement"), None);
    }

    #[test]
    fn file_format_names_follow_each_table() {
        assert_eq!(file_format_names(Format::Parquet), ("Parquet", "parquet"));
        assert_eq!(file_format_names(Format::JsonAuto), ("JSON", "json"));
        assert_eq!(file_format_names(Format::Csv), ("Text", "csv"));
        assert_eq!(file_format_names(Format::Text), ("Text", "txt"));
    }

    #[test]
    fn sqlstate_classes_are_two_chars() {
        assert_eq!(&SqlState::INVALID_TEXT_REPRESENTATION.code()[..2], "22");
        assert_eq!(&SqlState::NOT_NULL_VIOLATION.code()[..2], "23");
    }
}
