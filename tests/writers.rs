//! Data as real writers put it in S3, replayed as events through the real handler
//! against the local stack and checked value by value.
//!
//! `tests/writers/make_datasets.py` (run here with the local stack's venv) writes
//! partitioned Parquet with pyarrow and DuckDB, in every codec, and with polars (zstd), with awkward
//! partition values (space, `/`, `:`, `=`, `%`, `+`, non-ASCII, NULL), plus pyarrow's
//! CSV and DuckDB's JSON with timestamps and NULL strings as they write them; the other tests
//! cover Spark's raw keys, NULL partitions in replace mode and the text formats' COPY
//! options.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use partition_loader::run::outcome::PartitionValues;
use partition_loader::{LoaderError, Outcome};
use serde_json::Value;

/// The key as S3's classic notifications send it: form-encoded, space as `+`.
fn form_encode(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn partition_of(outcome: &Outcome) -> &PartitionValues {
    match outcome {
        Outcome::Loaded { partition, .. } | Outcome::UpToDate { partition, .. } => partition,
        other => panic!("not a load: {other:?}"),
    }
}

/// Runs the dataset script into a fresh directory and returns it.
fn make_datasets(suffix: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".local/venv/bin/python");
    let out = std::env::temp_dir().join(format!("writers-{suffix}"));
    let status = Command::new(&python)
        .arg(root.join("tests/writers/make_datasets.py"))
        .arg(&out)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "run {} (scripts/local-stack up installs it): {e}",
                python.display()
            )
        });
    assert!(
        status.success(),
        "make_datasets.py failed; pyarrow and duckdb come from scripts/requirements.txt \
         (scripts/local-stack up installs them)"
    );
    out
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[tokio::test]
async fn pyarrow_duckdb_and_polars_datasets_load_value_by_value() {
    let stack = Stack::new().await;
    let dir = make_datasets(&stack.suffix);
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let datasets = expected["datasets"].as_array().unwrap();
    let mut routes = String::new();
    for d in datasets {
        let name = d["name"].as_str().unwrap();
        // Text formats: pyarrow's CSV writes a NULL string as an empty field (hence
        // EMPTYASNULL) and both write timestamps Redshift's default format refuses.
        let (format, columns) = match d["format"].as_str() {
            None => (
                "format = \"parquet\"",
                "id BIGINT, name VARCHAR(64), city VARCHAR(64)",
            ),
            Some("csv") => (
                "format = \"csv\"\nheader = true\ncopy_options = [\"EMPTYASNULL\"]",
                "id BIGINT, name VARCHAR(64), at TIMESTAMP, city VARCHAR(64)",
            ),
            Some(_) => (
                "format = \"json\"",
                "id BIGINT, name VARCHAR(64), at TIMESTAMP, city VARCHAR(64)",
            ),
        };
        let extra = d["route_extra"].as_str().unwrap_or("");
        routes.push_str(&format!(
            "[[routes]]\nbucket = \"{}\"\nprefix = \"{name}/\"\ntable = \"{}\"\n\
             {format}\npartition_columns = [\"city\"]\n{extra}\n",
            stack.bucket,
            stack.table(name)
        ));
        stack.create_table(name, columns).await;
    }
    let loader = stack.loader(&routes).await;
    let mut codecs_seen = std::collections::BTreeSet::new();
    for d in datasets {
        let name = d["name"].as_str().unwrap();
        let writer = d["writer"].as_str().unwrap();
        if let Some(codec) = d["codec"].as_str() {
            codecs_seen.insert(codec.to_string());
        }
        let text_format = d["format"].is_string();
        let rows = d["rows"].as_array().unwrap();
        for file in d["files"].as_array().unwrap() {
            let rel = file.as_str().unwrap();
            let key = format!("{name}/{rel}");
            let body = std::fs::read(dir.join(name).join(rel)).unwrap();
            let (size, etag) = stack.put_object(&key, body).await;
            // The partition value as the writer meant it: from its own rows.
            let segment = rel.split('/').next().unwrap();
            let city = rows
                .iter()
                .map(|r| text(&r["city"]))
                .find(|c| {
                    let enc = match c {
                        None => "__HIVE_DEFAULT_PARTITION__".to_string(),
                        Some(c) => c.clone(),
                    };
                    partition_loader::lake::partition::hive_unescape(&segment["city=".len()..])
                        .map(|v| v == enc)
                        .unwrap_or(false)
                })
                .unwrap_or_else(|| panic!("{writer}: no row for {segment}"));
            // The raw key first (what EventBridge may send), then S3's form-encoding:
            // both must name the same object and partition.
            for (n, event_key) in [key.clone(), form_encode(&key)].iter().enumerate() {
                let event = object_created(&stack.bucket, event_key, size, Some(&etag));
                let outcome = handle(&loader, &event)
                    .await
                    .unwrap_or_else(|e| panic!("{writer} {key} (event key {event_key}): {e}"));
                match (&outcome, n) {
                    (Outcome::Loaded { files: 1, .. }, 0) | (Outcome::UpToDate { .. }, 1) => {}
                    other => panic!("{writer} {key} via {event_key}: {other:?}"),
                }
                assert_eq!(
                    partition_of(&outcome).0,
                    vec![("city".to_string(), city.clone())],
                    "{writer} {key}"
                );
            }
        }
        let (select, fields) = if text_format {
            (
                "id, name, CAST(at AS VARCHAR), city",
                &["id", "name", "at", "city"][..],
            )
        } else {
            ("id, name, city", &["id", "name", "city"][..])
        };
        let got = stack
            .select(&format!(
                "SELECT {select} FROM {} ORDER BY id",
                stack.table(name)
            ))
            .await;
        let want: Vec<Vec<Option<String>>> = rows
            .iter()
            .map(|r| fields.iter().map(|f| text(&r[*f])).collect())
            .collect();
        assert_eq!(got, want, "{name}: table content");
    }
    let codecs: Vec<_> = codecs_seen.into_iter().collect();
    assert_eq!(codecs, ["brotli", "gzip", "lz4", "snappy", "zstd"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Spark, Hive and Glue keep space, `+` and non-ASCII raw and escape `:`, `=`, `%`;
/// events may carry the key raw or form-encoded.
#[tokio::test]
async fn spark_style_keys_in_both_event_encodings() {
    let stack = Stack::new().await;
    let t = stack
        .create_table("sparkish", "id BIGINT, name VARCHAR(64), city VARCHAR(64)")
        .await;
    let routes = format!(
        "[[routes]]\nbucket = \"{}\"\nprefix = \"sparkish/\"\ntable = \"{t}\"\n\
         format = \"parquet\"\npartition_columns = [\"city\"]\n",
        stack.bucket
    );
    let loader = stack.loader(&routes).await;
    let cases = [
        ("C++", "C++"),
        ("sp ace", "sp ace"),
        ("x%3Ay", "x:y"),
        ("k%3Dv", "k=v"),
        ("50%25", "50%"),
        ("São Paulo", "São Paulo"),
        ("100%", "100%"),
    ];
    for (i, (segment, value)) in cases.iter().enumerate() {
        let key = format!("sparkish/city={segment}/part-0.parquet");
        let ids = (i as i64 * 10)..(i as i64 * 10 + 2);
        let (size, etag) = stack.put_object(&key, parquet_bytes(ids)).await;
        for (n, event_key) in [form_encode(&key), key.clone()].iter().enumerate() {
            let event = object_created(&stack.bucket, event_key, size, Some(&etag));
            let outcome = handle(&loader, &event)
                .await
                .unwrap_or_else(|e| panic!("{key} via {event_key}: {e}"));
            match (&outcome, n) {
                (Outcome::Loaded { files: 1, .. }, 0) | (Outcome::UpToDate { .. }, 1) => {}
                other => panic!("{key} via {event_key}: {other:?}"),
            }
            assert_eq!(
                partition_of(&outcome).0,
                vec![("city".to_string(), Some(value.to_string()))]
            );
        }
        let n = stack
            .count(&format!(
                "SELECT COUNT(*) FROM {t} WHERE city = '{}'",
                value.replace('\'', "''")
            ))
            .await;
        assert_eq!(n, 2, "{key}");
    }
    assert_eq!(stack.rows(&t).await, 2 * cases.len() as i64);
}

#[tokio::test]
async fn awswrangler_unescaped_slash_is_refused_naming_the_segment() {
    let stack = Stack::new().await;
    let t = stack
        .create_table("wr", "id BIGINT, name VARCHAR(64), city VARCHAR(64)")
        .await;
    let routes = format!(
        "[[routes]]\nbucket = \"{}\"\nprefix = \"wr/\"\ntable = \"{t}\"\n\
         format = \"parquet\"\npartition_columns = [\"city\"]\n",
        stack.bucket
    );
    let loader = stack.loader(&routes).await;
    let event = stack
        .parquet_event("wr/city=a/b/part-0.parquet", 0..2)
        .await;
    let e = handle(&loader, &event).await.unwrap_err();
    assert_eq!(e.error_type(), "Permanent.BadPartition");
    assert!(e.to_string().contains("segment \"b\""), "{e}");
    // awswrangler's raw `50%` (not an escape) loads as `50%`.
    let event = stack
        .parquet_event("wr/city=50%/part-0.parquet", 0..2)
        .await;
    let outcome = handle(&loader, &event).await.unwrap();
    assert_eq!(
        partition_of(&outcome).0,
        vec![("city".to_string(), Some("50%".to_string()))]
    );
    assert_eq!(stack.rows(&t).await, 2);
}

#[tokio::test]
async fn null_partitions_append_and_replace() {
    let stack = Stack::new().await;
    let t = stack
        .create_table(
            "events",
            "id BIGINT, name VARCHAR(64), region VARCHAR(16), day DATE, n BIGINT",
        )
        .await;
    let routes = format!(
        "[[routes]]\nbucket = \"{}\"\nprefix = \"ev/\"\ntable = \"{t}\"\nformat = \"parquet\"\n\
         mode = \"replace\"\nnull_value = \"NULL\"\npartition_columns = [\"region\", \
         {{ name = \"day\", type = \"date\" }}, {{ name = \"n\", type = \"integer\" }}]\n",
        stack.bucket
    );
    let loader = stack.loader(&routes).await;
    let null_day = "ev/region=eu/day=__HIVE_DEFAULT_PARTITION__/n=NULL";
    let filled = "ev/region=eu/day=2024-05-28/n=1";
    let e1 = stack
        .parquet_event(&format!("{null_day}/a.parquet"), 0..3)
        .await;
    let e2 = stack
        .parquet_event(&format!("{filled}/a.parquet"), 100..102)
        .await;
    for e in [&e1, &e2] {
        assert_eq!(loaded_files(&handle(&loader, e).await), 1);
    }
    let outcome = handle(&loader, &e1).await.unwrap();
    assert_eq!(
        outcome.to_json_line(),
        format!(
            "{{\"outcome\":\"up_to_date\",\"table\":\"{t}\",\"partition\":{{\"region\":\"eu\",\
             \"day\":null,\"n\":null}}}}"
        )
    );
    // Replace the NULL partition: only its rows go (`IS NULL`, not `= NULL`).
    let e3 = stack
        .parquet_event(&format!("{null_day}/b.parquet"), 10..12)
        .await;
    assert_eq!(loaded_files(&handle(&loader, &e3).await), 2);
    let got = stack
        .select(&format!(
            "SELECT id, region, CAST(day AS VARCHAR), CAST(n AS VARCHAR) FROM {t} ORDER BY id"
        ))
        .await;
    let s = |v: &str| Some(v.to_string());
    let null_row = |id: &str| vec![s(id), s("eu"), None, None];
    let filled_row = |id: &str| vec![s(id), s("eu"), s("2024-05-28"), s("1")];
    assert_eq!(
        got,
        vec![
            null_row("0"),
            null_row("1"),
            null_row("2"),
            null_row("10"),
            null_row("11"),
            filled_row("100"),
            filled_row("101"),
        ]
    );
}

/// A CSV route: `copy_options` honoured, ISO timestamps load because the loader adds
/// `TIMEFORMAT 'auto'`, and Spark's backslash-escaped quotes are refused like Redshift.
#[tokio::test]
async fn csv_copy_options_and_timestamps() {
    let stack = Stack::new().await;
    let t = stack
        .create_table(
            "clicks",
            "id BIGINT, label VARCHAR(4), at TIMESTAMP, note VARCHAR(16), day DATE",
        )
        .await;
    let routes = format!(
        "[[routes]]\nbucket = \"{}\"\nprefix = \"clicks/\"\ntable = \"{t}\"\nformat = \"csv\"\n\
         header = true\npartition_columns = [{{ name = \"day\", type = \"date\" }}]\n\
         copy_options = [\"EMPTYASNULL\", \"TRUNCATECOLUMNS\", \"NULL AS 'n/a'\"]\n",
        stack.bucket
    );
    let loader = stack.loader(&routes).await;
    // What Spark writes for a NULL string (an empty field) and ISO 8601 timestamps.
    let csv =
        "id,label,at,note\n1,abcdef,2024-05-28T10:00:00.000Z,\n2,ok,2024-05-28T11:30:00Z,n/a\n";
    let key = "clicks/day=2024-05-28/part-0.csv";
    let size = stack.put(key, csv.as_bytes().to_vec()).await;
    let outcome = handle(&loader, &stack.event(key, size)).await;
    assert_eq!(loaded_files(&outcome), 1, "{outcome:?}");
    let got = stack
        .select(&format!(
            "SELECT id, label, CAST(at AS VARCHAR), note FROM {t} ORDER BY id"
        ))
        .await;
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        got,
        vec![
            vec![s("1"), s("abcd"), s("2024-05-28 10:00:00"), None],
            vec![s("2"), s("ok"), s("2024-05-28 11:30:00"), None],
        ]
    );

    // Spark's default CSV escapes quotes with a backslash: Redshift refuses it.
    let spark = "id,label,at,note\n3,x,2024-05-28 10:00:00,\"say \\\"hi\\\"\"\n";
    let key = "clicks/day=2024-05-29/part-0.csv";
    let size = stack.put(key, spark.as_bytes().to_vec()).await;
    let e = handle(&loader, &stack.event(key, size)).await.unwrap_err();
    assert_eq!(e.error_type(), "Permanent.LoadRejected");
    assert!(
        e.to_string().contains("Invalid quote formatting for CSV"),
        "{e}"
    );
    assert_eq!(stack.rows(&t).await, 2);
}

/// Without DATEFORMAT/TIMEFORMAT the emulator, like Redshift, reads only
/// `YYYY-MM-DD HH:MI:SS`: an ISO `T`/`Z` timestamp fails with Redshift's words.
#[tokio::test]
async fn emulator_default_timeformat_is_strict() {
    let stack = Stack::new().await;
    let t = stack.create_table("iso", "id BIGINT, at TIMESTAMP").await;
    let key = "raw/iso.csv";
    stack.put(key, b"1,2024-05-28T10:00:00Z\n".to_vec()).await;
    let copy = |extra: &str| {
        format!(
            "COPY {t} FROM 's3://{}/{key}' IAM_ROLE 'arn:aws:iam::123456789012:role/r' CSV {extra}",
            stack.bucket
        )
    };
    match stack.try_sql(&copy("")).await {
        Err(LoaderError::StatementFailed { message, .. }) => assert!(
            message.contains("Invalid timestamp format or value [YYYY-MM-DD HH24:MI:SS]"),
            "{message}"
        ),
        other => panic!("strict default accepted ISO: {other:?}"),
    }
    stack.sql(&copy("TIMEFORMAT 'auto'")).await;
    assert_eq!(stack.rows(&t).await, 1);
}

/// `MAXERROR n` from a route's `copy_options`: up to n bad rows are skipped, one more
/// fails the load with Redshift's reason.
#[tokio::test]
async fn maxerror_route_skips_bad_rows_up_to_the_limit() {
    let stack = Stack::new().await;
    let t = stack
        .create_table("m", "id BIGINT, day DATE, note VARCHAR(8)")
        .await;
    let routes = format!(
        "[[routes]]\nbucket = \"{}\"\nprefix = \"m/\"\ntable = \"{t}\"\nformat = \"csv\"\n\
         copy_options = [\"MAXERROR 2\", \"DATEFORMAT 'YYYY-MM-DD'\"]\n",
        stack.bucket
    );
    let loader = stack.loader(&routes).await;
    // A short row and a date in another format: two load errors, within MAXERROR 2.
    let csv = "1,2024-05-28,a\n2,2024-05-28\n3,28/05/2024,c\n4,2024-05-29,d\n";
    let size = stack.put("m/part-0.csv", csv.as_bytes().to_vec()).await;
    let outcome = handle(&loader, &stack.event("m/part-0.csv", size)).await;
    assert_eq!(loaded_files(&outcome), 1, "{outcome:?}");
    let ids = stack
        .select(&format!("SELECT id FROM {t} ORDER BY id"))
        .await;
    assert_eq!(ids, vec![vec![Some("1".into())], vec![Some("4".into())]]);
    let csv = "5,x,a\n6,y,b\n7,z,c\n";
    let size = stack.put("m/part-1.csv", csv.as_bytes().to_vec()).await;
    let e = handle(&loader, &stack.event("m/part-1.csv", size))
        .await
        .unwrap_err();
    assert_eq!(e.error_type(), "Permanent.LoadRejected");
    assert!(e.to_string().contains("Invalid date format"), "{e}");
    assert_eq!(stack.rows(&t).await, 2);
}
