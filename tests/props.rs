//! Property tests (proptest) for event parsing, key decoding, partition parsing and
//! literal rendering. cargo-fuzz needs a nightly toolchain, which the CI machine does
//! not have, so these run on stable with bounded case counts (`PROPTEST_CASES`
//! overrides). The central property: every accepted partition renders SQL that reads
//! back to the same values: with a small SQL-literal reader here, and through
//! PostgreSQL behind the emulator in `literals_round_trip_through_the_warehouse`.
//! Failures found become the regression cases at the bottom.

mod common;

use partition_loader::lake::config::{parse_routes, Route};
use partition_loader::lake::event;
use partition_loader::lake::partition;
use partition_loader::sql::{self, literal, partition_literal, PartitionType};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunConfig, TestRunner};
use serde_json::json;

const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

fn cases(default: u32) -> RunConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    RunConfig {
        cases,
        failure_persistence: None,
        ..RunConfig::default()
    }
}

/// Reads one SQL string literal (`'...'` with `''` for a quote) that must span all of
/// `sql`; `None` if it is not exactly one literal. Backslashes are taken literally, as
/// PostgreSQL does; the renderer refuses them, so the two readings cannot differ.
fn read_string_literal(sql: &str) -> Option<String> {
    let inner = sql.strip_prefix('\'')?;
    let mut out = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            if chars.peek() == Some(&'\'') {
                chars.next();
                out.push('\'');
            } else {
                // The closing quote must be the last character.
                return chars.next().is_none().then_some(out);
            }
        } else {
            out.push(c);
        }
    }
    None
}

/// Reads a rendered partition literal back to the value it stands for.
fn read_partition_literal(ty: PartitionType, sql: &str) -> Option<String> {
    match ty {
        PartitionType::String => read_string_literal(sql),
        PartitionType::Date => {
            read_string_literal(sql.strip_prefix("CAST(")?.strip_suffix(" AS DATE)")?)
        }
        PartitionType::Integer => sql.parse::<i64>().ok().map(|n| n.to_string()),
    }
}

/// Hive's partition-path escaping (FileUtils.escapePathName): these ASCII characters
/// become `%XX`.
fn hive_escape(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        let escape = c.is_ascii_control()
            || matches!(
                c,
                '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '{' | '[' | ']' | '^'
            );
        if escape {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Form-encodes a key as S3 puts it in an event: space is `+`, everything but
/// unreserved characters is `%XX` per UTF-8 byte.
fn form_encode(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        match b {
            b' ' => out.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn route(columns: &str) -> Route {
    parse_routes(&format!(
        "[[routes]]\nprefix = \"t/\"\ntable = \"s.t\"\nformat = \"parquet\"\npartition_columns = {columns}\n"
    ))
    .expect("route")
    .remove(0)
}

/// Strings with the characters that matter to SQL and to keys, plus arbitrary unicode.
fn hostile_string() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "'",
        "''",
        "\"",
        ";",
        "--",
        "/*",
        "*/",
        "$$",
        "$1$",
        "\\",
        "%",
        "%27",
        "=",
        "/",
        ":",
        " ",
        "+",
        "\n",
        "\t",
        "\0",
        "\u{7f}",
        "é",
        "日本",
        "\u{202e}",
        "\u{feff}",
        "a",
        "Z",
        "0",
        "DROP TABLE x",
        "..",
        HIVE_NULL,
    ]);
    prop_oneof![
        prop::collection::vec(pieces, 0..6).prop_map(|p| p.concat()),
        any::<String>(),
        "[ -~]{0,16}",
    ]
}

/// A value is refused exactly when it is empty, is Hive's NULL marker or holds a
/// character the literal renderer refuses.
fn refusable(v: &str) -> bool {
    v.is_empty() || v == HIVE_NULL || v.chars().any(|c| c.is_control() || c == '\\')
}

#[test]
fn string_literals_read_back_to_the_same_value() {
    TestRunner::new(cases(512))
        .run(&hostile_string(), |v| {
            match literal(&v) {
                Ok(sql) => {
                    prop_assert_eq!(read_string_literal(&sql), Some(v.clone()));
                    prop_assert!(!sql.contains('\\'));
                }
                Err(e) => {
                    prop_assert!(v.chars().any(|c| c.is_control() || c == '\\'), "{v:?}: {e}");
                    prop_assert_eq!(e.name(), "BadValue");
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn string_partitions_round_trip_through_hive_escaping() {
    let r = route(r#"["a", "b"]"#);
    let strategy = (hostile_string(), hostile_string(), "[a-z0-9._-]{1,12}");
    TestRunner::new(cases(512))
        .run(&strategy, |(a, b, file)| {
            let key = format!("t/a={}/b={}/{file}", hive_escape(&a), hive_escape(&b));
            match partition::parse(&r, &key) {
                Ok(p) => {
                    prop_assert_eq!(p.values.len(), 2);
                    for ((value, (_, parsed)), lit) in
                        [&a, &b].into_iter().zip(&p.values).zip(&p.literals)
                    {
                        if value.as_str() == HIVE_NULL {
                            // Another branch makes this NULL; only "no panic" holds for both.
                            continue;
                        }
                        prop_assert_eq!(parsed.as_deref(), Some(value.as_str()));
                        prop_assert_eq!(
                            read_partition_literal(PartitionType::String, lit.literal.as_str()),
                            Some(value.clone())
                        );
                    }
                    prop_assert_eq!(
                        p.path,
                        format!("a={}/b={}/", hive_escape(&a), hive_escape(&b))
                    );
                }
                Err(e) => {
                    prop_assert_eq!(e.error_type(), "Permanent.BadPartition");
                    prop_assert!(e.to_string().contains(&format!("{key:?}")), "{e}");
                    prop_assert!(refusable(&a) || refusable(&b), "{key:?} refused: {e}");
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn typed_partitions_accept_exactly_valid_values_and_read_back() {
    let r = route(r#"[{ name = "d", type = "date" }, { name = "n", type = "integer" }]"#);
    let date = prop_oneof![
        (0i32..10000, 0u32..14, 0u32..33).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
        hostile_string(),
    ];
    let int = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (any::<i64>(), 0usize..3).prop_map(|(n, z)| format!(
            "{}{}",
            "0".repeat(z),
            n.unsigned_abs()
        )),
        any::<u64>().prop_map(|n| format!("{n}0")),
        hostile_string(),
    ];
    TestRunner::new(cases(512))
        .run(&(date, int), |(d, n)| {
            let key = format!("t/d={}/n={}/f", hive_escape(&d), hive_escape(&n));
            let date_ok = d.len() == 10
                && chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d").is_ok()
                && !d.starts_with("0000");
            let int_ok = n.parse::<i64>().is_ok();
            match partition::parse(&r, &key) {
                // Hive's NULL marker is a NULL partition value now: nothing to read back.
                Ok(_) if d == HIVE_NULL || n == HIVE_NULL => {}
                Ok(p) => {
                    prop_assert!(date_ok && int_ok, "{key:?} accepted");
                    prop_assert_eq!(
                        read_partition_literal(PartitionType::Date, p.literals[0].literal.as_str()),
                        Some(d.clone())
                    );
                    let back = read_partition_literal(
                        PartitionType::Integer,
                        p.literals[1].literal.as_str(),
                    );
                    prop_assert_eq!(back, n.parse::<i64>().ok().map(|v| v.to_string()));
                }
                Err(e) => {
                    prop_assert_eq!(e.error_type(), "Permanent.BadPartition");
                    let null = d == HIVE_NULL || n == HIVE_NULL;
                    prop_assert!(!(date_ok && int_ok) || null, "{key:?} refused: {e}");
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn arbitrary_keys_never_panic_and_refusals_are_typed() {
    let r = route(r#"["a", { name = "d", type = "date" }]"#);
    let key = prop_oneof![
        any::<String>().prop_map(|s| format!("t/{s}")),
        prop::collection::vec(hostile_string(), 0..5).prop_map(|p| format!("t/{}", p.join("/"))),
        any::<String>(),
    ];
    TestRunner::new(cases(1024))
        .run(&key, |key| {
            if let Err(e) = partition::parse(&r, &key) {
                prop_assert_eq!(e.error_type(), "Permanent.BadPartition");
            }
            if let Err(e) = event::decode_key(&key) {
                prop_assert_eq!(e.error_type(), "Permanent.BadEvent");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn form_encoded_keys_decode_to_the_stored_key() {
    TestRunner::new(cases(512))
        .run(&hostile_string(), |key| {
            prop_assert_eq!(
                event::decode_key(&form_encode(&key)).ok(),
                Some(key.clone())
            );
            let ev = common::object_created("lake", &form_encode(&key), 5, Some("\"e\""));
            match event::parse(&ev) {
                Ok(o) => {
                    prop_assert_eq!(o.key, key);
                    prop_assert_eq!(o.bucket, "lake");
                    prop_assert_eq!(o.etag.as_deref(), Some("e"));
                }
                Err(e) => prop_assert!(key.is_empty(), "{key:?}: {e}"),
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn arbitrary_event_json_is_parsed_or_refused_typed() {
    let leaf = prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(|b| json!(b)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        hostile_string().prop_map(|s| json!(s)),
    ];
    // Real events with one field replaced by an arbitrary value, or removed.
    let paths = prop::sample::select(vec![
        vec!["source"],
        vec!["detail-type"],
        vec!["detail"],
        vec!["detail", "bucket"],
        vec!["detail", "bucket", "name"],
        vec!["detail", "object"],
        vec!["detail", "object", "key"],
        vec!["detail", "object", "size"],
        vec!["detail", "object", "etag"],
        vec!["time"],
        vec!["resources"],
    ]);
    TestRunner::new(cases(512))
        .run(&(paths, prop::option::of(leaf)), |(path, value)| {
            let mut ev = common::object_created("lake", "t/a=1/f", 5, None);
            let mut at = &mut ev;
            for p in &path[..path.len() - 1] {
                at = &mut at[*p];
            }
            let last = path[path.len() - 1];
            match &value {
                Some(v) => at[last] = v.clone(),
                None => {
                    if let Some(o) = at.as_object_mut() {
                        o.remove(last);
                    }
                }
            }
            if let Err(e) = event::parse(&ev) {
                prop_assert_eq!(
                    e.error_type(),
                    "Permanent.BadEvent",
                    "{:?} = {:?}",
                    path,
                    value
                );
            }
            Ok(())
        })
        .unwrap();
}

/// Through PostgreSQL behind the emulator: `SELECT <literal>` returns the value.
#[test]
fn literals_round_trip_through_the_warehouse() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let stack = rt.block_on(common::Stack::new());
    // Year 0 often: chrono accepts it, PostgreSQL and Redshift do not.
    let year = prop_oneof![Just(0i32), 0i32..10000];
    let strategy = (hostile_string(), (year, 1u32..13, 1u32..29), any::<i64>());
    TestRunner::new(cases(48))
        .run(&strategy, |(s, (y, m, d), n)| {
            let date = format!("{y:04}-{m:02}-{d:02}");
            for (ty, value) in [
                (PartitionType::String, s.clone()),
                (PartitionType::Date, date),
                (PartitionType::Integer, n.to_string()),
            ] {
                let Ok(lit) = partition_literal(ty, &value) else {
                    prop_assert!(refusable(&value) || value.starts_with("0000-"), "{value:?}");
                    continue;
                };
                let sql = format!("SELECT CAST({} AS VARCHAR(4096))", lit.as_str());
                let back = rt.block_on(stack.text(&sql));
                prop_assert_eq!(back, Some(value.clone()), "{}", sql);
            }
            Ok(())
        })
        .unwrap();
}

/// Through the emulator, which compares VARCHAR ignoring trailing blanks as Redshift
/// does: replace mode's partition predicate selects exactly its own value among values
/// that differ from it only by trailing blanks (`Paris` vs `Paris%20`).
#[test]
fn replace_predicates_select_exactly_their_partition_value() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let stack = rt.block_on(common::Stack::new());
    let strategy = (hostile_string(), 0usize..3);
    TestRunner::new(cases(32))
        .run(&strategy, |(s, blanks)| {
            let base = s.trim_end_matches(' ').to_string();
            let value = format!("{base}{}", " ".repeat(blanks));
            let Ok(lit) = partition_literal(PartitionType::String, &value) else {
                prop_assert!(refusable(&value), "{value:?}");
                return Ok(());
            };
            let rows: Vec<String> = (0..4)
                .map(|n| format!("{base}{}", " ".repeat(n)))
                .filter_map(|v| partition_literal(PartitionType::String, &v).ok())
                .map(|l| format!("(CAST({} AS VARCHAR(4096)))", l.as_str()))
                .collect();
            let predicate = sql::partition_predicate(&[sql::PartitionValue {
                column: sql::Ident::parse("c").expect("ident"),
                literal: lit,
            }]);
            let query = format!(
                "SELECT COUNT(*) FROM (VALUES {}) AS t (\"c\") WHERE {predicate}",
                rows.join(", ")
            );
            let count = rt.block_on(stack.count(&query));
            prop_assert_eq!(count, 1, "{}", query);
            Ok(())
        })
        .unwrap();
}

/// Regression cases: inputs that once needed care, pinned.
#[test]
fn regressions() {
    assert_eq!(read_string_literal("'a''b'").as_deref(), Some("a'b"));
    assert_eq!(read_string_literal("'a'b'"), None);
    assert_eq!(read_string_literal("'a'||'b'"), None);
    let r = route(r#"["a"]"#);
    // A quote written as Hive's escape, and a literal `%` escaped twice.
    let p = partition::parse(&r, "t/a=O%27Brien%2527/f").expect("parses");
    assert_eq!(p.values[0].1.as_deref(), Some("O'Brien%27"));
    assert_eq!(p.literals[0].literal.as_str(), "'O''Brien%27'");
    // Found by literals_round_trip_through_the_warehouse: PostgreSQL (like Redshift)
    // rejects year 0, which chrono accepts.
    assert!(partition_literal(PartitionType::Date, "0000-01-01").is_err());
    assert!(partition_literal(PartitionType::Date, "0001-01-01").is_ok());
}
