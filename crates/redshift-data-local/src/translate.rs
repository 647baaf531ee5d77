//! The few Redshift-isms PostgreSQL lacks, rewritten as text before execution.
//!
//! Everything here is pure: a small tokenizer that knows where string literals,
//! quoted identifiers, dollar-quoted bodies and comments start and end, and
//! rewrites that only touch bare words outside them. `GETDATE()` needs no rewrite:
//! the executor creates a `getdate()` function in every database instead.

use std::collections::{BTreeMap, BTreeSet};

/// What SYSDATE means in Redshift: the transaction start time in UTC, as `timestamp`.
const SYSDATE_SQL: &str = "(pg_catalog.transaction_timestamp() AT TIME ZONE 'UTC')";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A bare word: keyword or unquoted identifier.
    Word,
    /// Whitespace or a comment.
    Space,
    /// `'...'`, `E'...'`, `"..."`: passed through untouched.
    Quoted,
    /// `$tag$ ... $tag$`: the body is rewritten (SYSDATE only), since PL/pgSQL
    /// bodies run as PostgreSQL too.
    Dollar,
    /// `:name` outside literals, a Data API named parameter.
    Param,
    /// Anything else: numbers, operators, punctuation (`::` is one token).
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
}

fn is_word_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// Splits SQL into tokens. Never fails: an unterminated literal runs to the end
/// (PostgreSQL then reports the syntax error with its own words).
fn tokenize(sql: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let chars: Vec<(usize, char)> = sql.char_indices().collect();
    let end_of = |i: usize| chars.get(i).map_or(sql.len(), |&(pos, _)| pos);
    let mut i = 0;
    while i < chars.len() {
        let (start, c) = chars[i];
        let next = chars.get(i + 1).map(|&(_, c)| c);
        let (kind, j) = if c.is_whitespace() {
            let mut j = i;
            while j < chars.len() && chars[j].1.is_whitespace() {
                j += 1;
            }
            (Kind::Space, j)
        } else if c == '-' && next == Some('-') {
            let mut j = i;
            while j < chars.len() && chars[j].1 != '\n' {
                j += 1;
            }
            (Kind::Space, j)
        } else if c == '/' && next == Some('*') {
            (Kind::Space, block_comment_end(&chars, i))
        } else if c == '\'' || c == '"' {
            (Kind::Quoted, quoted_end(&chars, i + 1, c, false))
        } else if (c == 'e' || c == 'E') && next == Some('\'') {
            (Kind::Quoted, quoted_end(&chars, i + 2, '\'', true))
        } else if c == '$' {
            match dollar_end(sql, start) {
                Some(byte_end) => {
                    let j = chars.partition_point(|&(pos, _)| pos < byte_end);
                    (Kind::Dollar, j)
                }
                None => (Kind::Other, i + 1),
            }
        } else if is_word_start(c) {
            let mut j = i + 1;
            while j < chars.len() && is_word_char(chars[j].1) {
                j += 1;
            }
            (Kind::Word, j)
        } else if c == ':' && next == Some(':') {
            (Kind::Other, i + 2)
        } else if c == ':' && next.is_some_and(is_word_start) {
            let mut j = i + 2;
            while j < chars.len() && (chars[j].1.is_alphanumeric() || chars[j].1 == '_') {
                j += 1;
            }
            (Kind::Param, j)
        } else if c.is_ascii_digit() {
            let mut j = i + 1;
            while j < chars.len() && (chars[j].1.is_alphanumeric() || chars[j].1 == '.') {
                j += 1;
            }
            (Kind::Other, j)
        } else {
            (Kind::Other, i + 1)
        };
        tokens.push(Token {
            kind,
            text: &sql[start..end_of(j)],
        });
        i = j;
    }
    tokens
}

fn block_comment_end(chars: &[(usize, char)], start: usize) -> usize {
    // PostgreSQL block comments nest.
    let mut depth = 0;
    let mut j = start;
    while j < chars.len() {
        let c = chars[j].1;
        let next = chars.get(j + 1).map(|&(_, c)| c);
        if c == '/' && next == Some('*') {
            depth += 1;
            j += 2;
        } else if c == '*' && next == Some('/') {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return j;
            }
        } else {
            j += 1;
        }
    }
    chars.len()
}

fn quoted_end(chars: &[(usize, char)], mut j: usize, quote: char, backslash: bool) -> usize {
    while j < chars.len() {
        let c = chars[j].1;
        if backslash && c == '\\' {
            j += 2;
        } else if c == quote {
            // A doubled quote is an escaped quote, not the end.
            if chars.get(j + 1).map(|&(_, c)| c) == Some(quote) {
                j += 2;
            } else {
                return j + 1;
            }
        } else {
            j += 1;
        }
    }
    chars.len()
}

/// Byte offset just past the closing `$tag$`, when `sql[start..]` opens a
/// dollar-quoted body.
fn dollar_end(sql: &str, start: usize) -> Option<usize> {
    let rest = &sql[start + 1..];
    let tag_len = rest.find('$')?;
    let tag = &rest[..tag_len];
    if !tag.chars().all(|c| c.is_alphanumeric() || c == '_')
        || tag.starts_with(|c: char| c.is_ascii_digit())
    {
        return None;
    }
    let delimiter = format!("${tag}$");
    let body_start = start + delimiter.len();
    match sql[body_start..].find(&delimiter) {
        Some(pos) => Some(body_start + pos + delimiter.len()),
        None => Some(sql.len()),
    }
}

/// Rewrites a statement so PostgreSQL accepts Redshift's dialect: `SYSDATE`
/// everywhere (procedure bodies included), and Redshift-only table attributes in
/// `CREATE TABLE`. Nothing else changes.
pub fn translate(sql: &str) -> String {
    let tokens = tokenize(sql);
    let tokens = if is_create_table(&tokens) {
        strip_table_attributes(tokens)
    } else {
        tokens.into_iter().map(|t| (t, None)).collect()
    };
    let mut out = String::with_capacity(sql.len());
    // DATEADD(datepart, n, ts): Redshift's datepart is a bare word; the executor's
    // `dateadd(text, bigint, timestamp)` takes it as text. 0 = outside, 1 = after
    // DATEADD, 2 = after its `(`.
    let mut dateadd = 0;
    for (i, (token, replacement)) in tokens.iter().enumerate() {
        if let Some(replacement) = replacement {
            out.push_str(replacement);
            continue;
        }
        if token.kind != Kind::Space {
            let datepart = dateadd == 2 && token.kind == Kind::Word;
            dateadd = match (dateadd, token.kind, token.text) {
                (0, Kind::Word, w)
                    if w.eq_ignore_ascii_case("dateadd") && !follows_dot(&tokens, i) =>
                {
                    1
                }
                (1, _, "(") => 2,
                _ => 0,
            };
            if datepart {
                out.push_str(&quote_literal(token.text));
                continue;
            }
        }
        match token.kind {
            Kind::Word
                if token.text.eq_ignore_ascii_case("sysdate")
                    && !follows_dot(&tokens, i)
                    && !precedes_dot(&tokens, i) =>
            {
                out.push_str(SYSDATE_SQL)
            }
            Kind::Dollar => out.push_str(&translate_dollar_body(token.text)),
            _ => out.push_str(token.text),
        }
    }
    out
}

type Rewritten<'a> = (Token<'a>, Option<String>);

fn follows_dot(tokens: &[Rewritten<'_>], i: usize) -> bool {
    i > 0 && tokens[i - 1].0.text == "."
}

fn precedes_dot(tokens: &[Rewritten<'_>], i: usize) -> bool {
    tokens.get(i + 1).is_some_and(|(t, _)| t.text == ".")
}

fn translate_dollar_body(text: &str) -> String {
    let Some(tag_end) = text[1..].find('$').map(|p| p + 2) else {
        return text.to_string();
    };
    let tag = &text[..tag_end];
    if text.len() < 2 * tag.len() || !text.ends_with(tag) {
        return text.to_string(); // unterminated: leave it to PostgreSQL
    }
    let body = &text[tag.len()..text.len() - tag.len()];
    format!("{tag}{}{tag}", translate(body))
}

fn significant<'a, 'b>(tokens: &'b [Token<'a>]) -> impl Iterator<Item = &'b Token<'a>> {
    tokens.iter().filter(|t| t.kind != Kind::Space)
}

/// `CREATE [LOCAL] [TEMP|TEMPORARY] TABLE ...`
fn is_create_table(tokens: &[Token<'_>]) -> bool {
    let mut words = significant(tokens).map(|t| t.text.to_ascii_lowercase());
    if words.next().as_deref() != Some("create") {
        return false;
    }
    for word in words {
        match word.as_str() {
            "local" | "temp" | "temporary" => continue,
            "table" => return true,
            _ => return false,
        }
    }
    false
}

/// Removes DISTKEY, SORTKEY, DISTSTYLE, ENCODE and BACKUP clauses (column and table
/// level) and turns `IDENTITY(seed, step)` into PostgreSQL's identity column.
fn strip_table_attributes(tokens: Vec<Token<'_>>) -> Vec<Rewritten<'_>> {
    let mut out: Vec<Rewritten<'_>> = tokens.iter().cloned().map(|t| (t, None)).collect();
    let blank = |out: &mut Vec<Rewritten<'_>>, from: usize, to: usize| {
        for item in out.iter_mut().take(to).skip(from) {
            item.1 = Some(String::new());
        }
    };
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i].kind != Kind::Word {
            i += 1;
            continue;
        }
        let word = tokens[i].text.to_ascii_lowercase();
        let next = next_significant(&tokens, i + 1);
        let next_text = next.map(|j| tokens[j].text.to_ascii_lowercase());
        match word.as_str() {
            "distkey" | "sortkey" => {
                let end = match next_text.as_deref() {
                    Some("(") => next.and_then(|j| closing_paren(&tokens, j)),
                    Some("auto") if word == "sortkey" => next.map(|j| j + 1),
                    _ => Some(i + 1), // column-level attribute
                };
                let mut start = i;
                if word == "sortkey" {
                    if let Some(prev) = prev_significant(&tokens, i) {
                        let prev_word = tokens[prev].text.to_ascii_lowercase();
                        if prev_word == "compound" || prev_word == "interleaved" {
                            start = prev;
                        }
                    }
                }
                let end = end.unwrap_or(tokens.len());
                blank(&mut out, start, end);
                i = end;
            }
            "diststyle" | "encode" | "backup"
                if next.is_some_and(|j| tokens[j].kind == Kind::Word) =>
            {
                let end = next.map_or(i + 1, |j| j + 1);
                blank(&mut out, i, end);
                i = end;
            }
            "identity" if next_text.as_deref() == Some("(") => {
                let open = next.unwrap_or(i);
                let close = closing_paren(&tokens, open).unwrap_or(tokens.len());
                let args: String = tokens[open + 1..close.saturating_sub(1)]
                    .iter()
                    .map(|t| t.text)
                    .collect();
                let mut parts = args.split(',').map(str::trim);
                let replacement = match (parts.next(), parts.next(), parts.next()) {
                    (Some(seed), Some(step), None) => format!(
                        "GENERATED BY DEFAULT AS IDENTITY (START WITH {seed} INCREMENT BY {step})"
                    ),
                    _ => "GENERATED BY DEFAULT AS IDENTITY".to_string(),
                };
                blank(&mut out, i, close);
                out[i].1 = Some(replacement);
                i = close;
            }
            _ => i += 1,
        }
    }
    out
}

fn next_significant(tokens: &[Token<'_>], from: usize) -> Option<usize> {
    (from..tokens.len()).find(|&j| tokens[j].kind != Kind::Space)
}

fn prev_significant(tokens: &[Token<'_>], before: usize) -> Option<usize> {
    (0..before).rev().find(|&j| tokens[j].kind != Kind::Space)
}

/// Index just past the `)` matching the `(` at `open`.
fn closing_paren(tokens: &[Token<'_>], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, token) in tokens.iter().enumerate().skip(open) {
        match token.text {
            "(" => depth += 1,
            ")" => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(j + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Why a statement's `:name` parameters could not be bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParameterError {
    #[error(
        "The parameter name '{0}' is invalid: names contain only letters, digits and underscores"
    )]
    InvalidName(String),
    #[error("The parameter '{0}' is specified more than once")]
    Duplicate(String),
    #[error("The parameter '{0}' is referenced in the SQL but no value was provided")]
    Missing(String),
    #[error("The parameter '{0}' was provided but is not referenced in the SQL")]
    Unused(String),
}

/// Validates parameter names and turns them into a lookup table.
pub fn parameter_map(params: &[(String, String)]) -> Result<BTreeMap<&str, &str>, ParameterError> {
    let mut map = BTreeMap::new();
    for (name, value) in params {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ParameterError::InvalidName(name.clone()));
        }
        if map.insert(name.as_str(), value.as_str()).is_some() {
            return Err(ParameterError::Duplicate(name.clone()));
        }
    }
    Ok(map)
}

/// Replaces `:name` (outside literals, identifiers, comments, bodies and `::`
/// casts) with the value as a quoted SQL literal, which PostgreSQL types by
/// context like Redshift does with Data API parameters. Records which names were
/// used so the caller can reject parameters nobody references.
pub fn bind_parameters<'p>(
    sql: &str,
    params: &BTreeMap<&'p str, &'p str>,
    used: &mut BTreeSet<&'p str>,
) -> Result<String, ParameterError> {
    let mut out = String::with_capacity(sql.len());
    for token in tokenize(sql) {
        if token.kind != Kind::Param {
            out.push_str(token.text);
            continue;
        }
        let name = &token.text[1..];
        let Some((&key, &value)) = params.get_key_value(name) else {
            return Err(ParameterError::Missing(name.to_string()));
        };
        used.insert(key);
        out.push_str(&quote_literal(value));
    }
    Ok(out)
}

/// A SQL string literal (standard_conforming_strings: only `'` needs escaping).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The statement's first keyword, lowercased (comments and whitespace skipped).
pub fn first_keyword(sql: &str) -> Option<String> {
    let tokens = tokenize(sql);
    let first = significant(&tokens)
        .next()
        .filter(|t| t.kind == Kind::Word)
        .map(|t| t.text.to_ascii_lowercase());
    first
}

/// Transaction control would break the Data API's own transaction handling.
pub fn is_transaction_control(sql: &str) -> bool {
    matches!(
        first_keyword(sql).as_deref(),
        Some("begin" | "start" | "commit" | "end" | "rollback" | "abort" | "savepoint" | "release")
    )
}

/// Statements PostgreSQL refuses inside a transaction block; a single
/// ExecuteStatement runs them in autocommit, as Redshift does.
pub fn needs_autocommit(sql: &str) -> bool {
    let tokens = tokenize(sql);
    let mut words = significant(&tokens).map(|t| t.text.to_ascii_lowercase());
    match words.next().as_deref() {
        Some("vacuum") => true,
        Some("create" | "drop") => matches!(words.next().as_deref(), Some("database")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn squash(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn sysdate_is_rewritten_outside_literals_only() {
        let sql = "SELECT sysdate, 'sysdate', \"sysdate\", t.sysdate -- sysdate\nFROM t";
        assert_eq!(
            translate(sql),
            format!("SELECT {SYSDATE_SQL}, 'sysdate', \"sysdate\", t.sysdate -- sysdate\nFROM t")
        );
    }

    #[test]
    fn sysdate_in_procedure_body_is_rewritten() {
        let sql = "CREATE PROCEDURE p() AS $body$ BEGIN INSERT INTO t VALUES (SYSDATE); END $body$ LANGUAGE plpgsql";
        let out = translate(sql);
        assert!(out.contains(&format!("VALUES ({SYSDATE_SQL})")), "{out}");
        assert!(out.starts_with("CREATE PROCEDURE p() AS $body$ BEGIN"));
        assert!(out.ends_with("$body$ LANGUAGE plpgsql"));
    }

    #[test]
    fn dateadd_datepart_becomes_text() {
        assert_eq!(
            translate("UPDATE t SET e = DATEADD(second, 960, GETDATE())"),
            "UPDATE t SET e = DATEADD('second', 960, GETDATE())"
        );
        assert_eq!(
            translate("SELECT dateadd ( day , -3, x), 'DATEADD(day, 1, y)'"),
            "SELECT dateadd ( 'day' , -3, x), 'DATEADD(day, 1, y)'"
        );
        assert!(
            translate("CREATE PROCEDURE p() AS $$ BEGIN x := DATEADD(second, 1, y); END $$")
                .contains("DATEADD('second', 1, y)")
        );
    }

    #[test]
    fn create_table_attributes_are_stripped() {
        let sql = "CREATE TABLE s.t (id BIGINT IDENTITY(1,1), a INT ENCODE az64 DISTKEY, b VARCHAR(10) ENCODE zstd SORTKEY, c DATE) \
                   BACKUP NO DISTSTYLE KEY DISTKEY(a) COMPOUND SORTKEY(c, a) ENCODE AUTO;";
        assert_eq!(
            squash(&translate(sql)),
            "CREATE TABLE s.t (id BIGINT GENERATED BY DEFAULT AS IDENTITY (START WITH 1 INCREMENT BY 1), a INT , b VARCHAR(10) , c DATE) ;"
        );
    }

    #[test]
    fn interleaved_sortkey_and_temp_table() {
        let sql = "create temp table x (a int, b int) diststyle even interleaved sortkey (a, b)";
        assert_eq!(
            squash(&translate(sql)),
            "create temp table x (a int, b int)"
        );
    }

    #[test]
    fn encode_function_in_ctas_is_kept() {
        let sql = "CREATE TABLE t AS SELECT encode(b, 'hex') AS h FROM s";
        assert_eq!(translate(sql), sql);
    }

    #[test]
    fn other_statements_pass_through() {
        let sql = "SELECT distkey, encode FROM t WHERE x = 'DISTKEY(a)'";
        assert_eq!(translate(sql), sql);
    }

    #[test]
    fn parameters_are_bound_as_literals() {
        let params = vec![
            ("id".to_string(), "42".to_string()),
            ("name".to_string(), "O'Brien".to_string()),
        ];
        let map = parameter_map(&params).unwrap();
        let mut used = BTreeSet::new();
        let sql = "SELECT :id::int, ':name', \"x:name\", $$ :name $$, :name -- :id\n";
        let out = bind_parameters(sql, &map, &mut used).unwrap();
        assert_eq!(
            out,
            "SELECT '42'::int, ':name', \"x:name\", $$ :name $$, 'O''Brien' -- :id\n"
        );
        assert_eq!(used.len(), 2);
    }

    #[test]
    fn missing_and_bad_parameters_are_errors() {
        let params = vec![("a".to_string(), "1".to_string())];
        let map = parameter_map(&params).unwrap();
        let mut used = BTreeSet::new();
        assert_eq!(
            bind_parameters("SELECT :b", &map, &mut used),
            Err(ParameterError::Missing("b".into()))
        );
        let bad = vec![("a-b".to_string(), "1".to_string())];
        assert!(matches!(
            parameter_map(&bad),
            Err(ParameterError::InvalidName(_))
        ));
        let dup = vec![
            ("a".to_string(), "1".to_string()),
            ("a".to_string(), "2".to_string()),
        ];
        assert!(matches!(
            parameter_map(&dup),
            Err(ParameterError::Duplicate(_))
        ));
    }

    #[test]
    fn casts_and_assignments_are_not_parameters() {
        let map = BTreeMap::new();
        let mut used = BTreeSet::new();
        let sql = "SELECT x::date, a := 1";
        assert_eq!(bind_parameters(sql, &map, &mut used).unwrap(), sql);
    }

    #[test]
    fn keywords_are_classified() {
        assert!(is_transaction_control("  -- c\n BEGIN"));
        assert!(is_transaction_control("commit;"));
        assert!(!is_transaction_control(
            "CREATE PROCEDURE p() AS $$ BEGIN END $$"
        ));
        assert!(needs_autocommit("VACUUM t"));
        assert!(needs_autocommit("create database x"));
        assert!(!needs_autocommit("create table x (a int)"));
        assert_eq!(
            first_keyword("/* a /* nested */ */ select 1").as_deref(),
            Some("select")
        );
    }

    #[test]
    fn escape_strings_and_unterminated_input() {
        let sql = "SELECT E'it\\'s sysdate', sysdate";
        assert_eq!(
            translate(sql),
            format!("SELECT E'it\\'s sysdate', {SYSDATE_SQL}")
        );
        assert_eq!(translate("SELECT 'open"), "SELECT 'open");
        assert_eq!(translate("SELECT $$open"), "SELECT $$open");
    }
}
