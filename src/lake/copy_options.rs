//! A route's `copy_options`: COPY data-conversion parameters, checked at start-up
//! against the route's format and rendered by us, never spliced raw into SQL.
//!
//! Redshift references:
//! - data conversion parameters:
//!   <https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-data-conversion.html>
//! - Parquet/ORC take only ACCEPTINVCHARS, FILLRECORD, EXPLICIT_IDS (and
//!   SERIALIZETOJSON for nested data):
//!   <https://docs.aws.amazon.com/redshift/latest/dg/copy-usage_notes-copy-from-columnar.html>
//! - JSON cannot be combined with DELIMITER, FILLRECORD, IGNOREBLANKLINES or NULL AS:
//!   <https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-data-format.html#copy-json>

use std::fmt;

use crate::error::LoaderError;

/// Data format of the files, with the options COPY needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Parquet,
    Csv { header: bool },
    Json,
}

impl FileFormat {
    pub(crate) fn copy_clause(self) -> &'static str {
        match self {
            FileFormat::Parquet => "FORMAT AS PARQUET",
            FileFormat::Csv { header: true } => "FORMAT AS CSV IGNOREHEADER 1",
            FileFormat::Csv { header: false } => "FORMAT AS CSV",
            FileFormat::Json => "FORMAT AS JSON 'auto'",
        }
    }
}

/// A COPY option value as a SQL string literal. Unlike [`crate::sql::literal`] it
/// allows backslashes (`NULL AS '\N'`, Redshift's text-format NULL), but never one
/// before a quote or at the end: then the literal ends at the same place whether the
/// server reads `\` as an escape or not, so a value cannot change the statement.
fn literal(s: &str) -> Result<String, LoaderError> {
    let bad = |why: &str| LoaderError::BadValue(format!("{s:?} {why}"));
    if let Some(c) = s.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(bad(&format!("contains the control character {c:?}")));
    }
    if s.ends_with('\\') || s.contains("\\'") {
        return Err(bad("has a backslash at its end or before a quote"));
    }
    Ok(format!("'{}'", s.replace('\'', "''")))
}

/// One COPY parameter a route may add. Values are parsed and re-rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyOption {
    AcceptAnyDate,
    /// `ACCEPTINVCHARS [AS 'c']`: `None` is Redshift's default replacement `?`.
    AcceptInvChars(Option<char>),
    BlanksAsNull,
    /// `DATEFORMAT 'auto'` or a format such as `'YYYY-MM-DD'`.
    DateFormat(String),
    /// `DELIMITER 'c'` for CSV (a single character).
    Delimiter(char),
    EmptyAsNull,
    ExplicitIds,
    FillRecord,
    IgnoreBlankLines,
    MaxError(u32),
    /// `NULL AS 'text'`.
    NullAs(String),
    RoundEc,
    SerializeToJson,
    /// `TIMEFORMAT 'auto'`, `'epochsecs'`, or a format such as `'YYYY-MM-DD HH:MI:SS'`.
    TimeFormat(String),
    TrimBlanks,
    TruncateColumns,
}

impl CopyOption {
    /// The option's keyword, as the error messages name it.
    pub fn keyword(&self) -> &'static str {
        match self {
            CopyOption::AcceptAnyDate => "ACCEPTANYDATE",
            CopyOption::AcceptInvChars(_) => "ACCEPTINVCHARS",
            CopyOption::BlanksAsNull => "BLANKSASNULL",
            CopyOption::DateFormat(_) => "DATEFORMAT",
            CopyOption::Delimiter(_) => "DELIMITER",
            CopyOption::EmptyAsNull => "EMPTYASNULL",
            CopyOption::ExplicitIds => "EXPLICIT_IDS",
            CopyOption::FillRecord => "FILLRECORD",
            CopyOption::IgnoreBlankLines => "IGNOREBLANKLINES",
            CopyOption::MaxError(_) => "MAXERROR",
            CopyOption::NullAs(_) => "NULL AS",
            CopyOption::RoundEc => "ROUNDEC",
            CopyOption::SerializeToJson => "SERIALIZETOJSON",
            CopyOption::TimeFormat(_) => "TIMEFORMAT",
            CopyOption::TrimBlanks => "TRIMBLANKS",
            CopyOption::TruncateColumns => "TRUNCATECOLUMNS",
        }
    }

    /// Whether Redshift takes this option with `format`.
    pub fn allowed_for(&self, format: FileFormat) -> bool {
        match format {
            FileFormat::Parquet => matches!(
                self,
                CopyOption::AcceptInvChars(_)
                    | CopyOption::FillRecord
                    | CopyOption::ExplicitIds
                    | CopyOption::SerializeToJson
            ),
            FileFormat::Json => !matches!(
                self,
                CopyOption::Delimiter(_)
                    | CopyOption::FillRecord
                    | CopyOption::IgnoreBlankLines
                    | CopyOption::NullAs(_)
                    | CopyOption::SerializeToJson
            ),
            FileFormat::Csv { .. } => !matches!(self, CopyOption::SerializeToJson),
        }
    }

    /// Parses one entry of `copy_options` (`"EMPTYASNULL"`, `"NULL AS '\\N'"`,
    /// `"DATEFORMAT 'YYYY-MM-DD'"`, `"MAXERROR 10"`, …; keywords in any case, `AS`
    /// optional where Redshift makes it optional).
    pub fn parse(text: &str) -> Result<CopyOption, String> {
        let mut words = Words::new(text);
        let head = words
            .word()
            .ok_or_else(|| {
                format!("{text:?} is empty; expected a COPY option such as EMPTYASNULL")
            })?
            .to_ascii_uppercase();
        let option = match head.as_str() {
            "ACCEPTANYDATE" => CopyOption::AcceptAnyDate,
            "ACCEPTINVCHARS" => {
                words.optional_as();
                match words.quoted_opt(text)? {
                    None => CopyOption::AcceptInvChars(None),
                    Some(s) => CopyOption::AcceptInvChars(Some(single_char(&s, "ACCEPTINVCHARS")?)),
                }
            }
            "BLANKSASNULL" => CopyOption::BlanksAsNull,
            "DATEFORMAT" => {
                words.optional_as();
                CopyOption::DateFormat(words.quoted(text, "DATEFORMAT")?)
            }
            "DELIMITER" => {
                words.optional_as();
                let d = words.quoted(text, "DELIMITER")?;
                CopyOption::Delimiter(single_char(&d, "DELIMITER")?)
            }
            "EMPTYASNULL" => CopyOption::EmptyAsNull,
            "EXPLICIT_IDS" => CopyOption::ExplicitIds,
            "FILLRECORD" => CopyOption::FillRecord,
            "IGNOREBLANKLINES" => CopyOption::IgnoreBlankLines,
            "MAXERROR" => {
                words.optional_as();
                let n = words
                    .word()
                    .and_then(|w| w.parse::<u32>().ok())
                    .filter(|n| *n <= 100_000)
                    .ok_or_else(|| {
                        format!("{text:?}: MAXERROR takes a whole number from 0 to 100000")
                    })?;
                CopyOption::MaxError(n)
            }
            "NULL" => {
                words.optional_as();
                CopyOption::NullAs(words.quoted(text, "NULL AS")?)
            }
            "ROUNDEC" => CopyOption::RoundEc,
            "SERIALIZETOJSON" => CopyOption::SerializeToJson,
            "TIMEFORMAT" => {
                words.optional_as();
                CopyOption::TimeFormat(words.quoted(text, "TIMEFORMAT")?)
            }
            "TRIMBLANKS" => CopyOption::TrimBlanks,
            "TRUNCATECOLUMNS" => CopyOption::TruncateColumns,
            "GZIP" | "BZIP2" | "LZOP" | "ZSTD" | "MANIFEST" | "IAM_ROLE" | "CREDENTIALS"
            | "FORMAT" | "CSV" | "JSON" | "PARQUET" | "IGNOREHEADER" | "STATUPDATE"
            | "COMPUPDATE" | "REGION" => {
                return Err(format!(
                    "{text:?}: {head} is set by the loader (format, header, manifest, \
                     credentials), not by copy_options"
                ))
            }
            _ => {
                return Err(format!(
                    "{text:?} is not a COPY data-conversion option the loader knows (use e.g. \
                     EMPTYASNULL, BLANKSASNULL, NULL AS '…', ACCEPTINVCHARS, TRUNCATECOLUMNS, \
                     DATEFORMAT '…', TIMEFORMAT '…', MAXERROR n, FILLRECORD, ROUNDEC)"
                ))
            }
        };
        if let Some(rest) = words.rest() {
            return Err(format!("{text:?}: unexpected {rest:?} after {head}"));
        }
        let value = match &option {
            CopyOption::NullAs(s) | CopyOption::DateFormat(s) | CopyOption::TimeFormat(s) => {
                Some(s.clone())
            }
            CopyOption::AcceptInvChars(Some(c)) | CopyOption::Delimiter(c) => Some(c.to_string()),
            _ => None,
        };
        if let Some(v) = value {
            // Checked here so that rendering cannot fail later.
            literal(&v).map_err(|e| format!("{text:?}: {e}"))?;
        }
        Ok(option)
    }
}

impl fmt::Display for CopyOption {
    /// The COPY text: values are re-quoted by [`literal`] (checked in [`CopyOption::parse`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = |s: &str| literal(s).unwrap_or_else(|_| "''".to_string());
        match self {
            CopyOption::AcceptInvChars(None) => f.write_str("ACCEPTINVCHARS"),
            CopyOption::AcceptInvChars(Some(c)) => {
                write!(f, "ACCEPTINVCHARS AS {}", q(&c.to_string()))
            }
            CopyOption::DateFormat(s) => write!(f, "DATEFORMAT {}", q(s)),
            CopyOption::Delimiter(c) => write!(f, "DELIMITER {}", q(&c.to_string())),
            CopyOption::MaxError(n) => write!(f, "MAXERROR {n}"),
            CopyOption::NullAs(s) => write!(f, "NULL AS {}", q(s)),
            CopyOption::TimeFormat(s) => write!(f, "TIMEFORMAT {}", q(s)),
            other => f.write_str(other.keyword()),
        }
    }
}

/// Parses a route's `copy_options`, each checked against `format`.
pub fn parse_for(format: FileFormat, texts: &[String]) -> Result<Vec<CopyOption>, String> {
    let mut out: Vec<CopyOption> = Vec::new();
    for text in texts {
        let option = CopyOption::parse(text)?;
        if !option.allowed_for(format) {
            return Err(format!(
                "{} is not valid for format = \"{}\" (Redshift refuses it with this format)",
                option.keyword(),
                format_name(format)
            ));
        }
        if out.iter().any(|o| o.keyword() == option.keyword()) {
            return Err(format!("{} is given twice", option.keyword()));
        }
        out.push(option);
    }
    Ok(out)
}

fn format_name(format: FileFormat) -> &'static str {
    match format {
        FileFormat::Parquet => "parquet",
        FileFormat::Csv { .. } => "csv",
        FileFormat::Json => "json",
    }
}

/// The COPY text of a route's options, plus `DATEFORMAT 'auto' TIMEFORMAT 'auto'` for
/// CSV and JSON unless the route sets them: without them Redshift reads only
/// `YYYY-MM-DD` and `YYYY-MM-DD HH:MI:SS`, and every writer we know puts ISO 8601
/// (`T`, fractions, `Z`) in text files.
/// <https://docs.aws.amazon.com/redshift/latest/dg/automatic-recognition.html>
pub fn render(format: FileFormat, options: &[CopyOption]) -> String {
    let mut parts: Vec<String> = options.iter().map(ToString::to_string).collect();
    if format != FileFormat::Parquet {
        if !options
            .iter()
            .any(|o| matches!(o, CopyOption::DateFormat(_)))
        {
            parts.push("DATEFORMAT 'auto'".to_string());
        }
        if !options
            .iter()
            .any(|o| matches!(o, CopyOption::TimeFormat(_)))
        {
            parts.push("TIMEFORMAT 'auto'".to_string());
        }
    }
    parts.join(" ")
}

fn single_char(s: &str, what: &str) -> Result<char, String> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if !c.is_control() || c == '\t' => Ok(c),
        _ => Err(format!("{what} takes a single character, got {s:?}")),
    }
}

/// A tiny reader of `WORD [AS] 'quoted'` text.
struct Words<'a> {
    rest: &'a str,
}

impl<'a> Words<'a> {
    fn new(text: &'a str) -> Self {
        Words { rest: text.trim() }
    }

    fn word(&mut self) -> Option<&'a str> {
        let rest = self.rest.trim_start();
        if rest.is_empty() || rest.starts_with('\'') {
            return None;
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (w, tail) = rest.split_at(end);
        self.rest = tail.trim_start();
        Some(w)
    }

    fn optional_as(&mut self) {
        let rest = self.rest.trim_start();
        let is_as = rest.len() >= 2
            && rest[..2].eq_ignore_ascii_case("as")
            && rest[2..]
                .chars()
                .next()
                .is_none_or(|c| c.is_whitespace() || c == '\'');
        if is_as {
            self.rest = rest[2..].trim_start();
        }
    }

    /// A `'…'` string with `''` for a quote; `None` when no string follows.
    fn quoted_opt(&mut self, text: &str) -> Result<Option<String>, String> {
        let rest = self.rest.trim_start();
        let Some(body) = rest.strip_prefix('\'') else {
            return Ok(None);
        };
        let mut out = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if matches!(chars.peek(), Some((_, '\''))) {
                    chars.next();
                    out.push('\'');
                } else {
                    self.rest = body[i + 1..].trim_start();
                    return Ok(Some(out));
                }
            } else {
                out.push(c);
            }
        }
        Err(format!("{text:?}: unterminated quoted string"))
    }

    fn quoted(&mut self, text: &str, what: &str) -> Result<String, String> {
        self.quoted_opt(text)?
            .ok_or_else(|| format!("{text:?}: {what} takes a quoted value, e.g. {what} 'auto'"))
    }

    fn rest(&self) -> Option<&'a str> {
        let r = self.rest.trim();
        (!r.is_empty()).then_some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> CopyOption {
        CopyOption::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_and_rerenders_each_option() {
        let cases = [
            ("emptyasnull", "EMPTYASNULL"),
            ("BLANKSASNULL", "BLANKSASNULL"),
            ("NULL AS '\\N'", "NULL AS '\\N'"),
            ("DELIMITER '\t'", "DELIMITER '\t'"),
            ("null as 'it''s'", "NULL AS 'it''s'"),
            ("NULL 'nil'", "NULL AS 'nil'"),
            ("ACCEPTINVCHARS", "ACCEPTINVCHARS"),
            ("ACCEPTINVCHARS AS '^'", "ACCEPTINVCHARS AS '^'"),
            ("acceptinvchars '?'", "ACCEPTINVCHARS AS '?'"),
            ("TRUNCATECOLUMNS", "TRUNCATECOLUMNS"),
            ("DATEFORMAT AS 'DD/MM/YYYY'", "DATEFORMAT 'DD/MM/YYYY'"),
            ("TIMEFORMAT 'epochsecs'", "TIMEFORMAT 'epochsecs'"),
            ("MAXERROR 10", "MAXERROR 10"),
            ("MAXERROR AS 0", "MAXERROR 0"),
            ("FILLRECORD", "FILLRECORD"),
            ("ROUNDEC", "ROUNDEC"),
            ("DELIMITER '|'", "DELIMITER '|'"),
            ("SERIALIZETOJSON", "SERIALIZETOJSON"),
        ];
        for (input, rendered) in cases {
            assert_eq!(ok(input).to_string(), rendered, "{input}");
        }
    }

    #[test]
    fn nothing_is_spliced_raw() {
        for bad in [
            "EMPTYASNULL; DROP TABLE x",
            "NULL AS 'x' IAM_ROLE 'y'",
            "NULL AS x",
            "NULL AS 'unterminated",
            "DATEFORMAT 'a\\'",
            "NULL AS 'a\\''b'",
            "DELIMITER '\\'",
            "MAXERROR 1; DELETE",
            "MAXERROR -1",
            "MAXERROR 1000000",
            "ACCEPTINVCHARS AS 'ab'",
            "DELIMITER ',,'",
            "IAM_ROLE 'arn:aws:iam::1:role/x'",
            "GZIP",
            "FOO",
            "",
        ] {
            assert!(CopyOption::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(CopyOption::parse("GZIP")
            .unwrap_err()
            .contains("set by the loader"));
    }

    #[test]
    fn format_allow_lists() {
        let parquet = FileFormat::Parquet;
        let e = parse_for(parquet, &["EMPTYASNULL".to_string()]).unwrap_err();
        assert!(e.contains("EMPTYASNULL") && e.contains("parquet"), "{e}");
        assert!(parse_for(parquet, &["ACCEPTINVCHARS".into(), "FILLRECORD".into()]).is_ok());
        assert!(parse_for(FileFormat::Json, &["NULL AS 'x'".into()]).is_err());
        assert!(parse_for(
            FileFormat::Json,
            &["EMPTYASNULL".into(), "MAXERROR 5".into()]
        )
        .is_ok());
        let csv = FileFormat::Csv { header: true };
        assert!(parse_for(csv, &["SERIALIZETOJSON".into()]).is_err());
        assert!(
            parse_for(csv, &["EMPTYASNULL".into(), "emptyasnull".into()])
                .unwrap_err()
                .contains("twice")
        );
    }

    #[test]
    fn text_formats_get_auto_date_and_time_unless_set() {
        let csv = FileFormat::Csv { header: false };
        assert_eq!(render(FileFormat::Parquet, &[]), "");
        assert_eq!(render(csv, &[]), "DATEFORMAT 'auto' TIMEFORMAT 'auto'");
        assert_eq!(
            render(FileFormat::Json, &[CopyOption::EmptyAsNull]),
            "EMPTYASNULL DATEFORMAT 'auto' TIMEFORMAT 'auto'"
        );
        let own = [CopyOption::TimeFormat("epochsecs".into())];
        assert_eq!(
            render(csv, &own),
            "TIMEFORMAT 'epochsecs' DATEFORMAT 'auto'"
        );
    }
}
