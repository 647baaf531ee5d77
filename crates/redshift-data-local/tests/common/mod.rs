//! Shared set-up: an in-process server on an ephemeral port against the shared
//! local PostgreSQL and moto S3, driven through the real AWS SDK clients.
#![allow(dead_code)] // each test binary uses a different part of this

use aws_sdk_redshiftdata::config::{retry::RetryConfig, BehaviorVersion, Credentials, Region};
use aws_sdk_redshiftdata::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_redshiftdata::operation::batch_execute_statement::builders::BatchExecuteStatementFluentBuilder;
use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
use aws_sdk_redshiftdata::operation::execute_statement::builders::ExecuteStatementFluentBuilder;
use aws_sdk_redshiftdata::operation::execute_statement::{
    ExecuteStatementError, ExecuteStatementOutput,
};
use aws_sdk_redshiftdata::types::{Field, SqlParameter};
use redshift_data_local::{serve, Config, Server};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const HOW_TO_START: &str =
    "run `scripts/local-stack up && eval \"$(scripts/local-stack env)\"` first";

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {HOW_TO_START}"))
}

/// A random suffix so parallel tests never share names.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

pub struct Harness {
    pub server: Server,
    pub client: aws_sdk_redshiftdata::Client,
    pub s3: aws_sdk_s3::Client,
    /// Fault sets and statements of this test are scoped by this name.
    pub workgroup: String,
    /// A schema of this test's own, created at start.
    pub schema: String,
}

pub async fn start() -> Harness {
    start_with(|_| {}).await
}

pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Harness {
    let _ = env("AWS_ENDPOINT_URL_REDSHIFT_DATA"); // the stack is up
    let mut config = Config::new(env("LOCAL_POSTGRES_URL"));
    config.s3_endpoint = Some(env("AWS_ENDPOINT_URL_S3"));
    adjust(&mut config);
    let server = serve(config).await.expect("server starts");
    let client = data_api_client(&server.endpoint_url(), RetryConfig::standard());
    let s3 = s3_client().await;
    let harness = Harness {
        server,
        client,
        s3,
        workgroup: unique("wg"),
        schema: unique("rdl"),
    };
    harness
        .ok(&format!("CREATE SCHEMA {}", harness.schema))
        .await;
    harness
}

pub fn data_api_client(endpoint: &str, retry: RetryConfig) -> aws_sdk_redshiftdata::Client {
    data_api_client_as(endpoint, retry, "testing")
}

/// A client signing with `access_key` (the emulator maps keys to IAM identities).
pub fn data_api_client_as(
    endpoint: &str,
    retry: RetryConfig,
    access_key: &str,
) -> aws_sdk_redshiftdata::Client {
    let config = aws_sdk_redshiftdata::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(access_key, "testing", None, None, "tests"))
        .endpoint_url(endpoint)
        .retry_config(retry)
        .build();
    aws_sdk_redshiftdata::Client::from_conf(config)
}

pub async fn s3_client() -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .endpoint_url(env("AWS_ENDPOINT_URL_S3"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

impl Harness {
    /// ExecuteStatement in this test's workgroup and database `dev`.
    pub fn execute(&self) -> ExecuteStatementFluentBuilder {
        self.client
            .execute_statement()
            .workgroup_name(&self.workgroup)
            .database("dev")
    }

    /// BatchExecuteStatement in this test's workgroup and database `dev`.
    pub fn batch_execute(&self) -> BatchExecuteStatementFluentBuilder {
        self.client
            .batch_execute_statement()
            .workgroup_name(&self.workgroup)
            .database("dev")
    }

    pub async fn submit(&self, sql: &str) -> String {
        self.submit_with(sql, &[]).await
    }

    pub async fn submit_with(&self, sql: &str, params: &[(&str, &str)]) -> String {
        self.try_submit_with(sql, params)
            .await
            .expect("ExecuteStatement accepted")
            .id
            .expect("Id")
    }

    /// ExecuteStatement with `:name` parameters, for calls that may be refused.
    pub async fn try_submit_with(
        &self,
        sql: &str,
        params: &[(&str, &str)],
    ) -> Result<ExecuteStatementOutput, SdkError<ExecuteStatementError>> {
        let mut request = self.execute().sql(sql);
        for (name, value) in params {
            request = request.parameters(
                SqlParameter::builder()
                    .name(*name)
                    .value(*value)
                    .build()
                    .unwrap(),
            );
        }
        request.send().await
    }

    pub async fn submit_batch(&self, sqls: &[&str]) -> String {
        self.batch_execute()
            .set_sqls(Some(sqls.iter().map(|s| s.to_string()).collect()))
            .send()
            .await
            .expect("BatchExecuteStatement accepted")
            .id
            .expect("Id")
    }

    /// Polls DescribeStatement until the statement has ended.
    pub async fn wait(&self, id: &str) -> DescribeStatementOutput {
        for _ in 0..1200 {
            let d = self
                .client
                .describe_statement()
                .id(id)
                .send()
                .await
                .expect("DescribeStatement");
            let status = d
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            if matches!(status.as_str(), "FINISHED" | "FAILED" | "ABORTED") {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("statement {id} did not end within 60 s");
    }

    pub async fn run(&self, sql: &str) -> DescribeStatementOutput {
        let id = self.submit(sql).await;
        self.wait(&id).await
    }

    /// Runs `sql` and asserts it FINISHED.
    pub async fn ok(&self, sql: &str) -> DescribeStatementOutput {
        let d = self.run(sql).await;
        assert_eq!(status(&d), "FINISHED", "{sql}: {:?}", d.error());
        d
    }

    /// Runs `sql`, asserts it FAILED and returns its Error.
    pub async fn fails(&self, sql: &str) -> String {
        let d = self.run(sql).await;
        assert_eq!(status(&d), "FAILED", "{sql} should fail");
        d.error().unwrap_or_default().to_string()
    }

    pub async fn batch(&self, sqls: &[&str]) -> DescribeStatementOutput {
        let id = self.submit_batch(sqls).await;
        self.wait(&id).await
    }

    /// All rows of a query, every page.
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Field>> {
        let d = self.ok(sql).await;
        self.all_records(&d.id).await
    }

    pub async fn all_records(&self, id: &str) -> Vec<Vec<Field>> {
        let mut records = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .get_statement_result()
                .id(id)
                .set_next_token(token)
                .send()
                .await
                .expect("GetStatementResult");
            records.extend(page.records().iter().cloned());
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return records;
            }
        }
    }

    /// One scalar as text (longs and strings), for short assertions.
    pub async fn scalar(&self, sql: &str) -> String {
        let rows = self.rows(sql).await;
        assert_eq!(rows.len(), 1, "{sql} should return one row");
        text(&rows[0][0])
    }

    pub fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.schema)
    }

    /// Calls the admin API over plain HTTP; returns (status, body).
    pub async fn admin(&self, method: &str, body: &str) -> (u16, String) {
        let addr = self.server.local_addr();
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "{method} /_admin/faults HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("HTTP status");
        let body = response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        (status, body)
    }
}

pub fn status(d: &DescribeStatementOutput) -> String {
    d.status()
        .map(|s| s.as_str().to_string())
        .unwrap_or_default()
}

pub fn text(field: &Field) -> String {
    match field {
        Field::StringValue(s) => s.clone(),
        Field::LongValue(n) => n.to_string(),
        Field::DoubleValue(d) => d.to_string(),
        Field::BooleanValue(b) => b.to_string(),
        Field::IsNull(_) => "NULL".into(),
        other => format!("{other:?}"),
    }
}

/// The exception a call that must fail was refused with (`ValidationException`, …).
pub fn error_code<T: std::fmt::Debug, E: ProvideErrorMetadata>(result: Result<T, E>) -> String {
    match result {
        Ok(out) => panic!("expected the call to be refused, got {out:?}"),
        Err(e) => e.code().unwrap_or("(no error code)").to_string(),
    }
}
