//! The Data API adapter against redshift-data-local, through the real SDK client.

mod common;

use common::*;
use partition_loader::io::warehouse::DataApi;
use partition_loader::lake::config::RedshiftTarget;

#[tokio::test]
async fn a_submit_repeated_with_its_client_token_runs_once() {
    let stack = Stack::new().await;
    let t = stack.create_table("hits", "id BIGINT").await;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let api = DataApi::new(
        aws_sdk_redshiftdata::Client::new(&sdk),
        RedshiftTarget::Serverless {
            workgroup: stack.workgroup.clone(),
        },
        std::env::var("REDSHIFT_DATABASE").expect("REDSHIFT_DATABASE"),
    );
    let batch = vec![
        format!("INSERT INTO {t} VALUES (1)"),
        format!("INSERT INTO {t} VALUES (2)"),
    ];

    // What a transport retry does after a lost response: the same request, same token.
    let token = uuid::Uuid::new_v4().to_string();
    let first = api
        .submit_batch(batch.clone(), &token, deadline())
        .await
        .unwrap();
    let retried = api
        .submit_batch(batch.clone(), &token, deadline())
        .await
        .unwrap();
    assert_eq!(
        first, retried,
        "the retry is answered with the first statement"
    );
    api.wait(&first, deadline()).await.unwrap();
    assert_eq!(stack.rows(&t).await, 2, "the batch ran once");

    // A new logical submission has a new token and runs again.
    let other = api
        .submit_batch(batch, &uuid::Uuid::new_v4().to_string(), deadline())
        .await
        .unwrap();
    assert_ne!(other, first);
    api.wait(&other, deadline()).await.unwrap();
    assert_eq!(stack.rows(&t).await, 4);
}
