//! COPY from S3 through the Data API (executed by `redshift-copy`), the rules
//! Redshift enforces, load history, and the fail_copies fault.

mod common;

use arrow_array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field as ArrowField, Schema, TimeUnit};
use aws_sdk_s3::primitives::ByteStream;
use common::{start, status, text, Harness};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::sync::Arc;

const ROLE: &str = "IAM_ROLE 'arn:aws:iam::123456789012:role/local-copy'";
const COLUMNS: &str =
    "(s varchar(20), i int, b bigint, d double precision, n numeric(10,2), f bool, dt date, ts timestamp)";

async fn bucket(h: &Harness) -> String {
    let name = common::unique("rdl").replace('_', "-");
    h.s3.create_bucket()
        .bucket(&name)
        .send()
        .await
        .expect("create bucket");
    name
}

async fn put(h: &Harness, bucket: &str, key: &str, body: Vec<u8>) -> usize {
    let len = body.len();
    h.s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .expect("put object");
    len
}

/// Two rows of every type Glue writes, the second mostly NULL; snappy compressed.
fn parquet_file(first_id: i32) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        ArrowField::new("s", DataType::Utf8, true),
        ArrowField::new("i", DataType::Int32, true),
        ArrowField::new("b", DataType::Int64, true),
        ArrowField::new("d", DataType::Float64, true),
        ArrowField::new("n", DataType::Decimal128(10, 2), true),
        ArrowField::new("f", DataType::Boolean, true),
        ArrowField::new("dt", DataType::Date32, true),
        ArrowField::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![Some("alpha"), None])),
        Arc::new(Int32Array::from(vec![Some(first_id), Some(first_id + 1)])),
        Arc::new(Int64Array::from(vec![Some(9_000_000_000), None])),
        Arc::new(Float64Array::from(vec![Some(2.5), None])),
        Arc::new(
            Decimal128Array::from(vec![Some(12345), None])
                .with_precision_and_scale(10, 2)
                .unwrap(),
        ),
        Arc::new(BooleanArray::from(vec![Some(true), None])),
        Arc::new(Date32Array::from(vec![Some(19_871), None])), // 2024-05-28
        Arc::new(TimestampMicrosecondArray::from(vec![
            Some(1_716_890_400_000_000), // 2024-05-28 10:00:00
            None,
        ])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    out
}

fn manifest(entries: &[(String, Option<usize>)]) -> Vec<u8> {
    let entries: Vec<serde_json::Value> = entries
        .iter()
        .map(|(url, len)| match len {
            Some(len) => {
                serde_json::json!({"url": url, "mandatory": true, "meta": {"content_length": len}})
            }
            None => serde_json::json!({"url": url, "mandatory": true}),
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "entries": entries })).unwrap()
}

#[tokio::test]
async fn parquet_by_prefix_and_manifest_with_every_type() {
    let h = start().await;
    let bucket = bucket(&h).await;
    let t = h.table("pq");
    h.ok(&format!("CREATE TABLE {t} {COLUMNS}")).await;
    let len1 = put(
        &h,
        &bucket,
        "orders/dt=2024-05-28/part-0.snappy.parquet",
        parquet_file(1),
    )
    .await;
    let len2 = put(
        &h,
        &bucket,
        "orders/dt=2024-05-28/part-1.snappy.parquet",
        parquet_file(3),
    )
    .await;

    let d = h
        .ok(&format!(
            "COPY {t} FROM 's3://{bucket}/orders/dt=2024-05-28/' {ROLE} FORMAT AS PARQUET"
        ))
        .await;
    assert_eq!(d.result_rows(), 4);
    let rows = h.rows(&format!("SELECT * FROM {t} WHERE i = 1")).await;
    let values: Vec<String> = rows[0].iter().map(text).collect();
    assert_eq!(
        values,
        [
            "alpha",
            "1",
            "9000000000",
            "2.5",
            "123.45",
            "true",
            "2024-05-28",
            "2024-05-28 10:00:00"
        ]
    );
    let nulls = h
        .rows(&format!(
            "SELECT s, b, d, n, f, dt, ts FROM {t} WHERE i = 2"
        ))
        .await;
    assert!(nulls[0].iter().all(|f| text(f) == "NULL"), "{nulls:?}");

    // The same files through a manifest, in one batch with the ledger-style insert.
    let url = |k: &str| format!("s3://{bucket}/orders/dt=2024-05-28/{k}");
    let body = manifest(&[
        (url("part-0.snappy.parquet"), Some(len1)),
        (url("part-1.snappy.parquet"), Some(len2)),
    ]);
    put(&h, &bucket, "manifests/m1.json", body).await;
    let d = h
        .batch(&[
            &format!("DELETE FROM {t}"),
            &format!(
                "COPY {t} FROM 's3://{bucket}/manifests/m1.json' {ROLE} MANIFEST FORMAT AS PARQUET"
            ),
        ])
        .await;
    assert_eq!(status(&d), "FINISHED", "{:?}", d.error());
    assert_eq!(d.sub_statements()[1].result_rows(), 4);
    assert_eq!(h.scalar(&format!("SELECT count(*) FROM {t}")).await, "4");

    // Load history, queried through the API like on Redshift.
    let copy_query = d.sub_statements()[1].redshift_query_id();
    let history = h
        .rows(&format!(
            "SELECT trim(table_name), trim(status), loaded_rows, source_file_count FROM sys_load_history WHERE query_id = {copy_query}"
        ))
        .await;
    assert_eq!(
        history.len(),
        1,
        "one sys_load_history row for query {copy_query}"
    );
    let history: Vec<String> = history[0].iter().map(text).collect();
    assert!(history[0].ends_with("pq"), "{history:?}");
    assert_eq!(history[2..], ["4".to_string(), "2".to_string()]);
    let files = h
        .rows(&format!(
            "SELECT trim(filename) FROM stl_load_commits WHERE query = {copy_query} ORDER BY 1"
        ))
        .await;
    let files: Vec<String> = files.iter().map(|r| text(&r[0])).collect();
    assert_eq!(
        files,
        [url("part-0.snappy.parquet"), url("part-1.snappy.parquet")]
    );

    // A COPY whose transaction rolls back is recorded too (outside the transaction),
    // as aborted, and commits no file.
    let d = h
        .batch(&[
            &format!(
                "COPY {t} FROM 's3://{bucket}/manifests/m1.json' {ROLE} MANIFEST FORMAT AS PARQUET"
            ),
            "SELECT 1/0",
        ])
        .await;
    assert_eq!(status(&d), "FAILED");
    let aborted = d.sub_statements()[0].redshift_query_id();
    assert_eq!(
        h.scalar(&format!(
            "SELECT trim(status) FROM sys_load_history WHERE query_id = {aborted}"
        ))
        .await,
        "aborted"
    );
    assert_eq!(
        h.scalar(&format!(
            "SELECT count(*) FROM stl_load_commits WHERE query = {aborted}"
        ))
        .await,
        "0"
    );
    assert_eq!(h.scalar(&format!("SELECT count(*) FROM {t}")).await, "4");
}

#[tokio::test]
async fn csv_and_json_by_prefix_and_manifest() {
    let h = start().await;
    let bucket = bucket(&h).await;
    let t = h.table("txt");
    h.ok(&format!("CREATE TABLE {t} (id int, name varchar(20))"))
        .await;
    put(
        &h,
        &bucket,
        "csv/a.csv",
        b"id,name\n1,one\n2,\"t,wo\"\n".to_vec(),
    )
    .await;
    h.ok(&format!(
        "COPY {t} FROM 's3://{bucket}/csv/' {ROLE} FORMAT AS CSV IGNOREHEADER 1"
    ))
    .await;
    put(
        &h,
        &bucket,
        "json/a.json",
        b"{\"id\": 3, \"name\": \"three\"}\n{\"id\": 4, \"name\": null}\n".to_vec(),
    )
    .await;
    let body = manifest(&[(format!("s3://{bucket}/json/a.json"), None)]);
    put(&h, &bucket, "manifests/json.manifest", body).await;
    h.ok(&format!("COPY {t} FROM 's3://{bucket}/manifests/json.manifest' {ROLE} MANIFEST FORMAT AS JSON 'auto'"))
        .await;
    let rows = h
        .rows(&format!(
            "SELECT id, coalesce(name, 'NULL') FROM {t} ORDER BY id"
        ))
        .await;
    let rows: Vec<String> = rows
        .iter()
        .map(|r| format!("{}={}", text(&r[0]), text(&r[1])))
        .collect();
    assert_eq!(rows, ["1=one", "2=t,wo", "3=three", "4=NULL"]);
}

#[tokio::test]
async fn redshift_rejections_surface_in_describe_statement() {
    let h = start().await;
    let bucket = bucket(&h).await;
    let t = h.table("rej");
    h.ok(&format!("CREATE TABLE {t} (s varchar(20), i int)"))
        .await; // 2 columns, files have 8
    let len = put(&h, &bucket, "data/part-0.parquet", parquet_file(1)).await;
    let copy = |from: &str, extra: &str| {
        format!("COPY {t} FROM 's3://{bucket}/{from}' {ROLE} {extra} FORMAT AS PARQUET")
    };

    let err = h.fails(&copy("data/", "")).await;
    assert!(
        err.contains("Unmatched number of columns between table and file"),
        "{err}"
    );

    let err = h.fails(&copy("nothing-here/", "")).await;
    assert!(err.contains("does not exist"), "{err}");

    let err = h
        .fails(&format!(
            "COPY {t} FROM 's3://{bucket}/data/' FORMAT AS PARQUET"
        ))
        .await;
    assert!(err.to_lowercase().contains("credentials"), "{err}");

    put(&h, &bucket, "m/bad.json", b"{not json".to_vec()).await;
    let err = h.fails(&copy("m/bad.json", "MANIFEST")).await;
    assert!(
        err.contains("Manifest file is not in correct json format"),
        "{err}"
    );

    let url = format!("s3://{bucket}/data/part-0.parquet");
    put(
        &h,
        &bucket,
        "m/no-length.json",
        manifest(&[(url.clone(), None)]),
    )
    .await;
    let err = h.fails(&copy("m/no-length.json", "MANIFEST")).await;
    assert!(err.contains("'meta'"), "{err}");
    let empty_meta = serde_json::json!({"entries": [{"url": url, "mandatory": true, "meta": {}}]});
    put(
        &h,
        &bucket,
        "m/empty-meta.json",
        empty_meta.to_string().into_bytes(),
    )
    .await;
    let err = h.fails(&copy("m/empty-meta.json", "MANIFEST")).await;
    assert!(err.contains("'content_length'"), "{err}");

    put(
        &h,
        &bucket,
        "m/wrong-length.json",
        manifest(&[(url.clone(), Some(len + 1))]),
    )
    .await;
    let err = h.fails(&copy("m/wrong-length.json", "MANIFEST")).await;
    assert!(err.contains("content_length"), "{err}");

    let missing = format!("s3://{bucket}/data/missing.parquet");
    put(
        &h,
        &bucket,
        "m/missing.json",
        manifest(&[(missing.clone(), Some(10))]),
    )
    .await;
    let err = h.fails(&copy("m/missing.json", "MANIFEST")).await;
    assert!(err.contains(&missing), "{err}");

    let prefix_entry = format!("s3://{bucket}/data/");
    put(
        &h,
        &bucket,
        "m/prefix.json",
        manifest(&[(prefix_entry, Some(len))]),
    )
    .await;
    let err = h.fails(&copy("m/prefix.json", "MANIFEST")).await;
    assert!(err.contains("requires full path of an S3 object"), "{err}");

    assert_eq!(h.scalar(&format!("SELECT count(*) FROM {t}")).await, "0");
}

#[tokio::test]
async fn fail_copies_fault_fails_the_batch_once() {
    let h = start().await;
    let bucket = bucket(&h).await;
    let t = h.table("flaky");
    let other = h.table("steady");
    h.ok(&format!("CREATE TABLE {t} (id int, name varchar(20))"))
        .await;
    h.ok(&format!("CREATE TABLE {other} (id int)")).await;
    put(&h, &bucket, "csv/a.csv", b"1,one\n".to_vec()).await;
    let fault = serde_json::json!({
        "workgroup": h.workgroup,
        "fail_copies": [{"table": t.to_uppercase(), "count": 1, "message": "ERROR: injected S3 failure"}]
    });
    let (code, _) = h.admin("POST", &fault.to_string()).await;
    assert_eq!(code, 200);
    let batch = [
        format!("INSERT INTO {other} VALUES (1)"),
        format!("COPY {t} FROM 's3://{bucket}/csv/' {ROLE} CSV"),
    ];
    let sqls: Vec<&str> = batch.iter().map(String::as_str).collect();
    let d = h.batch(&sqls).await;
    assert_eq!(status(&d), "FAILED");
    assert_eq!(d.error(), Some("ERROR: injected S3 failure"));
    assert_eq!(
        h.scalar(&format!("SELECT count(*) FROM {other}")).await,
        "0"
    );
    // The count is used up: the retry loads.
    let d = h.batch(&sqls).await;
    assert_eq!(status(&d), "FINISHED", "{:?}", d.error());
    assert_eq!(h.scalar(&format!("SELECT count(*) FROM {t}")).await, "1");
}

/// Redshift's system logs are not transactional: a COPY that fails inside a batch
/// leaves its `SYS_LOAD_ERROR_DETAIL` row although the batch rolled back; a COPY that
/// succeeds leaves none.
#[tokio::test]
async fn a_failed_copy_is_logged_in_sys_load_error_detail_despite_the_rollback() {
    let h = start().await;
    let bucket = bucket(&h).await;
    let t = h.table("errlog");
    h.ok(&format!("CREATE TABLE {t} (s varchar(20), i int)"))
        .await; // 2 columns, the Parquet file has 8
    put(&h, &bucket, "errlog/part-0.parquet", parquet_file(1)).await;
    put(&h, &bucket, "ok/a.csv", b"x,1\n".to_vec()).await;
    let source = format!("s3://{bucket}/errlog/");
    let failing = format!("COPY {t} FROM '{source}' {ROLE} FORMAT AS PARQUET");
    let insert = format!("INSERT INTO {t} VALUES ('kept?', 1)");
    let d = h.batch(&[&insert, &failing]).await;
    assert_eq!(status(&d), "FAILED");
    let query_id = d.sub_statements()[1].redshift_query_id();
    assert!(query_id > 0);
    assert_eq!(
        h.scalar(&format!("SELECT count(*) FROM {t}")).await,
        "0",
        "rolled back"
    );
    let logged = h
        .rows(&format!(
            "SELECT TRIM(file_name), TRIM(error_message), table_id = (SELECT '{t}'::regclass::oid::int) \
             FROM sys_load_error_detail WHERE query_id = {query_id}"
        ))
        .await;
    assert_eq!(logged.len(), 1, "one row for the failed COPY");
    // The row names the file the error is about (the Parquet file, not the prefix).
    assert_eq!(text(&logged[0][0]), format!("{source}part-0.parquet"));
    assert!(
        text(&logged[0][1]).contains("Unmatched number of columns"),
        "{}",
        text(&logged[0][1])
    );
    assert_eq!(text(&logged[0][2]), "true", "table_id is the target's oid");

    let ok = h
        .batch(&[&format!("COPY {t} FROM 's3://{bucket}/ok/' {ROLE} CSV")])
        .await;
    assert_eq!(status(&ok), "FINISHED", "{:?}", ok.error());
    let ok_id = ok.sub_statements()[0].redshift_query_id();
    assert_eq!(
        h.scalar(&format!(
            "SELECT count(*) FROM sys_load_error_detail WHERE query_id = {ok_id}"
        ))
        .await,
        "0"
    );
}
