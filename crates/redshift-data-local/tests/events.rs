//! `WithEvent`: a statement's status change goes to the configured queue in Redshift's
//! shape (<https://docs.aws.amazon.com/redshift/latest/mgmt/data-api-monitoring-events.html>),
//! when it ends, whether or not anyone waits for it; without `WithEvent`, nothing.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn sqs() -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .endpoint_url(env("AWS_ENDPOINT_URL_S3"))
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

async fn events(sqs: &aws_sdk_sqs::Client, queue: &str, want: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..20 {
        let got = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for m in got.messages() {
            out.push(serde_json::from_str(m.body().unwrap_or("{}")).expect("JSON body"));
        }
        if out.len() >= want {
            break;
        }
    }
    out
}

#[tokio::test]
async fn with_event_sends_the_status_change_when_the_statement_ends() {
    let sqs = sqs();
    let name = unique("events");
    let queue = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .expect("create queue")
        .queue_url()
        .unwrap_or_default()
        .to_string();
    let queue_url = queue.clone();
    let h = start_with(move |c| c.event_queue_url = Some(queue_url)).await;
    let table = format!("{}.t", h.schema);
    h.ok(&format!("CREATE TABLE {table} (id INT)")).await;
    // A batch that ends FINISHED, one that FAILS, and one without WithEvent.
    let ok = h
        .batch_execute()
        .sqls(format!("INSERT INTO {table} VALUES (1)"))
        .sqls(format!("INSERT INTO {table} VALUES (2)"))
        .statement_name("partition-loader:s.t:req~1")
        .with_event(true)
        .send()
        .await
        .expect("submit")
        .id()
        .unwrap_or_default()
        .to_string();
    let failed = h
        .batch_execute()
        .sqls(format!("INSERT INTO {table} VALUES (3)"))
        .sqls("SELECT * FROM no_such_table_anywhere")
        .with_event(true)
        .send()
        .await
        .expect("submit")
        .id()
        .unwrap_or_default()
        .to_string();
    let quiet = h
        .batch_execute()
        .sqls(format!("INSERT INTO {table} VALUES (4)"))
        .send()
        .await
        .expect("submit")
        .id()
        .unwrap_or_default()
        .to_string();
    h.wait(&quiet).await;
    // Nobody waits for the first two: they end, and say so.
    let got = events(&sqs, &queue, 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let more = events(&sqs, &queue, 1).await;
    assert_eq!(
        got.len() + more.len(),
        2,
        "one event per WithEvent statement: {got:?} {more:?}"
    );
    let of = |id: &str| {
        got.iter()
            .find(|e| e["detail"]["statementId"] == id)
            .unwrap_or_else(|| panic!("no event of {id}: {got:?}"))
    };
    let e = of(&ok);
    assert_eq!(e["source"], "aws.redshift-data");
    assert_eq!(e["detail-type"], "Redshift Data Statement Status Change");
    assert_eq!(e["version"], "0");
    assert_eq!(e["detail"]["state"], "FINISHED");
    assert_eq!(e["detail"]["statementName"], "partition-loader:s.t:req~1");
    assert!(e["detail"]["expireAt"].is_i64() && e["detail"]["redshiftQueryId"].is_i64());
    assert!(e["resources"][0]
        .as_str()
        .is_some_and(|r| r.contains(":workgroup/")));
    let f = of(&failed);
    assert_eq!(f["detail"]["state"], "FAILED");
    assert!(
        f["detail"].get("error").is_none(),
        "the event carries no error text"
    );
    assert!(f["detail"].get("statementName").is_none());
}

#[tokio::test]
async fn wait_time_seconds_answers_describe_when_the_statement_ends() {
    let h = start().await;
    let id = h.submit("SELECT pg_sleep(1.5)").await;
    let asked = std::time::Instant::now();
    let out = h
        .client
        .describe_statement()
        .id(&id)
        .wait_time_seconds(10)
        .send()
        .await
        .expect("describe");
    let waited = asked.elapsed();
    assert_eq!(out.status().map(|s| s.as_str()), Some("FINISHED"));
    assert!(waited >= Duration::from_millis(1000), "{waited:?}");
    assert!(
        waited < Duration::from_secs(8),
        "answered at the end, not after 10 s"
    );
}
