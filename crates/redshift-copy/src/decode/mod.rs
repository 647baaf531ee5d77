//! File bytes → rows of text values, one module per format.
//!
//! Every value leaves here as text (or NULL) so that PostgreSQL does the type
//! conversion when the rows are loaded, and rejects what does not fit the
//! column, as Redshift rejects it.

mod columnar;
mod convert;
mod delimited;
mod json;

use std::io::Read;

use crate::table::{Target, TargetColumn};
use crate::{CopyCommand, CopyError, Format};

/// One row, in target-column order; `None` is NULL.
pub(crate) type Row = Vec<Option<String>>;

/// Decodes one file of `target` (`url` is only for messages).
pub(crate) fn decode(
    cmd: &CopyCommand,
    target: &Target,
    url: &str,
    bytes: &[u8],
) -> Result<Vec<Row>, CopyError> {
    let fail = |line: Option<u64>, reason: &str| load_error(&target.name, url, line, reason);
    match cmd.format {
        Format::Parquet => columnar::decode_parquet(url, bytes, &target.columns),
        Format::Orc => Err(orc_unsupported()),
        Format::Csv | Format::Text => {
            let text = decompressed_text(cmd, bytes, &fail)?;
            let (rows, skipped) = delimited::decode_counting(cmd, &text, &target.columns, &fail)?;
            convert::apply(cmd, &target.columns, rows, skipped, &fail)
        }
        Format::JsonAuto => {
            let text = decompressed_text(cmd, bytes, &fail)?;
            let rows = json::decode(cmd, &text, &target.columns, &fail)?;
            convert::apply(cmd, &target.columns, rows, 0, &fail)
        }
    }
}

/// Builds the error for a bad line: `(line, reason)`.
pub(crate) type Fail<'a> = dyn Fn(Option<u64>, &str) -> CopyError + 'a;

pub(crate) fn orc_unsupported() -> CopyError {
    CopyError::Syntax(
        "redshift-data-local does not support FORMAT AS ORC; write the files as PARQUET".into(),
    )
}

/// GZIP-decompresses when asked and checks the text is UTF-8 (Redshift loads
/// UTF-8 only, load error 1220 otherwise).
fn decompressed_text(cmd: &CopyCommand, bytes: &[u8], fail: &Fail) -> Result<String, CopyError> {
    let raw = if cmd.gzip {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| fail(None, &format!("Invalid data/compressed file: gzip: {e}")))?;
        out
    } else {
        bytes.to_vec()
    };
    if let Some(replacement) = cmd.accept_inv_chars {
        // ACCEPTINVCHARS: each invalid sequence becomes the replacement character.
        let lossy = String::from_utf8_lossy(&raw);
        return Ok(lossy.replace('\u{FFFD}', &replacement.to_string()));
    }
    String::from_utf8(raw).map_err(|e| {
        fail(
            None,
            &format!(
                "String contains invalid or unsupported UTF8 codepoints (at byte {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// A per-row load failure, worded like Redshift's COPY error plus the
/// `stl_load_errors` reason (the emulator keeps no `stl_load_errors`, so the
/// reason travels in the message).
pub(crate) fn load_error(table: &str, url: &str, line: Option<u64>, reason: &str) -> CopyError {
    let at = line.map(|l| format!(", line {l}")).unwrap_or_default();
    CopyError::Rejected(format!(
        "Load into table '{table}' failed.  Check 'stl_load_errors' system table for details. \
         Reason: {reason} (file '{url}'{at})"
    ))
}

/// Empty and blank fields, by Redshift's rules: an empty field is NULL for
/// non-character columns; for CHAR/VARCHAR it is '' unless EMPTYASNULL
/// (BLANKSASNULL also turns all-whitespace fields into NULL).
pub(crate) fn empty_rule(
    cmd: &CopyCommand,
    column: &TargetColumn,
    value: String,
) -> Option<String> {
    let empty_is_null = value.is_empty() && (!column.char_like || cmd.empty_as_null);
    let blank_is_null = column.char_like && cmd.blanks_as_null && value.trim().is_empty();
    (!(empty_is_null || blank_is_null)).then_some(value)
}

/// What the text decoders' unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    use crate::{parse, CopyCommand, CopyError};

    /// `COPY t FROM 's3://b/k' IAM_ROLE default <options>`.
    pub fn cmd(options: &str) -> CopyCommand {
        parse::parse_copy(&format!(
            "COPY t FROM 's3://b/k' IAM_ROLE default {options}"
        ))
        .unwrap()
    }

    /// A `Fail` that keeps the line number visible in the message.
    pub fn fail(line: Option<u64>, reason: &str) -> CopyError {
        CopyError::Rejected(format!("line {line:?}: {reason}"))
    }

    pub fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{cmd, fail};
    use super::*;

    #[test]
    fn invalid_utf8_fails_unless_acceptinvchars() {
        let bytes = b"1,caf\xe9\n";
        let e = decompressed_text(&cmd("CSV"), bytes, &fail).unwrap_err();
        assert!(e.to_string().contains("invalid or unsupported UTF8"), "{e}");
        let text = decompressed_text(&cmd("CSV ACCEPTINVCHARS"), bytes, &fail).unwrap();
        assert_eq!(text, "1,caf?\n");
        let text = decompressed_text(&cmd("CSV ACCEPTINVCHARS AS '^'"), bytes, &fail).unwrap();
        assert_eq!(text, "1,caf^\n");
    }
}
