//! The reads of loaderctl's reports: `doctor`'s probes, `status`, `history`, `ledger`
//! and `backfill --dry-run`'s ledger reads.

use super::*;

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
                    "CALL {s}.{}('partition-loader doctor', 1, '', '', '', '', '', '')",
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
