//! Redshift's data-conversion rules for text formats (CSV, text, JSON), applied to the
//! decoded values before PostgreSQL sees them: DATEFORMAT / TIMEFORMAT (strict
//! defaults when absent), TRUNCATECOLUMNS (VARCHAR lengths in bytes) and MAXERROR.
//!
//! - Without DATEFORMAT, a DATE must be `YYYY-MM-DD`; without TIMEFORMAT a TIMESTAMP must
//!   be `YYYY-MM-DD HH:MI:SS` (fractional seconds allowed; TIMESTAMPTZ may end with an
//!   offset). ISO 8601 `T`/`Z` fail: only `'auto'` recognises them.
//!   <https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-data-conversion.html>
//!   <https://docs.aws.amazon.com/redshift/latest/dg/r_DATEFORMAT_and_TIMEFORMAT_strings.html>
//! - Error reasons follow the load error reference (1205 date, 1206 timestamp, 1204
//!   length): <https://docs.aws.amazon.com/redshift/latest/dg/r_Load_Error_Reference.html>
//! - A VARCHAR(n) holds n bytes on Redshift (PostgreSQL counts characters): longer
//!   values fail unless TRUNCATECOLUMNS, which cuts them at a character boundary.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

use super::{Fail, Row};
use crate::table::TargetColumn;
use crate::{CopyCommand, CopyError};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Date,
    Timestamp,
    TimestampTz,
    Varchar(usize),
    Other,
}

fn kind(column: &TargetColumn) -> Kind {
    let t = column.type_name.to_ascii_lowercase();
    if t == "date" {
        Kind::Date
    } else if t.starts_with("timestamp with time zone") {
        Kind::TimestampTz
    } else if t.starts_with("timestamp") {
        Kind::Timestamp
    } else if let Some(n) = t
        .strip_prefix("character varying(")
        .or_else(|| t.strip_prefix("character("))
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|n| n.parse().ok())
    {
        Kind::Varchar(n)
    } else {
        Kind::Other
    }
}

/// Applies the rules to every value; a row that breaks one is an error, or is skipped
/// while fewer than MAXERROR rows were (Redshift's MAXERROR counts rejected rows).
/// `already` counts the rows the decoder skipped under MAXERROR.
pub(crate) fn apply(
    cmd: &CopyCommand,
    columns: &[TargetColumn],
    rows: Vec<Row>,
    already: u32,
    fail: &Fail,
) -> Result<Vec<Row>, CopyError> {
    let kinds: Vec<Kind> = columns.iter().map(kind).collect();
    let first_line = u64::from(cmd.ignore_header) + 1;
    let mut errors = already;
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        match convert_row(cmd, &kinds, row) {
            Ok(row) => out.push(row),
            Err(reason) => {
                errors += 1;
                if errors > cmd.max_error {
                    return Err(fail(Some(first_line + i as u64), &reason));
                }
                tracing::debug!(reason, "COPY skipped a row under MAXERROR");
            }
        }
    }
    Ok(out)
}

fn convert_row(cmd: &CopyCommand, kinds: &[Kind], row: Row) -> Result<Row, String> {
    row.into_iter()
        .zip(kinds)
        .map(|(value, kind)| match value {
            None => Ok(None),
            Some(v) => convert(cmd, *kind, v).map(Some),
        })
        .collect()
}

fn convert(cmd: &CopyCommand, kind: Kind, value: String) -> Result<String, String> {
    match kind {
        Kind::Date => date(cmd.date_format.as_deref(), &value),
        Kind::Timestamp | Kind::TimestampTz => timestamp(
            cmd.time_format.as_deref(),
            kind == Kind::TimestampTz,
            &value,
        ),
        Kind::Varchar(n) if value.len() > n => {
            if cmd.truncate_columns {
                let mut end = n;
                while !value.is_char_boundary(end) {
                    end -= 1;
                }
                Ok(value[..end].to_string())
            } else {
                Err(format!(
                    "String length exceeds DDL length ({} bytes, the column holds {n})",
                    value.len()
                ))
            }
        }
        _ => Ok(value),
    }
}

fn date(format: Option<&str>, value: &str) -> Result<String, String> {
    let bad = |f: &str| format!("Invalid date format - value '{value}' does not match '{f}'");
    match format {
        None => {
            let strict = value.len() == 10 && NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok();
            if strict {
                Ok(value.to_string())
            } else {
                Err(bad("YYYY-MM-DD"))
            }
        }
        Some(f) if f.eq_ignore_ascii_case("auto") => Ok(value.to_string()),
        Some(f) => NaiveDate::parse_from_str(value.trim(), &chrono_format(f))
            .map(|d| d.format("%Y-%m-%d").to_string())
            .map_err(|_| bad(f)),
    }
}

fn timestamp(format: Option<&str>, with_tz: bool, value: &str) -> Result<String, String> {
    let bad = |f: &str| format!("Invalid timestamp format or value [{f}]: '{value}'");
    match format {
        None => {
            if default_timestamp(value, with_tz) {
                Ok(value.to_string())
            } else {
                Err(bad("YYYY-MM-DD HH24:MI:SS"))
            }
        }
        Some(f) if f.eq_ignore_ascii_case("auto") => Ok(value.to_string()),
        Some(f)
            if f.eq_ignore_ascii_case("epochsecs") || f.eq_ignore_ascii_case("epochmillisecs") =>
        {
            let millis = f.eq_ignore_ascii_case("epochmillisecs");
            let n: i64 = value.trim().parse().map_err(|_| bad(f))?;
            let t = if millis {
                DateTime::from_timestamp_millis(n)
            } else {
                DateTime::from_timestamp(n, 0)
            };
            t.map(|t| t.naive_utc().format("%Y-%m-%d %H:%M:%S%.f").to_string())
                .ok_or_else(|| bad(f))
        }
        Some(f) => NaiveDateTime::parse_from_str(value.trim(), &chrono_format(f))
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.f").to_string())
            .map_err(|_| bad(f)),
    }
}

/// `YYYY-MM-DD HH:MI:SS[.ffffff]`, and for TIMESTAMPTZ an optional `+HH[:MM]`/`-HH`.
fn default_timestamp(value: &str, with_tz: bool) -> bool {
    let b = value.as_bytes();
    if b.len() < 19 || b[10] != b' ' {
        return false;
    }
    if NaiveDateTime::parse_from_str(&value[..19], "%Y-%m-%d %H:%M:%S").is_err() {
        return false;
    }
    let mut rest = &value[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 || digits > 6 {
            return false;
        }
        rest = &frac[digits..];
    }
    if rest.is_empty() {
        return true;
    }
    with_tz && {
        let (sign, offset) = rest.split_at(1);
        (sign == "+" || sign == "-")
            && matches!(offset.len(), 2 | 4 | 5)
            && offset.chars().all(|c| c.is_ascii_digit() || c == ':')
    }
}

/// Redshift's datetime format string as a chrono format: YYYY, YY, MM, MON, DD, HH24,
/// HH12, HH, MI, SS (with `.SSS…` fractions), AM/PM; other characters are literal.
fn chrono_format(f: &str) -> String {
    let tokens: [(&str, &str); 13] = [
        ("YYYY", "%Y"),
        ("HH24", "%H"),
        ("HH12", "%I"),
        ("MON", "%b"),
        ("YY", "%y"),
        ("MM", "%m"),
        ("DD", "%d"),
        ("HH", "%H"),
        ("MI", "%M"),
        ("AM", "%p"),
        ("PM", "%p"),
        ("SS", "%S"),
        ("%", "%%"),
    ];
    let mut out = String::new();
    let mut rest = f;
    'outer: while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix(".S") {
            // `SS.SSS…` fractions: any number of digits.
            out.push_str("%.f");
            rest = after.trim_start_matches('S');
            continue;
        }
        for (token, chrono) in tokens {
            if rest.len() >= token.len() && rest[..token.len()].eq_ignore_ascii_case(token) {
                out.push_str(chrono);
                rest = &rest[token.len()..];
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    // `%S%.f` would need the dot; chrono's `%.f` includes it.
    out.replace("%S.%.f", "%S%.f")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::testing::{cmd, fail, s};

    fn cols() -> Vec<TargetColumn> {
        vec![
            TargetColumn::new("d", "date"),
            TargetColumn::new("t", "timestamp without time zone"),
            TargetColumn::new("z", "timestamp with time zone"),
            TargetColumn::new("v", "character varying(4)"),
        ]
    }

    fn one(options: &str, row: [&str; 4]) -> Result<Row, String> {
        let row: Row = row
            .iter()
            .map(|v| (!v.is_empty()).then(|| v.to_string()))
            .collect();
        apply(&cmd(options), &cols(), vec![row], 0, &fail)
            .map(|mut r| r.remove(0))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_strict() {
        let ok = one(
            "CSV",
            [
                "2024-05-28",
                "2024-05-28 10:00:00",
                "2024-05-28 10:00:00.5+02",
                "ab",
            ],
        );
        assert!(ok.is_ok(), "{ok:?}");
        let e = one("CSV", ["", "2024-05-28T10:00:00Z", "", ""]).unwrap_err();
        assert!(
            e.contains("Invalid timestamp format or value [YYYY-MM-DD HH24:MI:SS]"),
            "{e}"
        );
        assert!(e.contains("line Some(1)"), "{e}");
        assert!(one("CSV", ["", "2024-05-28 10:00:00Z", "", ""]).is_err());
        assert!(one("CSV", ["", "", "2024-05-28T10:00:00+00:00", ""]).is_err());
        let e = one("CSV", ["2024/05/28", "", "", ""]).unwrap_err();
        assert!(e.contains("Invalid date format"), "{e}");
        assert!(one("CSV", ["2024-5-28", "", "", ""]).is_err());
    }

    #[test]
    fn auto_and_explicit_formats() {
        let row = one(
            "CSV DATEFORMAT 'auto' TIMEFORMAT 'auto'",
            [
                "2024-05-28",
                "2024-05-28T10:00:00Z",
                "2024-05-28T10:00:00Z",
                "",
            ],
        )
        .unwrap();
        assert_eq!(row[1], s("2024-05-28T10:00:00Z"));
        let row = one(
            "CSV DATEFORMAT 'DD/MM/YYYY' TIMEFORMAT 'YYYY-MM-DD HH24:MI:SS.SSS'",
            ["28/05/2024", "2024-05-28 10:00:01.250", "", ""],
        )
        .unwrap();
        assert_eq!(row[0], s("2024-05-28"));
        assert_eq!(row[1], s("2024-05-28 10:00:01.250"));
        let row = one("CSV TIMEFORMAT 'epochsecs'", ["", "86400", "", ""]).unwrap();
        assert_eq!(row[1], s("1970-01-02 00:00:00"));
        assert!(one("CSV DATEFORMAT 'DD/MM/YYYY'", ["2024-05-28", "", "", ""]).is_err());
    }

    #[test]
    fn varchar_lengths_are_bytes() {
        let e = one("CSV", ["", "", "", "ãããã"]).unwrap_err();
        assert!(e.contains("String length exceeds DDL length"), "{e}");
        let row = one("CSV TRUNCATECOLUMNS", ["", "", "", "ãããã"]).unwrap();
        assert_eq!(row[3], s("ãã"));
        let row = one("CSV TRUNCATECOLUMNS", ["", "", "", "abcdef"]).unwrap();
        assert_eq!(row[3], s("abcd"));
    }

    #[test]
    fn maxerror_skips_bad_rows_up_to_the_limit() {
        let rows =
            |v: &[&str]| -> Vec<Row> { v.iter().map(|d| vec![s(d), None, None, None]).collect() };
        let data = rows(&["2024-01-01", "bad", "2024-01-02", "worse"]);
        assert!(apply(&cmd("CSV MAXERROR 1"), &cols(), data.clone(), 0, &fail).is_err());
        let kept = apply(&cmd("CSV MAXERROR 2"), &cols(), data.clone(), 0, &fail).unwrap();
        assert_eq!(kept.len(), 2);
        // Rows the decoder already skipped count against the same MAXERROR.
        assert!(apply(&cmd("CSV MAXERROR 2"), &cols(), data, 1, &fail).is_err());
    }
}
