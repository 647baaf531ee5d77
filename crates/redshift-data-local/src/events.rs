//! `WithEvent`: when a statement submitted with `WithEvent: true` ends, Redshift sends
//! "Redshift Data Statement Status Change" to EventBridge
//! (<https://docs.aws.amazon.com/redshift/latest/mgmt/data-api-monitoring-events.html>).
//! Here the event goes where an EventBridge rule would put it: an SQS queue
//! (`RDL_EVENT_QUEUE_URL`, e.g. one in moto), as the rule's target sends the event
//! itself as the message body. Without a queue, `WithEvent` is accepted and nothing is
//! sent (as with no rule in EventBridge).
//!
//! One event per statement, batch or not, when it ends (FINISHED, FAILED or ABORTED):
//! the documentation shows a single statement's event only and says nothing of
//! sub-statements, so one per submission is the reading that a consumer must survive
//! either way (it should tolerate more or none: delivery is "best effort" in the
//! EventBridge reference, https://docs.aws.amazon.com/eventbridge/latest/ref/events-ref-redshift-data.html).

use serde_json::{json, Value};

use crate::statements::Statement;

/// Where the status-change events go.
pub struct Events {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    region: String,
}

impl Events {
    /// A sender to `queue_url`; the SQS endpoint is `AWS_ENDPOINT_URL_SQS`, else the
    /// queue URL's origin (a local queue's URL names its server).
    pub async fn new(queue_url: String) -> Events {
        use aws_config::meta::region::RegionProviderChain;
        let region = RegionProviderChain::default_provider().or_else("us-east-1");
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(region);
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "redshift-data-local",
            ));
        }
        let shared = loader.load().await;
        let region = shared
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        let mut builder = aws_sdk_sqs::config::Builder::from(&shared);
        if std::env::var_os("AWS_ENDPOINT_URL_SQS").is_none() {
            if let Some(origin) = origin(&queue_url) {
                builder = builder.endpoint_url(origin);
            }
        }
        Events {
            client: aws_sdk_sqs::Client::from_conf(builder.build()),
            queue_url,
            region,
        }
    }

    /// Sends the status change of an ended statement; a failure is logged (EventBridge
    /// gives no delivery guarantee the caller could act on either).
    pub async fn send(&self, statement: &Statement) {
        let event = status_change(statement, &self.region);
        let sent = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(event.to_string())
            .send()
            .await;
        match sent {
            Ok(_) => tracing::info!(statement = %statement.id, "status-change event sent"),
            Err(e) => tracing::warn!(statement = %statement.id,
                error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "status-change event not sent"),
        }
    }
}

fn origin(url: &str) -> Option<String> {
    let scheme_end = url.find("://")? + 3;
    let path = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |p| scheme_end + p);
    Some(url[..path].to_string())
}

/// The event in Redshift's shape (the page's example): `detail` with `principal`,
/// `statementName`, `statementId`, `redshiftQueryId`, `state`, `rows`, `expireAt`; no
/// error text.
pub fn status_change(s: &Statement, region: &str) -> Value {
    let account = "123456789012";
    let resource = match (&s.target.workgroup_name, &s.target.cluster_identifier) {
        (Some(wg), _) => format!("arn:aws:redshift-serverless:{region}:{account}:workgroup/{wg}"),
        (None, Some(c)) => format!("arn:aws:redshift:{region}:{account}:cluster:{c}"),
        (None, None) => String::new(),
    };
    let mut detail = json!({
        "principal": format!("arn:aws:iam::{account}:role/redshift-data-local"),
        "statementId": s.id,
        "redshiftQueryId": -1,
        "state": s.status.as_str(),
        "rows": s.subs.iter().map(|sub| sub.result_rows.max(0)).sum::<i64>(),
        "expireAt": (s.created_at as i64) + 24 * 3600,
    });
    if let Some(name) = &s.statement_name {
        detail["statementName"] = json!(name);
    }
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Redshift Data Statement Status Change",
        "source": "aws.redshift-data",
        "account": account,
        "time": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "region": region,
        "resources": [resource],
        "detail": detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_of_a_queue_url() {
        assert_eq!(
            origin("http://127.0.0.1:45140/123456789012/events").as_deref(),
            Some("http://127.0.0.1:45140")
        );
        assert_eq!(origin("no-scheme"), None);
    }
}
