//! The Hive partition of a key: `prefix/col1=v1/col2=v2/file`.

use crate::config::Route;
use crate::error::LoaderError;
use crate::sql::{partition_literal, Ident, PartitionValue};

/// Hive's marker for a NULL partition value.
const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

#[derive(Debug, Clone)]
pub struct Partition {
    /// The raw segments as they appear in S3, each followed by `/`, e.g.
    /// `year=2024/month=05/`. Lists the partition and identifies it in the ledger.
    pub path: String,
    /// Column name and decoded value, in route order.
    pub values: Vec<(Ident, String)>,
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
        if raw == HIVE_NULL {
            return Err(bad(format!(
                "{} is NULL ({HIVE_NULL}); NULL partitions are not supported",
                column.name
            )));
        }
        if raw.is_empty() {
            return Err(bad(format!("{} has an empty value", column.name)));
        }
        let value = hive_unescape(raw).map_err(|e| bad(format!("{}: {e}", column.name)))?;
        let literal = partition_literal(column.ty, &value)
            .map_err(|e| bad(format!("{}: {e}", column.name)))?;
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

/// Undoes Hive/Spark partition-path escaping (`%3A` → `:`). Hive only escapes ASCII
/// characters, so anything else after a `%` is not a Hive escape.
pub fn hive_unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let code = raw
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .filter(|b| b.is_ascii())
            .ok_or_else(|| format!("{raw:?} has a '%' that is not a Hive escape (%XX)"))?;
        out.push(code as char);
        chars.next();
        chars.next();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_routes;

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
        assert_eq!(p.values[0].1, "2024-05-28");
        assert_eq!(p.literals[0].literal.as_str(), "CAST('2024-05-28' AS DATE)");
    }

    #[test]
    fn multi_column_partition_keeps_order() {
        let cols = r#"[{ name = "year", type = "integer" }, { name = "month", type = "integer" }, { name = "day", type = "integer" }]"#;
        let p = parse(&route(cols), "t/orders/year=2024/month=05/day=28/f.parquet").unwrap();
        assert_eq!(p.path, "year=2024/month=05/day=28/");
        let names: Vec<_> = p.values.iter().map(|(c, v)| format!("{c}={v}")).collect();
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
        assert_eq!(p.values[0].1, "2024-05-28 10:00");
        assert_eq!(p.literals[0].literal.as_str(), "'2024-05-28 10:00'");
        let p = parse(&route(r#"["who"]"#), "t/orders/who=O%27Brien/f.parquet").unwrap();
        assert_eq!(p.literals[0].literal.as_str(), "'O''Brien'");
    }

    #[test]
    fn bad_values_are_permanent_errors_naming_the_key() {
        let date = r#"[{ name = "order_date", type = "date" }]"#;
        assert!(err(date, "t/orders/order_date=2024-13-01/f.parquet").contains("not a date"));
        assert!(err(date, "t/orders/order_date=__HIVE_DEFAULT_PARTITION__/f").contains("NULL"));
        assert!(err(date, "t/orders/order_date=/f").contains("empty"));
        assert!(err(date, "t/orders/order_date/f").contains("column=value"));
        assert!(err(date, "t/orders/region=eu/f").contains("expected column order_date"));
        let int = r#"[{ name = "n", type = "integer" }]"#;
        assert!(err(int, "t/orders/n=1 OR 1=1/f").contains("integer"));
        assert!(err(r#"["s"]"#, "t/orders/s=a%ZZ/f").contains("Hive escape"));
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
        assert!(hive_unescape("%").is_err());
        assert!(hive_unescape("%C3%A9").is_err());
    }
}
