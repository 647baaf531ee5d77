//! SQL text building. Pure: every function returns text, nothing here talks to Redshift.
//!
//! Values are inlined as literals (BatchExecuteStatement does take `Parameters`, shared
//! by every statement of the batch, but the loader's batches were built before the
//! emulator knew it, and a literal keeps each statement readable on its own in
//! `SYS_QUERY_HISTORY`). Everything inlined goes through [`literal`] (or is a validated [`Ident`] / integer), so a value
//! from an S3 key can never change the statement's shape.

use std::fmt;

use crate::error::LoaderError;

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

/// Statements of the idempotent bootstrap batch that every target table's
/// [`bootstrap_table`] statements follow. `loaded_files`, the ledger shared by all tables
/// in earlier versions, stays only as the source of the one-time copy into the
/// per-table ledgers (see README "Upgrading").
pub fn bootstrap(schema: &Ident) -> Vec<String> {
    let s = schema.quoted();
    vec![
        format!("CREATE SCHEMA IF NOT EXISTS {s}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.loaded_files (table_name VARCHAR(256) NOT NULL, \
             partition_path VARCHAR(1024) NOT NULL, s3_url VARCHAR(2048) NOT NULL, \
             etag VARCHAR(128) NOT NULL, size_bytes BIGINT NOT NULL, \
             loaded_at TIMESTAMP NOT NULL, holder VARCHAR(256) NOT NULL, \
             load_id VARCHAR(64) NOT NULL) SORTKEY (table_name, partition_path)"
        ),
    ]
}

/// A database user to grant to: `loader`, `IAMR:partition-loader`, `IAM:ops`. Kept
/// as given and always double-quoted (names with `:` need the quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbUser(String);

impl DbUser {
    pub fn parse(s: &str) -> Result<DbUser, String> {
        let ok = !s.is_empty()
            && s.len() <= 127
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_:.@+=,-$".contains(c));
        if !ok {
            return Err(format!(
                "{s:?} is not a database user name (letters, digits and _ : . @ + = , - $,                  at most 127 bytes; e.g. loader or IAMR:partition-loader)"
            ));
        }
        Ok(DbUser(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl DbUser {
    /// An IAM identity's database user (`IAMR:<role>`, `IAM:<user>`): Redshift creates
    /// it at the identity's first login, so it may not exist yet when the operator grants.
    pub fn is_iam(&self) -> bool {
        self.0.starts_with("IAMR:") || self.0.starts_with("IAM:")
    }
}

/// Whether the database user `:user` exists (one row if so).
pub fn user_exists() -> &'static str {
    "SELECT 1 FROM pg_user WHERE usename = :user"
}

/// Creates an IAM identity's database user ahead of its first login, so that grants to
/// it work before the function's first call. `PASSWORD DISABLE`: it signs in only with
/// IAM temporary credentials
/// (<https://docs.aws.amazon.com/redshift/latest/dg/r_CREATE_USER.html>). Redshift's
/// documentation says an IAM identity's user is created at its first login and does not
/// say that pre-creating it is refused; README gives the fallback order (invoke once,
/// then grant) should it be.
pub fn create_user(user: &DbUser) -> String {
    format!("CREATE USER {} PASSWORD DISABLE", user.quoted())
}

/// What the function's database user needs on the loader schema: USAGE, DML on every
/// table, EXECUTE on every procedure, now and for objects the granting user creates
/// there later (ALTER DEFAULT PRIVILEGES, which Redshift supports for TABLES and
/// PROCEDURES: <https://docs.aws.amazon.com/redshift/latest/dg/r_ALTER_DEFAULT_PRIVILEGES.html>).
/// Run by the schema's owner, after [`bootstrap`].
pub fn grant_loader(schema: &Ident, user: &DbUser) -> Vec<String> {
    let s = schema.quoted();
    let u = user.quoted();
    vec![
        format!("GRANT USAGE ON SCHEMA {s} TO {u}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {u}"),
        format!("GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA {s} TO {u}"),
        format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {u}"
        ),
        format!("ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT EXECUTE ON PROCEDURES TO {u}"),
    ]
}

/// What the function's user needs on one route's target table, for the table's owner to
/// run: USAGE on its schema; INSERT; SELECT when the load may go through a staging table
/// (`CREATE TEMP TABLE ... AS SELECT ... FROM target`) or in replace mode; DELETE in
/// replace mode; TEMP on the database for staging (Redshift grants it to PUBLIC by
/// default: <https://docs.aws.amazon.com/redshift/latest/dg/r_GRANT.html>). A route with
/// `statupdate` needs the table's ownership instead (only the owner updates statistics).
pub fn route_grants(
    table: &TableName,
    may_stage: bool,
    replace: bool,
    statupdate: bool,
    database: &str,
    user: &DbUser,
) -> Vec<String> {
    let u = user.quoted();
    let mut privileges = vec!["INSERT"];
    if may_stage || replace {
        privileges.push("SELECT");
    }
    if replace {
        privileges.push("DELETE");
    }
    let mut out = vec![
        format!("GRANT USAGE ON SCHEMA {} TO {u}", table.schema.quoted()),
        format!(
            "GRANT {} ON {} TO {u}",
            privileges.join(", "),
            table.quoted()
        ),
    ];
    if may_stage {
        out.push(format!(
            "GRANT TEMP ON DATABASE \"{}\" TO {u}",
            database.replace('"', "\"\"")
        ));
    }
    if statupdate {
        out.push(format!("ALTER TABLE {} OWNER TO {u}", table.quoted()));
    }
    out
}

/// The loader tables one route's target needs (for `loaderctl doctor`): its lease,
/// ledger and wake-up tables ([`bootstrap_table`]). The shared `loaded_files` of
/// earlier versions is only read by `bootstrap`, never by the function.
pub fn loader_tables(t: &LeaseTables) -> Vec<String> {
    [&t.lease, &t.ledger, &t.wakeup]
        .into_iter()
        .map(|id| id.as_str().to_string())
        .collect()
}

/// `loaderctl doctor`: who we are, where. Row: `(user, database)`.
/// The temporary table of doctor's COPY probe.
pub const DOCTOR_COPY_PROBE_TABLE: &str = "partition_loader_doctor_probe";

/// Doctor's probe that the COPY role can read the manifest prefix: one COPY, through a
/// manifest, of a one-row CSV file (both under that prefix) into a temporary table.
/// Every value is quoted as a literal.
pub fn doctor_copy_probe(manifest_url: &str, iam_role: &str) -> Result<Vec<String>, LoaderError> {
    let t = DOCTOR_COPY_PROBE_TABLE;
    Ok(vec![
        format!("CREATE TEMP TABLE {t} (x INTEGER)"),
        format!(
            "COPY {t} FROM {} IAM_ROLE {} MANIFEST {} STATUPDATE OFF",
            literal(manifest_url)?,
            literal(iam_role)?,
            FileFormat::Csv { header: false }.copy_clause()
        ),
        format!("DROP TABLE {t}"),
    ])
}

pub fn doctor_identity() -> &'static str {
    "SELECT current_user, current_database()"
}

/// `loaderctl doctor`: the database's isolation level (provisioned clusters show it
/// in STV_DB_ISOLATION_LEVEL).
pub fn doctor_isolation() -> &'static str {
    "SELECT trim(isolation_level) FROM stv_db_isolation_level WHERE db_name = current_database()"
}

/// `loaderctl doctor`: `(exists, usage)` of schema `:schema` (catalog and leader-node
/// functions only).
pub fn doctor_schema() -> &'static str {
    "SELECT COUNT(*) > 0, CASE WHEN COUNT(*) > 0 THEN has_schema_privilege(MAX(nspname), 'USAGE') \
     ELSE FALSE END FROM pg_namespace WHERE nspname = :schema"
}

/// `loaderctl doctor`: the tables of schema `:schema` with
/// `(name, select, insert, update, delete)` for the current user. HAS_TABLE_PRIVILEGE
/// takes the table by name (<https://docs.aws.amazon.com/redshift/latest/dg/r_HAS_TABLE_PRIVILEGE.html>
/// documents no OID form): the qualified name, each part quoted with QUOTE_IDENT. Run
/// only once the schema is known to be usable (a name in a schema without USAGE does
/// not resolve).
pub fn doctor_loader_tables() -> &'static str {
    "SELECT c.relname, has_table_privilege(QUOTE_IDENT(n.nspname) || '.' || QUOTE_IDENT(c.relname), 'SELECT'), \
     has_table_privilege(QUOTE_IDENT(n.nspname) || '.' || QUOTE_IDENT(c.relname), 'INSERT'), \
     has_table_privilege(QUOTE_IDENT(n.nspname) || '.' || QUOTE_IDENT(c.relname), 'UPDATE'), \
     has_table_privilege(QUOTE_IDENT(n.nspname) || '.' || QUOTE_IDENT(c.relname), 'DELETE') \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = :schema AND c.relkind = 'r'"
}

/// `loaderctl doctor`: harmless probes of one target's lease procedures, each a batch
/// (one transaction) that must fail with [`LEASE_LOST_MARKER`], changing nothing:
/// - `fence_…` renewing a lease for a holder that holds nothing raises it;
/// - `take_…` with an empty bucket (queue nothing) may take a free lease, so a fence
///   probe follows it in the same batch: it raises, and the batch rolls back.
///
/// A procedure the user may not execute fails first with "permission denied".
pub fn doctor_procedure_probes(schema: &Ident, t: &LeaseTables) -> Vec<(String, Vec<String>)> {
    let s = schema.quoted();
    let fence = |holder: &str| format!("CALL {s}.{}('{holder}', 1, '', '')", t.fence.quoted());
    vec![
        (
            t.fence.as_str().to_string(),
            vec![fence("partition-loader doctor")],
        ),
        (
            t.take.as_str().to_string(),
            vec![
                format!(
                    "CALL {s}.{}('partition-loader doctor', 1, '', '', '', '', '')",
                    t.take.quoted()
                ),
                // Another holder than the take's: it raises even when the take took
                // the lease, and the whole batch rolls back.
                fence("partition-loader doctor, nobody"),
            ],
        ),
    ]
}

/// `loaderctl doctor`: the columns of `:schema`.`:table` from the catalog (visible
/// whatever the user's privileges on the table).
pub fn doctor_columns() -> &'static str {
    "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = :schema AND c.relname = :table AND a.attnum > 0 AND NOT a.attisdropped \
     ORDER BY a.attnum"
}

/// `loaderctl doctor`: `(owner is the current user, schema USAGE, INSERT, SELECT,
/// DELETE, TEMP on the database)` for `:schema`.`:table`; `:qualified` is the table's
/// quoted name ([`TableName::quoted`]), the form HAS_TABLE_PRIVILEGE documents
/// (<https://docs.aws.amazon.com/redshift/latest/dg/r_HAS_TABLE_PRIVILEGE.html>). A
/// name in a schema without USAGE does not resolve, so without USAGE the table
/// privileges are NULL (not read) instead of failing the query.
pub fn doctor_table() -> &'static str {
    "SELECT pg_get_userbyid(c.relowner) = current_user, has_schema_privilege(:schema, 'USAGE'), \
     CASE WHEN has_schema_privilege(:schema, 'USAGE') THEN has_table_privilege(:qualified, 'INSERT') END, \
     CASE WHEN has_schema_privilege(:schema, 'USAGE') THEN has_table_privilege(:qualified, 'SELECT') END, \
     CASE WHEN has_schema_privilege(:schema, 'USAGE') THEN has_table_privilege(:qualified, 'DELETE') END, \
     has_database_privilege(current_database(), 'TEMP') \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = :schema AND c.relname = :table"
}

/// Text the fencing procedures raise; the warehouse adapter recognises it.
pub const LEASE_LOST_MARKER: &str = "partition-loader: lease on";

/// Separates a Lambda request id from the attempt's own suffix in a lease token
/// (`<request id>~<suffix>`, see `lease::attempt_token`): the take lets an attempt take
/// over the lease of an earlier attempt of the same request, whose invocation is over.
pub const ATTEMPT_SEPARATOR: &str = "~";

/// Text the fence raises when a file of the batch is in the ledger under another load.
pub const LOADED_ELSEWHERE_MARKER: &str = "partition-loader: loaded by another load";

/// Text the acquire procedure raises when a lease table does not hold exactly one row.
pub const LEASE_ROWS_MARKER: &str = "expected exactly one";

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
        }
    }

    fn q(&self, schema: &Ident, object: &Ident) -> String {
        format!("{}.{}", schema.quoted(), object.quoted())
    }
}

/// FNV-1a, 64 bits: a stable hash (the same in every build and version) for names.
fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Statements that create one target table's lease, ledger and wake-up tables and their
/// procedures (idempotent), put the lease's single free row in place, and copy the
/// table's rows of the shared ledger of earlier versions (`loaded_files`) into its own
/// ledger the first time. Run after [`bootstrap`] in the same batch.
pub fn bootstrap_table(schema: &Ident, t: &LeaseTables) -> Result<Vec<String>, LoaderError> {
    let s = schema.quoted();
    let lease = t.q(schema, &t.lease);
    let ledger = t.q(schema, &t.ledger);
    let wakeup = t.q(schema, &t.wakeup);
    let target = literal(&t.target.to_string())?;
    // RAISE takes simple variables only ("Currently, optional arguments must be simple
    // variables, not expressions.", RAISE in
    // https://docs.aws.amazon.com/redshift/latest/dg/c_PLpgSQL-statements.html): the
    // table's name goes into a declared variable (`:=` as in Redshift's own example on
    // https://docs.aws.amazon.com/redshift/latest/dg/c_PLpgSQL-structure.html).
    let declare_target = format!("v_table VARCHAR(300) := {target};\n  ");
    let lost = format!(
        "RAISE EXCEPTION '{LEASE_LOST_MARKER} % is not held by % (expired or taken over); \
         load rolled back', v_table, p_holder;"
    );
    // Only a variable as RAISE's argument (Redshift: "optional arguments must be simple
    // variables, not expressions").
    let elsewhere = format!(
        "RAISE EXCEPTION '{LOADED_ELSEWHERE_MARKER}: % files of this load are in the \
         ledger of {} under another load (an earlier attempt''s batch outlived it); rolled \
         back', n;",
        t.target.to_string().replace('\'', "''")
    );
    let count_check = format!(
        "SELECT COUNT(*) INTO n FROM {lease};\n  \
         IF n <> 1 THEN\n    RAISE EXCEPTION 'partition-loader: the lease table {s}.{} of % has \
         % rows, expected exactly one; run `loaderctl bootstrap`, then `loaderctl unlock`', \
         v_table, n;\n  END IF;\n  ",
        t.lease.quoted().replace('\'', "''")
    );
    Ok(vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {lease} (holder VARCHAR(256), acquired_at TIMESTAMP, \
             expires_at TIMESTAMP)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ledger} (partition_path VARCHAR(1024) NOT NULL, \
             s3_url VARCHAR(2048) NOT NULL, etag VARCHAR(128) NOT NULL, \
             size_bytes BIGINT NOT NULL, loaded_at TIMESTAMP NOT NULL, \
             holder VARCHAR(256) NOT NULL, load_id VARCHAR(64) NOT NULL) \
             SORTKEY (partition_path)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {wakeup} (bucket VARCHAR(256) NOT NULL, \
             partition_path VARCHAR(1024) NOT NULL, s3_url VARCHAR(2048) NOT NULL, \
             etag VARCHAR(128) NOT NULL, queued_by VARCHAR(256) NOT NULL, \
             queued_at TIMESTAMP NOT NULL, claim VARCHAR(300), route_prefix VARCHAR(1024))"
        ),
        // Exactly one row, whoever bootstraps concurrently: the LOCK serialises them.
        format!("LOCK {lease}"),
        format!(
            "INSERT INTO {lease} (holder, acquired_at, expires_at) SELECT NULL, NULL, NULL \
             WHERE NOT EXISTS (SELECT 1 FROM {lease})"
        ),
        // Migration from the shared ledger, once: only while this ledger is empty.
        format!(
            "INSERT INTO {ledger} (partition_path, s3_url, etag, size_bytes, loaded_at, holder, \
             load_id) SELECT partition_path, s3_url, etag, size_bytes, loaded_at, holder, load_id \
             FROM {s}.loaded_files WHERE table_name = {target} \
             AND NOT EXISTS (SELECT 1 FROM {ledger})"
        ),
        // The signatures of earlier versions: CREATE OR REPLACE keeps an old overload
        // beside the new one (a procedure is named by its argument types), and a caller
        // of the old one would bypass the new checks.
        format!(
            "DROP PROCEDURE IF EXISTS {s}.{}(VARCHAR, INTEGER, VARCHAR, VARCHAR, VARCHAR, \
             VARCHAR)",
            t.take.quoted()
        ),
        format!(
            "DROP PROCEDURE IF EXISTS {s}.{}(VARCHAR, INTEGER)",
            t.fence.quoted()
        ),
        // The acquire: one branch writes only the lease, the other only the wake-ups, so
        // that an invocation finding the lease busy never writes the lease table (which
        // the holder's fence writes at the end of its load).
        format!(
            "CREATE OR REPLACE PROCEDURE {s}.{take}(p_holder VARCHAR(256), p_ttl_seconds INTEGER, \
             p_bucket VARCHAR(256), p_partition VARCHAR(1024), p_s3_url VARCHAR(2048), \
             p_etag VARCHAR(128), p_route VARCHAR(1024)) AS $$\nDECLARE\n  {declare_target}n INTEGER;\n  \
             cur VARCHAR(256);\n  live BOOLEAN;\nBEGIN\n  {count_check}\
             SELECT holder, COALESCE(expires_at > GETDATE(), FALSE) INTO cur, live FROM {lease};\n  \
             IF cur IS NULL OR NOT live OR cur = p_holder \
             OR SPLIT_PART(cur, '{ATTEMPT_SEPARATOR}', 1) = SPLIT_PART(p_holder, '{ATTEMPT_SEPARATOR}', 1) THEN\n    \
             UPDATE {lease} SET holder = p_holder, acquired_at = GETDATE(), \
             expires_at = DATEADD(second, p_ttl_seconds, GETDATE());\n  \
             ELSIF p_bucket <> '' THEN\n    \
             INSERT INTO {wakeup} (bucket, partition_path, s3_url, etag, queued_by, queued_at, \
             route_prefix) VALUES (p_bucket, p_partition, p_s3_url, p_etag, p_holder, GETDATE(), \
             p_route);\n  \
             END IF;\nEND;\n$$ LANGUAGE plpgsql {UTC_PROCEDURE}",
            take = t.take.quoted()
        ),
        // Only statements Redshift documents for PL/pgSQL (SELECT INTO, IF, RAISE:
        // https://docs.aws.amazon.com/redshift/latest/dg/c_PLpgSQL-statements.html); GET
        // DIAGNOSTICS is not among them. Reading the row and then updating it touches the
        // same table as the UPDATE alone, and a concurrent takeover still makes the UPDATE
        // fail (write-write conflict) when the read saw the old row.
        format!(
            "CREATE OR REPLACE PROCEDURE {s}.{fence}(p_holder VARCHAR(256), p_ttl_seconds INTEGER, \
             p_partition VARCHAR(1024), p_load_id VARCHAR(64)) \
             AS $$\nDECLARE\n  {declare_target}n INTEGER;\nBEGIN\n  \
             SELECT COUNT(*) INTO n FROM {lease} WHERE holder = p_holder AND expires_at > GETDATE();\n  \
             IF n = 0 THEN\n    {lost}\n  END IF;\n  \
             SELECT COUNT(*) INTO n FROM {ledger} WHERE partition_path = p_partition \
             AND load_id <> p_load_id AND s3_url IN (SELECT s3_url FROM {ledger} \
             WHERE partition_path = p_partition AND load_id = p_load_id);\n  \
             IF n > 0 THEN\n    {elsewhere}\n  END IF;\n  \
             UPDATE {lease} SET expires_at = DATEADD(second, p_ttl_seconds, GETDATE()) \
             WHERE holder = p_holder AND expires_at > GETDATE();\nEND;\n$$ \
             LANGUAGE plpgsql {UTC_PROCEDURE}",
            fence = t.fence.quoted()
        ),
    ])
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

/// The acquire batch: one submission whatever happens. Result `:3` (1-based, as the
/// Data API numbers them) = the lease row(s). When the lease is someone else's, the
/// procedure queued a wake-up instead of taking it (unless `wake.bucket` is empty: then
/// nothing). Only these three statements run under the lock, which every acquirer of
/// the table queues on: the holder reads the ledger afterwards ([`holder_reads`]; only
/// it writes the ledger while it holds the lease).
pub fn take_batch(
    schema: &Ident,
    t: &LeaseTables,
    holder: &str,
    ttl_seconds: u64,
    wake: &WakeUp<'_>,
) -> Result<Vec<String>, LoaderError> {
    let s = schema.quoted();
    Ok(vec![
        // First on purpose: every acquirer and every drain of this table is serialised by
        // it, and the snapshot (taken at the first query) follows the previous holder.
        // The wake-up table, not the lease table: if Redshift counted a LOCK as a write
        // in its table-level conflict check (undocumented), a busy acquirer locking the
        // lease table would close a cycle with a running load, whose fence reads and
        // writes the lease row; the wake-up table is one that no load batch touches.
        format!("LOCK {}", t.q(schema, &t.wakeup)),
        format!(
            "CALL {s}.{}({}, {ttl_seconds}, {}, {}, {}, {}, {})",
            t.take.quoted(),
            literal(holder)?,
            literal(wake.bucket)?,
            literal(wake.partition_path)?,
            literal(wake.s3_url)?,
            literal(wake.etag)?,
            literal(wake.route_prefix)?
        ),
        format!("SELECT holder, expires_at FROM {}", t.q(schema, &t.lease)),
    ])
}

/// What an acquirer hands to the holder when the lease is busy.
#[derive(Debug, Clone, Copy)]
pub struct WakeUp<'a> {
    pub bucket: &'a str,
    pub partition_path: &'a str,
    /// The event's object; empty for a backfill or sweep (the whole partition).
    pub s3_url: &'a str,
    pub etag: &'a str,
    /// The prefix of the route the object came under: a table may have several routes,
    /// and the holder lists the partition under this one.
    pub route_prefix: &'a str,
}

fn columns_query(table: &TableName) -> Result<String, LoaderError> {
    Ok(format!(
        "SELECT column_name, data_type, is_nullable, column_default FROM \
         information_schema.columns WHERE table_schema = {} \
         AND table_name = {} ORDER BY ordinal_position",
        literal(table.schema.as_str())?,
        literal(table.name.as_str())?
    ))
}

/// The ledger rows of one partition (`:1`) and the target's columns with their types
/// (`:2`: `column_name, data_type, is_nullable, column_default`; `is_nullable` `NO`
/// without a default marks a column a Parquet file must hold, [`crate::schema_match`]),
/// read by the holder.
pub fn holder_reads(
    schema: &Ident,
    t: &LeaseTables,
    partition_path: &str,
) -> Result<Vec<String>, LoaderError> {
    Ok(vec![
        format!(
            "SELECT s3_url, etag, size_bytes FROM {} WHERE partition_path = {}",
            t.q(schema, &t.ledger),
            literal(partition_path)?
        ),
        columns_query(&t.target)?,
    ])
}

/// The holder's step between loads, under the same `LOCK` as every wake-up insert:
/// forget the wake-ups of the partitions it has just loaded (`done_claim`), then either
/// release the lease when no wake-up is left, or renew it and claim every wake-up left
/// (`new_claim`, including claims of a crashed holder). Results: `:7` = claimed
/// `(bucket, partition_path, route_prefix)` (`route_prefix` NULL for wake-ups queued by
/// versions before it), `:8` = the lease row.
pub fn drain_batch(
    schema: &Ident,
    t: &LeaseTables,
    holder: &str,
    ttl_seconds: u64,
    done_claim: &str,
    new_claim: &str,
) -> Result<Vec<String>, LoaderError> {
    let lease = t.q(schema, &t.lease);
    let wakeup = t.q(schema, &t.wakeup);
    let h = literal(holder)?;
    let ours = format!("EXISTS (SELECT 1 FROM {lease} WHERE holder = {h})");
    Ok(vec![
        // The same lock as every acquire's (see `take_batch`).
        format!("LOCK {wakeup}"),
        // The renewal below writes a lease time (see [`UTC_SESSION`]).
        UTC_SESSION.to_string(),
        format!(
            "DELETE FROM {wakeup} WHERE claim = {} AND {ours}",
            literal(done_claim)?
        ),
        format!(
            "UPDATE {lease} SET holder = NULL, acquired_at = NULL, expires_at = NULL \
             WHERE holder = {h} AND NOT EXISTS (SELECT 1 FROM {wakeup})"
        ),
        format!(
            "UPDATE {lease} SET expires_at = DATEADD(second, {ttl_seconds}, GETDATE()) \
             WHERE holder = {h}"
        ),
        format!(
            "UPDATE {wakeup} SET claim = {} WHERE {ours}",
            literal(new_claim)?
        ),
        format!(
            "SELECT DISTINCT bucket, partition_path, route_prefix FROM {wakeup} WHERE claim = {} \
             ORDER BY partition_path",
            literal(new_claim)?
        ),
        format!("SELECT holder, expires_at FROM {lease}"),
    ])
}

/// Gives the lease up at once, wake-ups or not (after a failure, or when the deadline
/// leaves no time to drain: the next holder or the sweep drains them). Under the
/// acquirers' lock, so that an acquire either sees the lease still held (and its
/// wake-up is left for the next holder or the sweep, as every wake-up of a released
/// lease is) or sees it free and takes it.
pub fn release_batch(
    schema: &Ident,
    t: &LeaseTables,
    holder: &str,
) -> Result<Vec<String>, LoaderError> {
    Ok(vec![
        format!("LOCK {}", t.q(schema, &t.wakeup)),
        format!(
            "UPDATE {} SET holder = NULL, acquired_at = NULL, expires_at = NULL \
             WHERE holder = {}",
            t.q(schema, &t.lease),
            literal(holder)?
        ),
    ])
}

/// The start of every ledger INSERT of one target table.
pub fn table_ledger_insert_head(schema: &Ident, t: &LeaseTables) -> String {
    format!(
        "INSERT INTO {} (partition_path, s3_url, etag, size_bytes, loaded_at, holder, load_id) \
         VALUES ",
        t.q(schema, &t.ledger)
    )
}

/// Data format of the files, with the options COPY needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Parquet,
    Csv { header: bool },
    Json,
}

impl FileFormat {
    fn copy_clause(self) -> &'static str {
        match self {
            FileFormat::Parquet => "FORMAT AS PARQUET",
            FileFormat::Csv { header: true } => "FORMAT AS CSV IGNOREHEADER 1",
            FileFormat::Csv { header: false } => "FORMAT AS CSV",
            FileFormat::Json => "FORMAT AS JSON 'auto'",
        }
    }
}

/// A partition column with its validated literal.
#[derive(Debug, Clone)]
pub struct PartitionValue {
    pub column: Ident,
    pub literal: SqlLiteral,
}

/// One ledger row, before rendering.
#[derive(Debug, Clone)]
pub struct LedgerRow {
    pub s3_url: String,
    pub etag: String,
    pub size_bytes: i64,
}

/// How the COPY reaches the target.
#[derive(Debug, Clone)]
pub enum CopyTarget {
    /// `COPY target [(cols)]`; `None` = all columns.
    Direct(Option<Vec<Ident>>),
    /// COPY into a temporary table holding the file columns, then INSERT … SELECT with
    /// the partition literals, for partition columns the files lack.
    Staged {
        file_columns: Vec<Ident>,
        fill: Vec<PartitionValue>,
    },
}

/// One COPY of a load batch: a manifest of files that share one column layout, and how
/// they reach the target. A batch holds one per layout (Parquet files whose footers
/// differ, [`crate::schema_match`]), each rendered as [`CopyTarget`] says, in order, in
/// the one transaction; the statement shapes are the same as for a single COPY.
#[derive(Debug, Clone)]
pub struct CopyStep<'a> {
    pub manifest_url: &'a str,
    pub target: &'a CopyTarget,
}

/// Everything one load batch needs. The ledger INSERTs are rendered by the caller with
/// [`ledger_inserts`] so that it can size batches.
#[derive(Debug, Clone)]
pub struct LoadBatch<'a> {
    pub schema: &'a Ident,
    pub tables: &'a LeaseTables,
    pub table: &'a TableName,
    pub partition_path: &'a str,
    pub holder: &'a str,
    pub iam_role: &'a str,
    pub format: FileFormat,
    /// The route's `copy_options` (rendered with [`crate::copy_options::render`]).
    pub copy_options: &'a [crate::copy_options::CopyOption],
    /// At least one.
    pub copies: &'a [CopyStep<'a>],
    /// `Some` in replace mode: the predicate columns of the partition to delete first.
    pub replace: Option<&'a [PartitionValue]>,
    pub ledger_inserts: &'a [String],
    /// The ledger rows' `load_id`: the fence refuses files another load has in the ledger.
    pub load_id: &'a str,
    /// The fence renews the lease for this long (the holder releases it afterwards,
    /// under the wake-up lock, see [`drain_batch`]).
    pub ttl_seconds: u64,
    pub stage_suffix: usize,
    /// `STATUPDATE ON` for a direct COPY (needs the table's owner); staging tables
    /// never get it.
    pub statupdate: bool,
}

/// Statements of one load batch; the fence (release or renew) is last.
pub fn load_batch(b: &LoadBatch<'_>) -> Result<Vec<String>, LoaderError> {
    let s = b.schema.quoted();
    let target = b.table.quoted();
    let h = literal(b.holder)?;
    let mut out = Vec::new();
    if let Some(values) = b.replace {
        out.push(format!(
            "DELETE FROM {target} WHERE {}",
            partition_predicate(values)
        ));
    }
    let options = crate::copy_options::render(b.format, b.copy_options);
    for step in b.copies {
        let copy_tail = format!(
            "FROM {} IAM_ROLE {} MANIFEST {}{}{} STATUPDATE OFF",
            literal(step.manifest_url)?,
            literal(b.iam_role)?,
            b.format.copy_clause(),
            if options.is_empty() { "" } else { " " },
            options
        );
        let direct_tail = if b.statupdate {
            copy_tail.replace(" STATUPDATE OFF", " STATUPDATE ON")
        } else {
            copy_tail.clone()
        };
        match step.target {
            CopyTarget::Direct(None) => out.push(format!("COPY {target} {direct_tail}")),
            CopyTarget::Direct(Some(cols)) => out.push(format!(
                "COPY {target} ({}) {direct_tail}",
                column_list(cols)
            )),
            CopyTarget::Staged { file_columns, fill } => {
                let stage = format!("\"partition_loader_stage_{}\"", b.stage_suffix);
                let files = column_list(file_columns);
                let fill_cols: Vec<Ident> = fill.iter().map(|v| v.column.clone()).collect();
                let fill_lits: Vec<&str> = fill.iter().map(|v| v.literal.as_str()).collect();
                out.push(format!(
                    "CREATE TEMP TABLE {stage} AS SELECT {files} FROM {target} WHERE 1 = 0"
                ));
                out.push(format!("COPY {stage} {copy_tail}"));
                out.push(if fill.is_empty() {
                    format!("INSERT INTO {target} ({files}) SELECT {files} FROM {stage}")
                } else {
                    format!(
                        "INSERT INTO {target} ({files}, {}) SELECT {files}, {} FROM {stage}",
                        column_list(&fill_cols),
                        fill_lits.join(", ")
                    )
                });
                out.push(format!("DROP TABLE {stage}"));
            }
        }
    }
    if b.replace.is_some() {
        // Just before the ledger INSERTs (issue 7 item 6): the ledger is written only at
        // the end of the transaction, never held through the COPY.
        out.push(format!(
            "DELETE FROM {}.{} WHERE partition_path = {}",
            s,
            b.tables.ledger.quoted(),
            literal(b.partition_path)?
        ));
    }
    out.extend(b.ledger_inserts.iter().cloned());
    out.push(format!(
        "CALL {s}.{}({h}, {}, {}, {})",
        b.tables.fence.quoted(),
        b.ttl_seconds,
        literal(b.partition_path)?,
        literal(b.load_id)?
    ));
    Ok(out)
}

/// The rows of one partition, exactly: replace mode deletes them. Redshift's `=` on
/// CHAR/VARCHAR ignores trailing blanks ("Significance of trailing blanks",
/// <https://docs.aws.amazon.com/redshift/latest/dg/r_Character_types.html>), so
/// `city = 'Paris'` alone would also delete partition `city=Paris%20`'s rows. LENGTH
/// counts a VARCHAR's trailing blanks (<https://docs.aws.amazon.com/redshift/latest/dg/r_LEN.html>),
/// so `col = 'v' AND LENGTH(col) = n` is exact, and keeps the equality for zone maps. On
/// a CHAR column LENGTH leaves the padding out, which equals `n` for a value that does
/// not end in a blank; one that does is refused before (see [`blank_in_char_column`]).
pub fn partition_predicate(values: &[PartitionValue]) -> String {
    if values.is_empty() {
        return "TRUE".to_string();
    }
    values
        .iter()
        .map(|v| {
            let column = v.column.quoted();
            if v.literal.is_null() {
                format!("{column} IS NULL")
            } else if let Some((chars, _)) = v.literal.string {
                format!(
                    "{column} = {} AND LENGTH({column}) = {chars}",
                    v.literal.as_str()
                )
            } else {
                format!("{column} = {}", v.literal.as_str())
            }
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The partition's values rendered for the table's columns ([`SqlLiteral::for_column`]);
/// `columns` and `data_types` are the table's, in the same order. A value whose column
/// is not in the table stays as the route rendered it (the copy target names that).
pub fn literals_for_table(
    values: &[PartitionValue],
    columns: &[String],
    data_types: &[String],
) -> Result<Vec<PartitionValue>, String> {
    values
        .iter()
        .map(|v| {
            let ty = columns
                .iter()
                .zip(data_types)
                .find(|(c, _)| c.as_str() == v.column.as_str())
                .map(|(_, t)| t);
            match ty {
                None => Ok(v.clone()),
                Some(ty) => v
                    .literal
                    .for_column(ty)
                    .map(|literal| PartitionValue {
                        column: v.column.clone(),
                        literal,
                    })
                    .map_err(|e| format!("partition column {}: {e}", v.column)),
            }
        })
        .collect()
}

/// The first partition value that ends in a blank and goes to a CHAR column, with the
/// reason replace mode refuses it: CHAR pads with blanks, so `Paris` and `Paris ` are one
/// stored value and the partitions' rows cannot be told apart; deleting one partition's
/// rows would delete the other's (whose ledger still says loaded), and keeping them would
/// load the partition twice. `char_columns` are the table's CHAR columns (lower case).
pub fn blank_in_char_column(values: &[PartitionValue], char_columns: &[String]) -> Option<String> {
    let v = values.iter().find(|v| {
        v.literal.ends_in_blank() && char_columns.iter().any(|c| c == v.column.as_str())
    })?;
    Some(format!(
        "partition value {} of CHAR column {} ends in a blank, and CHAR cannot tell it from \
         the value without the blank, so replace mode cannot delete exactly this partition's \
         rows; make {} a VARCHAR column (or fix the writer's partition values)",
        v.literal.as_str(),
        v.column,
        v.column
    ))
}

/// Statements a load batch has besides its ledger INSERTs, when it holds a COPY of
/// each of `targets`.
pub fn fixed_statements(targets: &[CopyTarget], replace: bool) -> usize {
    let copies: usize = targets
        .iter()
        .map(|t| match t {
            CopyTarget::Direct(_) => 1,
            CopyTarget::Staged { .. } => 4,
        })
        .sum();
    copies + if replace { 2 } else { 0 } + 1
}

fn column_list(cols: &[Ident]) -> String {
    cols.iter()
        .map(Ident::quoted)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One `(...)` VALUES tuple of the ledger.
pub fn ledger_tuple(
    partition_path: &str,
    holder: &str,
    load_id: &str,
    row: &LedgerRow,
) -> Result<String, LoaderError> {
    Ok(format!(
        "({}, {}, {}, {}, GETDATE(), {}, {})",
        literal(partition_path)?,
        literal(&row.s3_url)?,
        literal(&row.etag)?,
        row.size_bytes,
        literal(holder)?,
        literal(load_id)?
    ))
}

/// Packs tuples into INSERT statements no larger than `max_bytes` each; returns each
/// statement with the number of tuples it holds.
pub fn ledger_inserts(head: &str, tuples: &[String], max_bytes: usize) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut count = 0;
    for tuple in tuples {
        let extra = tuple.len() + 2;
        if count > 0 && current.len() + extra > max_bytes {
            out.push((std::mem::take(&mut current), count));
            count = 0;
        }
        if count == 0 {
            current.push_str(head);
        } else {
            current.push_str(", ");
        }
        current.push_str(tuple);
        count += 1;
    }
    if count > 0 {
        out.push((current, count));
    }
    out
}

/// Rows loaded by the COPY statements with these Redshift query ids, from Redshift's
/// load history: `SYS_LOAD_HISTORY` has one row per COPY with `loaded_rows`
/// (<https://docs.aws.amazon.com/redshift/latest/dg/SYS_LOAD_HISTORY.html>). The ids are
/// integers from DescribeStatement, inlined as numbers. `None` without ids.
pub fn loaded_rows(query_ids: &[i64]) -> Option<String> {
    if query_ids.is_empty() {
        return None;
    }
    let ids = query_ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    // The same statement reads the COPYs' queue and execution time (microseconds; each
    // user sees their own queries: https://docs.aws.amazon.com/redshift/latest/dg/SYS_QUERY_HISTORY.html).
    Some(format!(
        "SELECT CAST(COALESCE(SUM(loaded_rows), 0) AS BIGINT), COUNT(*), \
         (SELECT SUM(queue_time) FROM sys_query_history WHERE query_id IN ({ids})), \
         (SELECT SUM(execution_time) FROM sys_query_history WHERE query_id IN ({ids})) \
         FROM sys_load_history WHERE query_id IN ({ids})"
    ))
}

// ---- loaderctl status and history ----------------------------------------------
// Per-table layout: each target table has its own ledger and lease table
// ([`LeaseTables`]); the reports read them as one relation with a `table_name` column.

/// The ledgers of `tables` as one relation with the old shared ledger's columns.
fn ledgers(schema: &Ident, tables: &[TableName]) -> String {
    let parts: Vec<String> = tables
        .iter()
        .map(|t| {
            let lt = LeaseTables::for_target(t);
            format!(
                "SELECT CAST('{t}' AS VARCHAR(256)) AS table_name, partition_path, s3_url, \
                 etag, size_bytes, loaded_at, holder, load_id FROM {}",
                lt.q(schema, &lt.ledger)
            )
        })
        .collect();
    if parts.is_empty() {
        // No table: an empty relation of the same shape.
        return "(SELECT CAST(NULL AS VARCHAR(256)) AS table_name, CAST(NULL AS VARCHAR(1024)) \
                AS partition_path, CAST(NULL AS VARCHAR(2048)) AS s3_url, CAST(NULL AS \
                VARCHAR(128)) AS etag, CAST(NULL AS BIGINT) AS size_bytes, CAST(NULL AS \
                TIMESTAMP) AS loaded_at, CAST(NULL AS VARCHAR(256)) AS holder, CAST(NULL AS \
                VARCHAR(64)) AS load_id WHERE 1 = 0)"
            .to_string();
    }
    format!("({})", parts.join(" UNION ALL "))
}

/// Files each table's ledger holds (total, last hour, last day) joined with its newest
/// load (`loaded_at` has whole seconds, so of two loads in one second either counts)
/// (load id, time, files, bytes, holder, one object URL of it). Rows: `table_name,
/// files_total, files_hour, files_day, load_id, loaded_at, files, bytes, holder, s3_url,
/// now`. No parameters (table names are validated identifiers, inlined).
pub fn status_ledger(schema: &Ident, tables: &[TableName]) -> String {
    let src = ledgers(schema, tables);
    format!(
        "SELECT c.table_name, c.files_total, c.files_hour, c.files_day, l.load_id, \
         l.loaded_at, l.files, l.bytes, l.holder, l.s3_url, GETDATE() FROM (\
         SELECT table_name, COUNT(*) AS files_total, \
         SUM(CASE WHEN loaded_at > GETDATE() - INTERVAL '1 hour' THEN 1 ELSE 0 END) AS files_hour, \
         SUM(CASE WHEN loaded_at > GETDATE() - INTERVAL '1 day' THEN 1 ELSE 0 END) AS files_day \
         FROM {src} a GROUP BY table_name) c JOIN (\
         SELECT table_name, load_id, MAX(loaded_at) AS loaded_at, COUNT(*) AS files, \
         SUM(size_bytes) AS bytes, MAX(holder) AS holder, MAX(s3_url) AS s3_url, \
         ROW_NUMBER() OVER (PARTITION BY table_name ORDER BY MAX(loaded_at) DESC, load_id DESC) AS n \
         FROM {src} b GROUP BY table_name, load_id) l \
         ON l.table_name = c.table_name AND l.n = 1 ORDER BY c.table_name"
    )
}

/// Held leases of `tables` with the warehouse's clock: `table_name, holder,
/// acquired_at, expires_at, now`. No parameters.
pub fn leases(schema: &Ident, tables: &[TableName]) -> String {
    let parts: Vec<String> = tables
        .iter()
        .map(|t| {
            let lt = LeaseTables::for_target(t);
            format!(
                "SELECT CAST('{t}' AS VARCHAR(256)) AS table_name, holder, acquired_at, \
                 expires_at, GETDATE() FROM {} WHERE holder IS NOT NULL",
                lt.q(schema, &lt.lease)
            )
        })
        .collect();
    if parts.is_empty() {
        return "SELECT CAST(NULL AS VARCHAR(256)), CAST(NULL AS VARCHAR(256)), \
                CAST(NULL AS TIMESTAMP), CAST(NULL AS TIMESTAMP), GETDATE() WHERE 1 = 0"
            .to_string();
    }
    parts.join(" UNION ALL ")
}

/// Wake-ups waiting for each table's holder: rows `table_name, pending`. Only integers
/// and validated identifiers are inlined.
pub fn pending_wakeups(schema: &Ident, tables: &[TableName]) -> String {
    let parts: Vec<String> = tables
        .iter()
        .map(|t| {
            let lt = LeaseTables::for_target(t);
            format!(
                "SELECT CAST('{t}' AS VARCHAR(256)) AS table_name, COUNT(*) AS pending FROM {}",
                lt.q(schema, &lt.wakeup)
            )
        })
        .collect();
    if parts.is_empty() {
        return "SELECT CAST(NULL AS VARCHAR(256)), CAST(0 AS BIGINT) WHERE 1 = 0".to_string();
    }
    parts.join(" UNION ALL ")
}

/// Parameter names for [`load_errors`]'s URL prefixes.
pub const URL_PREFIX_PARAMS: [&str; 8] = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"];

/// The newest `limit` COPY failures Redshift recorded in `SYS_LOAD_ERROR_DETAIL` for
/// files (or manifests) under the URL prefixes `:p0`..`:p{n-1}`: a table's data
/// prefixes and its manifest prefix. Matched by location because a staged load's
/// errors name the staging table, not the target. Rows: `start_time, file_name,
/// error_message, query_id`. <https://docs.aws.amazon.com/redshift/latest/dg/SYS_LOAD_ERROR_DETAIL.html>
pub fn load_errors(prefixes: usize, limit: u32) -> String {
    let matches = URL_PREFIX_PARAMS[..prefixes.clamp(1, URL_PREFIX_PARAMS.len())]
        .iter()
        .map(|p| format!("POSITION(:{p} IN file_name) = 1"))
        .collect::<Vec<_>>()
        .join(" OR ");
    format!(
        "SELECT start_time, TRIM(file_name), TRIM(error_message), query_id \
         FROM sys_load_error_detail WHERE {matches} ORDER BY start_time DESC LIMIT {limit}"
    )
}

/// The loads of `table` (and `:partition` when `partition`), newest first: `load_id,
/// partition_path, loaded_at, files, bytes, holder`.
pub fn history_loads(schema: &Ident, table: &TableName, partition: bool, limit: u32) -> String {
    let p = if partition { EXACT_PARTITION } else { "" };
    let lt = LeaseTables::for_target(table);
    format!(
        "SELECT load_id, partition_path, MAX(loaded_at) AS loaded_at, COUNT(*), \
         SUM(size_bytes), MAX(holder) FROM {}{p} \
         GROUP BY load_id, partition_path ORDER BY loaded_at DESC, load_id LIMIT {limit}",
        lt.q(schema, &lt.ledger)
    )
}

/// Redshift's load history of the COPYs from manifests under `:manifests` (a table's
/// manifest prefix): `query_id, transaction_id, data_source, loaded_rows, duration
/// (microseconds), start_time, status`. <https://docs.aws.amazon.com/redshift/latest/dg/SYS_LOAD_HISTORY.html>
pub fn history_copies() -> String {
    format!("{HISTORY_COPIES} WHERE POSITION(:manifests IN data_source) = 1")
}

/// [`history_copies`] of one load: manifests under `:manifests` naming `:load_id`.
pub fn load_copies() -> String {
    format!(
        "{HISTORY_COPIES} WHERE POSITION(:manifests IN data_source) = 1 \
         AND POSITION(:load_id IN data_source) > 0"
    )
}

/// `:partition`'s ledger rows exactly: Redshift's `=` ignores trailing blanks, LENGTH
/// counts them for a VARCHAR column and for a literal (the Data API binds parameters
/// as literals) (<https://docs.aws.amazon.com/redshift/latest/dg/r_LEN.html>), so an
/// operator's `order_date=2024-05-28/ ` does not show `order_date=2024-05-28/`
/// (`loaderctl ledger`, `history`, `backfill --dry-run`).
pub const EXACT_PARTITION: &str =
    " WHERE partition_path = :partition AND LENGTH(partition_path) = LENGTH(:partition)";

/// The ledger rows of `:table`'s `:partition`: `s3_url, etag` (what a dry run diffs
/// the listing against, without taking the lease).
pub fn partition_ledger(schema: &Ident, table: &TableName) -> String {
    let lt = LeaseTables::for_target(table);
    format!(
        "SELECT s3_url, etag FROM {}{EXACT_PARTITION}",
        lt.q(schema, &lt.ledger)
    )
}

/// [`partition_ledger`] of a route without partition columns (its path is empty, and
/// Redshift rejects an empty parameter value).
pub fn unpartitioned_ledger(schema: &Ident, table: &TableName) -> String {
    let lt = LeaseTables::for_target(table);
    format!(
        "SELECT s3_url, etag FROM {} WHERE partition_path = ''",
        lt.q(schema, &lt.ledger)
    )
}

/// Columns 7 and 8: the COPY's `queue_time` and `execution_time` (microseconds) from
/// SYS_QUERY_HISTORY, NULL where not visible.
const HISTORY_COPIES: &str =
    "SELECT h.query_id, h.transaction_id, TRIM(h.data_source), h.loaded_rows, \
     h.duration, h.start_time, TRIM(h.status), q.queue_time, q.execution_time \
     FROM sys_load_history h LEFT JOIN sys_query_history q ON q.query_id = h.query_id";

/// The partitions of a table's ledger loaded within the last `days` days (the sweep
/// lists them again, for files whose event never came).
/// Only files under `url_prefix` (`s3://bucket/prefix` of one route: a table may have
/// several routes, and each lists its own partitions).
pub fn recent_partitions(
    schema: &Ident,
    t: &LeaseTables,
    days: u32,
    url_prefix: &str,
) -> Result<String, LoaderError> {
    Ok(format!(
        "SELECT DISTINCT partition_path FROM {} WHERE loaded_at > DATEADD(day, -{days}, GETDATE()) \
         AND LEFT(s3_url, {}) = {}",
        t.q(schema, &t.ledger),
        url_prefix.chars().count(),
        literal(url_prefix)?
    ))
}

/// Whether a table's wake-up table has the `route_prefix` column (`loaderctl bootstrap`
/// adds it to a wake-up table of an earlier version). Row: a count.
pub fn wakeup_has_route_column(schema: &Ident, t: &LeaseTables) -> Result<String, LoaderError> {
    Ok(format!(
        "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = {} \
         AND table_name = {} AND column_name = 'route_prefix'",
        literal(schema.as_str())?,
        literal(t.wakeup.as_str())?
    ))
}

/// Whether the wake-up table exists at all. Row: a count.
pub fn wakeup_exists(schema: &Ident, t: &LeaseTables) -> Result<String, LoaderError> {
    Ok(format!(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = {} \
         AND table_name = {}",
        literal(schema.as_str())?,
        literal(t.wakeup.as_str())?
    ))
}

/// Adds `route_prefix` to a wake-up table of an earlier version (Redshift has no `ADD
/// COLUMN IF NOT EXISTS`: the caller checks [`wakeup_has_route_column`] first). Its old
/// rows keep NULL: the holder loads them under its own route, as before.
pub fn add_wakeup_route_column(schema: &Ident, t: &LeaseTables) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN route_prefix VARCHAR(1024)",
        t.q(schema, &t.wakeup)
    )
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
        assert!(
            sqls[8].ends_with("LANGUAGE plpgsql SET timezone TO 'UTC'")
                && sqls[9].ends_with("LANGUAGE plpgsql SET timezone TO 'UTC'"),
            "take and fence write and compare lease times in UTC"
        );
        assert!(
            sqls[8].contains("IF n <> 1 THEN"),
            "more than one lease row is an error"
        );
        assert!(sqls[8].contains("DATEADD(second, p_ttl_seconds, GETDATE())"));
        assert!(sqls[8].contains("INSERT INTO \"pl\".\"wakeup_5_sales_orders\""));
        assert!(sqls[9].contains("RAISE EXCEPTION 'partition-loader: lease on %"));
        assert!(sqls[6].starts_with("DROP PROCEDURE IF EXISTS \"pl\".\"take_5_sales_orders\""));
        assert!(sqls[7].starts_with("DROP PROCEDURE IF EXISTS \"pl\".\"fence_5_sales_orders\""));
        assert!(sqls[9].contains("AND load_id <> p_load_id"));
        assert!(sqls[9].contains("RAISE EXCEPTION 'partition-loader: loaded by another load: %"));
        assert!(!sqls.iter().any(|s| s.contains("INTERVAL")));
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
        let take = take_batch(&schema, &t, "req-1", 960, &wake).unwrap();
        assert_eq!(take[0], "LOCK \"pl\".\"wakeup_5_sales_orders\"");
        assert_eq!(
            take[1],
            "CALL \"pl\".\"take_5_sales_orders\"('req-1', 960, 'b', 'order_date=2024-05-28/', \
             's3://b/k', 'e', 'orders/')"
        );
        assert_eq!(take.len(), 3, "only the lease under the lock");
        assert!(take_batch(&schema, &t, "bad\0", 960, &wake).is_err());
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
                "wakeup_5_sales_orders".to_string()
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
        let options = crate::copy_options::parse_for(
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
