//! `execute` against the local stack: real PostgreSQL (LOCAL_POSTGRES_URL) and
//! moto S3 (AWS_ENDPOINT_URL_S3), each test in its own schema and bucket.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array, Int16Array,
    Int32Array, Int64Array, Int8Array, LargeStringArray, RecordBatch, StringArray,
    TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray, UInt32Array,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use redshift_copy::{execute, parse, CopyError, CopyReport, HISTORY_DDL};
use tokio_postgres::{Client, NoTls};

const ROLE: &str = "IAM_ROLE 'arn:aws:iam::123456789012:role/local-copy'";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run `scripts/local-stack up && eval \"$(scripts/local-stack env)\"` first"
        )
    })
}

/// One test's private schema, bucket and query id.
struct Stack {
    pg: Client,
    s3: aws_sdk_s3::Client,
    schema: String,
    bucket: String,
    query_id: i64,
}

impl Stack {
    async fn new() -> Stack {
        let pg_url = env("LOCAL_POSTGRES_URL");
        env("AWS_ENDPOINT_URL_S3");
        let (pg, conn) = tokio_postgres::connect(&pg_url, NoTls)
            .await
            .expect("connect to LOCAL_POSTGRES_URL");
        tokio::spawn(conn);
        let conf = aws_config::load_from_env().await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&conf)
                .force_path_style(true)
                .build(),
        );
        let suffix = format!("{:012x}", fastrand::u64(..) >> 16);
        let stack = Stack {
            pg,
            s3,
            schema: format!("rc_{suffix}"),
            bucket: format!("rc-{suffix}"),
            query_id: fastrand::i64(1..i64::MAX),
        };
        stack
            .pg
            .batch_execute(HISTORY_DDL)
            .await
            .expect("history DDL");
        stack
            .pg
            .batch_execute(&format!("CREATE SCHEMA {}", stack.schema))
            .await
            .unwrap();
        stack
            .s3
            .create_bucket()
            .bucket(&stack.bucket)
            .send()
            .await
            .expect("create bucket");
        stack
    }

    async fn sql(&self, sql: &str) {
        self.pg
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> u64 {
        let len = body.len() as u64;
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body.into())
            .send()
            .await
            .expect("put object");
        len
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// `COPY <schema>.<target> FROM '<url of key>' IAM_ROLE ... <options>`.
    fn copy_sql(&self, target: &str, key: &str, options: &str) -> String {
        format!(
            "COPY {}.{target} FROM '{}' {ROLE} {options}",
            self.schema,
            self.url(key)
        )
    }

    /// Parses and runs one COPY inside BEGIN ... COMMIT (ROLLBACK on error).
    async fn copy(&self, sql: &str) -> Result<CopyReport, CopyError> {
        self.copy_then(sql, "COMMIT").await
    }

    async fn copy_then(&self, sql: &str, end: &str) -> Result<CopyReport, CopyError> {
        let cmd = parse(sql).expect("a COPY")?;
        self.sql("BEGIN").await;
        let result = execute(&cmd, &self.s3, &self.pg, self.query_id).await;
        let end = if result.is_ok() { end } else { "ROLLBACK" };
        self.sql(end).await;
        result
    }

    async fn rejected(&self, sql: &str) -> String {
        match self.copy(sql).await {
            Err(CopyError::Rejected(m)) => m,
            other => panic!("{sql}: expected Rejected, got {other:?}"),
        }
    }

    /// Every row of `select`, each column cast to text by the query.
    async fn rows(&self, select: &str) -> Vec<Vec<Option<String>>> {
        self.pg
            .query(select, &[])
            .await
            .unwrap_or_else(|e| panic!("{select}: {e:?}"))
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.get::<_, Option<String>>(i))
                    .collect()
            })
            .collect()
    }

    async fn count(&self, table: &str) -> i64 {
        self.pg
            .query_one(
                &format!("SELECT count(*) FROM {}.{table}", self.schema),
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn history_count(&self) -> (i64, i64) {
        let row = self
            .pg
            .query_one(
                "SELECT (SELECT count(*) FROM stl_load_commits WHERE query = $1), \
                        (SELECT count(*) FROM sys_load_history WHERE query_id = $1)",
                &[&self.query_id],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }
}

fn parquet(batch: &RecordBatch, compression: Compression) -> Vec<u8> {
    let props = WriterProperties::builder()
        .set_compression(compression)
        .build();
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    buf
}

fn small_batch(ids: &[i64], names: &[&str]) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef),
        (
            "name",
            Arc::new(StringArray::from(names.to_vec())) as ArrayRef,
        ),
    ])
    .unwrap()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn dec(values: Vec<Option<i128>>, p: u8, sc: i8) -> ArrayRef {
    Arc::new(
        Decimal128Array::from(values)
            .with_precision_and_scale(p, sc)
            .unwrap(),
    )
}

/// Every Parquet type Glue writes, one row of values and one row of NULLs.
fn all_types_batch() -> RecordBatch {
    let ts = 1_716_890_400_i64; // 2024-05-28 10:00:00 UTC
    RecordBatch::try_from_iter(vec![
        (
            "s",
            Arc::new(StringArray::from(vec![Some("héllo, \"w\""), None])) as ArrayRef,
        ),
        (
            "ls",
            Arc::new(LargeStringArray::from(vec![Some("large"), None])) as ArrayRef,
        ),
        (
            "i8",
            Arc::new(Int8Array::from(vec![Some(-8), None])) as ArrayRef,
        ),
        (
            "i16",
            Arc::new(Int16Array::from(vec![Some(-16), None])) as ArrayRef,
        ),
        (
            "i32",
            Arc::new(Int32Array::from(vec![Some(32), None])) as ArrayRef,
        ),
        (
            "i64",
            Arc::new(Int64Array::from(vec![Some(9_007_199_254_740_993), None])) as ArrayRef,
        ),
        (
            "u32",
            Arc::new(UInt32Array::from(vec![Some(4_000_000_000), None])) as ArrayRef,
        ),
        (
            "f32",
            Arc::new(Float32Array::from(vec![Some(1.5), None])) as ArrayRef,
        ),
        (
            "f64",
            Arc::new(Float64Array::from(vec![Some(-2.25), None])) as ArrayRef,
        ),
        // Precision picks the physical type: INT32, INT64, FIXED_LEN_BYTE_ARRAY.
        ("d9", dec(vec![Some(12345), None], 5, 2)),
        ("d18", dec(vec![Some(-123_456_789_012), None], 15, 3)),
        (
            "d38",
            dec(vec![Some(12_345_678_901_234_567_890_123), None], 30, 4),
        ),
        (
            "b",
            Arc::new(BooleanArray::from(vec![Some(true), None])) as ArrayRef,
        ),
        (
            "d",
            Arc::new(Date32Array::from(vec![Some(19871), None])) as ArrayRef,
        ),
        (
            "ts_ms",
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(ts * 1000 + 123),
                None,
            ])) as ArrayRef,
        ),
        (
            "ts_us",
            Arc::new(TimestampMicrosecondArray::from(vec![
                Some(ts * 1_000_000 + 456),
                None,
            ])) as ArrayRef,
        ),
        (
            "ts_ns",
            Arc::new(TimestampNanosecondArray::from(vec![
                Some(ts * 1_000_000_000 + 789_000),
                None,
            ])) as ArrayRef,
        ),
        (
            "ts_utc",
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(ts * 1_000_000), None])
                    .with_timezone("UTC"),
            ) as ArrayRef,
        ),
    ])
    .unwrap()
}

const ALL_TYPES_DDL: &str = "(s varchar(40), ls text, i8 smallint, i16 smallint, i32 integer, \
     i64 bigint, u32 bigint, f32 real, f64 double precision, d9 numeric(5,2), d18 numeric(15,3), \
     d38 numeric(30,4), b boolean, d date, ts_ms timestamp, ts_us timestamp, ts_ns timestamp, \
     ts_utc timestamptz)";

#[tokio::test]
async fn parquet_every_type_by_prefix_snappy_and_uncompressed() {
    let st = Stack::new().await;
    st.sql(&format!(
        "CREATE TABLE {}.all_types {ALL_TYPES_DDL}",
        st.schema
    ))
    .await;
    let batch = all_types_batch();
    let a = st
        .put(
            "p/dt=1/a.snappy.parquet",
            parquet(&batch, Compression::SNAPPY),
        )
        .await;
    let b = st
        .put(
            "p/dt=1/b.parquet",
            parquet(&batch, Compression::UNCOMPRESSED),
        )
        .await;
    st.put("other/c.parquet", parquet(&batch, Compression::SNAPPY))
        .await;

    let report = st
        .copy(&st.copy_sql("all_types", "p/dt=1/", "FORMAT AS PARQUET STATUPDATE ON"))
        .await
        .expect("copy");
    assert_eq!(report.rows, 4);
    assert_eq!(
        report.files,
        vec![
            st.url("p/dt=1/a.snappy.parquet"),
            st.url("p/dt=1/b.parquet")
        ]
    );

    let rows = st
        .rows(&format!(
            "SELECT s, ls, i8::text, i16::text, i32::text, i64::text, u32::text, f32::text, \
             f64::text, d9::text, d18::text, d38::text, b::text, d::text, ts_ms::text, \
             ts_us::text, ts_ns::text, (ts_utc AT TIME ZONE 'UTC')::text \
             FROM {}.all_types ORDER BY s NULLS LAST",
            st.schema
        ))
        .await;
    let full = vec![
        s("héllo, \"w\""),
        s("large"),
        s("-8"),
        s("-16"),
        s("32"),
        s("9007199254740993"),
        s("4000000000"),
        s("1.5"),
        s("-2.25"),
        s("123.45"),
        s("-123456789.012"),
        s("1234567890123456789.0123"),
        s("true"),
        s("2024-05-28"),
        s("2024-05-28 10:00:00.123"),
        s("2024-05-28 10:00:00.000456"),
        s("2024-05-28 10:00:00.000789"),
        s("2024-05-28 10:00:00"),
    ];
    assert_eq!(
        rows,
        vec![full.clone(), full, vec![None; 18], vec![None; 18]]
    );

    let commits = st
        .rows(&format!(
            "SELECT trim(filename), lines_scanned::text, trim(file_format) FROM stl_load_commits \
             WHERE query = {} ORDER BY filename",
            st.query_id
        ))
        .await;
    assert_eq!(
        commits,
        vec![
            vec![
                Some(st.url("p/dt=1/a.snappy.parquet")),
                s("2"),
                s("Parquet")
            ],
            vec![Some(st.url("p/dt=1/b.parquet")), s("2"), s("Parquet")],
        ]
    );
    let history = st
        .rows(&format!(
            "SELECT trim(status), trim(table_name), trim(data_source), trim(file_format), \
             loaded_rows::text, source_file_count::text, source_file_bytes::text, \
             (end_time >= start_time)::text, (transaction_id > 0)::text \
             FROM sys_load_history WHERE query_id = {}",
            st.query_id
        ))
        .await;
    assert_eq!(
        history,
        vec![vec![
            s("completed"),
            Some(format!("{}.all_types", st.schema)),
            Some(st.url("p/dt=1/")),
            s("parquet"),
            s("4"),
            s("2"),
            Some((a + b).to_string()),
            s("true"),
            s("true"),
        ]]
    );
}

#[tokio::test]
async fn parquet_manifest_loads_listed_files_and_skips_missing_optional() {
    let st = Stack::new().await;
    st.sql(&format!(
        "CREATE TABLE {}.t (id bigint, name varchar(10))",
        st.schema
    ))
    .await;
    let one = st
        .put(
            "d/1.parquet",
            parquet(&small_batch(&[1, 2], &["a", "b"]), Compression::SNAPPY),
        )
        .await;
    st.put(
        "d/2.parquet",
        parquet(&small_batch(&[3], &["c"]), Compression::SNAPPY),
    )
    .await;
    let manifest = format!(
        r#"{{"entries":[
            {{"url":"{}","mandatory":true,"meta":{{"content_length":{one}}}}},
            {{"url":"{}","mandatory":false,"meta":{{"content_length":10}}}}]}}"#,
        st.url("d/1.parquet"),
        st.url("d/gone.parquet")
    );
    st.put("m/load.manifest", manifest.into_bytes()).await;
    let report = st
        .copy(&st.copy_sql("t", "m/load.manifest", "MANIFEST FORMAT AS PARQUET"))
        .await
        .expect("copy");
    assert_eq!(report.rows, 2);
    assert_eq!(report.files, vec![st.url("d/1.parquet")]);
    assert_eq!(
        st.rows(&format!(
            "SELECT id::text, name FROM {}.t ORDER BY id",
            st.schema
        ))
        .await,
        vec![vec![s("1"), s("a")], vec![s("2"), s("b")]]
    );
    assert_eq!(st.history_count().await, (1, 1));
}

#[tokio::test]
async fn manifest_rejections() {
    let st = Stack::new().await;
    st.sql(&format!(
        "CREATE TABLE {}.t (id bigint, name varchar(10))",
        st.schema
    ))
    .await;
    let size = st
        .put(
            "d/1.parquet",
            parquet(&small_batch(&[1], &["a"]), Compression::SNAPPY),
        )
        .await;
    let file = st.url("d/1.parquet");
    let cases = [
        (
            format!(r#"{{"entries":[{{"url":"{file}","mandatory":true}}]}}"#),
            "File entry does not have 'meta' key.".to_string(),
        ),
        (
            format!(r#"{{"entries":[{{"url":"{file}","mandatory":true,"meta":{{}}}}]}}"#),
            "File entry does not have 'content_length' key in 'meta'".to_string(),
        ),
        (
            format!(
                r#"{{"entries":[{{"url":"{file}","mandatory":true,"meta":{{"content_length":{}}}}}]}}"#,
                size + 1
            ),
            format!(
                "has content_length {} in the manifest but is {size} bytes",
                size + 1
            ),
        ),
        (
            format!(
                r#"{{"entries":[{{"url":"{}","mandatory":true,"meta":{{"content_length":1}}}}]}}"#,
                st.url("d/missing.parquet")
            ),
            format!("Load file '{}' was not found", st.url("d/missing.parquet")),
        ),
        (
            format!(
                r#"{{"entries":[{{"url":"{}","mandatory":true,"meta":{{"content_length":1}}}}]}}"#,
                st.url("d/")
            ),
            "COPY with MANIFEST parameter requires full path of an S3 object".to_string(),
        ),
        (
            r#"{"entries":[]}"#.to_string(),
            "No files found to load".to_string(),
        ),
        (
            "{oops".to_string(),
            "Manifest file is not in correct json format".to_string(),
        ),
    ];
    for (i, (manifest, expected)) in cases.iter().enumerate() {
        let key = format!("m/{i}.manifest");
        st.put(&key, manifest.clone().into_bytes()).await;
        let msg = st
            .rejected(&st.copy_sql("t", &key, "MANIFEST FORMAT AS PARQUET"))
            .await;
        assert!(msg.contains(expected.as_str()), "case {i}: {msg}");
    }
    let msg = st
        .rejected(&st.copy_sql(
            "t",
            "m/does-not-exist.manifest",
            "MANIFEST FORMAT AS PARQUET",
        ))
        .await;
    assert!(
        msg.starts_with("Problem reading manifest file - S3ServiceException:"),
        "{msg}"
    );
    assert_eq!(st.count("t").await, 0);
    assert_eq!(st.history_count().await, (0, 0));
}

#[tokio::test]
async fn parquet_column_count_and_bad_values_fail() {
    let st = Stack::new().await;
    st.sql(&format!(
        "CREATE TABLE {0}.three (id bigint, name varchar(10), extra int); \
         CREATE TABLE {0}.ints (id bigint, n integer); \
         CREATE TABLE {0}.short (id bigint, name varchar(2))",
        st.schema
    ))
    .await;
    st.put(
        "p/1.parquet",
        parquet(&small_batch(&[1], &["abc"]), Compression::SNAPPY),
    )
    .await;
    let msg = st.rejected(&st.copy_sql("three", "p/", "PARQUET")).await;
    assert_eq!(
        msg,
        format!(
            "Spectrum Scan Error. Unmatched number of columns between table and file. \
             Table columns: 3, Data columns: 2, File name: {}",
            st.url("p/1.parquet")
        )
    );
    // The COPY column list is the target: naming two columns makes it fit.
    st.copy(&st.copy_sql("three (id, name)", "p/", "PARQUET"))
        .await
        .expect("copy with column list");
    assert_eq!(st.count("three").await, 1);

    // A string column into an INTEGER one: Spectrum refuses the file's schema before
    // reading a value (the words of AWS's knowledge-center page on Spectrum's
    // incompatible-schema error), whatever the strings hold.
    let msg = st.rejected(&st.copy_sql("ints", "p/", "PARQUET")).await;
    assert_eq!(
        msg,
        format!(
            "Spectrum Scan Error. File '{}' has an incompatible Parquet schema for column \
             'name'. Column type: INTEGER, Parquet schema: Utf8",
            st.url("p/1.parquet")
        )
    );
    st.sql(&format!(
        "CREATE TABLE {0}.dates (d date, name varchar(10))",
        st.schema
    ))
    .await;
    let msg = st.rejected(&st.copy_sql("dates", "p/", "PARQUET")).await;
    assert!(
        msg.contains("incompatible Parquet schema for column 'id'. Column type: DATE"),
        "{msg}"
    );
    let msg = st.rejected(&st.copy_sql("short", "p/", "PARQUET")).await;
    assert!(
        msg.contains("value too long for type character varying(2)"),
        "{msg}"
    );
    assert_eq!(st.count("ints").await + st.count("short").await, 0);
}

#[tokio::test]
async fn source_and_authorization_rejections() {
    let st = Stack::new().await;
    st.sql(&format!(
        "CREATE TABLE {}.t (id bigint, name varchar(10))",
        st.schema
    ))
    .await;
    let msg = st
        .rejected(&st.copy_sql("t", "nothing/here/", "PARQUET"))
        .await;
    assert_eq!(
        msg,
        "The specified S3 prefix 'nothing/here/' does not exist"
    );
    let msg = st
        .rejected(&format!(
            "COPY {}.t FROM '{}' PARQUET",
            st.schema,
            st.url("p/")
        ))
        .await;
    assert!(
        msg.starts_with("Invalid credentials. Must be of the format"),
        "{msg}"
    );
    let msg = st.rejected(&st.copy_sql("nope", "p/", "PARQUET")).await;
    assert!(msg.contains("does not exist"), "{msg}");
    match st.copy(&st.copy_sql("t", "p/", "FORMAT AS ORC")).await {
        Err(CopyError::Syntax(m)) => assert!(m.contains("does not support FORMAT AS ORC"), "{m}"),
        other => panic!("ORC: {other:?}"),
    }
}

#[tokio::test]
async fn csv_plain_gzip_and_text() {
    let st = Stack::new().await;
    st.sql(&format!(
        "CREATE TABLE {}.t (id integer, name varchar(20), amount numeric(8,2), day date)",
        st.schema
    ))
    .await;
    st.put(
        "csv/a.csv",
        b"id,name,amount,day\n1,\"x, y\",1.50,2024-05-28\n2,,,\n".to_vec(),
    )
    .await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, b"id;name;amount;day\n3;z;3;2024-05-29\n").unwrap();
    st.put("gz/a.csv.gz", gz.finish().unwrap()).await;
    st.put("txt/a.txt", b"4|w|4.25|2024-05-30\n5|\\N||\n".to_vec())
        .await;

    let r = st
        .copy(&st.copy_sql("t", "csv/", "CSV IGNOREHEADER 1"))
        .await
        .expect("csv");
    assert_eq!(r.rows, 2);
    st.copy(&st.copy_sql(
        "t",
        "gz/",
        "FORMAT AS CSV DELIMITER ';' IGNOREHEADER AS 1 GZIP",
    ))
    .await
    .expect("gzip csv");
    st.copy(&st.copy_sql("t", "txt/", "")).await.expect("text");
    assert_eq!(
        st.rows(&format!(
            "SELECT id::text, name, amount::text, day::text FROM {}.t ORDER BY id",
            st.schema
        ))
        .await,
        vec![
            vec![s("1"), s("x, y"), s("1.50"), s("2024-05-28")],
            vec![s("2"), s(""), None, None],
            vec![s("3"), s("z"), s("3.00"), s("2024-05-29")],
            vec![s("4"), s("w"), s("4.25"), s("2024-05-30")],
            vec![s("5"), None, None, None],
        ]
    );

    st.put("bad/a.csv", b"6,short\n".to_vec()).await;
    let msg = st.rejected(&st.copy_sql("t", "bad/", "CSV")).await;
    assert!(
        msg.contains("Reason: Delimiter not found") && msg.contains("line 1"),
        "{msg}"
    );
    st.put("extra/a.csv", b"6,a,1,2024-01-01,oops\n".to_vec())
        .await;
    let msg = st.rejected(&st.copy_sql("t", "extra/", "CSV")).await;
    assert!(msg.contains("Reason: Extra column(s) found"), "{msg}");
    assert_eq!(st.count("t").await, 5);
}

#[tokio::test]
async fn json_auto_and_ignorecase() {
    let st = Stack::new().await;
    st.sql(&format!(
        "CREATE TABLE {}.t (id integer, name text, ok boolean)",
        st.schema
    ))
    .await;
    st.put(
        "j/a.json",
        b"{\"id\":1,\"name\":\"a\",\"ok\":true}\n{\"id\":2,\"Name\":\"ignored\"}{\"id\":3,\"name\":null}".to_vec(),
    )
    .await;
    st.put(
        "k/a.json",
        b"{\"ID\":4,\"NAME\":\"d\",\"OK\":false}".to_vec(),
    )
    .await;
    st.copy(&st.copy_sql("t", "j/", "FORMAT AS JSON 'auto'"))
        .await
        .expect("json auto");
    st.copy(&st.copy_sql("t", "k/", "JSON 'auto ignorecase'"))
        .await
        .expect("json ignorecase");
    assert_eq!(
        st.rows(&format!(
            "SELECT id::text, name, ok::text FROM {}.t ORDER BY id",
            st.schema
        ))
        .await,
        vec![
            vec![s("1"), s("a"), s("true")],
            vec![s("2"), None, None],
            vec![s("3"), None, None],
            vec![s("4"), s("d"), s("false")],
        ]
    );
}

#[tokio::test]
async fn rollback_leaves_no_rows_and_no_history() {
    let st = Stack::new().await;
    st.sql(&format!(
        "CREATE TABLE {}.t (id bigint, name varchar(10))",
        st.schema
    ))
    .await;
    st.put(
        "p/1.parquet",
        parquet(&small_batch(&[1, 2], &["a", "b"]), Compression::SNAPPY),
    )
    .await;
    let report = st
        .copy_then(&st.copy_sql("t", "p/", "PARQUET"), "ROLLBACK")
        .await
        .expect("copy");
    assert_eq!(report.rows, 2);
    assert_eq!(st.count("t").await, 0);
    assert_eq!(st.history_count().await, (0, 0));
}

#[tokio::test]
async fn resolves_search_path_and_quoted_names() {
    let st = Stack::new().await;
    st.sql(&format!(
        "CREATE TABLE {}.\"Mixed Case\" (\"Id\" bigint, name varchar(10))",
        st.schema
    ))
    .await;
    st.put(
        "p/1.parquet",
        parquet(&small_batch(&[7], &["q"]), Compression::SNAPPY),
    )
    .await;
    let cmd = parse(&format!(
        "COPY \"Mixed Case\" (\"Id\", name) FROM '{}' {ROLE} PARQUET",
        st.url("p/")
    ))
    .unwrap()
    .unwrap();
    st.sql(&format!("BEGIN; SET LOCAL search_path TO {}", st.schema))
        .await;
    let report = execute(&cmd, &st.s3, &st.pg, st.query_id)
        .await
        .expect("copy");
    st.sql("COMMIT").await;
    assert_eq!(report.rows, 1);
    assert_eq!(
        st.rows(&format!(
            "SELECT \"Id\"::text, name FROM {}.\"Mixed Case\"",
            st.schema
        ))
        .await,
        vec![vec![s("7"), s("q")]]
    );
}

/// The loader's by-name mapping (issue 20 item 3) means something only because COPY maps
/// by position: "COPY inserts values into the target table's columns in the same order
/// as fields occur in the data files", and a column list's "order must match the order
/// of the source data" (COPY column mapping,
/// https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-column-mapping.html).
/// Neither a Parquet file's column names nor a CSV header's are ever read as names.
#[tokio::test]
async fn columns_map_by_position_never_by_name() {
    let st = Stack::new().await;
    st.sql(&format!(
        "CREATE TABLE {0}.t (a bigint, b bigint); CREATE TABLE {0}.c (a bigint, b bigint)",
        st.schema
    ))
    .await;
    // A Parquet file whose columns are named b, a (in that order).
    let swapped = RecordBatch::try_from_iter(vec![
        ("b", Arc::new(Int64Array::from(vec![2])) as ArrayRef),
        ("a", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
    ])
    .unwrap();
    st.put("pos/1.parquet", parquet(&swapped, Compression::SNAPPY))
        .await;
    st.copy(&st.copy_sql("t", "pos/", "PARQUET"))
        .await
        .expect("same count, same types");
    // A column list in the table's order changes nothing: the file's first column still
    // goes to the first listed column.
    st.copy(&st.copy_sql("t (a, b)", "pos/", "PARQUET"))
        .await
        .expect("column list");
    // Listing the columns in the file's order is what loads them by name.
    st.copy(&st.copy_sql("t (b, a)", "pos/", "PARQUET"))
        .await
        .expect("column list in the file's order");
    let select = |t: &str| {
        format!(
            "SELECT a::text, b::text FROM {}.{t} ORDER BY a, b",
            st.schema
        )
    };
    assert_eq!(
        st.rows(&select("t")).await,
        vec![
            vec![s("1"), s("2")],
            vec![s("2"), s("1")],
            vec![s("2"), s("1")]
        ]
    );
    // CSV: IGNOREHEADER skips the header unread; fields go by position.
    st.put("csv/1.csv", b"b,a\n2,1\n".to_vec()).await;
    st.copy(&st.copy_sql("c", "csv/", "CSV IGNOREHEADER 1"))
        .await
        .expect("csv");
    st.copy(&st.copy_sql("c (b, a)", "csv/", "CSV IGNOREHEADER 1"))
        .await
        .expect("csv with a column list in the header's order");
    assert_eq!(
        st.rows(&select("c")).await,
        vec![vec![s("1"), s("2")], vec![s("2"), s("1")]]
    );
}
