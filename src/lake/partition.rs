//! The Hive partition of a key: `prefix/col1=v1/col2=v2/file`.

use crate::error::LoaderError;
use crate::lake::config::Route;
use crate::sql::{null_partition_literal, partition_literal, Ident, PartitionValue};

/// Hive's marker for a NULL partition value (Spark, Hive and Glue write it).
pub const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

#[derive(Debug, Clone)]
pub struct Partition {
    /// The raw segments as they appear in S3, each followed by `/`, e.g.
    /// `year=2024/month=05/`. Lists the partition and identifies it in the ledger.
    pub path: String,
    /// Column name and decoded value, in route order; `None` is a NULL partition
    /// (`__HIVE_DEFAULT_PARTITION__` or the route's `null_value`).
    pub values: Vec<(Ident, Option<String>)>,
    /// The same values validated and rendered for SQL.
    pub literals: Vec<PartitionValue>,
}

impl Partition {
    /// Where the partition's files live: the route prefix plus the partition path.
    pub fn list_prefix(&self, route: &Route) -> String {
        format!("{}{}", route.prefix, self.path)
    }
}

/// Splits the key below the route prefix into exactly the route's partition columns, in
/// order, and a file name.
pub fn parse(route: &Route, key: &str) -> Result<Partition, LoaderError> {
    let bad = |reason: String| LoaderError::BadPartition {
        key: key.to_string(),
        reason,
    };
    let rest = key
        .strip_prefix(&route.prefix)
        .ok_or_else(|| bad(format!("not under the route prefix {:?}", route.prefix)))?;
    let segments: Vec<&str> = rest.split('/').collect();
    let (file, dirs) = segments
        .split_last()
        .ok_or_else(|| bad("no file name".into()))?;
    if file.is_empty() {
        return Err(bad("no file name".into()));
    }
    let expected: Vec<&str> = route
        .partition_columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    if dirs.len() > expected.len() {
        // A segment that is not `column=value` after a valid one is what a `/` inside a
        // value looks like when the writer did not escape it (awswrangler does not).
        if let Some(stray) = dirs.iter().skip(1).find(|s| !s.contains('=')) {
            return Err(bad(format!(
                "segment {stray:?} is not column=value: a '/' inside a partition value makes \
                 an extra directory level (awswrangler writes values unescaped; have the \
                 writer escape '/' as %2F, or change the value); expected {}",
                describe(&expected)
            )));
        }
    }
    if dirs.len() != expected.len() {
        return Err(bad(format!(
            "expected partition segments {} then a file name, found {} directory segment(s)",
            describe(&expected),
            dirs.len()
        )));
    }
    let mut path = String::new();
    let mut values = Vec::new();
    let mut literals = Vec::new();
    for (segment, column) in dirs.iter().zip(&route.partition_columns) {
        let (name, raw) = segment
            .split_once('=')
            .ok_or_else(|| bad(format!("segment {segment:?} is not column=value")))?;
        if !name.eq_ignore_ascii_case(column.name.as_str()) {
            return Err(bad(format!(
                "segment {segment:?}: expected column {} here (route partition columns: {})",
                column.name,
                describe(&expected)
            )));
        }
        if raw.is_empty() {
            return Err(bad(format!("{} has an empty value", column.name)));
        }
        let value = if raw == HIVE_NULL {
            None
        } else {
            let value = hive_unescape(raw).map_err(|e| bad(format!("{}: {e}", column.name)))?;
            (route.null_value.as_deref() != Some(value.as_str())).then_some(value)
        };
        let literal = match &value {
            None => null_partition_literal(column.ty),
            Some(v) => {
                partition_literal(column.ty, v).map_err(|e| bad(format!("{}: {e}", column.name)))?
            }
        };
        path.push_str(segment);
        path.push('/');
        literals.push(PartitionValue {
            column: column.name.clone(),
            literal,
        });
        values.push((column.name.clone(), value));
    }
    Ok(Partition {
        path,
        values,
        literals,
    })
}

fn describe(cols: &[&str]) -> String {
    if cols.is_empty() {
        "(none)".to_string()
    } else {
        cols.iter().map(|c| format!("{c}=…/")).collect()
    }
}

/// Undoes partition-path escaping as Hive and Spark do, and as pyarrow, pandas, DuckDB
/// and polars write it.
///
/// Spark's `ExternalCatalogUtils.unescapePathName` (apache/spark,
/// sql/catalyst/.../catalog/ExternalCatalogUtils.scala; Hive's
/// `FileUtils.unescapePathName` is the same rule) turns `%` followed by two hex digits
/// into that code and keeps any other `%` as a literal `%` (awswrangler writes `50%`
/// unescaped). Hive appends each code as one character, which is right for the ASCII
/// it escapes; pyarrow (`segment_encoding="uri"`), DuckDB and polars percent-encode
/// UTF-8 bytes (`S%C3%A3o`), so here runs of `%XX` are decoded as bytes and the
/// result must be UTF-8 (Spark never escapes non-ASCII, so both readings agree on
/// everything Spark writes). A `%` before two hex digits is always an escape, even
/// when a writer meant it raw (`100%25` from awswrangler): the key alone cannot tell.
pub fn hive_unescape(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let code = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(code as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| {
        format!("{raw:?} does not decode to UTF-8 (its %XX escapes are not UTF-8 bytes)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::config::parse_routes;

    fn route(cols: &str) -> Route {
        parse_routes(&format!(
            "[[routes]]\nprefix = \"t/orders/\"\ntable = \"s.t\"\nformat = \"parquet\"\n\
             partition_columns = {cols}\n"
        ))
        .unwrap()
        .remove(0)
    }

    fn err(cols: &str, key: &str) -> String {
        let e = parse(&route(cols), key).unwrap_err();
        assert_eq!(e.error_type(), "Permanent.BadPartition");
        let msg = e.to_string();
        assert!(msg.contains(key), "{msg}");
        msg
    }

    #[test]
    fn single_date_partition() {
        let r = route(r#"[{ name = "order_date", type = "date" }]"#);
        let p = parse(&r, "t/orders/order_date=2024-05-28/part-0.parquet").unwrap();
        assert_eq!(p.path, "order_date=2024-05-28/");
        assert_eq!(p.list_prefix(&r), "t/orders/order_date=2024-05-28/");
        assert_eq!(p.values[0].1.as_deref(), Some("2024-05-28"));
        assert_eq!(p.literals[0].literal.as_str(), "CAST('2024-05-28' AS DATE)");
    }

    #[test]
    fn multi_column_partition_keeps_order() {
        let cols = r#"[{ name = "year", type = "integer" }, { name = "month", type = "integer" }, { name = "day", type = "integer" }]"#;
        let p = parse(&route(cols), "t/orders/year=2024/month=05/day=28/f.parquet").unwrap();
        assert_eq!(p.path, "year=2024/month=05/day=28/");
        let names: Vec<_> = p
            .values
            .iter()
            .map(|(c, v)| format!("{c}={}", v.as_deref().unwrap_or("NULL")))
            .collect();
        assert_eq!(names, ["year=2024", "month=05", "day=28"]);
        assert_eq!(p.literals[1].literal.as_str(), "5");
        assert!(err(cols, "t/orders/year=2024/day=28/month=05/f.parquet").contains("month"));
        assert!(err(cols, "t/orders/year=2024/month=05/f.parquet").contains("found 2"));
        assert!(err(cols, "t/orders/year=2024/month=05/day=28/x=1/f.parquet").contains("found 4"));
    }

    #[test]
    fn raw_segment_kept_and_value_unescaped() {
        let p = parse(
            &route(r#"["ts"]"#),
            "t/orders/ts=2024-05-28 10%3A00/f.parquet",
        )
        .unwrap();
        assert_eq!(p.path, "ts=2024-05-28 10%3A00/");
        assert_eq!(p.values[0].1.as_deref(), Some("2024-05-28 10:00"));
        assert_eq!(p.literals[0].literal.as_str(), "'2024-05-28 10:00'");
        let p = parse(&route(r#"["who"]"#), "t/orders/who=O%27Brien/f.parquet").unwrap();
        assert_eq!(p.literals[0].literal.as_str(), "'O''Brien'");
    }

    #[test]
    fn bad_values_are_permanent_errors_naming_the_key() {
        let date = r#"[{ name = "order_date", type = "date" }]"#;
        assert!(err(date, "t/orders/order_date=2024-13-01/f.parquet").contains("not a date"));
        assert!(err(date, "t/orders/order_date=/f").contains("empty"));
        assert!(err(date, "t/orders/order_date/f").contains("column=value"));
        assert!(err(date, "t/orders/region=eu/f").contains("expected column order_date"));
        let int = r#"[{ name = "n", type = "integer" }]"#;
        assert!(err(int, "t/orders/n=1 OR 1=1/f").contains("integer"));
        assert!(err(r#"["s"]"#, "t/orders/s=a%C3/f").contains("UTF-8"));
        assert!(err(r#"["s"]"#, "t/orders/s=a%0A/f").contains("character"));
        assert!(err("[]", "t/orders/x=1/f").contains("(none)"));
        assert!(parse(&route("[]"), "t/orders/f.parquet")
            .unwrap()
            .path
            .is_empty());
    }

    #[test]
    fn hive_unescape_cases() {
        assert_eq!(hive_unescape("a%2Fb%3d").unwrap(), "a/b=");
        assert_eq!(hive_unescape("ü").unwrap(), "ü");
        // pyarrow/DuckDB/polars: UTF-8 bytes, percent-encoded.
        assert_eq!(hive_unescape("S%C3%A3o%20Paulo").unwrap(), "São Paulo");
        assert_eq!(hive_unescape("%E6%9D%B1%E4%BA%AC").unwrap(), "東京");
        // Hive/Spark: a `%` without two hex digits after it is a literal `%`.
        assert_eq!(hive_unescape("%").unwrap(), "%");
        assert_eq!(hive_unescape("50%").unwrap(), "50%");
        assert_eq!(hive_unescape("50%2").unwrap(), "50%2");
        assert_eq!(hive_unescape("a%ZZ").unwrap(), "a%ZZ");
        assert_eq!(hive_unescape("%+1").unwrap(), "%+1");
        assert_eq!(hive_unescape("100%25").unwrap(), "100%");
        assert_eq!(hive_unescape("%%41").unwrap(), "%A");
        // Invalid UTF-8 after decoding is refused, never guessed.
        assert!(hive_unescape("%C3").unwrap_err().contains("UTF-8"));
        assert!(hive_unescape("%FF%FE").is_err());
    }

    #[test]
    fn null_partitions() {
        let cols = r#"[{ name = "d", type = "date" }, { name = "n", type = "integer" }, "s"]"#;
        let p = parse(
            &route(cols),
            "t/orders/d=__HIVE_DEFAULT_PARTITION__/n=__HIVE_DEFAULT_PARTITION__/s=__HIVE_DEFAULT_PARTITION__/f",
        )
        .unwrap();
        assert!(p.values.iter().all(|(_, v)| v.is_none()));
        let lits: Vec<_> = p.literals.iter().map(|l| l.literal.as_str()).collect();
        assert_eq!(
            lits,
            [
                "CAST(NULL AS DATE)",
                "CAST(NULL AS BIGINT)",
                "CAST(NULL AS VARCHAR)"
            ]
        );
        assert!(p.literals.iter().all(|l| l.literal.is_null()));
        assert_eq!(
            p.path,
            "d=__HIVE_DEFAULT_PARTITION__/n=__HIVE_DEFAULT_PARTITION__/s=__HIVE_DEFAULT_PARTITION__/"
        );
        // A route's own marker, compared after unescaping; the Hive marker still counts.
        let r = parse_routes(
            "[[routes]]\nprefix = \"t/\"\ntable = \"s.t\"\nformat = \"parquet\"\n\
             partition_columns = [\"s\"]\nnull_value = \"(none)\"\n",
        )
        .unwrap()
        .remove(0);
        assert_eq!(parse(&r, "t/s=%28none%29/f").unwrap().values[0].1, None);
        assert_eq!(parse(&r, "t/s=(none)/f").unwrap().values[0].1, None);
        assert_eq!(
            parse(&r, "t/s=__HIVE_DEFAULT_PARTITION__/f")
                .unwrap()
                .values[0]
                .1,
            None
        );
        assert_eq!(
            parse(&r, "t/s=none/f").unwrap().values[0].1.as_deref(),
            Some("none")
        );
    }

    #[test]
    fn awswranglers_unescaped_slash_names_the_segment() {
        // awswrangler writes city=a/b as two directory levels.
        let e = err(r#"["city"]"#, "t/orders/city=a/b/f.parquet");
        assert!(e.contains("\"b\""), "{e}");
    }
}
