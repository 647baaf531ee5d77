//! The statements of the quarantine ([`crate::protocol::isolate`]): the per-table quarantine table,
//! the holder's read of a partition's quarantined files, the batch that quarantines
//! files under the lease (the fence last), and loaderctl's list and release.

use super::*;

/// Longest error text kept per quarantined file (Redshift's own
/// `SYS_LOAD_ERROR_DETAIL.error_message` keeps 512 characters; the statement's error
/// can be longer and names the file).
pub const QUARANTINE_ERROR_CHARS: usize = 4000;

/// One target table's quarantine: files Redshift refused to load, by `(s3_url, etag)`,
/// with the error. A row is history: a rewrite (new ETag) loads the file, and the
/// reports leave out rows whose URL the ledger has since loaded.
pub fn create_quarantine(schema: &Ident, t: &LeaseTables) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (bucket VARCHAR(256) NOT NULL, \
         partition_path VARCHAR(1024) NOT NULL, s3_url VARCHAR(2048) NOT NULL, \
         etag VARCHAR(128) NOT NULL, error VARCHAR({QUARANTINE_ERROR_CHARS}) NOT NULL, \
         quarantined_at TIMESTAMP NOT NULL, holder VARCHAR(256) NOT NULL, \
         load_id VARCHAR(64) NOT NULL) SORTKEY (partition_path)",
        t.q(schema, &t.quarantine)
    )
}

/// The quarantined files of one partition: `s3_url, etag` (the holder's third read).
pub fn quarantine_read(
    schema: &Ident,
    t: &LeaseTables,
    partition_path: &str,
) -> Result<String, LoaderError> {
    Ok(format!(
        "SELECT s3_url, etag FROM {} WHERE partition_path = {}",
        t.q(schema, &t.quarantine),
        literal(partition_path)?
    ))
}

/// One file to quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineRow {
    pub s3_url: String,
    pub etag: String,
    /// Redshift's words (or the loader's, for a footer it could not read).
    pub error: String,
}

/// Everything one quarantine batch needs.
#[derive(Debug, Clone, Copy)]
pub struct QuarantineBatch<'a> {
    pub schema: &'a Ident,
    pub tables: &'a LeaseTables,
    pub bucket: &'a str,
    pub partition_path: &'a str,
    pub holder: &'a str,
    /// A load id of its own: the fence checks that no file of it is in the ledger
    /// under another load (none is: it writes no ledger row).
    pub load_id: &'a str,
    /// The fence renews the lease for this long, as a load batch's does.
    pub ttl_seconds: u64,
    pub rows: &'a [QuarantineRow],
}

/// The quarantine batch: the rows, then the fence (as in every load batch: a holder
/// that lost its lease writes nothing).
pub fn quarantine_batch(b: &QuarantineBatch<'_>) -> Result<Vec<String>, LoaderError> {
    let t = b.tables;
    let mut out = Vec::with_capacity(b.rows.len() + 1);
    for r in b.rows {
        out.push(format!(
            "INSERT INTO {} (bucket, partition_path, s3_url, etag, error, quarantined_at, \
             holder, load_id) VALUES ({}, {}, {}, {}, {}, GETDATE(), {}, {})",
            t.q(b.schema, &t.quarantine),
            literal(b.bucket)?,
            literal(b.partition_path)?,
            literal(&r.s3_url)?,
            literal(&r.etag)?,
            literal(&printable(&r.error, QUARANTINE_ERROR_CHARS))?,
            literal(b.holder)?,
            literal(b.load_id)?
        ));
    }
    out.push(format!(
        "CALL {}.{}({}, {}, {}, {})",
        b.schema.quoted(),
        t.fence.quoted(),
        literal(b.holder)?,
        b.ttl_seconds,
        literal(b.partition_path)?,
        literal(b.load_id)?
    ));
    Ok(out)
}

/// An error text as a literal can hold it: control characters (Redshift's multi-line
/// DETAIL) become blanks, backslashes slashes, at most `max` characters.
pub fn printable(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| match c {
            '\\' => '/',
            c if c.is_control() => ' ',
            c => c,
        })
        .take(max)
        .collect()
}

/// Quarantined files of `tables` not loaded since (a rewrite loaded the URL): rows
/// `table_name, bucket, partition_path, s3_url, etag, error, quarantined_at`, oldest
/// first. No parameters (table names are validated identifiers, inlined).
pub fn quarantine_list(schema: &Ident, tables: &[TableName]) -> String {
    let parts: Vec<String> = tables
        .iter()
        .map(|t| {
            let lt = LeaseTables::for_target(t);
            format!(
                "SELECT CAST('{t}' AS VARCHAR(256)) AS table_name, q.bucket, q.partition_path, \
                 q.s3_url, q.etag, q.error, q.quarantined_at FROM {} q WHERE NOT EXISTS \
                 (SELECT 1 FROM {} l WHERE l.partition_path = q.partition_path \
                 AND l.s3_url = q.s3_url)",
                lt.q(schema, &lt.quarantine),
                lt.q(schema, &lt.ledger)
            )
        })
        .collect();
    if parts.is_empty() {
        return "SELECT CAST(NULL AS VARCHAR(256)), CAST(NULL AS VARCHAR(256)), \
                CAST(NULL AS VARCHAR(1024)), CAST(NULL AS VARCHAR(2048)), \
                CAST(NULL AS VARCHAR(128)), CAST(NULL AS VARCHAR(4000)), \
                CAST(NULL AS TIMESTAMP) WHERE 1 = 0"
            .to_string();
    }
    format!(
        "SELECT * FROM ({}) a ORDER BY quarantined_at, s3_url",
        parts.join(" UNION ALL ")
    )
}

/// `loaderctl quarantine release`: forgets one table's quarantine rows of `:url` (every
/// ETag), so that the next load of its partition tries the file again.
pub fn quarantine_release(schema: &Ident, t: &LeaseTables) -> String {
    format!(
        "DELETE FROM {} WHERE s3_url = :url",
        t.q(schema, &t.quarantine)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> (Ident, LeaseTables) {
        (
            Ident::parse("pl").unwrap(),
            LeaseTables::for_target(&TableName::parse("sales.orders").unwrap()),
        )
    }

    #[test]
    fn the_quarantine_batch_ends_with_the_fence() {
        let (s, t) = tables();
        let rows = [QuarantineRow {
            s3_url: "s3://b/o/d=1/bad.parquet".into(),
            etag: "e1".into(),
            error: "ERROR: Spectrum Scan Error\n  context: File 'x'\\y".into(),
        }];
        let sqls = quarantine_batch(&QuarantineBatch {
            schema: &s,
            tables: &t,
            bucket: "b",
            partition_path: "d=1/",
            holder: "h",
            load_id: "load-1",
            ttl_seconds: 900,
            rows: &rows,
        })
        .unwrap();
        assert_eq!(sqls.len(), 2);
        assert!(sqls[0].starts_with(
            "INSERT INTO \"pl\".\"quarantine_5_sales_orders\" (bucket, partition_path, s3_url"
        ));
        assert!(
            sqls[0].contains("'ERROR: Spectrum Scan Error   context: File ''x''/y'"),
            "{}",
            sqls[0]
        );
        assert_eq!(
            sqls[1],
            "CALL \"pl\".\"fence_5_sales_orders\"('h', 900, 'd=1/', 'load-1')"
        );
    }

    #[test]
    fn values_from_keys_are_literals() {
        let (s, t) = tables();
        let rows = [QuarantineRow {
            s3_url: "s3://b/o/d=1/x'; DROP TABLE y; --".into(),
            etag: "e".into(),
            error: "e".into(),
        }];
        let sqls = quarantine_batch(&QuarantineBatch {
            schema: &s,
            tables: &t,
            bucket: "b",
            partition_path: "d=1/",
            holder: "h",
            load_id: "l",
            ttl_seconds: 1,
            rows: &rows,
        })
        .unwrap();
        assert!(sqls[0].contains("'s3://b/o/d=1/x''; DROP TABLE y; --'"));
        let read = quarantine_read(&s, &t, "d='/").unwrap();
        assert!(read.ends_with("WHERE partition_path = 'd=''/'"), "{read}");
    }

    #[test]
    fn the_list_leaves_out_files_loaded_since() {
        let (s, _) = tables();
        let list = quarantine_list(&s, &[TableName::parse("sales.orders").unwrap()]);
        assert!(list.contains("FROM \"pl\".\"quarantine_5_sales_orders\" q WHERE NOT EXISTS"));
        assert!(list.contains("\"pl\".\"ledger_5_sales_orders\" l"));
        assert!(quarantine_list(&s, &[]).ends_with("WHERE 1 = 0"));
        assert!(printable(&"é".repeat(10), 3) == "ééé");
    }
}
