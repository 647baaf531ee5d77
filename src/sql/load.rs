//! The statements of a load ([`crate::run::handler`]): the load batch (COPY targets, the
//! partition predicate, the ledger inserts), the COPYs' load history, and the sweep's
//! read of recently loaded partitions. Arrow: `sql::load` → `lake::copy_options` (the
//! COPY option text and [`FileFormat`]); never the other way.

use super::*;

// Re-exported so that `crate::sql::FileFormat` keeps naming it.
pub use crate::lake::copy_options::FileFormat;

/// The start of every ledger INSERT of one target table.
pub fn table_ledger_insert_head(schema: &Ident, t: &LeaseTables) -> String {
    format!(
        "INSERT INTO {} (partition_path, s3_url, etag, size_bytes, loaded_at, holder, load_id) \
         VALUES ",
        t.q(schema, &t.ledger)
    )
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
/// differ, [`crate::lake::schema_match`]), each rendered as [`CopyTarget`] says, in order, in
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
    /// The route's `copy_options` (rendered with [`crate::lake::copy_options::render`]).
    pub copy_options: &'a [crate::lake::copy_options::CopyOption],
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
    let options = crate::lake::copy_options::render(b.format, b.copy_options);
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
