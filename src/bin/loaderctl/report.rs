//! What `status` and `history` share: Redshift's rows read into typed values, the
//! join of ledger loads with Redshift's load history, and the text table. Pure.

use chrono::NaiveDateTime;
use partition_loader::io::warehouse::Row;
use partition_loader::{lake::manifest, LoaderError};
use serde::Serialize;

/// Names the fix when the loader schema's tables are missing.
pub fn hint_bootstrap(schema: &str, e: LoaderError) -> LoaderError {
    match e {
        LoaderError::StatementFailed { message, .. }
            if message.contains("does not exist") && message.contains(schema) =>
        {
            LoaderError::Config(format!(
                "the loader schema {schema} is not bootstrapped (run `loaderctl bootstrap`, \
                 with LOADER_SCHEMA as the function has it): {message}"
            ))
        }
        other => other,
    }
}

/// A timestamp as the Data API returns it (`2024-05-28 10:00:00[.ffffff]`, UTC).
pub fn timestamp(text: Option<&str>) -> Option<NaiveDateTime> {
    let text = text?.trim();
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()
}

/// Column `i` of a row as text (`None`: NULL or missing).
pub fn text(row: &Row, i: usize) -> Option<&str> {
    row.get(i)?.as_deref()
}

/// Column `i` of a row as a number (`None`: NULL, missing or not a number).
pub fn number(row: &Row, i: usize) -> Option<i64> {
    text(row, i)?.trim().parse().ok()
}

/// `2024-05-28 10:00:00`, the form every command prints.
pub fn show_time(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// What Redshift's load history says about the COPYs of one load (one per batch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Copies {
    /// Redshift query ids of the COPY statements.
    pub query_ids: Vec<i64>,
    pub transaction_ids: Vec<i64>,
    pub rows: i64,
    /// Time inside the COPYs, from `duration` (microseconds).
    pub duration_ms: i64,
    /// The COPYs' wait in a WLM queue and their execution, from SYS_QUERY_HISTORY
    /// (`None` where it shows none of them).
    pub queue_ms: Option<i64>,
    pub execution_ms: Option<i64>,
}

/// Groups rows of [`partition_loader::sql::history_copies`] by the load id in their
/// manifest URL. Rows whose source is not one of our manifests are ignored.
pub fn copies_by_load(rows: &[Row]) -> std::collections::HashMap<String, Copies> {
    let mut out: std::collections::HashMap<String, Copies> = Default::default();
    for row in rows {
        let Some(load_id) = text(row, 2).and_then(manifest::load_id_of) else {
            continue;
        };
        let c = out.entry(load_id.to_string()).or_default();
        c.query_ids.extend(number(row, 0));
        c.transaction_ids.extend(number(row, 1));
        c.rows += number(row, 3).unwrap_or(0);
        c.duration_ms += number(row, 4).unwrap_or(0) / 1000;
        if let Some(q) = number(row, 7) {
            *c.queue_ms.get_or_insert(0) += q / 1000;
        }
        if let Some(e) = number(row, 8) {
            *c.execution_ms.get_or_insert(0) += e / 1000;
        }
    }
    for c in out.values_mut() {
        c.query_ids.sort_unstable();
        c.transaction_ids.sort_unstable();
        c.transaction_ids.dedup();
    }
    out
}

/// A plain text table: a header line, then rows, columns padded to their widest cell.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `1.2 KB`, `3.4 MB`: bytes for people.
pub fn human_bytes(bytes: i64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// `45s`, `12m`, `3h`, `2d`: a duration for people.
pub fn human_seconds(seconds: i64) -> String {
    match seconds.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[Option<&str>]) -> Row {
        cells.iter().map(|c| c.map(str::to_string)).collect()
    }

    #[test]
    fn timestamps_with_or_without_fractions() {
        let t = timestamp(Some("2024-05-28 10:00:00")).unwrap();
        assert_eq!(show_time(t), "2024-05-28 10:00:00");
        assert!(timestamp(Some("2024-05-28 10:00:00.123456")).is_some());
        assert!(timestamp(Some("yesterday")).is_none());
        assert!(timestamp(None).is_none());
    }

    #[test]
    fn copies_are_grouped_by_the_load_id_of_their_manifest() {
        let m = |id: &str, n: usize| format!("s3://m/_loader/s.t/d=1/{id}-{n}.manifest");
        let (a0, a1, b0) = (m("aaaa-1", 0), m("aaaa-1", 1), m("bbbb-2", 0));
        let rows = vec![
            row(&[
                Some("11"),
                Some("900"),
                Some(&a0),
                Some("5"),
                Some("2000"),
                None,
                None,
            ]),
            row(&[
                Some("12"),
                Some("901"),
                Some(&a1),
                Some("7"),
                Some("3000"),
                None,
                None,
            ]),
            row(&[
                Some("13"),
                Some("902"),
                Some(&b0),
                Some("1"),
                Some("500"),
                None,
                None,
            ]),
            row(&[
                Some("14"),
                Some("903"),
                Some("s3://m/elsewhere/x.csv"),
                Some("9"),
                None,
                None,
                None,
            ]),
        ];
        let by_load = copies_by_load(&rows);
        assert_eq!(by_load.len(), 2, "the non-manifest source is not ours");
        let a = &by_load["aaaa-1"];
        assert_eq!(a.query_ids, [11, 12]);
        assert_eq!(a.transaction_ids, [900, 901]);
        assert_eq!(a.rows, 12);
        assert_eq!(a.duration_ms, 5);
        assert_eq!(by_load["bbbb-2"].rows, 1);
    }

    #[test]
    fn tables_pad_columns_and_people_read_sizes() {
        let t = render_table(
            &["TABLE", "FILES"],
            &[
                vec!["s.orders".into(), "3".into()],
                vec!["s.x".into(), "12".into()],
            ],
        );
        assert_eq!(t, "TABLE     FILES\ns.orders  3\ns.x       12\n");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KB");
        assert_eq!(human_seconds(45), "45s");
        assert_eq!(human_seconds(600), "10m");
        assert_eq!(human_seconds(3 * 3600), "3h");
        assert_eq!(human_seconds(-3), "0s");
    }

    #[test]
    fn a_missing_ledger_says_to_bootstrap() {
        let e = hint_bootstrap(
            "pl",
            LoaderError::StatementFailed {
                statement_id: "x".into(),
                message: "ERROR: relation \"pl.loaded_files\" does not exist".into(),
            },
        );
        assert_eq!(e.error_type(), "Permanent.Config");
        assert!(e.to_string().contains("loaderctl bootstrap"));
        let other = hint_bootstrap("pl", LoaderError::Throttled("x".into()));
        assert_eq!(other.error_type(), "Retryable.Throttled");
    }
}
