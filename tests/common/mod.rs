//! Shared set-up for the integration tests: every test gets its own bucket, data schema,
//! loader schema and Data API workgroup name (faults are scoped by workgroup), so the
//! tests run in parallel against one local stack. examples/burst_bench.rs includes this
//! file too, for its events, Parquet files and admin calls.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use aws_sdk_s3::primitives::ByteStream;
use parquet::arrow::ArrowWriter;
use partition_loader::io::storage::S3;
use partition_loader::io::warehouse::{DataApi, Warehouse};
use partition_loader::lake::config::RedshiftTarget;
use partition_loader::run::handler::Loader;
use partition_loader::sql::{LeaseTables, TableName};
use partition_loader::{Config, LoaderError, Outcome};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

pub type TestLoader = Loader<DataApi, S3>;

/// The partition most tests load into, under [`Stack::orders_route`].
pub const ORDERS_DAY: &str = "orders/order_date=2024-05-28";

pub fn require_stack() -> String {
    match std::env::var("AWS_ENDPOINT_URL_REDSHIFT_DATA") {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "the local stack is not configured: run \
             `scripts/local-stack up && eval \"$(scripts/local-stack env)\"` first"
        ),
    }
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"))
}

pub struct Stack {
    pub suffix: String,
    pub bucket: String,
    /// Schema of the test's target tables.
    pub schema: String,
    pub loader_schema: String,
    /// The workgroup name the test's loaders use; faults are scoped to it. The loader
    /// reaches it as a cluster identifier with [`Stack::db_user`] (how the emulator
    /// names the caller's database user), so it runs as a user that owns nothing.
    pub workgroup: String,
    /// The loader's database user: it owns nothing and holds only the grants that
    /// `loaderctl bootstrap --grant-to` gives plus DML on the data schema's tables.
    pub db_user: String,
    pub s3: aws_sdk_s3::Client,
    /// The test's own SQL (set-up, counts) goes through another workgroup name, so that
    /// injected faults slow or fail only the loader.
    admin: DataApi,
}

pub fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(120)
}

pub fn holder() -> String {
    format!("test-{}", uuid::Uuid::new_v4())
}

/// One invocation of the real handler, as the Lambda runs it, with a fresh holder id.
pub async fn handle(loader: &TestLoader, event: &Value) -> Result<Outcome, LoaderError> {
    loader.handle(event, &holder(), deadline()).await
}

impl Stack {
    /// A bucket and an (empty) data schema of the test's own.
    pub async fn new() -> Stack {
        require_stack();
        let suffix = format!("{:08x}", fastrand::u32(..));
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        );
        let bucket = format!("lake-{suffix}");
        s3.create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("create bucket");
        let workgroup = format!("wg-{suffix}");
        let admin = DataApi::new(
            aws_sdk_redshiftdata::Client::new(&sdk),
            RedshiftTarget::Serverless {
                workgroup: format!("{workgroup}-admin"),
            },
            var("REDSHIFT_DATABASE"),
        );
        let stack = Stack {
            bucket,
            schema: format!("data_{suffix}"),
            loader_schema: format!("pl_{suffix}"),
            workgroup,
            db_user: format!("loader_{suffix}"),
            suffix,
            s3,
            admin,
        };
        stack
            .sql(&format!("CREATE USER {} PASSWORD DISABLE", stack.db_user))
            .await;
        stack.sql(&format!("CREATE SCHEMA {}", stack.schema)).await;
        // What `loaderctl bootstrap --grant-to` prints for the tables' owner to run, for
        // every table the tests create in the data schema.
        stack
            .sql(&format!(
                "GRANT USAGE ON SCHEMA {} TO {}",
                stack.schema, stack.db_user
            ))
            .await;
        stack
            .sql(&format!(
                "ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT, INSERT, DELETE ON TABLES TO {}",
                stack.schema, stack.db_user
            ))
            .await;
        stack
    }

    /// The environment of an operator (the admin, who owns the schemas) running
    /// loaderctl with these routes.
    pub fn admin_env(&self, routes: &str) -> Vec<(String, String)> {
        let mut env = self.env(routes);
        env.retain(|(k, _)| k != "REDSHIFT_CLUSTER_ID" && k != "REDSHIFT_DB_USER");
        env.push((
            "REDSHIFT_WORKGROUP".into(),
            format!("{}-admin", self.workgroup),
        ));
        env
    }

    /// The environment the loader would see, for this test.
    pub fn env(&self, routes: &str) -> Vec<(String, String)> {
        vec![
            // Empty: unset for Config::from_env (the local stack's env sets a workgroup).
            ("REDSHIFT_WORKGROUP".into(), String::new()),
            ("REDSHIFT_CLUSTER_ID".into(), self.workgroup.clone()),
            ("REDSHIFT_DB_USER".into(), self.db_user.clone()),
            ("REDSHIFT_DATABASE".into(), var("REDSHIFT_DATABASE")),
            ("COPY_IAM_ROLE".into(), var("COPY_IAM_ROLE")),
            ("LOADER_SCHEMA".into(), self.loader_schema.clone()),
            (
                "MANIFEST_PREFIX".into(),
                format!("s3://{}/_loader/", self.bucket),
            ),
            ("LOADER_CONFIG".into(), routes.to_string()),
        ]
    }

    pub fn config(&self, routes: &str) -> Config {
        config_of(&self.env(routes))
    }

    /// The configuration of an operator (the admin) for these routes.
    pub fn admin_config(&self, routes: &str) -> Config {
        config_of(&self.admin_env(routes))
    }

    /// A loader for these routes, running as [`Stack::db_user`], with the loader schema
    /// bootstrapped by the admin and granted to that user (`loaderctl bootstrap
    /// --grant-to`).
    pub async fn loader(&self, routes: &str) -> TestLoader {
        self.bootstrap_as_admin(routes).await;
        Loader::connect(self.config(routes)).await
    }

    /// What the operator does before the first event: bootstrap and grant.
    pub async fn bootstrap_as_admin(&self, routes: &str) {
        let admin = Loader::connect(self.admin_config(routes)).await;
        admin.bootstrap(deadline()).await.expect("bootstrap");
        let user = partition_loader::sql::DbUser::parse(&self.db_user).expect("user name");
        admin
            .grant_loader(&user, deadline())
            .await
            .expect("grant to the loader's user");
    }

    /// One route `orders/` → `<schema>.orders`, partitioned by a date; `extra` adds
    /// route keys such as `mode = "replace"`.
    pub fn orders_route(&self, extra: &str) -> String {
        format!(
            "[[routes]]\nbucket = \"{}\"\nprefix = \"orders/\"\ntable = \"{}\"\nformat = \"parquet\"\n\
             partition_columns = [{{ name = \"order_date\", type = \"date\" }}]\n{extra}\n",
            self.bucket,
            self.table("orders")
        )
    }

    /// The orders table of [`Stack::orders_route`], whose partition column the Parquet
    /// files lack (so loads go through staging).
    pub async fn orders_table(&self) -> String {
        self.create_table("orders", "id BIGINT, name VARCHAR(64), order_date DATE")
            .await
    }

    /// The usual start: the orders route (plus `extra`), its table and a loader.
    pub async fn orders(&self, extra: &str) -> (TestLoader, String) {
        let loader = self.loader(&self.orders_route(extra)).await;
        (loader, self.orders_table().await)
    }

    pub fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.schema)
    }

    /// Creates `<schema>.<name> (<columns>)` and returns its qualified name.
    pub async fn create_table(&self, name: &str, columns: &str) -> String {
        let table = self.table(name);
        self.sql(&format!("CREATE TABLE {table} ({columns})")).await;
        table
    }

    pub async fn try_sql(&self, sql: &str) -> Result<String, LoaderError> {
        self.admin.run(sql.to_string(), vec![], deadline()).await
    }

    pub async fn sql(&self, sql: &str) {
        self.try_sql(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let id = self.try_sql(sql).await;
        let rows = match id {
            Ok(id) => self.admin.rows(id, deadline()).await,
            Err(e) => Err(e),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows[0][0]
            .as_deref()
            .expect("a count")
            .parse()
            .expect("a number")
    }

    /// The rows of a query, every value as text (`None` for NULL).
    pub async fn select(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let id = self
            .try_sql(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        self.admin
            .rows(id, deadline())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The first column of the first row of a query, as text (`None` for NULL).
    pub async fn text(&self, sql: &str) -> Option<String> {
        self.select(sql)
            .await
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .flatten()
    }

    pub async fn rows(&self, table: &str) -> i64 {
        self.count(&format!("SELECT COUNT(*) FROM {table}")).await
    }

    /// The loader's own table `kind` ("lease", "ledger", "wakeup") of `table`, quoted.
    pub fn loader_table(&self, table: &str, kind: &str) -> String {
        let t = LeaseTables::for_target(&TableName::parse(table).expect("schema.table"));
        let name = match kind {
            "lease" => t.lease,
            "ledger" => t.ledger,
            "wakeup" => t.wakeup,
            other => panic!("no loader table {other}"),
        };
        format!("{}.{}", self.loader_schema, name.quoted())
    }

    pub async fn ledger_rows(&self, table: &str) -> i64 {
        self.count(&format!(
            "SELECT COUNT(*) FROM {}",
            self.loader_table(table, "ledger")
        ))
        .await
    }

    /// Leases held on `table` (0 when free).
    pub async fn lease_rows(&self, table: &str) -> i64 {
        self.count(&format!(
            "SELECT COUNT(*) FROM {} WHERE holder IS NOT NULL",
            self.loader_table(table, "lease")
        ))
        .await
    }

    /// Wake-ups queued for `table`'s holder.
    pub async fn wakeup_rows(&self, table: &str) -> i64 {
        self.count(&format!(
            "SELECT COUNT(*) FROM {}",
            self.loader_table(table, "wakeup")
        ))
        .await
    }

    /// Makes `holder` the holder of `table`'s lease, expiring `ttl_seconds` from now
    /// (negative: already expired).
    pub async fn insert_lease(&self, table: &str, holder: &str, ttl_seconds: i64) {
        self.sql(&format!(
            "UPDATE {} SET holder = '{holder}', acquired_at = GETDATE(), \
             expires_at = DATEADD(second, {ttl_seconds}, GETDATE())",
            self.loader_table(table, "lease")
        ))
        .await;
    }

    /// Puts the ledger row a holder's load commits for `key` of [`ORDERS_DAY`]'s
    /// partition (without loading anything).
    pub async fn insert_ledger_row(&self, table: &str, key: &str, etag: &str, holder: &str) {
        self.sql(&format!(
            "INSERT INTO {} VALUES ('order_date=2024-05-28/', \
             's3://{}/{key}', '{}', 1, GETDATE(), '{holder}', 'load-{holder}')",
            self.loader_table(table, "ledger"),
            self.bucket,
            etag.trim_matches('"')
        ))
        .await;
    }

    pub async fn put(&self, key: &str, body: Vec<u8>) -> i64 {
        self.put_object(key, body).await.0
    }

    /// Writes an object; returns its size and its ETag as S3 reports it.
    pub async fn put_object(&self, key: &str, body: Vec<u8>) -> (i64, String) {
        put_object(&self.s3, &self.bucket, key, body)
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"))
    }

    /// Writes a Parquet file with columns (id BIGINT, name VARCHAR) holding `ids`.
    pub async fn put_parquet(&self, key: &str, ids: std::ops::Range<i64>) -> i64 {
        self.put(key, parquet_bytes(ids)).await
    }

    /// Writes a Parquet file (see [`Stack::put_parquet`]) and returns its event, with
    /// the object's ETag as S3 sends it.
    pub async fn parquet_event(&self, key: &str, ids: std::ops::Range<i64>) -> Value {
        let (size, etag) = self.put_object(key, parquet_bytes(ids)).await;
        object_created(&self.bucket, key, size, Some(&etag))
    }

    /// Writes Parquet `file` into [`ORDERS_DAY`] and returns its event.
    pub async fn orders_file(&self, file: &str, ids: std::ops::Range<i64>) -> Value {
        self.parquet_event(&format!("{ORDERS_DAY}/{file}"), ids)
            .await
    }

    /// The S3 keys under `prefix` in the test's bucket.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let listed = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .unwrap_or_else(|e| panic!("list {prefix}: {e:?}"));
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }

    /// The EventBridge event S3 sends for `key` (given as it appears in the event),
    /// without an ETag.
    pub fn event(&self, key: &str, size: i64) -> Value {
        object_created(&self.bucket, key, size, None)
    }

    /// Adds a fault set scoped to this test's workgroup on redshift-data-local.
    pub async fn fault(&self, mut spec: Value) {
        spec["workgroup"] = json!(self.workgroup);
        let (status, body) = admin("POST", "/_admin/faults", &spec.to_string()).await;
        assert!(
            status.starts_with("HTTP/1.1 2"),
            "adding fault: {status} {body}"
        );
    }
}

fn config_of(env: &[(String, String)]) -> Config {
    Config::from_lookup(|k| {
        env.iter()
            .find(|(n, v)| n == k && !v.is_empty())
            .map(|(_, v)| v.clone())
    })
    .expect("valid test config")
}

/// Writes an object; returns its size and its ETag as S3 reports it (in quotes).
pub async fn put_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) -> Result<(i64, String), aws_sdk_s3::Error> {
    let size = body.len() as i64;
    let out = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await?;
    Ok((size, out.e_tag().unwrap_or_default().to_string()))
}

/// The EventBridge "Object Created" event for an object (`etag` as S3 reports it;
/// the event carries it without quotes, as AWS sends it).
pub fn object_created(bucket: &str, key: &str, size: i64, etag: Option<&str>) -> Value {
    let mut object = json!({"key": key, "size": size, "sequencer": "00617F0829"});
    if let Some(etag) = etag {
        object["etag"] = json!(etag.trim_matches('"'));
    }
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2024-05-28T10:00:00Z",
        "region": "us-east-1",
        "resources": [format!("arn:aws:s3:::{bucket}")],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": object,
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "source-ip-address": "127.0.0.1",
            "reason": "PutObject"
        }
    })
}

pub fn parquet_bytes(ids: std::ops::Range<i64>) -> Vec<u8> {
    parquet_bytes_named(ids, |i| format!("name-{i}"))
}

/// Parquet with columns (id BIGINT, name VARCHAR): one row per id, named by `name`.
pub fn parquet_bytes_named(ids: std::ops::Range<i64>, name: impl Fn(i64) -> String) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let names: Vec<String> = ids.clone().map(name).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(ids)),
        Arc::new(StringArray::from_iter_values(names)),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).expect("batch");
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    out
}

/// Parquet as [`parquet_bytes`] writes it, with the columns in the other order
/// (name, id): a writer that reordered its columns.
pub fn parquet_bytes_name_first(ids: std::ops::Range<i64>) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, true),
        Field::new("id", DataType::Int64, false),
    ]));
    let names: Vec<String> = ids.clone().map(|i| format!("name-{i}")).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(names)),
        Arc::new(Int64Array::from_iter_values(ids)),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).expect("batch");
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    out
}

/// A minimal HTTP/1.1 call to the emulator's admin API (no HTTP client crate needed).
pub async fn admin(method: &str, path: &str, body: &str) -> (String, String) {
    let endpoint = require_stack();
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .expect("connect admin");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

pub fn loaded_files(outcome: &Result<Outcome, LoaderError>) -> usize {
    match outcome {
        Ok(Outcome::Loaded { files, .. }) => *files,
        _ => 0,
    }
}
