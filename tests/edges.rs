//! The function's entry edges against the local stack: SQS batches (ReportBatchItemFailures),
//! `loaderctl redrive` on a moto SQS queue, and routes read from an SSM parameter or an
//! S3 object served by moto.

mod common;

use aws_lambda_events::sqs::SqsEvent;
use common::*;
use partition_loader::lake::routes_source;
use partition_loader::run::batch::{self, Invocation};
use partition_loader::run::redrive;
use serde_json::{json, Value};
use std::time::Duration;

fn sqs_record(id: &str, event: &Value) -> Value {
    json!({"messageId": id, "receiptHandle": format!("rh-{id}"), "body": event.to_string(),
           "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
           "md5OfBody": "", "eventSource": "aws:sqs",
           "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:events", "awsRegion": "us-east-1"})
}

fn sqs_batch(records: Vec<Value>) -> SqsEvent {
    match batch::classify(json!({ "Records": records })) {
        Ok(Invocation::SqsBatch(b)) => b,
        other => panic!("not an SQS batch: {other:?}"),
    }
}

fn failures(response: &aws_lambda_events::sqs::SqsBatchResponse) -> Vec<String> {
    let v = serde_json::to_value(response).unwrap();
    v["batchItemFailures"]
        .as_array()
        .expect("batchItemFailures")
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_string())
        .collect()
}

async fn sdk() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

#[tokio::test]
async fn sqs_batch_loads_each_partition_once_and_reports_only_failed_messages() {
    let stack = Stack::new().await;
    let (loader, table) = stack.orders("").await;
    // Three files of one partition, one of another, a marker, an unparseable partition.
    let a = stack.orders_file("a.parquet", 0..10).await;
    let b = stack.orders_file("b.parquet", 10..20).await;
    let c = stack.orders_file("c.parquet", 20..25).await;
    let other = stack
        .parquet_event("orders/order_date=2024-05-29/d.parquet", 100..103)
        .await;
    let marker = stack.event(&format!("{ORDERS_DAY}/_SUCCESS"), 0);
    let bad = stack
        .parquet_event("orders/order_date=someday/e.parquet", 0..1)
        .await;
    let records = vec![
        sqs_record("m-a", &a),
        sqs_record("m-b", &b),
        sqs_record("m-marker", &marker),
        sqs_record("m-bad", &bad),
        sqs_record("m-c", &c),
        sqs_record("m-other", &other),
        json!({"messageId": "m-garbage", "body": "{not json", "eventSource": "aws:sqs"}),
    ];
    let result = loader
        .handle_batch(&sqs_batch(records.clone()), &holder(), deadline())
        .await;
    assert_eq!(failures(&result.response), ["m-bad", "m-garbage"]);
    assert_eq!(stack.rows(&table).await, 28);
    assert_eq!(stack.ledger_rows(&table).await, 4);
    // One load per partition: two loaded outcomes (3 files, 1 file), one skip.
    let mut loaded: Vec<u64> = result
        .outcomes
        .iter()
        .filter_map(|o| o.to_json()["files"].as_u64())
        .collect();
    loaded.sort();
    assert_eq!(loaded, [1, 3]);
    assert_eq!(
        result
            .outcomes
            .iter()
            .filter(|o| o.to_json()["outcome"] == "skipped")
            .count(),
        1
    );
    assert_eq!(stack.lease_rows(&table).await, 0);

    // The queue delivers the batch again (e.g. after a crash): nothing loads twice.
    let again = loader
        .handle_batch(&sqs_batch(records), &holder(), deadline())
        .await;
    assert_eq!(failures(&again.response), ["m-bad", "m-garbage"]);
    assert_eq!(stack.rows(&table).await, 28);
}

#[tokio::test]
async fn sqs_batch_group_failure_fails_only_that_groups_messages() {
    let stack = Stack::new().await;
    // The orders table exists, the other route's table does not.
    let orders = stack.orders_table().await;
    let routes = format!(
        "{}\n[[routes]]\nbucket = \"{}\"\nprefix = \"missing/\"\ntable = \"{}\"\nformat = \"parquet\"\n\
         partition_columns = [{{ name = \"order_date\", type = \"date\" }}]\n",
        stack.orders_route(""),
        stack.bucket,
        stack.table("missing")
    );
    let loader = stack.loader(&routes).await;
    let ok = stack.orders_file("a.parquet", 0..4).await;
    let missing = stack
        .parquet_event("missing/order_date=2024-05-28/x.parquet", 0..4)
        .await;
    let result = loader
        .handle_batch(
            &sqs_batch(vec![
                sqs_record("m-ok", &ok),
                sqs_record("m-missing", &missing),
            ]),
            &holder(),
            deadline(),
        )
        .await;
    assert_eq!(failures(&result.response), ["m-missing"]);
    assert_eq!(result.errors[0].name(), "TableMissing");
    assert_eq!(stack.rows(&orders).await, 4);
}

async fn sqs_client() -> aws_sdk_sqs::Client {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL_SQS").is_some(),
        "AWS_ENDPOINT_URL_SQS is not set: eval \"$(scripts/local-stack env)\""
    );
    aws_sdk_sqs::Client::new(&sdk().await)
}

async fn queue_bodies(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<String> {
    let out = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .send()
        .await
        .expect("receive");
    out.messages
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.body)
        .collect()
}

#[tokio::test]
async fn redrive_replays_both_queue_shapes_and_deletes_only_successes() {
    let stack = Stack::new().await;
    let (loader, table) = stack.orders("").await;
    let sqs = sqs_client().await;
    let url = sqs
        .create_queue()
        .queue_name(format!("failures-{}", stack.suffix))
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url");
    let wrapped = stack.orders_file("a.parquet", 0..6).await;
    let bare = stack.orders_file("b.parquet", 6..9).await;
    let unrouted = stack.event("elsewhere/x.parquet", 5);
    let missing_table = object_created(
        &stack.bucket,
        "orders/order_date=2024-05-30/gone.parquet",
        5,
        None,
    );
    // The function's on-failure destination wraps the event; the rule's DLQ does not.
    let destination_record = json!({
        "version": "1.0", "timestamp": "2024-05-29T02:20:00.000Z",
        "requestContext": {"requestId": "r-1", "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:pl",
                           "condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": wrapped,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorType": "Retryable.LockBusy", "errorMessage": "busy"}
    });
    for body in [
        destination_record.to_string(),
        bare.to_string(),
        unrouted.to_string(),
        missing_table.to_string(),
        "garbage".to_string(),
    ] {
        sqs.send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await
            .expect("send");
    }
    let mut lines = Vec::new();
    let summary = redrive::redrive(
        &loader,
        &sqs,
        &url,
        None,
        &holder(),
        Duration::from_secs(60),
        |l| lines.push(l),
    )
    .await
    .expect("redrive");
    assert_eq!(summary.seen, 5, "{lines:#?}");
    assert_eq!(summary.deleted, 3, "{lines:#?}");
    assert_eq!(summary.failed, 2, "{lines:#?}");
    // a.parquet and b.parquet are one partition: the first event loads both, the
    // second finds them loaded.
    assert_eq!(stack.rows(&table).await, 9);
    let outcomes: Vec<(String, bool)> = lines
        .iter()
        .map(|l| {
            (
                l["outcome"].as_str().unwrap().to_string(),
                l["deleted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("loaded".to_string(), true),
            ("up_to_date".to_string(), true),
            ("skipped".to_string(), true),
            ("error".to_string(), false),
            ("error".to_string(), false),
        ]
    );
    assert!(lines.iter().all(|l| l["message_id"].is_string()));
    // The failed two stay in the queue, visible again for the next attempt.
    let mut left = queue_bodies(&sqs, &url).await;
    left.sort();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&"garbage".to_string()));
    assert!(left.iter().any(|b| b.contains("gone.parquet")));
}

#[tokio::test]
async fn routes_come_from_an_ssm_parameter_or_an_s3_object() {
    let stack = Stack::new().await;
    let routes = stack.orders_route("");
    let sdk = sdk().await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let name = format!("/partition-loader/{}/routes", stack.suffix);
    ssm.put_parameter()
        .name(&name)
        .value(&routes)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .expect("put parameter");
    stack
        .put("config/routes.toml", routes.clone().into_bytes())
        .await;

    let env_with = |var: &str, value: &str| {
        let mut env: Vec<(String, String)> = stack
            .env("")
            .into_iter()
            .filter(|(k, _)| k != "LOADER_CONFIG")
            .collect();
        env.push((var.to_string(), value.to_string()));
        env
    };
    let s3_url = format!("s3://{}/config/routes.toml", stack.bucket);
    for (var, value) in [
        ("LOADER_CONFIG_SSM", name.as_str()),
        ("LOADER_CONFIG_S3", &s3_url),
    ] {
        let env = env_with(var, value);
        // As config_from_env reads them: an empty variable is unset.
        let config = routes_source::config_from_lookup(&sdk, |k| {
            env.iter()
                .find(|(n, v)| n == k && !v.is_empty())
                .map(|(_, v)| v.clone())
        })
        .await
        .unwrap_or_else(|e| panic!("{var}: {e}"));
        assert_eq!(config.routes.len(), 1, "{var}");
        assert_eq!(config.routes[0].table.to_string(), stack.table("orders"));
        // And the loader built from it loads.
        // The operator bootstraps and grants; the loader's user owns nothing.
        stack.bootstrap_as_admin(&routes).await;
        let loader = partition_loader::Loader::connect(config).await;
        let table = if var == "LOADER_CONFIG_SSM" {
            stack.orders_table().await
        } else {
            stack.table("orders")
        };
        let event = stack
            .orders_file(&format!("{}.parquet", var.to_lowercase()), 0..3)
            .await;
        let outcome = handle(&loader, &event).await.expect("load");
        assert_eq!(outcome.to_json()["outcome"], "loaded", "{var}");
        assert!(stack.rows(&table).await >= 3);
    }

    // Missing sources name the variable and what to check.
    for (var, value) in [
        ("LOADER_CONFIG_SSM", "/partition-loader/none"),
        (
            "LOADER_CONFIG_S3",
            &format!("s3://{}/config/none.toml", stack.bucket),
        ),
    ] {
        let env = env_with(var, value);
        let err = routes_source::config_from_lookup(&sdk, |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
        .await
        .err()
        .unwrap_or_else(|| panic!("{var}: a missing source must fail"))
        .to_string();
        assert!(
            err.contains(var) && err.contains("may the function's role"),
            "{err}"
        );
    }
}

/// The routes TOML the template deploys by default (its `LoaderConfig` parameter's
/// `Default`), read from template.yaml itself.
fn template_default_routes() -> String {
    let template = include_str!("../template.yaml");
    let after = template
        .split_once("\n  LoaderConfig:\n")
        .and_then(|(_, rest)| rest.split_once("Default: |-\n"))
        .map(|(_, rest)| rest)
        .expect("LoaderConfig's Default block in template.yaml");
    after
        .lines()
        .take_while(|l| l.starts_with("      "))
        .map(|l| format!("{}\n", l.trim_start()))
        .collect()
}

/// The environment the template builds for the function, for this test's stack: the
/// default route (no bucket; the test's own table) and `SWEEP_BUCKET` = the data bucket.
fn template_env(stack: &Stack, sweep_bucket: bool) -> Vec<(String, String)> {
    let routes = template_default_routes();
    assert!(
        !routes.contains("bucket"),
        "the template's default route names no bucket: {routes}"
    );
    let routes = routes
        .replace(
            "\"sales.orders\"",
            &format!("\"{}\"", stack.table("orders")),
        )
        .replace("transformed/orders/", "orders/");
    let mut env = stack.env(&routes);
    if sweep_bucket {
        env.push(("SWEEP_BUCKET".into(), stack.bucket.clone()));
    }
    env
}

fn config_from(env: &[(String, String)]) -> partition_loader::Config {
    partition_loader::Config::from_lookup(|k| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    })
    .expect("the template's environment is a valid configuration")
}

/// Issue 19 item 2: with the template's default route (no bucket) the sweep listed
/// nothing, so a file whose event was lost was never loaded.
#[tokio::test]
async fn the_sweep_finds_a_lost_file_with_the_templates_environment() {
    let stack = Stack::new().await;
    let env = template_env(&stack, true);
    let routes = env
        .iter()
        .find(|(k, _)| k == "LOADER_CONFIG")
        .map(|(_, v)| v.clone())
        .unwrap();
    stack.bootstrap_as_admin(&routes).await;
    let table = stack.orders_table().await;
    // A file from today whose event never came.
    let today = chrono::Utc::now().date_naive().format("%Y-%m-%d");
    stack
        .put_parquet(&format!("orders/order_date={today}/part-0.parquet"), 0..4)
        .await;

    let without =
        partition_loader::Loader::connect(config_from(&template_env(&stack, false))).await;
    let results = without.sweep(&holder(), 3, deadline()).await;
    assert!(
        results.iter().all(|r| r.is_ok()) && stack.rows(&table).await == 0,
        "no SWEEP_BUCKET: nothing to list: {results:?}"
    );

    let loader = partition_loader::Loader::connect(config_from(&env)).await;
    let results = loader.sweep(&holder(), 3, deadline()).await;
    let loaded: Vec<Value> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|o| o.to_json())
        .filter(|o| o["outcome"] == "loaded")
        .collect();
    assert_eq!(loaded.len(), 1, "{results:?}");
    assert_eq!(loaded[0]["files"], 1);
    assert_eq!(stack.rows(&table).await, 4);
}

/// Issue 19 item 9: between deploy and `loaderctl bootstrap` the scheduled sweep reports
/// one clear outcome and succeeds, without a PermanentErrors data point (it failed
/// `Permanent.StatementFailed` before, paging and filling the failure queue).
#[tokio::test]
async fn a_sweep_before_bootstrap_says_so_without_an_error() {
    let stack = Stack::new().await;
    let loader = partition_loader::Loader::connect(stack.config(&stack.orders_route(""))).await;
    stack.orders_table().await;
    let measured = partition_loader::run::invocation::sweep_measured(
        &loader,
        &partition_loader::run::metrics::Settings::default(),
        3,
        &holder(),
        deadline(),
    )
    .await;
    let outcome = measured.result.expect("the sweep succeeds");
    let outcomes = outcome["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 1, "{outcome}");
    assert_eq!(outcomes[0]["outcome"], "not_bootstrapped");
    assert_eq!(outcomes[0]["table"], stack.table("orders").as_str());
    assert!(outcomes[0]["fix"]
        .as_str()
        .unwrap()
        .contains("loaderctl bootstrap"));
    for record in &measured.records {
        assert_eq!(record["PermanentErrors"], 0, "{record}");
        assert_eq!(record["Errors"], 0, "{record}");
    }
    // An event for the table still fails, naming the fix.
    let event = stack
        .parquet_event("orders/order_date=2024-05-28/a.parquet", 0..1)
        .await;
    let e = handle(&loader, &event).await.unwrap_err();
    assert_eq!(e.error_type(), "Permanent.NotBootstrapped");
}

/// Issue 19 item 8: a function that cannot start prints an EMF record counting a
/// permanent error before it exits (before, only a log line: no alarm saw it).
#[tokio::test]
async fn a_function_that_cannot_start_prints_a_permanent_error_record() {
    let stack = Stack::new().await;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_partition-loader"));
    cmd.env_remove("LOADER_CONFIG_FILE")
        .env_remove("REDSHIFT_CLUSTER_ID")
        .env_remove("REDSHIFT_DB_USER")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env("METRICS_NAMESPACE", "Loader/Startup")
        .env("RUST_LOG", "error");
    for (k, v) in stack.env("routes = [{ prefix = \"o/\" }]") {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("exits at once")
        .expect("run the function");
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let record: Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no EMF record on stdout: {stdout:?}"));
    assert_eq!(
        record["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "Loader/Startup"
    );
    assert_eq!(record["PermanentErrors"], 1, "{record}");
    assert_eq!(record["ErrorType"], "Permanent.Config");
    assert_eq!(record["invocation"], "startup");
    assert!(
        record["error"]
            .as_str()
            .unwrap()
            .contains("missing field `table`"),
        "{record}"
    );
}

/// Issue 19 item 1: README's `deploy.env` read exactly as `cargo lambda deploy
/// --env-file` reads it (cargo-lambda itself, `--dry`: offline), then as the function's
/// configuration. cargo-lambda parses env files with the `env-file-reader` crate, whose
/// unquoted values take no whitespace, quotes, `#` or `=`: the unquoted routes line
/// left cargo-lambda with no variables at all.
#[tokio::test]
async fn readmes_deploy_env_is_read_by_cargo_lambda_as_a_valid_configuration() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = include_str!("../README.md");
    let block = readme
        .split_once("with `deploy.env` holding the variables below")
        .and_then(|(_, rest)| rest.split_once("```sh\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("README's deploy.env block");
    let dir = std::env::temp_dir().join(format!("deploy-env-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let env_file = dir.join("deploy.env");
    std::fs::write(&env_file, block).unwrap();
    // --dry needs a Linux binary to package; any will do.
    let bootstrap = dir.join("bootstrap");
    std::fs::copy("/bin/true", &bootstrap).unwrap();
    let out = tokio::process::Command::new(format!("{root}/.local/venv/bin/cargo-lambda"))
        .current_dir(root)
        .args(["lambda", "deploy", "--dry", "--env-file"])
        .arg(&env_file)
        .arg("--binary-path")
        .arg(&bootstrap)
        .arg("partition-loader")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .output()
        .await
        .expect("cargo-lambda (scripts/local-stack installs it into .local/venv)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let options = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("- env_options: "))
        .unwrap_or_else(|| {
            panic!(
                "no env_options in the dry run: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    // A map of strings printed with Rust's Debug: JSON for these values.
    let vars: std::collections::HashMap<String, String> =
        serde_json::from_str(options).unwrap_or_else(|e| panic!("{options}: {e}"));
    let names: Vec<&str> = block
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    for name in &names {
        assert!(
            vars.contains_key(*name),
            "cargo-lambda lost {name}: {vars:?}"
        );
    }
    let config = partition_loader::Config::from_lookup(|k| vars.get(k).cloned())
        .expect("deploy.env is a valid configuration");
    assert_eq!(config.routes[0].table.to_string(), "sales.orders");
    assert_eq!(config.routes[0].bucket.as_deref(), Some("lake"));
}
