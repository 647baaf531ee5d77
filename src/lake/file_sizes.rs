//! File-size advice for `loaderctl status`: the files and bytes per COPY over a table's
//! recent loads, against AWS's guidance for COPY
//! (<https://docs.aws.amazon.com/redshift/latest/dg/c_best-practices-use-multiple-files.html>,
//! <https://docs.aws.amazon.com/redshift/latest/dg/t_splitting-data-files.html>):
//! - Parquet/ORC files and uncompressed CSV are split by Redshift from 128 MB; Parquet
//!   under 128 MB is read whole by one slice, so many tiny files cost a read each.
//! - Files that can't be split (JSON; CSV compressed with GZIP, LZOP or ZSTD) load in
//!   parallel only across files: 1 MB to 1 GB each after compression, their number a
//!   multiple of the slice count.
//! - Compress text files (GZIP, LZOP, BZIP2 or ZSTD).
//!
//! The slice count is not known here (Serverless has none to read), so the advice
//! names the rule instead of a number.

use crate::sql::{FileFormat, Ident, LeaseTables, TableName};

const MB: f64 = 1024.0 * 1024.0;

/// How many of a table's newest loads the figures cover.
pub const RECENT_LOADS: u32 = 20;

/// A table's recent loads: `loads, files, bytes, compressed files` (by name: `.gz`,
/// `.bz2`, `.zst`, `.lzo`).
pub fn recent_sizes_sql(schema: &Ident, table: &TableName) -> String {
    let ledger = format!(
        "{}.{}",
        schema.quoted(),
        LeaseTables::for_target(table).ledger.quoted()
    );
    format!(
        "SELECT COUNT(DISTINCT load_id), COUNT(*), COALESCE(SUM(size_bytes), 0), \
         SUM(CASE WHEN s3_url LIKE '%.gz' OR s3_url LIKE '%.bz2' OR s3_url LIKE '%.zst' \
         OR s3_url LIKE '%.lzo' THEN 1 ELSE 0 END) \
         FROM {ledger} WHERE load_id IN (SELECT load_id FROM {ledger} GROUP BY load_id \
         ORDER BY MAX(loaded_at) DESC LIMIT {RECENT_LOADS})"
    )
}

/// One line of advice when a table's recent files fall outside AWS's guidance.
pub fn advice(
    format: FileFormat,
    loads: i64,
    files: i64,
    bytes: i64,
    compressed: i64,
) -> Option<String> {
    if loads <= 0 || files <= 0 {
        return None;
    }
    let mean = bytes as f64 / files as f64;
    let per_load = files as f64 / loads as f64;
    let show = |b: f64| {
        if b >= MB {
            format!("{:.1} MB", b / MB)
        } else {
            format!("{:.0} KB", b / 1024.0)
        }
    };
    let seen = format!("{per_load:.1} files of {} on average per COPY", show(mean));
    match format {
        FileFormat::Parquet => (mean < MB).then(|| {
            format!(
                "{seen}: compact them (each Parquet file under 128 MB is read whole by one \
                 slice; files of 128 MB or more are split)"
            )
        }),
        FileFormat::Csv { .. } | FileFormat::Json => {
            if compressed < files {
                return Some(format!(
                    "{seen}, {} of {files} uncompressed: compress text files (GZIP, ZSTD or BZIP2)",
                    files - compressed
                ));
            }
            // Compressed: not split by Redshift (BZIP2 CSV aside), parallel only across files.
            if mean < MB {
                Some(format!(
                    "{seen}: files that can't be split load best at 1 MB to 1 GB each after \
                     compression; combine them"
                ))
            } else if mean > 1024.0 * MB {
                Some(format!(
                    "{seen}: split them into files of 1 MB to 1 GB after compression, \
                     their number a multiple of the slice count"
                ))
            } else if per_load < 2.0 {
                Some(format!(
                    "{seen}: one file that can't be split loads on one slice; split each \
                     load into a multiple of the slice count"
                ))
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: i64 = 1024;
    const M: i64 = 1024 * 1024;

    #[test]
    fn parquet_is_advised_only_when_files_are_tiny() {
        assert!(advice(FileFormat::Parquet, 10, 100, 100 * 50 * K, 0)
            .is_some_and(|a| a.contains("10.0 files of 50 KB") && a.contains("compact")));
        assert_eq!(advice(FileFormat::Parquet, 10, 20, 20 * 200 * M, 0), None);
        assert_eq!(advice(FileFormat::Parquet, 0, 0, 0, 0), None);
    }

    #[test]
    fn text_files_should_be_compressed_and_sized_for_the_slices() {
        let csv = FileFormat::Csv { header: false };
        assert!(advice(csv, 5, 10, 10 * 10 * M, 0).is_some_and(|a| a.contains("compress")));
        assert!(advice(csv, 5, 40, 40 * 100 * K, 40).is_some_and(|a| a.contains("combine")));
        assert!(advice(csv, 5, 10, 10 * 2048 * M, 10).is_some_and(|a| a.contains("split them")));
        assert!(
            advice(FileFormat::Json, 5, 5, 5 * 100 * M, 5).is_some_and(|a| a.contains("one slice"))
        );
        assert_eq!(advice(csv, 5, 40, 40 * 100 * M, 40), None);
    }
}
