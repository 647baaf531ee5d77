//! SQL text building. Pure: every function returns text, nothing here talks to Redshift.
//!
//! Data API batches take no parameters, so values are inlined as literals. Everything
//! inlined goes through [`literal`] (or is a validated [`Ident`] / integer), so a value
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
}

impl SqlLiteral {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A NULL partition value: predicates on it need `IS NULL`, never `= NULL`.
    pub fn is_null(&self) -> bool {
        self.null
    }
}

fn value_literal(text: String) -> SqlLiteral {
    SqlLiteral { text, null: false }
}

/// Validates `value` against `ty` and renders a literal that Redshift and PostgreSQL both
/// read the same way. `None` names what is wrong.
pub fn partition_literal(ty: PartitionType, value: &str) -> Result<SqlLiteral, String> {
    match ty {
        PartitionType::Date => {
            let ok =
                value.len() == 10 && chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok();
            if !ok {
                return Err(format!("{value:?} is not a date (YYYY-MM-DD)"));
            }
            Ok(value_literal(format!("CAST('{value}' AS DATE)")))
        }
        PartitionType::Integer => value
            .parse::<i64>()
            .map(|n| value_literal(n.to_string()))
            .map_err(|_| format!("{value:?} is not a 64-bit integer")),
        PartitionType::String => literal(value).map(value_literal).map_err(|e| e.to_string()),
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
    }
}

/// Statements of the idempotent bootstrap batch.
pub fn bootstrap(schema: &Ident) -> Vec<String> {
    let s = schema.quoted();
    vec![
        format!("CREATE SCHEMA IF NOT EXISTS {s}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.locks (table_name VARCHAR(256) NOT NULL, \
             holder VARCHAR(256) NOT NULL, acquired_at TIMESTAMP NOT NULL, \
             expires_at TIMESTAMP NOT NULL)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.loaded_files (table_name VARCHAR(256) NOT NULL, \
             partition_path VARCHAR(1024) NOT NULL, s3_url VARCHAR(2048) NOT NULL, \
             etag VARCHAR(128) NOT NULL, size_bytes BIGINT NOT NULL, \
             loaded_at TIMESTAMP NOT NULL, holder VARCHAR(256) NOT NULL, \
             load_id VARCHAR(64) NOT NULL) SORTKEY (table_name, partition_path)"
        ),
        format!(
            "CREATE OR REPLACE PROCEDURE {s}.release_lease(p_table VARCHAR(256), p_holder VARCHAR(256)) \
             AS $$\nDECLARE\n  n INTEGER;\nBEGIN\n  \
             DELETE FROM {s}.locks WHERE table_name = p_table AND holder = p_holder \
             AND expires_at > GETDATE();\n  \
             GET DIAGNOSTICS n := ROW_COUNT;\n  \
             IF n = 0 THEN\n    RAISE EXCEPTION 'partition-loader: lease on % is not held by % \
             (expired or taken over); load rolled back', p_table, p_holder;\n  END IF;\nEND;\n$$ \
             LANGUAGE plpgsql"
        ),
        format!(
            "CREATE OR REPLACE PROCEDURE {s}.renew_lease(p_table VARCHAR(256), p_holder VARCHAR(256), \
             p_ttl_seconds INTEGER) AS $$\nDECLARE\n  n INTEGER;\nBEGIN\n  \
             UPDATE {s}.locks SET expires_at = GETDATE() + p_ttl_seconds * INTERVAL '1 second' \
             WHERE table_name = p_table AND holder = p_holder AND expires_at > GETDATE();\n  \
             GET DIAGNOSTICS n := ROW_COUNT;\n  \
             IF n = 0 THEN\n    RAISE EXCEPTION 'partition-loader: lease on % is not held by % \
             (expired or taken over); load rolled back', p_table, p_holder;\n  END IF;\nEND;\n$$ \
             LANGUAGE plpgsql"
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

/// The tables [`bootstrap`] creates in the loader schema (for `loaderctl doctor`).
pub fn bootstrap_tables(schema: &Ident) -> Vec<String> {
    let head = format!("CREATE TABLE IF NOT EXISTS {}.", schema.quoted());
    bootstrap(schema)
        .iter()
        .filter_map(|s| s.strip_prefix(&head))
        .filter_map(|rest| rest.split([' ', '(']).next())
        .map(str::to_string)
        .collect()
}

/// `loaderctl doctor`: who we are, where. Row: `(user, database)`.
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
/// `(name, select, insert, update, delete)` for the current user.
pub fn doctor_loader_tables() -> &'static str {
    "SELECT c.relname, has_table_privilege(c.oid, 'SELECT'), \
     has_table_privilege(c.oid, 'INSERT'), has_table_privilege(c.oid, 'UPDATE'), \
     has_table_privilege(c.oid, 'DELETE') \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = :schema AND c.relkind = 'r'"
}

/// `loaderctl doctor`: a CALL of each fencing procedure on a lease nobody holds; a
/// callable procedure raises [`LEASE_LOST_MARKER`], changing nothing.
pub fn doctor_procedure_probes(schema: &Ident) -> Vec<(&'static str, String)> {
    let s = schema.quoted();
    let probe = "'partition-loader doctor'";
    vec![
        (
            "release_lease",
            format!("CALL {s}.release_lease({probe}, {probe})"),
        ),
        (
            "renew_lease",
            format!("CALL {s}.renew_lease({probe}, {probe}, 1)"),
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
/// DELETE, TEMP on the database)` for `:schema`.`:table` (by oid: a name would need
/// USAGE on the schema just to be resolved).
pub fn doctor_table() -> &'static str {
    "SELECT pg_get_userbyid(c.relowner) = current_user, has_schema_privilege(:schema, 'USAGE'), \
     has_table_privilege(c.oid, 'INSERT'), has_table_privilege(c.oid, 'SELECT'), \
     has_table_privilege(c.oid, 'DELETE'), has_database_privilege(current_database(), 'TEMP') \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = :schema AND c.relname = :table"
}

/// Text the fencing procedures raise; the warehouse adapter recognises it.
pub const LEASE_LOST_MARKER: &str = "partition-loader: lease on";

/// The acquire batch. Results: statement 4 = lease holder, 5 = ledger rows of the
/// partition, 6 = the target table's columns in order.
pub fn acquire(
    schema: &Ident,
    table: &TableName,
    holder: &str,
    ttl_seconds: u64,
    partition_path: &str,
) -> Result<Vec<String>, LoaderError> {
    let s = schema.quoted();
    let t = literal(&table.to_string())?;
    let h = literal(holder)?;
    let p = literal(partition_path)?;
    Ok(vec![
        // First on purpose: the transaction's snapshot is taken at the first query, so
        // every read below sees the state after the previous holder committed.
        format!("LOCK {s}.locks"),
        format!("DELETE FROM {s}.locks WHERE table_name = {t} AND expires_at <= GETDATE()"),
        format!(
            "INSERT INTO {s}.locks (table_name, holder, acquired_at, expires_at) \
             SELECT {t}, {h}, GETDATE(), GETDATE() + INTERVAL '{ttl_seconds} seconds' \
             WHERE NOT EXISTS (SELECT 1 FROM {s}.locks WHERE table_name = {t})"
        ),
        format!("SELECT holder, expires_at FROM {s}.locks WHERE table_name = {t}"),
        format!(
            "SELECT s3_url, etag, size_bytes FROM {s}.loaded_files \
             WHERE table_name = {t} AND partition_path = {p}"
        ),
        format!(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = {} \
             AND table_name = {} ORDER BY ordinal_position",
            literal(table.schema.as_str())?,
            literal(table.name.as_str())?
        ),
    ])
}

/// The explicit release (used when no load follows). Parameterised: it is a single
/// ExecuteStatement, which takes parameters.
pub fn release(schema: &Ident) -> String {
    format!(
        "DELETE FROM {}.locks WHERE table_name = :table AND holder = :holder",
        schema.quoted()
    )
}

/// The waiter's poll while another holder has the lease: one read-only statement,
/// cheaper than the acquire batch and taking no lock. Rows: `('loaded', holder, NULL)`
/// when the ledger holds the event's object (by `:s3_url`, and `:etag` when
/// `with_etag`), `('lease', holder, expires_at)` for the live lease of `:table`.
/// Parameters: `:table`, `:s3_url`, `:partition` when `partitioned` (an unpartitioned
/// route's path is empty, and a Data API parameter value must not be: the URL alone
/// names the object), and `:etag`.
pub fn wait_check(schema: &Ident, with_etag: bool, partitioned: bool) -> String {
    let s = schema.quoted();
    let etag = if with_etag { " AND etag = :etag" } else { "" };
    let partition = if partitioned {
        " AND partition_path = :partition"
    } else {
        ""
    };
    // Redshift compares VARCHARs ignoring trailing spaces, and S3 keys may end in
    // spaces: the appended '|' makes them count, so another key never matches
    // (https://docs.aws.amazon.com/redshift/latest/dg/r_Character_types.html).
    format!(
        "SELECT 'loaded' AS kind, holder, CAST(NULL AS TIMESTAMP) AS expires_at \
         FROM {s}.loaded_files WHERE table_name = :table{partition} \
         AND s3_url = :s3_url AND s3_url || '|' = :s3_url || '|'{etag} \
         UNION ALL SELECT 'lease', holder, expires_at FROM {s}.locks \
         WHERE table_name = :table AND expires_at > GETDATE()"
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

/// Everything one load batch needs. The ledger INSERTs are rendered by the caller with
/// [`ledger_inserts`] so that it can size batches.
#[derive(Debug, Clone)]
pub struct LoadBatch<'a> {
    pub schema: &'a Ident,
    pub table: &'a TableName,
    pub partition_path: &'a str,
    pub holder: &'a str,
    pub manifest_url: &'a str,
    pub iam_role: &'a str,
    pub format: FileFormat,
    /// The route's `copy_options` (rendered with [`crate::copy_options::render`]).
    pub copy_options: &'a [crate::copy_options::CopyOption],
    pub target: &'a CopyTarget,
    /// `Some` in replace mode: the predicate columns of the partition to delete first.
    pub replace: Option<&'a [PartitionValue]>,
    pub ledger_inserts: &'a [String],
    /// `None` for the last batch (release the lease), `Some(ttl)` to renew it instead.
    pub renew_ttl_seconds: Option<u64>,
    pub stage_suffix: usize,
    /// `STATUPDATE ON` for a direct COPY (needs the table's owner); staging tables
    /// never get it.
    pub statupdate: bool,
}

/// Statements of one load batch; the fence (release or renew) is last.
pub fn load_batch(b: &LoadBatch<'_>) -> Result<Vec<String>, LoaderError> {
    let s = b.schema.quoted();
    let target = b.table.quoted();
    let t = literal(&b.table.to_string())?;
    let h = literal(b.holder)?;
    let mut out = Vec::new();
    if let Some(values) = b.replace {
        let predicate = if values.is_empty() {
            "TRUE".to_string()
        } else {
            values
                .iter()
                .map(|v| {
                    if v.literal.is_null() {
                        format!("{} IS NULL", v.column.quoted())
                    } else {
                        format!("{} = {}", v.column.quoted(), v.literal.as_str())
                    }
                })
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        out.push(format!("DELETE FROM {target} WHERE {predicate}"));
        out.push(format!(
            "DELETE FROM {s}.loaded_files WHERE table_name = {t} AND partition_path = {}",
            literal(b.partition_path)?
        ));
    }
    let options = crate::copy_options::render(b.format, b.copy_options);
    let copy_tail = format!(
        "FROM {} IAM_ROLE {} MANIFEST {}{}{} STATUPDATE OFF",
        literal(b.manifest_url)?,
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
    match b.target {
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
    out.extend(b.ledger_inserts.iter().cloned());
    out.push(match b.renew_ttl_seconds {
        None => format!("CALL {s}.release_lease({t}, {h})"),
        Some(ttl) => format!("CALL {s}.renew_lease({t}, {h}, {ttl})"),
    });
    Ok(out)
}

/// Statements a load batch has besides its ledger INSERTs.
pub fn fixed_statements(target: &CopyTarget, replace: bool) -> usize {
    let copy = match target {
        CopyTarget::Direct(_) => 1,
        CopyTarget::Staged { .. } => 4,
    };
    copy + if replace { 2 } else { 0 } + 1
}

fn column_list(cols: &[Ident]) -> String {
    cols.iter()
        .map(Ident::quoted)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The start of every ledger INSERT.
pub fn ledger_insert_head(schema: &Ident) -> String {
    format!(
        "INSERT INTO {}.loaded_files (table_name, partition_path, s3_url, etag, size_bytes, \
         loaded_at, holder, load_id) VALUES ",
        schema.quoted()
    )
}

/// One `(...)` VALUES tuple of the ledger.
pub fn ledger_tuple(
    table: &TableName,
    partition_path: &str,
    holder: &str,
    load_id: &str,
    row: &LedgerRow,
) -> Result<String, LoaderError> {
    Ok(format!(
        "({}, {}, {}, {}, {}, GETDATE(), {}, {})",
        literal(&table.to_string())?,
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
    Some(format!(
        "SELECT CAST(COALESCE(SUM(loaded_rows), 0) AS BIGINT), COUNT(*) FROM sys_load_history \
         WHERE query_id IN ({ids})"
    ))
}

// ---- loaderctl status and history ----------------------------------------------
// Written for today's layout (one `locks` and one `loaded_files` table with a
// `table_name` column): a per-table layout changes only these functions.

/// Files a table's ledger holds (total, last hour, last day) joined with its newest
/// load (`loaded_at` has whole seconds, so of two loads in one second either counts) (load id, time, files, bytes, holder, one object URL of it). Rows: `table_name,
/// files_total, files_hour, files_day, load_id, loaded_at, files, bytes, holder, s3_url,
/// now`.
fn status_ledger(schema: &Ident, filter: &str) -> String {
    let s = schema.quoted();
    format!(
        "SELECT c.table_name, c.files_total, c.files_hour, c.files_day, l.load_id, \
         l.loaded_at, l.files, l.bytes, l.holder, l.s3_url, GETDATE() FROM (\
         SELECT table_name, COUNT(*) AS files_total, \
         SUM(CASE WHEN loaded_at > GETDATE() - INTERVAL '1 hour' THEN 1 ELSE 0 END) AS files_hour, \
         SUM(CASE WHEN loaded_at > GETDATE() - INTERVAL '1 day' THEN 1 ELSE 0 END) AS files_day \
         FROM {s}.loaded_files{filter} GROUP BY table_name) c JOIN (\
         SELECT table_name, load_id, MAX(loaded_at) AS loaded_at, COUNT(*) AS files, \
         SUM(size_bytes) AS bytes, MAX(holder) AS holder, MAX(s3_url) AS s3_url, \
         ROW_NUMBER() OVER (PARTITION BY table_name ORDER BY MAX(loaded_at) DESC, load_id DESC) AS n \
         FROM {s}.loaded_files{filter} GROUP BY table_name, load_id) l \
         ON l.table_name = c.table_name AND l.n = 1 ORDER BY c.table_name"
    )
}

/// [`status_ledger`] of every table in the ledger.
pub fn status_ledger_all(schema: &Ident) -> String {
    status_ledger(schema, "")
}

/// [`status_ledger`] of `:table`.
pub fn status_ledger_of(schema: &Ident) -> String {
    status_ledger(schema, " WHERE table_name = :table")
}

/// Leases with the warehouse's clock: `table_name, holder, acquired_at, expires_at,
/// now`; [`leases_of`] for `:table`.
pub fn leases_all(schema: &Ident) -> String {
    format!(
        "SELECT table_name, holder, acquired_at, expires_at, GETDATE() FROM {}.locks \
         ORDER BY table_name",
        schema.quoted()
    )
}

/// [`leases_all`] of `:table`.
pub fn leases_of(schema: &Ident) -> String {
    format!(
        "SELECT table_name, holder, acquired_at, expires_at, GETDATE() FROM {}.locks \
         WHERE table_name = :table",
        schema.quoted()
    )
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

/// The loads of `:table` (and `:partition` when `partition`), newest first: `load_id,
/// partition_path, loaded_at, files, bytes, holder`.
pub fn history_loads(schema: &Ident, partition: bool, limit: u32) -> String {
    let p = if partition {
        " AND partition_path = :partition"
    } else {
        ""
    };
    format!(
        "SELECT load_id, partition_path, MAX(loaded_at) AS loaded_at, COUNT(*), \
         SUM(size_bytes), MAX(holder) FROM {}.loaded_files WHERE table_name = :table{p} \
         GROUP BY load_id, partition_path ORDER BY loaded_at DESC, load_id LIMIT {limit}",
        schema.quoted()
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

/// The ledger rows of `:table`'s `:partition`: `s3_url, etag` (what a dry run diffs
/// the listing against, without taking the lease).
pub fn partition_ledger(schema: &Ident) -> String {
    format!(
        "SELECT s3_url, etag FROM {}.loaded_files WHERE table_name = :table \
         AND partition_path = :partition",
        schema.quoted()
    )
}

/// [`partition_ledger`] of a route without partition columns (its path is empty, and
/// Redshift rejects an empty parameter value).
pub fn unpartitioned_ledger(schema: &Ident) -> String {
    format!(
        "SELECT s3_url, etag FROM {}.loaded_files WHERE table_name = :table \
         AND partition_path = ''",
        schema.quoted()
    )
}

const HISTORY_COPIES: &str = "SELECT query_id, transaction_id, TRIM(data_source), loaded_rows, \
     duration, start_time, TRIM(status) FROM sys_load_history";

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
    fn acquire_locks_first_and_reads_three_results() {
        let schema = Ident::parse("pl").unwrap();
        let sqls = acquire(&schema, &table(), "req-1", 960, "order_date=2024-05-28/").unwrap();
        assert_eq!(sqls.len(), 6);
        assert_eq!(sqls[0], "LOCK \"pl\".locks");
        assert!(sqls[1].contains("expires_at <= GETDATE()"));
        assert!(sqls[2].contains("GETDATE() + INTERVAL '960 seconds'"));
        assert!(sqls[2].contains("WHERE NOT EXISTS"));
        assert!(sqls[3].starts_with("SELECT holder, expires_at"));
        assert!(sqls[4].contains("partition_path = 'order_date=2024-05-28/'"));
        assert!(sqls[5].contains("table_schema = 'sales' AND table_name = 'orders'"));
        assert!(acquire(&schema, &table(), "bad\0", 960, "p/").is_err());
    }

    #[test]
    fn wait_check_reads_the_object_and_the_live_lease_without_locking() {
        let schema = Ident::parse("pl").unwrap();
        let with_etag = wait_check(&schema, true, true);
        assert_eq!(
            with_etag,
            "SELECT 'loaded' AS kind, holder, CAST(NULL AS TIMESTAMP) AS expires_at \
             FROM \"pl\".loaded_files WHERE table_name = :table AND partition_path = :partition \
             AND s3_url = :s3_url AND s3_url || '|' = :s3_url || '|' AND etag = :etag \
             UNION ALL SELECT 'lease', holder, expires_at FROM \"pl\".locks \
             WHERE table_name = :table AND expires_at > GETDATE()"
        );
        let key_only = wait_check(&schema, false, true);
        assert_eq!(key_only, with_etag.replace(" AND etag = :etag", ""));
        assert!(!key_only.contains(":etag"));
        // An unpartitioned route binds no empty :partition (the Data API refuses it).
        let unpartitioned = wait_check(&schema, true, false);
        assert_eq!(
            unpartitioned,
            with_etag.replace(" AND partition_path = :partition", "")
        );
        assert!(
            !with_etag.contains("LOCK "),
            "a poll must not queue behind acquirers"
        );
    }

    #[test]
    fn bootstrap_is_idempotent_ddl_with_fencing_procedures() {
        let sqls = bootstrap(&Ident::parse("pl").unwrap());
        assert_eq!(sqls.len(), 5);
        assert!(sqls
            .iter()
            .all(|s| s.contains("IF NOT EXISTS") || s.contains("OR REPLACE")));
        assert!(sqls[3].contains("RAISE EXCEPTION 'partition-loader: lease on %"));
        assert!(sqls[3].contains("expires_at > GETDATE()"));
        assert!(sqls[4].contains("renew_lease"));
    }

    fn batch<'a>(
        schema: &'a Ident,
        t: &'a TableName,
        target: &'a CopyTarget,
        replace: Option<&'a [PartitionValue]>,
        inserts: &'a [String],
        renew: Option<u64>,
    ) -> LoadBatch<'a> {
        LoadBatch {
            schema,
            table: t,
            partition_path: "order_date=2024-05-28/",
            holder: "req-1",
            manifest_url: "s3://m/x/1.manifest",
            iam_role: "arn:aws:iam::1:role/r",
            format: FileFormat::Parquet,
            copy_options: &[],
            target,
            replace,
            ledger_inserts: inserts,
            renew_ttl_seconds: renew,
            stage_suffix: 0,
            statupdate: false,
        }
    }

    #[test]
    fn statupdate_only_when_asked_and_never_on_staging() {
        let schema = Ident::parse("pl").unwrap();
        let t = table();
        let direct = CopyTarget::Direct(None);
        let mut b = batch(&schema, &t, &direct, None, &[], None);
        assert!(load_batch(&b).unwrap()[0].ends_with("STATUPDATE OFF"));
        b.statupdate = true;
        assert!(load_batch(&b).unwrap()[0].ends_with("STATUPDATE ON"));
        let staged = CopyTarget::Staged {
            file_columns: vec![Ident::parse("id").unwrap()],
            fill: vec![],
        };
        let mut b = batch(&schema, &t, &staged, None, &[], None);
        b.statupdate = true;
        let sqls = load_batch(&b).unwrap();
        assert!(sqls[1].starts_with("COPY \"partition_loader_stage_0\""));
        assert!(sqls[1].ends_with("STATUPDATE OFF"), "{}", sqls[1]);
    }

    #[test]
    fn bootstrap_tables_are_read_from_the_bootstrap() {
        assert_eq!(
            bootstrap_tables(&Ident::parse("pl").unwrap()),
            vec!["locks".to_string(), "loaded_files".to_string()]
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
        let sqls = load_batch(&batch(&schema, &t, &target, None, &inserts, None)).unwrap();
        assert_eq!(
            sqls,
            vec![
                "COPY \"sales\".\"orders\" FROM 's3://m/x/1.manifest' IAM_ROLE \
                 'arn:aws:iam::1:role/r' MANIFEST FORMAT AS PARQUET STATUPDATE OFF"
                    .to_string(),
                "INSERT 1".to_string(),
                "CALL \"pl\".release_lease('sales.orders', 'req-1')".to_string(),
            ]
        );
        assert_eq!(fixed_statements(&target, false), sqls.len() - 1);
        let renew = load_batch(&batch(&schema, &t, &target, None, &inserts, Some(960))).unwrap();
        assert_eq!(
            renew.last().unwrap(),
            "CALL \"pl\".renew_lease('sales.orders', 'req-1', 960)"
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
        let sqls = load_batch(&batch(&schema, &t, &target, Some(&pv), &[], None)).unwrap();
        assert_eq!(sqls.len(), fixed_statements(&target, true));
        assert_eq!(
            sqls[0],
            "DELETE FROM \"sales\".\"orders\" WHERE \"order_date\" = CAST('2024-05-28' AS DATE)"
        );
        assert!(sqls[1].contains("partition_path = 'order_date=2024-05-28/'"));
        assert_eq!(
            sqls[2],
            "CREATE TEMP TABLE \"partition_loader_stage_0\" AS SELECT \"id\", \"amount\" FROM \
             \"sales\".\"orders\" WHERE 1 = 0"
        );
        assert!(sqls[3].starts_with("COPY \"partition_loader_stage_0\" FROM"));
        assert_eq!(
            sqls[4],
            "INSERT INTO \"sales\".\"orders\" (\"id\", \"amount\", \"order_date\") SELECT \"id\", \
             \"amount\", CAST('2024-05-28' AS DATE) FROM \"partition_loader_stage_0\""
        );
        assert_eq!(sqls[5], "DROP TABLE \"partition_loader_stage_0\"");
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
        let sqls = load_batch(&batch(&schema, &t, &target, Some(&pv), &[], None)).unwrap();
        assert_eq!(
            sqls[0],
            "DELETE FROM \"sales\".\"orders\" WHERE \"region\" = 'eu' AND \"d\" IS NULL"
        );
        assert!(
            sqls[4].ends_with(
                "SELECT \"id\", 'eu', CAST(NULL AS DATE) FROM \"partition_loader_stage_0\""
            ),
            "{}",
            sqls[4]
        );
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
        let mut b = batch(&schema, &t, &target, None, &[], None);
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
        let tuple = ledger_tuple(&t, "p=1/", "h", "id", &row).unwrap();
        assert!(tuple.contains("GETDATE()"));
        let tuples = vec![tuple; 500];
        let head = ledger_insert_head(&Ident::parse("pl").unwrap());
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
        assert!(status_ledger_of(&schema).contains("WHERE table_name = :table"));
        assert!(
            !status_ledger_all(&schema).contains(':'),
            "no parameters at all"
        );
        assert!(history_loads(&schema, true, 50).contains("AND partition_path = :partition"));
        assert!(!history_loads(&schema, false, 50).contains(":partition"));
        // An unpartitioned route's path is empty: it is never sent as a parameter value.
        assert!(unpartitioned_ledger(&schema).contains("partition_path = ''"));
        assert!(load_copies().contains(":load_id") && load_copies().contains(":manifests"));
    }
}
