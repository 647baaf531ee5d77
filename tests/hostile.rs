//! Hostile input through the real handler against the local stack: every case ends in a
//! typed error or a skip that says why, and changes no table (rows, ledger and lease
//! are counted after each case). Route TOML and environment cases check that the
//! configuration error names the field.
//!
//! Where another branch changes behaviour for an input (percent-decoding of lone `%`,
//! `__HIVE_DEFAULT_PARTITION__` as NULL) a case accepts every typed result that keeps
//! the table unchanged, instead of asserting the old behaviour.

mod common;

use common::*;
use partition_loader::{Config, LoaderError, Outcome};
use serde_json::{json, Value};

/// The partition of the one legitimate file loaded before the cases run.
const DAY: &str = "orders/region=eu/order_date=2024-05-28/hour=7";
/// A partition that holds no object.
const EMPTY: &str = "orders/region=none/order_date=2024-05-28/hour=7";

/// `orders/region=<string>/order_date=<date>/hour=<integer>/file`, all three filled
/// through staging: every literal kind reaches SQL.
fn routes(stack: &Stack) -> String {
    format!(
        "[[routes]]\nbucket = \"{}\"\nprefix = \"orders/\"\ntable = \"{}\"\nformat = \"parquet\"\n\
         partition_columns = [\"region\", {{ name = \"order_date\", type = \"date\" }}, \
         {{ name = \"hour\", type = \"integer\" }}]\n",
        stack.bucket,
        stack.table("orders")
    )
}

/// What a result is called: an outcome's JSON name (so a later `queued` outcome is named
/// too) or the error variant.
fn label(result: &Result<Outcome, LoaderError>) -> String {
    match result {
        Ok(o) => o.to_json()["outcome"].as_str().unwrap_or("?").to_string(),
        Err(e) => e.name().to_string(),
    }
}

struct Case {
    name: &'static str,
    event: Value,
    /// Labels any one of which is a pass.
    expect: &'static [&'static str],
}

fn case(name: &'static str, event: Value, expect: &'static [&'static str]) -> Case {
    Case {
        name,
        event,
        expect,
    }
}

const BAD_EVENT: &[&str] = &["BadEvent"];
const BAD_PARTITION: &[&str] = &["BadPartition"];
const SKIPPED: &[&str] = &["skipped"];
/// A well-formed key of a partition that holds no object: the loader lists S3 (the
/// event is not trusted) and finds nothing to load.
const NOTHING: &[&str] = &["NothingListed"];
/// Inputs whose decoding another branch changes: any typed result that loads nothing.
const UNDECIDED: &[&str] = &["BadEvent", "BadPartition", "NothingListed", "up_to_date"];

fn event_cases(stack: &Stack) -> Vec<Case> {
    let b = stack.bucket.as_str();
    let ev = |key: &str| object_created(b, key, 100, Some("\"0123abcd\""));
    let with = |key: &str, path: &[&str], value: Value| {
        let mut e = ev(key);
        let mut at = &mut e;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at[path[path.len() - 1]] = value;
        e
    };
    let without = |path: &[&str]| {
        let mut e = ev(&format!("{DAY}/part-1.parquet"));
        let mut at = &mut e;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        if let Some(o) = at.as_object_mut() {
            o.remove(path[path.len() - 1]);
        }
        e
    };
    let good = format!("{DAY}/part-1.parquet");
    let part =
        |region: &str| format!("orders/region={region}/order_date=2024-05-28/hour=7/f.parquet");
    // A 1,024-byte key (S3's maximum): the file name fills it up.
    let long_key = {
        let head = format!("{EMPTY}/");
        format!("{head}{}.parquet", "k".repeat(1024 - head.len() - 8))
    };
    assert_eq!(long_key.len(), 1024);
    // An event of 256 KB (EventBridge's maximum entry size): padding in detail.
    let mut big = ev(&good);
    big["detail"]["padding"] = json!("x".repeat(256 * 1024));
    // A 256 KB key: far beyond S3's limit, still no panic.
    let huge_key = format!("{EMPTY}/{}.parquet", "h".repeat(256 * 1024));
    vec![
        // Wrong or missing envelope fields.
        case(
            "source is not aws.s3",
            with(&good, &["source"], json!("aws.ec2")),
            BAD_EVENT,
        ),
        case(
            "source is a number",
            with(&good, &["source"], json!(7)),
            BAD_EVENT,
        ),
        case(
            "detail-type is Object Deleted",
            with(&good, &["detail-type"], json!("Object Deleted")),
            BAD_EVENT,
        ),
        case("detail-type missing", without(&["detail-type"]), BAD_EVENT),
        case("detail missing", without(&["detail"]), BAD_EVENT),
        case(
            "detail.object.key missing",
            without(&["detail", "object", "key"]),
            BAD_EVENT,
        ),
        case(
            "detail.bucket missing",
            without(&["detail", "bucket"]),
            BAD_EVENT,
        ),
        case(
            "key is a number",
            with(&good, &["detail", "object", "key"], json!(42)),
            BAD_EVENT,
        ),
        case(
            "key is null",
            with(&good, &["detail", "object", "key"], Value::Null),
            BAD_EVENT,
        ),
        case(
            "object is a string",
            with(&good, &["detail", "object"], json!("k")),
            BAD_EVENT,
        ),
        case(
            "bucket name is empty",
            with(&good, &["detail", "bucket", "name"], json!("")),
            BAD_EVENT,
        ),
        case(
            "bucket name is an array",
            with(&good, &["detail", "bucket", "name"], json!(["a"])),
            BAD_EVENT,
        ),
        case(
            "size is a string",
            with(&good, &["detail", "object", "size"], json!("100")),
            BAD_EVENT,
        ),
        case(
            "size is 1e30",
            with(&good, &["detail", "object", "size"], json!(1e30)),
            BAD_EVENT,
        ),
        case("event is an array", json!([ev(&good)]), BAD_EVENT),
        case("event is a string", json!("Object Created"), BAD_EVENT),
        case("event is null", Value::Null, BAD_EVENT),
        case("empty key", ev(""), BAD_EVENT),
        // Sizes are not trusted: the partition is listed. Nothing there.
        case(
            "negative size",
            with(&part("neg"), &["detail", "object", "size"], json!(-1)),
            NOTHING,
        ),
        case(
            "absurd size",
            with(&part("max"), &["detail", "object", "size"], json!(i64::MAX)),
            NOTHING,
        ),
        // SQL in partition values: string values are quoted, typed values validated.
        case(
            "quote and semicolon in a string value",
            ev(&part("eu';DROP TABLE x;--")),
            NOTHING,
        ),
        case(
            "SQL comment in a string value",
            ev(&part("eu/**/--")),
            BAD_PARTITION,
        ),
        case(
            "comment marker in a string value",
            ev(&part("eu--x%252F*")),
            NOTHING,
        ),
        case(
            "dollar quotes in a string value",
            ev(&part("$$;DROP TABLE x;$$")),
            NOTHING,
        ),
        case(
            "backslash in a string value",
            ev(&part("eu\\';--")),
            BAD_PARTITION,
        ),
        case(
            "escaped quote via Hive %27",
            ev(&part("O%2527Brien'')")),
            NOTHING,
        ),
        case(
            "SQL in a date value",
            ev("orders/region=eu/order_date=2024-05-28' OR '1'='1/hour=7/f.parquet"),
            BAD_PARTITION,
        ),
        case(
            "SQL in an integer value",
            ev("orders/region=eu/order_date=2024-05-28/hour=7;DELETE/f.parquet"),
            BAD_PARTITION,
        ),
        case(
            "integer overflow",
            ev("orders/region=eu/order_date=2024-05-28/hour=9223372036854775808/f.parquet"),
            BAD_PARTITION,
        ),
        case(
            "year 0000 (no such year in Redshift)",
            ev("orders/region=eu/order_date=0000-01-01/hour=7/f.parquet"),
            BAD_PARTITION,
        ),
        case(
            "impossible date",
            ev("orders/region=eu/order_date=2024-02-30/hour=7/f.parquet"),
            BAD_PARTITION,
        ),
        case(
            "empty partition value",
            ev("orders/region=/order_date=2024-05-28/hour=7/f.parquet"),
            BAD_PARTITION,
        ),
        // Unicode and control characters.
        case("unicode string value", ev(&part("日本%E2%80%AE")), NOTHING),
        case(
            "newline in a string value",
            ev(&part("eu\nDROP")),
            BAD_PARTITION,
        ),
        case(
            "encoded NUL in a string value",
            ev(&part("eu%00")),
            // The key is looked up in S3 before parsing; moto's XML answer carries the
            // NUL and the SDK cannot parse it: a typed Storage error (noticed, not changed).
            &["BadEvent", "BadPartition", "NothingListed", "Storage"],
        ),
        case(
            "Hive-escaped control character",
            ev(&part("eu%250A")),
            BAD_PARTITION,
        ),
        case(
            "control characters in the file name",
            ev(&format!("{EMPTY}/a\u{7}\u{1b}[2J.parquet")),
            &["NothingListed", "BadValue"],
        ),
        // Key shape.
        case("1,024-byte key", ev(&long_key), NOTHING),
        case("256 KB key", ev(&huge_key), BAD_EVENT),
        case("256 KB event", big, &["up_to_date"]),
        case(
            "segments out of order",
            ev("orders/order_date=2024-05-28/region=eu/hour=7/f.parquet"),
            BAD_PARTITION,
        ),
        case(
            "segment missing",
            ev("orders/region=eu/hour=7/f.parquet"),
            BAD_PARTITION,
        ),
        case(
            "segment repeated",
            ev("orders/region=eu/region=eu/order_date=2024-05-28/hour=7/f.parquet"),
            BAD_PARTITION,
        ),
        case(
            "extra segment",
            ev(&format!("{DAY}/extra=1/f.parquet")),
            BAD_PARTITION,
        ),
        case(
            "segment without =",
            ev("orders/region/order_date=2024-05-28/hour=7/f.parquet"),
            BAD_PARTITION,
        ),
        case(
            "dot-dot segment",
            ev("orders/../orders/region=eu/order_date=2024-05-28/hour=7/f.parquet"),
            BAD_PARTITION,
        ),
        case("dot-dot value", ev(&part("..")), NOTHING),
        case("dot-dot file name", ev(&format!("{EMPTY}/..")), SKIPPED),
        case(
            "invalid percent-encoding %zz",
            ev(&format!("{EMPTY}/a%zz.parquet")),
            UNDECIDED,
        ),
        case(
            "truncated percent-encoding",
            ev(&format!("{EMPTY}/a%2")),
            UNDECIDED,
        ),
        case(
            "percent-encoding that is not UTF-8",
            ev(&format!("{EMPTY}/a%FF.parquet")),
            UNDECIDED,
        ),
        case(
            "Hive NULL partition",
            ev("orders/region=__HIVE_DEFAULT_PARTITION__/order_date=2024-05-28/hour=7/f.parquet"),
            UNDECIDED,
        ),
        // Keys that are not data files, or not ours.
        case("directory placeholder", ev(&format!("{DAY}/")), SKIPPED),
        case("_SUCCESS marker", ev(&format!("{DAY}/_SUCCESS")), SKIPPED),
        case(
            "_temporary file",
            ev("orders/_temporary/0/region=eu/f.parquet"),
            SKIPPED,
        ),
        case(
            "zero-byte object",
            with(&good, &["detail", "object", "size"], json!(0)),
            SKIPPED,
        ),
        case("unrouted key", ev("elsewhere/region=eu/f.parquet"), SKIPPED),
        case(
            "another bucket",
            with(
                &good,
                &["detail", "bucket", "name"],
                json!("not-our-bucket"),
            ),
            SKIPPED,
        ),
        case("the loader's own manifest", ev("_loader/m.json"), SKIPPED),
    ]
}

#[tokio::test]
async fn hostile_events_end_typed_and_change_nothing() {
    let stack = Stack::new().await;
    let loader = stack.loader(&routes(&stack)).await;
    let t = stack
        .create_table(
            "orders",
            "id BIGINT, name VARCHAR(64), region VARCHAR(256), order_date DATE, hour INTEGER",
        )
        .await;
    let first = stack
        .parquet_event(&format!("{DAY}/part-1.parquet"), 0..3)
        .await;
    assert_eq!(loaded_files(&handle(&loader, &first).await), 1);
    let before = (stack.rows(&t).await, stack.ledger_rows(&t).await);
    assert_eq!(before, (3, 1));

    let cases = event_cases(&stack);
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let result = handle(&loader, &c.event).await;
        let got = label(&result);
        if !c.expect.contains(&got.as_str()) {
            failures.push(format!(
                "{}: expected {:?}, got {result:?}",
                c.name, c.expect
            ));
        }
        if let Err(e) = &result {
            // Bad input is permanent: a retry would fail the same way.
            if matches!(got.as_str(), "BadEvent" | "BadPartition") {
                assert_eq!(
                    e.kind(),
                    partition_loader::ErrorKind::Permanent,
                    "{}",
                    c.name
                );
            }
        }
        let after = (stack.rows(&t).await, stack.ledger_rows(&t).await);
        if after != before {
            failures.push(format!(
                "{}: table/ledger changed {before:?} -> {after:?}",
                c.name
            ));
        }
        if stack.lease_rows(&t).await != 0 {
            failures.push(format!("{}: left a lease", c.name));
        }
    }
    // The string values above reached SQL quoted: the table and the ledger survive.
    assert_eq!(stack.rows(&t).await, 3);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// File names are S3's business: hostile ones in a legitimate partition are loaded
/// once, their URLs quoted in the ledger INSERT and the manifest.
#[tokio::test]
async fn hostile_file_names_load_once_quoted() {
    let stack = Stack::new().await;
    let loader = stack.loader(&routes(&stack)).await;
    let t = stack
        .create_table(
            "orders",
            "id BIGINT, name VARCHAR(64), region VARCHAR(256), order_date DATE, hour INTEGER",
        )
        .await;
    let names = [
        "a';DROP TABLE x;--.parquet",
        "$$b$$.parquet",
        "c--d.parquet",
        "ü-日本.parquet",
        "e\"f.parquet",
    ];
    let mut events = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let i = i as i64;
        events.push(
            stack
                .parquet_event(&format!("{DAY}/{n}"), i * 10..i * 10 + 2)
                .await,
        );
    }
    let o = handle(&loader, &events[0]).await;
    assert_eq!(loaded_files(&o), names.len(), "{o:?}");
    for e in &events {
        let o = handle(&loader, e).await;
        assert_eq!(label(&o), "up_to_date", "{o:?}");
    }
    assert_eq!(stack.rows(&t).await, 2 * names.len() as i64);
    assert_eq!(stack.ledger_rows(&t).await, names.len() as i64);
    let quoted = format!(
        "SELECT COUNT(*) FROM {} WHERE s3_url = 's3://{}/{DAY}/a'';DROP TABLE x;--.parquet'",
        stack.loader_table(&t, "ledger"),
        stack.bucket
    );
    assert_eq!(stack.count(&quoted).await, 1);
}

/// A backslash cannot be quoted the same way for Redshift (where `\\` escapes inside a
/// literal: QUOTE_LITERAL doubles it,
/// https://docs.aws.amazon.com/redshift/latest/dg/r_QUOTE_LITERAL.html) and PostgreSQL
/// (standard_conforming_strings), so `sql::literal` refuses it. A file so named in a
/// partition stops that partition with a typed error naming it, before anything runs:
/// no rows, no ledger, no lease. (The partition stays blocked until the file is renamed;
/// reported, not changed here.)
#[tokio::test]
async fn a_backslash_in_a_listed_file_name_stops_the_partition_typed() {
    let stack = Stack::new().await;
    let loader = stack.loader(&routes(&stack)).await;
    let t = stack
        .create_table(
            "orders",
            "id BIGINT, name VARCHAR(64), region VARCHAR(256), order_date DATE, hour INTEGER",
        )
        .await;
    stack
        .put_parquet(&format!("{DAY}/bad\\name.parquet"), 0..2)
        .await;
    let event = stack
        .parquet_event(&format!("{DAY}/good.parquet"), 5..7)
        .await;
    let o = handle(&loader, &event).await;
    match &o {
        Err(e @ LoaderError::BadValue(_)) => assert!(e.to_string().contains("bad\\\\name"), "{e}"),
        other => panic!("expected BadValue, got {other:?}"),
    }
    assert_eq!(stack.rows(&t).await, 0);
    assert_eq!(stack.ledger_rows(&t).await, 0);
    assert_eq!(stack.lease_rows(&t).await, 0);
}

/// Every field of a route, wrong in turn: a `Config` error that names the field.
#[test]
fn route_toml_with_each_field_wrong_names_the_field() {
    let good = |over: &str| {
        let mut fields = vec![
            ("bucket", "\"lake\""),
            ("prefix", "\"orders/\""),
            ("table", "\"s.orders\""),
            ("format", "\"parquet\""),
            ("partition_columns", "[{ name = \"d\", type = \"date\" }]"),
            ("mode", "\"append\""),
        ];
        let (key, value) = over
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .unwrap_or((over, ""));
        fields.retain(|(k, _)| *k != key);
        let mut text = String::from("[[routes]]\n");
        for (k, v) in fields {
            text.push_str(&format!("{k} = {v}\n"));
        }
        if !value.is_empty() {
            text.push_str(&format!("{key} = {value}\n"));
        }
        text
    };
    let cases: &[(&str, &str)] = &[
        ("bucket = \"\"", "bucket"),
        ("bucket = \"a/b\"", "bucket"),
        ("bucket = 7", "bucket"),
        ("prefix", "prefix"),
        ("prefix = [\"orders/\"]", "prefix"),
        ("table", "table"),
        ("table = \"orders\"", "table"),
        ("table = \"s.orders;DROP TABLE x\"", "table"),
        ("table = \"s.\\\"o\\\"\"", "table"),
        ("format", "format"),
        ("format = \"orc\"", "format"),
        ("header = true", "header"),
        ("partition_columns = [\"a-b\"]", "partition_columns"),
        (
            "partition_columns = [{ name = \"d\", type = \"float\" }]",
            "partition_columns",
        ),
        ("partition_columns = [\"d\", \"D\"]", "partition_columns"),
        ("partition_columns = \"d\"", "partition_columns"),
        ("file_columns = []", "file_columns"),
        ("file_columns = [\"x y\"]", "file_columns"),
        ("mode = \"upsert\"", "mode"),
        ("tabel = \"s.t\"", "tabel"),
    ];
    let mut failures = Vec::new();
    for (change, field) in cases {
        let text = good(change);
        match partition_loader::lake::config::parse_routes(&text) {
            Err(e @ LoaderError::Config(_)) if e.to_string().contains(field) => {}
            other => failures.push(format!(
                "{change}: expected a Config error naming {field}, got {other:?}"
            )),
        }
    }
    for (text, field) in [
        ("routes = []", "routes"),
        ("[[routes]]\nprefix = \"a/\"\ntable = \"s.a\"\nformat = \"csv\"\n[[routes]]\nprefix = \"a/b/\"\ntable = \"s.b\"\nformat = \"csv\"\n", "prefix"),
        ("not toml at all [", "routes TOML"),
    ] {
        match partition_loader::lake::config::parse_routes(text) {
            Err(e @ LoaderError::Config(_)) if e.to_string().contains(field) => {}
            other => failures.push(format!("{text:?}: expected a Config error naming {field}, got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The environment, each variable wrong in turn.
#[test]
fn environment_with_each_variable_wrong_names_it() {
    let routes = "[[routes]]\nprefix = \"o/\"\ntable = \"s.t\"\nformat = \"parquet\"\n";
    let base = [
        ("REDSHIFT_WORKGROUP", "wg"),
        ("REDSHIFT_DATABASE", "dev"),
        ("COPY_IAM_ROLE", "arn:aws:iam::1:role/r"),
        ("MANIFEST_PREFIX", "s3://lake/_loader/"),
        ("LOADER_CONFIG", routes),
    ];
    let config = |name: &str, value: Option<&str>| {
        Config::from_lookup(|k| {
            if k == name {
                return value.map(str::to_string);
            }
            base.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    };
    assert!(config("NONE", None).is_ok());
    let cases = [
        ("REDSHIFT_WORKGROUP", None),
        ("REDSHIFT_DATABASE", None),
        ("COPY_IAM_ROLE", Some("role/r")),
        ("LOADER_SCHEMA", Some("pl;DROP")),
        ("MANIFEST_PREFIX", Some("https://lake/_loader/")),
        ("MANIFEST_PREFIX", Some("s3:///x")),
        ("LEASE_TTL_SECONDS", Some("-5")),
        ("LEASE_TTL_SECONDS", Some("60")),
        ("SWEEP_LOOK_BACK_DAYS", Some("a week")),
        ("SWEEP_BUCKET", Some("lake/transformed/")),
        ("LOADER_CONFIG", Some("[[routes]]\nprefix = 1\n")),
    ];
    for (name, value) in cases {
        match config(name, value) {
            Err(e @ LoaderError::Config(_)) => {
                let field = if name == "LOADER_CONFIG" {
                    "prefix"
                } else {
                    name
                };
                assert!(e.to_string().contains(field), "{name}={value:?}: {e}");
            }
            other => panic!("{name}={value:?}: expected a Config error, got {other:?}"),
        }
    }
}
