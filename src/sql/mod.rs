//! SQL text building. Pure: every function returns text, nothing here talks to Redshift.
//!
//! Values are inlined as literals (BatchExecuteStatement does take `Parameters`, shared
//! by every statement of the batch, but the loader's batches were built before the
//! emulator knew it, and a literal keeps each statement readable on its own in
//! `SYS_QUERY_HISTORY`). Everything inlined goes through [`literal`] (or is a validated [`Ident`] / integer), so a value
//! from an S3 key can never change the statement's shape.
//!
//! The folder holds the text of each step's statements beside the others of that step:
//! `lease` (take, holder reads, drain, release), `load` (load batch, ledger inserts,
//! COPY targets), `bootstrap` (bootstrap, grants, procedures), `status` (loaderctl
//! status, history, doctor reads); this file holds what they share: identifiers,
//! literals, partition literals, [`LeaseTables`], the UTC session. Its items are
//! re-exported here, so `crate::sql::X` names each of them. Arrows: `sql` → `error` and
//! `lake::copy_options` (from `load` only); `copy_options` does not import `sql`.

use std::fmt;

use crate::error::LoaderError;

mod bootstrap;
mod columns;
mod lease;
mod load;
mod quarantine;
mod status;

pub use bootstrap::*;
pub use columns::*;
pub use lease::*;
pub use load::*;
pub use quarantine::*;
pub use status::*;

/// A Redshift identifier that passed the strict rule `[A-Za-z_][A-Za-z0-9_$]*` (at most
/// 127 bytes). Stored lower-case because Redshift folds unquoted names; always emitted
/// double-quoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    pub fn parse(s: &str) -> Result<Ident, String> {
        let mut chars = s.chars();
        let first_ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
        if !first_ok || !rest_ok || s.len() > 127 {
            return Err(format!(
                "{s:?} is not a valid identifier (letters, digits, _ and $, starting with a letter \
                 or _, at most 127 bytes)"
            ));
        }
        Ok(Ident(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `schema.table`, both parts validated identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    pub schema: Ident,
    pub name: Ident,
}

impl TableName {
    pub fn parse(s: &str) -> Result<TableName, String> {
        match s.split_once('.') {
            Some((schema, name)) => Ok(TableName {
                schema: Ident::parse(schema)?,
                name: Ident::parse(name)?,
            }),
            None => Err(format!("{s:?} must be schema.table")),
        }
    }

    pub fn quoted(&self) -> String {
        format!("{}.{}", self.schema.quoted(), self.name.quoted())
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// A string literal: `'` doubled. NUL and control characters are refused (Redshift
/// cannot store NUL and they have no business in keys or names). Backslashes are refused
/// too: they are literal under standard_conforming_strings, but refusing them keeps the
/// quoting safe even on a server that treats `\` as an escape.
pub fn literal(s: &str) -> Result<String, LoaderError> {
    if let Some(c) = s.chars().find(|c| c.is_control() || *c == '\\') {
        return Err(LoaderError::BadValue(format!(
            "{s:?} contains the character {c:?}, which is not allowed in a SQL literal"
        )));
    }
    Ok(format!("'{}'", s.replace('\'', "''")))
}

/// The type a partition column is validated against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionType {
    Date,
    Integer,
    String,
}

/// A partition value rendered for SQL; only built by [`partition_literal`] and
/// [`null_partition_literal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlLiteral {
    text: String,
    null: bool,
    /// A string value's length in characters (what Redshift's LENGTH returns for a
    /// VARCHAR, trailing blanks included), and whether it ends in a blank.
    string: Option<(usize, bool)>,
    /// The validated value as text (`7` for an integer `007`), from which
    /// [`SqlLiteral::for_column`] renders it for the table's column type; `None` for NULL.
    value: Option<String>,
}

impl SqlLiteral {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A string value that ends in a blank (`city=Paris%20`): Redshift's `=` cannot tell
    /// it from the value without the blank, and a CHAR column cannot even store the
    /// difference.
    pub fn ends_in_blank(&self) -> bool {
        self.string.is_some_and(|(_, blank)| blank)
    }

    /// A NULL partition value: predicates on it need `IS NULL`, never `= NULL`.
    pub fn is_null(&self) -> bool {
        self.null
    }
}

fn value_literal(text: String, value: String) -> SqlLiteral {
    SqlLiteral {
        text,
        null: false,
        string: None,
        value: Some(value),
    }
}

fn string_literal(value: &str) -> Result<SqlLiteral, String> {
    literal(value)
        .map(|text| SqlLiteral {
            text,
            null: false,
            string: Some((value.chars().count(), value.ends_with(' '))),
            value: Some(value.to_string()),
        })
        .map_err(|e| e.to_string())
}

impl SqlLiteral {
    /// The same value rendered for a table column of `data_type` (as
    /// `information_schema.columns` names it), whatever type the route gave: a route
    /// without types has string values, and `order_date = '2024-05-28' AND
    /// LENGTH(order_date) = 10` fails on a DATE column (`function length(date) does not
    /// exist`). Only CHAR/VARCHAR columns keep the string form with its trailing-blank
    /// guard; other types get a literal of their own type, validated here so that a value
    /// the column cannot hold is a named error before anything runs (never a load that
    /// fails halfway: the batch is one transaction anyway). `Err` names the problem.
    pub fn for_column(&self, data_type: &str) -> Result<SqlLiteral, String> {
        let ty = data_type.to_ascii_lowercase();
        let Some(value) = self.value.as_deref() else {
            return Ok(match sql_type_of(&ty) {
                Some(sql_type) => SqlLiteral {
                    text: format!("CAST(NULL AS {sql_type})"),
                    null: true,
                    string: None,
                    value: None,
                },
                None => self.clone(),
            });
        };
        let not = |what: &str| format!("{value:?} is not {what} (the table's column is {ty})");
        match ty.as_str() {
            "character varying" | "character" | "varchar" | "char" | "bpchar" | "text" => {
                string_literal(value)
            }
            "date" => partition_literal(PartitionType::Date, value)
                .map_err(|_| not("a date (YYYY-MM-DD)")),
            "smallint" | "integer" | "bigint" => {
                let range = match ty.as_str() {
                    "smallint" => i64::from(i16::MIN)..=i64::from(i16::MAX),
                    "integer" => i64::from(i32::MIN)..=i64::from(i32::MAX),
                    _ => i64::MIN..=i64::MAX,
                };
                value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| range.contains(n))
                    .map(|n| value_literal(n.to_string(), n.to_string()))
                    .ok_or_else(|| not(&format!("an integer in {range:?}")))
            }
            // A plain numeric constant, not CAST(… AS NUMERIC): Redshift's NUMERIC without
            // precision is NUMERIC(18,0) and would round 12.50 to 13.
            "numeric" | "decimal" => is_decimal(value)
                .then(|| value_literal(value.to_string(), value.to_string()))
                .ok_or_else(|| not("a decimal number")),
            "real" | "double precision" => value
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && is_decimal_or_exponent(value))
                .map(|_| {
                    let sql_type = if ty == "real" {
                        "REAL"
                    } else {
                        "DOUBLE PRECISION"
                    };
                    value_literal(format!("CAST('{value}' AS {sql_type})"), value.to_string())
                })
                .ok_or_else(|| not("a floating-point number")),
            "boolean" => match value.to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "1" => Ok(value_literal("TRUE".into(), "true".into())),
                "false" | "f" | "no" | "n" | "0" => {
                    Ok(value_literal("FALSE".into(), "false".into()))
                }
                _ => Err(not("a boolean (true/false, t/f, yes/no, y/n, 1/0)")),
            },
            "timestamp without time zone" | "timestamp" => timestamp_value(value)
                .map(|ts| value_literal(format!("CAST('{ts}' AS TIMESTAMP)"), ts))
                .ok_or_else(|| not("a timestamp (YYYY-MM-DD[ HH:MM:SS[.f]])")),
            other => Err(format!(
                "a partition value cannot be compared with or written to a column of type {other}"
            )),
        }
    }
}

/// The SQL type a NULL partition value is cast to for a column of `data_type`.
fn sql_type_of(data_type: &str) -> Option<&'static str> {
    Some(match data_type {
        "character varying" | "varchar" | "text" => "VARCHAR",
        "character" | "char" | "bpchar" => "CHAR",
        "date" => "DATE",
        "smallint" => "SMALLINT",
        "integer" => "INTEGER",
        "bigint" => "BIGINT",
        "numeric" | "decimal" => "DECIMAL",
        "real" => "REAL",
        "double precision" => "DOUBLE PRECISION",
        "boolean" => "BOOLEAN",
        "timestamp without time zone" | "timestamp" => "TIMESTAMP",
        _ => return None,
    })
}

/// `[+-]digits[.digits]` or `[+-].digits`: safe to inline as a numeric constant.
fn is_decimal(v: &str) -> bool {
    let body = v.strip_prefix(['+', '-']).unwrap_or(v);
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    match body.split_once('.') {
        Some((int, frac)) => digits(int) && !frac.is_empty() && digits(frac),
        None => !body.is_empty() && digits(body),
    }
}

fn is_decimal_or_exponent(v: &str) -> bool {
    let (mantissa, exponent) = v
        .split_once(['e', 'E'])
        .map_or((v, None), |(m, e)| (m, Some(e)));
    is_decimal(mantissa)
        && exponent.is_none_or(|e| {
            let e = e.strip_prefix(['+', '-']).unwrap_or(e);
            !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
        })
}

/// A Hive timestamp partition value (`2024-05-28 10:00:00`, `2024-05-28T10:00:00.5`, or a
/// date alone) rendered as Redshift reads a TIMESTAMP literal.
fn timestamp_value(v: &str) -> Option<String> {
    let parsed = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(v, f).ok())
        .or_else(|| {
            (v.len() == 10)
                .then(|| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
                .flatten()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })?;
    (chrono::Datelike::year(&parsed) >= 1)
        .then(|| parsed.format("%Y-%m-%d %H:%M:%S%.f").to_string())
}

/// Validates `value` against `ty` and renders a literal that Redshift and PostgreSQL both
/// read the same way. `None` names what is wrong.
pub fn partition_literal(ty: PartitionType, value: &str) -> Result<SqlLiteral, String> {
    match ty {
        PartitionType::Date => {
            // Year 0000 parses in chrono (ISO 8601's 1 BC) but Redshift and PostgreSQL
            // have no year 0 and reject the literal at load time; refuse it here so the
            // key is a BadPartition, not a failed load. Found by tests/props.rs.
            let ok = value.len() == 10
                && chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
                    .is_ok_and(|d| chrono::Datelike::year(&d) >= 1);
            if !ok {
                return Err(format!("{value:?} is not a date (YYYY-MM-DD)"));
            }
            Ok(value_literal(
                format!("CAST('{value}' AS DATE)"),
                value.to_string(),
            ))
        }
        PartitionType::Integer => value
            .parse::<i64>()
            .map(|n| value_literal(n.to_string(), n.to_string()))
            .map_err(|_| format!("{value:?} is not a 64-bit integer")),
        PartitionType::String => string_literal(value),
    }
}

/// A NULL partition value of `ty`, typed so that `INSERT … SELECT` and `CASE` keep the
/// column's type on Redshift and PostgreSQL alike.
pub fn null_partition_literal(ty: PartitionType) -> SqlLiteral {
    let sql_type = match ty {
        PartitionType::Date => "DATE",
        PartitionType::Integer => "BIGINT",
        PartitionType::String => "VARCHAR",
    };
    SqlLiteral {
        text: format!("CAST(NULL AS {sql_type})"),
        null: true,
        string: None,
        value: None,
    }
}

/// Lease times (`acquired_at`, `expires_at`) are UTC, whoever writes or reads them.
/// GETDATE() answers "in the current session time zone (UTC by default)"
/// (https://docs.aws.amazon.com/redshift/latest/dg/r_GETDATE.html), and a database user
/// may have another default (`ALTER USER … SET timezone`,
/// https://docs.aws.amazon.com/redshift/latest/dg/r_timezone_config.html): a loader or
/// operator in New York would read a live lease as expired, or write one that expires
/// hours late. So every statement that writes or compares a lease time runs in UTC: the
/// take and fence procedures by CREATE PROCEDURE's documented `SET configuration_parameter`
/// clause (https://docs.aws.amazon.com/redshift/latest/dg/r_CREATE_PROCEDURE.html), a
/// batch by [`UTC_SESSION`] right after its LOCK (SET takes no snapshot), a reader by
/// `Loader::query_utc`. The columns stay TIMESTAMP (UTC by convention, as before:
/// the loader's default session is UTC), so existing lease tables need no migration
/// beyond the procedures that `loaderctl bootstrap` replaces. Whether a TIMESTAMP
/// written without a zone into a TIMESTAMPTZ column means the session's zone or UTC on
/// Redshift is not documented, hence not that route.
pub const UTC_SESSION: &str = "SET timezone TO 'UTC'";
const UTC_PROCEDURE: &str = "SET timezone TO 'UTC'";

/// The loader's own objects for one target table, all in the loader schema. Each target
/// table has its own lease, ledger and wake-up tables (and the two procedures that work
/// on them), so that loads into different tables share no table: Redshift's
/// serializable check works per table, and two transactions touching a common table in
/// a cycle abort one with error 1023 whatever rows they touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTables {
    /// `schema.table`, the target.
    pub target: TableName,
    /// One row: the holder (NULL when free), when it took the lease, when it expires.
    pub lease: Ident,
    /// One row per loaded file.
    pub ledger: Ident,
    /// Objects handed to the holder by invocations that found the lease busy.
    pub wakeup: Ident,
    /// Procedure: take the lease, or queue a wake-up when it is held.
    pub take: Ident,
    /// Procedure: renew the lease, raising when it is not ours (the fence).
    pub fence: Ident,
    /// Files Redshift refused to load, kept out of later loads until rewritten or
    /// released ([`create_quarantine`]).
    pub quarantine: Ident,
}

impl LeaseTables {
    /// Names derived from the target table: `lease_<n>_<schema>_<table>` where `<n>` is
    /// the schema's length (so `a_b.c` and `a.b_c` never share a name), shortened with a
    /// hash of the full name when it would exceed Redshift's 127 bytes.
    pub fn for_target(target: &TableName) -> LeaseTables {
        let base = format!(
            "{}_{}_{}",
            target.schema.as_str().len(),
            target.schema,
            target.name
        );
        let name = |kind: &str| {
            let full = format!("{kind}_{base}");
            let text = if full.len() <= 127 {
                full
            } else {
                // kind_ + 100 bytes of the base + _ + 16 hex digits <= 127 bytes.
                let hash = fnv1a64(&target.to_string());
                format!("{kind}_{}_{hash:016x}", &base[..100])
            };
            // Only ASCII letters, digits, _ and $ went in: always a valid identifier.
            Ident::parse(&text).unwrap_or_else(|_| Ident(text.to_ascii_lowercase()))
        };
        LeaseTables {
            target: target.clone(),
            lease: name("lease"),
            ledger: name("ledger"),
            wakeup: name("wakeup"),
            take: name("take"),
            fence: name("fence"),
            quarantine: name("quarantine"),
        }
    }

    pub(crate) fn q(&self, schema: &Ident, object: &Ident) -> String {
        format!("{}.{}", schema.quoted(), object.quoted())
    }
}

/// FNV-1a, 64 bits: a stable hash (the same in every build and version) for names.
fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TableName {
        TableName::parse("Sales.Orders").unwrap()
    }

    #[test]
    fn identifiers_are_strict_and_folded() {
        assert_eq!(
            Ident::parse("Order_Date$1").unwrap().as_str(),
            "order_date$1"
        );
        assert_eq!(Ident::parse("_x").unwrap().quoted(), "\"_x\"");
        for bad in ["", "1a", "a-b", "a b", "a\"b", "é", &"a".repeat(128)] {
            assert!(Ident::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Ident::parse(&"a".repeat(127)).is_ok());
        assert_eq!(table().to_string(), "sales.orders");
        assert_eq!(table().quoted(), "\"sales\".\"orders\"");
        assert!(TableName::parse("orders").is_err());
        assert!(TableName::parse("a.b.c").is_err());
    }

    #[test]
    fn literals_double_quotes_and_refuse_control_chars() {
        assert_eq!(literal("it's").unwrap(), "'it''s'");
        assert_eq!(
            literal("'; DROP TABLE x; --").unwrap(),
            "'''; DROP TABLE x; --'"
        );
        assert_eq!(literal("").unwrap(), "''");
        assert_eq!(literal("naïve ü").unwrap(), "'naïve ü'");
        assert!(literal("a\0b").is_err());
        assert!(literal("a\nb").is_err());
        assert!(literal("a\\'b").is_err());
    }

    #[test]
    fn partition_literals_are_typed() {
        let d = partition_literal(PartitionType::Date, "2024-02-29").unwrap();
        assert_eq!(d.as_str(), "CAST('2024-02-29' AS DATE)");
        assert!(partition_literal(PartitionType::Date, "2023-02-29").is_err());
        assert!(partition_literal(PartitionType::Date, "2024-5-28").is_err());
        assert!(partition_literal(PartitionType::Date, "2024-05-28'; --").is_err());
        assert_eq!(
            partition_literal(PartitionType::Integer, "-42")
                .unwrap()
                .as_str(),
            "-42"
        );
        assert_eq!(
            partition_literal(PartitionType::Integer, "007")
                .unwrap()
                .as_str(),
            "7"
        );
        assert!(partition_literal(PartitionType::Integer, "1 OR 1=1").is_err());
        assert!(partition_literal(PartitionType::Integer, "99999999999999999999").is_err());
        assert_eq!(
            partition_literal(PartitionType::String, "a'b")
                .unwrap()
                .as_str(),
            "'a''b'"
        );
    }

    #[test]
    fn partition_values_follow_the_column_type() {
        let s = |v: &str| partition_literal(PartitionType::String, v).unwrap();
        let render = |v: &str, ty: &str| s(v).for_column(ty).map(|l| l.as_str().to_string());
        assert_eq!(
            render("2024-05-28", "date").unwrap(),
            "CAST('2024-05-28' AS DATE)"
        );
        assert_eq!(render("007", "smallint").unwrap(), "7");
        assert!(render("70000", "smallint").is_err());
        assert!(render("1 OR 1=1", "integer").is_err());
        assert_eq!(render("12.50", "numeric").unwrap(), "12.50");
        for bad in ["1e5", "1.", ".", "-", "1.2.3", "1; DROP"] {
            assert!(render(bad, "numeric").is_err(), "{bad}");
        }
        assert_eq!(render("T", "boolean").unwrap(), "TRUE");
        assert!(render("maybe", "boolean").is_err());
        assert_eq!(
            render("2024-05-28T10:30:00", "timestamp without time zone").unwrap(),
            "CAST('2024-05-28 10:30:00' AS TIMESTAMP)"
        );
        assert!(render("2024-05-28 10:30:00'; --", "timestamp without time zone").is_err());
        assert_eq!(
            render("1.5e3", "double precision").unwrap(),
            "CAST('1.5e3' AS DOUBLE PRECISION)"
        );
        assert!(render("NaN", "real").is_err());
        assert!(render("x", "timestamp with time zone").is_err());
        // A string column keeps the trailing-blank guard; a typed value becomes a string.
        let v = s("Paris ").for_column("character varying").unwrap();
        assert!(v.ends_in_blank());
        let n = partition_literal(PartitionType::Integer, "007").unwrap();
        assert_eq!(n.for_column("character varying").unwrap().as_str(), "'7'");
        let null = null_partition_literal(PartitionType::String);
        let null = null.for_column("date").unwrap();
        assert!(null.is_null());
        assert_eq!(null.as_str(), "CAST(NULL AS DATE)");
    }

    #[test]
    fn per_table_names_are_distinct_valid_and_short() {
        let a = LeaseTables::for_target(&TableName::parse("a_b.c").unwrap());
        let b = LeaseTables::for_target(&TableName::parse("a.b_c").unwrap());
        assert_eq!(a.lease.as_str(), "lease_3_a_b_c");
        assert_eq!(b.lease.as_str(), "lease_1_a_b_c");
        assert_ne!(a.ledger, b.ledger);
        let long = |n: &str| TableName::parse(&format!("s.{}", n.repeat(127))).unwrap();
        let (x, y) = (
            LeaseTables::for_target(&long("x")),
            LeaseTables::for_target(&long("y")),
        );
        for t in [&x, &y] {
            for id in [&t.lease, &t.ledger, &t.wakeup, &t.take, &t.fence] {
                assert!(id.as_str().len() <= 127, "{id}");
                assert!(Ident::parse(id.as_str()).is_ok());
            }
        }
        assert_ne!(x.wakeup, y.wakeup, "long names keep apart by their hash");
        assert_eq!(
            x.wakeup,
            LeaseTables::for_target(&long("x")).wakeup,
            "stable"
        );
    }

    #[test]
    fn bootstrap_makes_one_free_lease_row_and_procedures() {
        let schema = Ident::parse("pl").unwrap();
        let t = LeaseTables::for_target(&table());
        let sqls = bootstrap_table(&schema, &t).unwrap();
        assert!(sqls[..3].iter().all(|s| s.contains("IF NOT EXISTS")));
        assert_eq!(sqls[3], "LOCK \"pl\".\"lease_5_sales_orders\"");
        assert!(
            sqls[4].contains("WHERE NOT EXISTS (SELECT 1 FROM \"pl\".\"lease_5_sales_orders\")")
        );
        assert!(sqls[5].contains("loaded_files WHERE table_name = 'sales.orders'"));
        let procedure = |name: &str| {
            sqls.iter()
                .find(|s| s.starts_with(&format!("CREATE OR REPLACE PROCEDURE \"pl\".\"{name}")))
                .expect(name)
        };
        let (take, fence) = (procedure("take_5"), procedure("fence_5"));
        assert!(
            take.ends_with("LANGUAGE plpgsql SET timezone TO 'UTC'")
                && fence.ends_with("LANGUAGE plpgsql SET timezone TO 'UTC'"),
            "take and fence write and compare lease times in UTC"
        );
        assert!(
            take.contains("IF n <> 1 THEN"),
            "more than one lease row is an error"
        );
        assert!(take.contains("DATEADD(second, p_ttl_seconds, GETDATE())"));
        assert!(take.contains("INSERT INTO \"pl\".\"wakeup_5_sales_orders\""));
        assert!(fence.contains("RAISE EXCEPTION 'partition-loader: lease on %"));
        assert!(
            !sqls.iter().any(|s| s.contains("DROP PROCEDURE")),
            "Redshift's DROP PROCEDURE has no IF EXISTS: old versions are dropped after a \
             catalog read (drop_old_procedures)"
        );
        assert!(fence.contains("AND load_id <> p_load_id"));
        assert!(fence.contains("RAISE EXCEPTION 'partition-loader: loaded by another load: %"));
        assert!(
            take.contains("OR cur = p_checked THEN") && !take.contains("NOT live"),
            "an expired lease is taken over only once its statement was checked"
        );
        assert!(
            fence.contains("WHERE holder = p_holder;\n  IF n = 0")
                && fence.contains("SET expires_at = expires_at WHERE holder = p_holder"),
            "the fence accepts its holder's expired lease and never moves the expiry"
        );
        assert!(!sqls.iter().any(|s| s.contains("INTERVAL")));
    }

    #[test]
    fn only_the_old_procedures_the_catalog_shows_are_dropped() {
        let schema = Ident::parse("pl").unwrap();
        let t = LeaseTables::for_target(&table());
        let row = |n: &str, a: &str| (n.to_string(), a.to_string());
        assert!(drop_old_procedures(&schema, &t, &[]).is_empty());
        // Today's signatures (take: 8 arguments, fence: 4) stay.
        let today = [
            row("take_5_sales_orders", "8"),
            row("fence_5_sales_orders", "4"),
        ];
        assert!(drop_old_procedures(&schema, &t, &today).is_empty());
        let old = [
            row("take_5_sales_orders", "6"),
            row("take_5_sales_orders", "8"),
            row("fence_5_sales_orders", "2"),
        ];
        assert_eq!(
            drop_old_procedures(&schema, &t, &old),
            [
                "DROP PROCEDURE \"pl\".\"take_5_sales_orders\"(VARCHAR, INTEGER, VARCHAR, \
                 VARCHAR, VARCHAR, VARCHAR)",
                "DROP PROCEDURE \"pl\".\"fence_5_sales_orders\"(VARCHAR, INTEGER)"
            ]
        );
        // The take of before the statement-held lease (no `p_checked`).
        let before_21 = [row("take_5_sales_orders", "7")];
        assert_eq!(
            drop_old_procedures(&schema, &t, &before_21),
            [
                "DROP PROCEDURE \"pl\".\"take_5_sales_orders\"(VARCHAR, INTEGER, VARCHAR, \
              VARCHAR, VARCHAR, VARCHAR, VARCHAR)"
            ]
        );
    }

    #[test]
    fn take_and_drain_lock_the_wakeup_table_first() {
        let schema = Ident::parse("pl").unwrap();
        let t = LeaseTables::for_target(&table());
        let wake = WakeUp {
            bucket: "b",
            partition_path: "order_date=2024-05-28/",
            s3_url: "s3://b/k",
            etag: "e",
            route_prefix: "orders/",
        };
        let take = take_batch(&schema, &t, "req-1", 960, &wake, "").unwrap();
        assert_eq!(take[0], "LOCK \"pl\".\"wakeup_5_sales_orders\"");
        assert_eq!(
            take[1],
            "CALL \"pl\".\"take_5_sales_orders\"('req-1', 960, 'b', 'order_date=2024-05-28/', \
             's3://b/k', 'e', 'orders/', '')"
        );
        assert_eq!(take.len(), 5, "only the lease under the lock");
        assert_eq!(take[3], UTC_SESSION, "liveness compared in UTC");
        assert!(take_batch(&schema, &t, "bad\0", 960, &wake, "").is_err());
        let drain = drain_batch(&schema, &t, "req-1", 960, "req-1#0", "req-1#1").unwrap();
        assert_eq!(drain[0], take[0]);
        assert_eq!(drain[1], UTC_SESSION, "lease times in UTC, after the LOCK");
        assert!(drain[2].contains("claim = 'req-1#0'"));
        assert!(drain[3].contains("NOT EXISTS (SELECT 1 FROM \"pl\".\"wakeup_5_sales_orders\")"));
        assert!(drain[4].contains("DATEADD(second, 960, GETDATE())"));
        assert!(drain[6].contains("claim = 'req-1#1'"));
        assert!(drain[6].starts_with("SELECT DISTINCT bucket, partition_path, route_prefix"));
        assert_eq!(drain.len(), 8, "results :7 (claimed) and :8 (lease row)");
    }

    fn batch<'a>(
        schema: &'a Ident,
        t: &'a TableName,
        tables: &'a LeaseTables,
        target: &'a CopyTarget,
        replace: Option<&'a [PartitionValue]>,
        inserts: &'a [String],
    ) -> LoadBatch<'a> {
        LoadBatch {
            schema,
            tables,
            table: t,
            partition_path: "order_date=2024-05-28/",
            holder: "req-1",
            iam_role: "arn:aws:iam::1:role/r",
            format: FileFormat::Parquet,
            copy_options: &[],
            copies: Box::leak(Box::new([CopyStep {
                manifest_url: "s3://m/x/1.manifest",
                target,
            }])),
            replace,
            ledger_inserts: inserts,
            load_id: "load-1",
            ttl_seconds: 960,
            stage_suffix: 0,
            statupdate: false,
        }
    }

    #[test]
    fn statupdate_only_when_asked_and_never_on_staging() {
        let schema = Ident::parse("pl").unwrap();
        let t = table();
        let lt = LeaseTables::for_target(&t);
        let direct = CopyTarget::Direct(None);
        let mut b = batch(&schema, &t, &lt, &direct, None, &[]);
        assert!(load_batch(&b).unwrap()[0].ends_with("STATUPDATE OFF"));
        b.statupdate = true;
        assert!(load_batch(&b).unwrap()[0].ends_with("STATUPDATE ON"));
        let staged = CopyTarget::Staged {
            file_columns: vec![Ident::parse("id").unwrap()],
            fill: vec![],
        };
        let mut b = batch(&schema, &t, &lt, &staged, None, &[]);
        b.statupdate = true;
        let sqls = load_batch(&b).unwrap();
        assert!(sqls[1].starts_with("COPY \"partition_loader_stage_0\""));
        assert!(sqls[1].ends_with("STATUPDATE OFF"), "{}", sqls[1]);
    }

    #[test]
    fn doctor_probes_each_lease_procedure_in_a_failing_batch() {
        let schema = Ident::parse("pl").unwrap();
        let t = LeaseTables::for_target(&table());
        assert_eq!(
            loader_tables(&t),
            vec![
                "lease_5_sales_orders".to_string(),
                "ledger_5_sales_orders".to_string(),
                "wakeup_5_sales_orders".to_string(),
                "quarantine_5_sales_orders".to_string()
            ]
        );
        let probes = doctor_procedure_probes(&schema, &t);
        assert_eq!(probes[0].0, "fence_5_sales_orders");
        assert_eq!(
            probes[0].1,
            vec!["CALL \"pl\".\"fence_5_sales_orders\"('partition-loader doctor', 1, '', '')"]
        );
        assert_eq!(probes[1].0, "take_5_sales_orders");
        // The take may succeed on a free lease: the fence after it rolls the batch back.
        assert_eq!(probes[1].1.len(), 2);
        assert!(
            probes[1].1[0].contains("\"take_5_sales_orders\"('partition-loader doctor', 1, '', ")
        );
        assert_eq!(
            probes[1].1[1],
            "CALL \"pl\".\"fence_5_sales_orders\"('partition-loader doctor, nobody', 1, '', '')",
            "a fence of another holder than the take's: it always raises"
        );
    }

    #[test]
    fn grants_for_the_function_user() {
        let user = DbUser::parse("IAMR:partition-loader").unwrap();
        let sqls = grant_loader(&Ident::parse("pl").unwrap(), &user);
        assert_eq!(
            sqls[0],
            "GRANT USAGE ON SCHEMA \"pl\" TO \"IAMR:partition-loader\""
        );
        assert!(sqls[2].contains("EXECUTE ON ALL PROCEDURES IN SCHEMA \"pl\""));
        assert!(sqls
            .iter()
            .any(|s| s.contains("DEFAULT PRIVILEGES") && s.contains("ON TABLES")));
        assert!(DbUser::parse("bad\"user").is_err());
        assert!(DbUser::parse("").is_err());
        let append = route_grants(&table(), false, false, false, "dev", &user);
        assert_eq!(
            append,
            vec![
                "GRANT USAGE ON SCHEMA \"sales\" TO \"IAMR:partition-loader\"".to_string(),
                "GRANT INSERT ON \"sales\".\"orders\" TO \"IAMR:partition-loader\"".to_string(),
            ]
        );
        let replace = route_grants(&table(), true, true, true, "dev", &user);
        assert!(replace[1].starts_with("GRANT INSERT, SELECT, DELETE ON"));
        assert!(replace[2].starts_with("GRANT TEMP ON DATABASE \"dev\""));
        assert!(replace[3].starts_with("ALTER TABLE \"sales\".\"orders\" OWNER TO"));
    }

    #[test]
    fn direct_append_load_ends_with_the_fence() {
        let schema = Ident::parse("pl").unwrap();
        let t = table();
        let target = CopyTarget::Direct(None);
        let inserts = vec!["INSERT 1".to_string()];
        let lt = LeaseTables::for_target(&t);
        let sqls = load_batch(&batch(&schema, &t, &lt, &target, None, &inserts)).unwrap();
        assert_eq!(
            sqls,
            vec![
                "COPY \"sales\".\"orders\" FROM 's3://m/x/1.manifest' IAM_ROLE \
                 'arn:aws:iam::1:role/r' MANIFEST FORMAT AS PARQUET STATUPDATE OFF"
                    .to_string(),
                "INSERT 1".to_string(),
                "CALL \"pl\".\"fence_5_sales_orders\"('req-1', 960, 'order_date=2024-05-28/', \
                 'load-1')"
                    .to_string(),
            ]
        );
        assert_eq!(
            fixed_statements(std::slice::from_ref(&target), false),
            sqls.len() - 1
        );
    }

    #[test]
    fn staged_replace_load_deletes_then_fills_partition_columns() {
        let schema = Ident::parse("pl").unwrap();
        let t = table();
        let pv = vec![PartitionValue {
            column: Ident::parse("order_date").unwrap(),
            literal: partition_literal(PartitionType::Date, "2024-05-28").unwrap(),
        }];
        let target = CopyTarget::Staged {
            file_columns: vec![Ident::parse("id").unwrap(), Ident::parse("amount").unwrap()],
            fill: pv.clone(),
        };
        let lt = LeaseTables::for_target(&t);
        let sqls = load_batch(&batch(&schema, &t, &lt, &target, Some(&pv), &[])).unwrap();
        assert_eq!(
            sqls.len(),
            fixed_statements(std::slice::from_ref(&target), true)
        );
        assert_eq!(
            sqls[0],
            "DELETE FROM \"sales\".\"orders\" WHERE \"order_date\" = CAST('2024-05-28' AS DATE)"
        );
        assert_eq!(
            sqls[5],
            "DELETE FROM \"pl\".\"ledger_5_sales_orders\" WHERE partition_path = \
             'order_date=2024-05-28/'",
            "the ledger is touched only at the end, after the COPY"
        );
        assert_eq!(
            sqls[1],
            "CREATE TEMP TABLE \"partition_loader_stage_0\" AS SELECT \"id\", \"amount\" FROM \
             \"sales\".\"orders\" WHERE 1 = 0"
        );
        assert!(sqls[2].starts_with("COPY \"partition_loader_stage_0\" FROM"));
        assert_eq!(
            sqls[3],
            "INSERT INTO \"sales\".\"orders\" (\"id\", \"amount\", \"order_date\") SELECT \"id\", \
             \"amount\", CAST('2024-05-28' AS DATE) FROM \"partition_loader_stage_0\""
        );
        assert_eq!(sqls[4], "DROP TABLE \"partition_loader_stage_0\"");
        assert!(sqls[6].starts_with("CALL"));
    }

    #[test]
    fn null_partition_values_use_is_null_and_typed_nulls() {
        let schema = Ident::parse("pl").unwrap();
        let t = table();
        let pv = vec![
            PartitionValue {
                column: Ident::parse("region").unwrap(),
                literal: partition_literal(PartitionType::String, "eu").unwrap(),
            },
            PartitionValue {
                column: Ident::parse("d").unwrap(),
                literal: null_partition_literal(PartitionType::Date),
            },
        ];
        let target = CopyTarget::Staged {
            file_columns: vec![Ident::parse("id").unwrap()],
            fill: pv.clone(),
        };
        let lt = LeaseTables::for_target(&t);
        let sqls = load_batch(&batch(&schema, &t, &lt, &target, Some(&pv), &[])).unwrap();
        assert_eq!(
            sqls[0],
            "DELETE FROM \"sales\".\"orders\" WHERE \"region\" = 'eu' AND LENGTH(\"region\") = 2 \
             AND \"d\" IS NULL"
        );
        assert!(
            sqls[3].ends_with(
                "SELECT \"id\", 'eu', CAST(NULL AS DATE) FROM \"partition_loader_stage_0\""
            ),
            "{}",
            sqls[3]
        );
    }

    #[test]
    fn string_partitions_are_deleted_exactly_despite_trailing_blanks() {
        let value = |ty, v: &str| PartitionValue {
            column: Ident::parse("city").unwrap(),
            literal: partition_literal(ty, v).unwrap(),
        };
        // Redshift's `=` ignores trailing blanks; LENGTH counts them (in characters).
        assert_eq!(
            partition_predicate(&[value(PartitionType::String, "Paris")]),
            "\"city\" = 'Paris' AND LENGTH(\"city\") = 5"
        );
        assert_eq!(
            partition_predicate(&[value(PartitionType::String, "Paris ")]),
            "\"city\" = 'Paris ' AND LENGTH(\"city\") = 6"
        );
        assert_eq!(
            partition_predicate(&[value(PartitionType::String, "Zürich")]),
            "\"city\" = 'Zürich' AND LENGTH(\"city\") = 6"
        );
        assert_eq!(
            partition_predicate(&[value(PartitionType::Integer, "7")]),
            "\"city\" = 7"
        );
        assert_eq!(partition_predicate(&[]), "TRUE");
        // CHAR cannot store the difference: refused for a value ending in a blank only.
        let chars = vec!["city".to_string()];
        assert!(blank_in_char_column(&[value(PartitionType::String, "Paris")], &chars).is_none());
        let reason =
            blank_in_char_column(&[value(PartitionType::String, "Paris ")], &chars).unwrap();
        assert!(reason.contains("make city a VARCHAR column"), "{reason}");
        assert!(blank_in_char_column(&[value(PartitionType::String, "Paris ")], &[]).is_none());
    }

    #[test]
    fn route_copy_options_are_rendered_after_the_format() {
        let schema = Ident::parse("pl").unwrap();
        let t = table();
        let target = CopyTarget::Direct(None);
        let options = crate::lake::copy_options::parse_for(
            FileFormat::Csv { header: true },
            &["EMPTYASNULL".into(), "NULL AS 'it''s'".into()],
        )
        .unwrap();
        let lt = LeaseTables::for_target(&t);
        let mut b = batch(&schema, &t, &lt, &target, None, &[]);
        b.format = FileFormat::Csv { header: true };
        b.copy_options = &options;
        let sqls = load_batch(&b).unwrap();
        assert!(
            sqls[0].ends_with(
                "MANIFEST FORMAT AS CSV IGNOREHEADER 1 EMPTYASNULL NULL AS 'it''s' \
                 DATEFORMAT 'auto' TIMEFORMAT 'auto' STATUPDATE OFF"
            ),
            "{}",
            sqls[0]
        );
    }

    #[test]
    fn csv_and_json_copy_options() {
        assert_eq!(
            FileFormat::Csv { header: true }.copy_clause(),
            "FORMAT AS CSV IGNOREHEADER 1"
        );
        assert_eq!(FileFormat::Json.copy_clause(), "FORMAT AS JSON 'auto'");
    }

    #[test]
    fn ledger_inserts_stay_under_the_size_limit() {
        let t = table();
        let row = LedgerRow {
            s3_url: format!("s3://b/{}", "k".repeat(900)),
            etag: "abc".into(),
            size_bytes: 10,
        };
        let tuple = ledger_tuple("p=1/", "h", "id", &row).unwrap();
        assert!(tuple.contains("GETDATE()"));
        let tuples = vec![tuple; 500];
        let head =
            table_ledger_insert_head(&Ident::parse("pl").unwrap(), &LeaseTables::for_target(&t));
        let stmts = ledger_inserts(&head, &tuples, 100_000);
        assert!(stmts.len() > 1);
        assert!(stmts
            .iter()
            .all(|(s, _)| s.len() <= 100_000 && s.starts_with(&head)));
        assert_eq!(stmts.iter().map(|(_, n)| n).sum::<usize>(), 500);
        assert!(ledger_inserts(&head, &[], 100_000).is_empty());
    }

    #[test]
    fn status_and_history_sql_binds_values_and_inlines_only_numbers() {
        let schema = Ident::parse("pl").unwrap();
        assert_eq!(loaded_rows(&[]), None);
        let rows = loaded_rows(&[7, 42]).unwrap();
        assert!(
            rows.contains("FROM sys_load_history WHERE query_id IN (7, 42)"),
            "{rows}"
        );
        let errors = load_errors(2, 5);
        assert!(errors.contains("POSITION(:p0 IN file_name) = 1 OR POSITION(:p1 IN file_name) = 1"));
        assert!(errors.ends_with("LIMIT 5"));
        assert!(
            !load_errors(0, 5).contains(":p1"),
            "at least one prefix, never more than asked"
        );
        assert!(load_errors(99, 5).contains(":p7") && !load_errors(99, 5).contains(":p8"));
        let t = table();
        let both = [t.clone(), TableName::parse("a.b").unwrap()];
        let status = status_ledger(&schema, &both);
        assert!(status.contains("\"ledger_5_sales_orders\" UNION ALL SELECT CAST('a.b'"));
        assert!(!status.contains(':'), "no parameters at all");
        assert!(!leases(&schema, &both).contains(':'));
        assert!(leases(&schema, &[]).contains("WHERE 1 = 0"));
        assert!(history_loads(&schema, &t, true, 50).contains(
            "WHERE partition_path = :partition AND LENGTH(partition_path) = LENGTH(:partition)"
        ));
        assert!(partition_ledger(&schema, &t).ends_with("LENGTH(:partition)"));
        assert!(!history_loads(&schema, &t, false, 50).contains(":partition"));
        // An unpartitioned route's path is empty: it is never sent as a parameter value.
        assert!(unpartitioned_ledger(&schema, &t).contains("partition_path = ''"));
        assert!(load_copies().contains(":load_id") && load_copies().contains(":manifests"));
    }
}
