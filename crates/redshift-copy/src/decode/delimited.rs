//! CSV (quoted, RFC 4180) and Redshift's default text format (delimiter-split
//! lines, `\N` for NULL).

use super::{empty_rule, Fail, Row};
use crate::table::TargetColumn;
use crate::{CopyCommand, CopyError, Format};

#[cfg(test)]
pub(crate) fn decode(
    cmd: &CopyCommand,
    text: &str,
    columns: &[TargetColumn],
    fail: &Fail,
) -> Result<Vec<Row>, CopyError> {
    decode_counting(cmd, text, columns, fail).map(|(rows, _)| rows)
}

/// Decodes the records; under MAXERROR skips rows with the wrong number of fields
/// (Redshift counts them as load errors) while at most `MAXERROR` were: returns the
/// rows and how many were skipped.
pub(crate) fn decode_counting(
    cmd: &CopyCommand,
    text: &str,
    columns: &[TargetColumn],
    fail: &Fail,
) -> Result<(Vec<Row>, u32), CopyError> {
    let records = match cmd.format {
        Format::Csv => csv_records(cmd, text, fail)?,
        _ => text_records(cmd, text),
    };
    let mut skipped = 0u32;
    let mut rows = Vec::with_capacity(records.len());
    for (line, fields) in records {
        match to_row(cmd, line, fields, columns, fail) {
            Ok(row) => rows.push(row),
            Err(_) if skipped < cmd.max_error => skipped += 1,
            Err(e) => return Err(e),
        }
    }
    Ok((rows, skipped))
}

/// (line number, fields) for every CSV record after the header lines.
fn csv_records(
    cmd: &CopyCommand,
    text: &str,
    fail: &Fail,
) -> Result<Vec<(u64, Vec<String>)>, CopyError> {
    let delimiter = cmd.delimiter.unwrap_or(',');
    let delimiter = u8::try_from(delimiter)
        .ok()
        .filter(u8::is_ascii)
        .ok_or_else(|| {
            CopyError::Syntax(format!(
                "redshift-data-local supports only ASCII CSV delimiters, not '{delimiter}'"
            ))
        })?;
    check_quotes(text, delimiter, fail)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line());
            fail(line, &format!("Invalid quote formatting for CSV ({e})"))
        })?;
        let line = record.position().map_or(0, |p| p.line());
        if line <= u64::from(cmd.ignore_header) {
            continue;
        }
        out.push((line, record.iter().map(str::to_string).collect()));
    }
    Ok(out)
}

/// Redshift's CSV reads a quote inside a quoted field only when doubled (`""`); a
/// closing quote must be followed by the delimiter or the end of the line. Spark's
/// default CSV escapes quotes with a backslash (`"a \"b\""`), which Redshift rejects;
/// the csv crate would accept it silently, so the emulator checks first.
/// <https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-data-format.html#copy-csv>
fn check_quotes(text: &str, delimiter: u8, fail: &Fail) -> Result<(), CopyError> {
    let bytes = text.as_bytes();
    let mut line = 1u64;
    let mut in_quotes = false;
    let mut field_start = true;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_quotes {
            if b == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                in_quotes = false;
                let next = bytes.get(i + 1).copied();
                if !matches!(next, None | Some(b'\n') | Some(b'\r')) && next != Some(delimiter) {
                    return Err(fail(
                        Some(line),
                        "Invalid quote formatting for CSV (a quote inside a quoted field must \
                         be doubled: \"\"; a backslash does not escape it)",
                    ));
                }
            } else if b == b'\n' {
                line += 1;
            }
            field_start = false;
        } else if b == b'"' && field_start {
            in_quotes = true;
            field_start = false;
        } else {
            if b == b'\n' {
                line += 1;
            }
            field_start = b == delimiter || b == b'\n';
        }
        i += 1;
    }
    Ok(())
}

/// Text format: one record per line, fields split on the delimiter ('|' by default).
fn text_records(cmd: &CopyCommand, text: &str) -> Vec<(u64, Vec<String>)> {
    let delimiter = cmd.delimiter.unwrap_or('|');
    text.lines()
        .enumerate()
        .skip(cmd.ignore_header as usize)
        .map(|(i, line)| {
            let line = line.strip_suffix('\r').unwrap_or(line);
            (
                i as u64 + 1,
                line.split(delimiter).map(str::to_string).collect(),
            )
        })
        .collect()
}

/// Applies the column-count check (Redshift load errors 1214 "Delimiter not
/// found" and 1202 "Extra column(s) found"), FILLRECORD and the NULL rules.
fn to_row(
    cmd: &CopyCommand,
    line: u64,
    mut fields: Vec<String>,
    columns: &[TargetColumn],
    fail: &Fail,
) -> Result<Row, CopyError> {
    if fields.len() > columns.len() {
        return Err(fail(Some(line), "Extra column(s) found"));
    }
    let missing = columns.len() - fields.len();
    if missing > 0 && !cmd.fill_record {
        return Err(fail(Some(line), "Delimiter not found"));
    }
    let null_as = match (&cmd.null_as, cmd.format) {
        (Some(n), _) => Some(n.as_str()),
        (None, Format::Text) => Some("\\N"),
        (None, _) => None,
    };
    fields.resize(columns.len(), String::new());
    Ok(fields
        .into_iter()
        .zip(columns)
        .enumerate()
        .map(|(i, (value, column))| {
            if i >= columns.len() - missing || Some(value.as_str()) == null_as {
                None
            } else {
                empty_rule(cmd, column, value)
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::testing::{cmd, fail, s};

    fn cols() -> Vec<TargetColumn> {
        vec![
            TargetColumn::new("id", "integer"),
            TargetColumn::new("name", "character varying(10)"),
            TargetColumn::new("amount", "numeric(10,2)"),
        ]
    }

    fn rows(options: &str, text: &str) -> Result<Vec<Row>, String> {
        decode(&cmd(options), text, &cols(), &fail).map_err(|e| e.to_string())
    }

    #[test]
    fn csv_with_quotes_header_and_custom_delimiter() {
        let got = rows(
            "CSV IGNOREHEADER 1",
            "id,name,amount\n1,\"a,\"\"b\"\"\",2.50\n2,x,\n",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                vec![s("1"), s("a,\"b\""), s("2.50")],
                vec![s("2"), s("x"), None]
            ]
        );
        let got = rows("CSV DELIMITER ';'", "3;y;1\n").unwrap();
        assert_eq!(got, vec![vec![s("3"), s("y"), s("1")]]);
    }

    #[test]
    fn text_is_pipe_delimited_with_backslash_n_null() {
        let got = rows("", "1|a|2\r\n2|\\N|\n").unwrap();
        assert_eq!(
            got,
            vec![vec![s("1"), s("a"), s("2")], vec![s("2"), None, None]]
        );
        let got = rows("NULL AS 'nil'", "1|nil|3\n").unwrap();
        assert_eq!(got[0][1], None);
    }

    #[test]
    fn empty_and_blank_fields() {
        assert_eq!(rows("CSV", ",,\n").unwrap()[0], vec![None, s(""), None]);
        assert_eq!(
            rows("CSV EMPTYASNULL", ",,\n").unwrap()[0],
            vec![None, None, None]
        );
        assert_eq!(rows("CSV", "1,  ,\n").unwrap()[0][1], s("  "));
        assert_eq!(rows("CSV BLANKSASNULL", "1,  ,\n").unwrap()[0][1], None);
    }

    #[test]
    fn column_count_errors_use_redshift_reasons() {
        assert_eq!(
            rows("CSV", "1,a\n").unwrap_err(),
            "line Some(1): Delimiter not found"
        );
        assert_eq!(
            rows("CSV IGNOREHEADER 1", "h\n1,a,2,3\n").unwrap_err(),
            "line Some(2): Extra column(s) found"
        );
        assert_eq!(
            rows("", "1|a\n").unwrap_err(),
            "line Some(1): Delimiter not found"
        );
        assert_eq!(
            rows("CSV FILLRECORD", "1,a\n").unwrap()[0],
            vec![s("1"), s("a"), None]
        );
    }

    #[test]
    fn backslash_escaped_quotes_are_refused_like_redshift() {
        // Spark's default CSV output for the value `say "hi"`.
        let e = rows("CSV", "1,\"say \\\"hi\\\"\",2\n").unwrap_err();
        assert!(e.contains("Invalid quote formatting for CSV"), "{e}");
        assert!(e.contains("line Some(1)"), "{e}");
        // The same value written with doubled quotes loads.
        let got = rows("CSV", "1,\"say \"\"hi\"\"\",2\n2,\"a\nb\",3\n").unwrap();
        assert_eq!(got[0][1], s("say \"hi\""));
        assert_eq!(got[1][1], s("a\nb"));
        assert!(rows("CSV", "1,\"x\"y,2\n").is_err());
    }

    #[test]
    fn maxerror_skips_rows_with_the_wrong_field_count() {
        let text = "1,a,2\n2,b\n3,c,4,5\n4,d,6\n";
        assert!(rows("CSV MAXERROR 1", text).is_err());
        let (got, skipped) = decode_counting(&cmd("CSV MAXERROR 2"), text, &cols(), &fail).unwrap();
        assert_eq!(skipped, 2);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1][0], s("4"));
    }

    #[test]
    fn bad_quoting_fails() {
        // An unterminated quote swallows the rest; the csv crate reports the
        // field count as it finds it, which ends as "Delimiter not found".
        assert!(rows("CSV", "1,\"abc\n").is_err());
    }
}
