//! CSV columns by name (issue 20 item 3): a CSV file's header line → the COPY column list
//! in the header's order, or a refusal naming the column and the fix.
//!
//! Redshift's COPY "inserts values into the target table's columns in the same order as
//! fields occur in the data files"; a column list's "order must match the order of the
//! source data"; a table column the list omits loads its DEFAULT, else NULL, and a NOT
//! NULL one fails the COPY
//! (<https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-column-mapping.html>).
//! `IGNOREHEADER 1` skips the header line unread. So a writer that reorders its columns
//! loads values into the wrong columns, silently when the types agree. With `header = true` the loader reads the header line (a ranged GET
//! of the file's first bytes, [`crate::io::storage::Storage::head`]) and gives COPY the column
//! list in the header's order; a table column the header lacks loads its DEFAULT or NULL.
//!
//! Compressed CSV: the loader's COPYs name no GZIP/BZIP2/LZOP/ZSTD, so a compressed file
//! would fail the COPY; its header is not read but refused here, naming the file, before
//! any COPY. Pure.

/// Bytes read from the start of a file: a header line longer than this is refused.
pub const FIRST_HEAD_BYTES: u64 = 64 * 1024;

/// The header's column names, in the file's order, from the first bytes of a file
/// (`complete`: they are the whole file). `delimiter` is the route's (`,` unless its
/// `copy_options` say `DELIMITER`). Fields may be double-quoted, `""` inside quotes is
/// one quote (CSV as Redshift reads it); a UTF-8 byte order mark is dropped; names are
/// trimmed of blanks.
pub fn header(head: &[u8], complete: bool, delimiter: char) -> Result<Vec<String>, String> {
    if let Some(codec) = compression(head) {
        return Err(format!(
            "it is {codec}-compressed; the loader loads uncompressed CSV (its COPY names no \
             compression), so write it uncompressed, or write Parquet"
        ));
    }
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        // A cut in the middle of a multi-byte character after the header line is fine.
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).map_err(|e| e.to_string())?
        }
        Err(_) => return Err("its header line is not UTF-8".into()),
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut names = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut ended = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' => quoted = !quoted,
            c if c == delimiter && !quoted => names.push(std::mem::take(&mut field)),
            '\n' if !quoted => {
                ended = true;
                break;
            }
            c => field.push(c),
        }
    }
    if !ended && !complete {
        return Err(format!(
            "its header line is longer than {FIRST_HEAD_BYTES} bytes"
        ));
    }
    if quoted {
        return Err("its header line has an unclosed quote".into());
    }
    names.push(field);
    let names: Vec<String> = names
        .into_iter()
        .map(|n| n.trim_end_matches('\r').trim().to_string())
        .collect();
    if names.iter().all(String::is_empty) {
        return Err("its header line is empty".into());
    }
    Ok(names)
}

fn compression(head: &[u8]) -> Option<&'static str> {
    match head {
        [0x1f, 0x8b, ..] => Some("gzip"),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Some("zstd"),
        [b'B', b'Z', b'h', ..] => Some("bzip2"),
        [0x89, b'L', b'Z', b'O', ..] => Some("lzop"),
        _ => None,
    }
}

/// The table's names for the header's columns, in the header's order; or why the file
/// cannot load by name, naming the column and the fix. Names match case-insensitively
/// (Redshift folds identifiers to lower case). `table` is the table's columns.
pub fn file_columns(
    file_url: &str,
    names: &[String],
    table: &[String],
) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        if n.is_empty() {
            return Err(format!(
                "file {file_url} has a header field without a name (column {})",
                out.len() + 1
            ));
        }
        let Some(t) = table.iter().find(|t| t.eq_ignore_ascii_case(n)) else {
            return Err(format!(
                "file {file_url} has column {n:?} in its header, which the table lacks: add it \
                 to the table (ALTER TABLE … ADD COLUMN), or drop it from the writer"
            ));
        };
        if out.contains(t) {
            return Err(format!(
                "file {file_url} has column {n:?} twice in its header (names compare \
                 case-insensitively)"
            ));
        }
        out.push(t.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reads_plain_quoted_and_bom_headers() {
        assert_eq!(
            header(b"name,id\n1,2\n", false, ',').unwrap(),
            names(&["name", "id"])
        );
        // pyarrow quotes every header name; Windows line ends.
        assert_eq!(
            header(b"\xef\xbb\xbf\"Id\",\"a \"\"b\"\"\"\r\n1,2", false, ',').unwrap(),
            names(&["Id", "a \"b\""])
        );
        assert_eq!(
            header(b"id|name", true, '|').unwrap(),
            names(&["id", "name"])
        );
        // A quoted delimiter is part of the name.
        assert_eq!(
            header(b"\"a,b\",c\n", false, ',').unwrap(),
            names(&["a,b", "c"])
        );
    }

    #[test]
    fn refuses_compressed_long_and_broken_headers() {
        let gz = [0x1f, 0x8b, 8, 0];
        assert!(header(&gz, false, ',').unwrap_err().contains("gzip"));
        assert!(header(b"id,name", false, ',')
            .unwrap_err()
            .contains("longer than"));
        assert!(header(b"\"id,name\n", true, ',')
            .unwrap_err()
            .contains("unclosed"));
        assert!(header(b"\n1,2\n", false, ',')
            .unwrap_err()
            .contains("empty"));
    }

    #[test]
    fn maps_header_names_to_table_columns_or_names_the_mismatch() {
        let table = names(&["id", "name", "city"]);
        assert_eq!(
            file_columns("s3://b/k", &names(&["NAME", "id"]), &table).unwrap(),
            names(&["name", "id"])
        );
        let e = file_columns("s3://b/k", &names(&["id", "extra"]), &table).unwrap_err();
        assert!(e.contains("\"extra\"") && e.contains("ADD COLUMN"), "{e}");
        let e = file_columns("s3://b/k", &names(&["id", "ID"]), &table).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = file_columns("s3://b/k", &names(&["id", ""]), &table).unwrap_err();
        assert!(e.contains("without a name"), "{e}");
    }
}
