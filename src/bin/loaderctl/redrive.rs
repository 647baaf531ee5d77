//! `loaderctl redrive QUEUE_URL [--max N]`: replays a failure queue through the handler
//! ([`partition_loader::run::redrive`]); one JSON line per message on stdout, a summary on
//! stderr. Progress on stderr: a bar on a terminal (messages done of the queue's
//! approximate depth), else one plain line per message (`redrive: 2/3 messages, 1
//! succeeded, 1 failed, 1 deleted, 0.8/s, ETA 1s: <message id>: loaded`).

use std::io::IsTerminal;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use partition_loader::LoaderError;
use serde_json::Value;

use crate::progress::{self, Progress};
use crate::Ctl;

#[derive(clap::Args)]
pub struct Args {
    /// The queue: `FailureQueueUrl`, `RuleDeadLetterQueueUrl` or `EventDeadLetterQueueUrl`.
    pub queue_url: String,
    /// Stop after this many messages.
    #[arg(long)]
    pub max: Option<usize>,
}

/// Messages redriven so far, by what became of them.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    done: u64,
    succeeded: u64,
    failed: u64,
    deleted: u64,
}

pub async fn run(
    loader: &Ctl,
    args: Args,
    holder: &str,
    budget: Duration,
) -> Result<bool, LoaderError> {
    let sdk = partition_loader::io::sdk::load_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let depth = approximate_depth(&sqs, &args.queue_url).await;
    let total = match (depth, args.max) {
        (Some(d), Some(m)) => Some(d.min(m as u64)),
        (d, _) => d,
    };
    let mut progress = Progress::new(
        "redrive",
        "messages",
        total,
        std::io::stderr().is_terminal(),
    );
    let mut counts = Counts::default();
    let summary = partition_loader::run::redrive::redrive(
        loader,
        &sqs,
        &args.queue_url,
        args.max,
        holder,
        budget,
        |line| {
            counts.add(&line);
            let label = format!(
                "{}: {}",
                line["message_id"].as_str().unwrap_or("?"),
                line["outcome"].as_str().unwrap_or("?")
            );
            let total = total.unwrap_or_default().max(counts.done);
            progress.step(
                &figures(counts, progress.elapsed()),
                (counts.done, total),
                &label,
            );
            progress.suspend(|| println!("{line}"));
        },
    )
    .await?;
    let last = figures(counts, progress.elapsed());
    progress.finish(&last);
    eprintln!(
        "loaderctl: redrive {}: {} message(s), {} succeeded and deleted, {} failed and kept",
        args.queue_url, summary.seen, summary.deleted, summary.failed
    );
    if summary.seen > 0 {
        // Redriven loads may lie outside the sweep's window: the next scheduled sweep
        // queries (and runs upkeep after them).
        loader.mark_dirty("loaderctl redrive loaded", holder).await;
    }
    Ok(summary.failed == 0)
}

impl Counts {
    /// Counts one message's line (`outcome`, `deleted`).
    fn add(&mut self, line: &Value) {
        self.done += 1;
        if line["outcome"] == "error" {
            self.failed += 1;
        } else {
            self.succeeded += 1;
        }
        if line["deleted"] == true {
            self.deleted += 1;
        }
    }
}

/// `1 succeeded, 1 failed, 1 deleted, 0.8/s`
fn figures(c: Counts, elapsed: Duration) -> String {
    format!(
        "{} succeeded, {} failed, {} deleted, {:.1}/s",
        c.succeeded,
        c.failed,
        c.deleted,
        progress::per_second(c.done, elapsed)
    )
}

/// The queue's approximate number of visible messages, for the bar's length; `None`
/// (a spinner, no ETA) when it cannot be read.
async fn approximate_depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Option<u64> {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .inspect_err(|e| {
            tracing::debug!(error = %aws_sdk_sqs::error::DisplayErrorContext(e),
                "queue depth unknown: progress without a total")
        })
        .ok()?;
    attributes
        .attributes()?
        .get(&QueueAttributeName::ApproximateNumberOfMessages)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_line_is_counted_by_what_became_of_its_message() {
        let mut c = Counts::default();
        c.add(&json!({"outcome": "loaded", "deleted": true}));
        c.add(&json!({"outcome": "skipped", "deleted": false, "delete_error": "x"}));
        c.add(&json!({"outcome": "error", "deleted": false}));
        assert_eq!((c.done, c.succeeded, c.failed, c.deleted), (3, 2, 1, 1));
        assert_eq!(
            figures(c, Duration::from_secs(2)),
            "2 succeeded, 1 failed, 1 deleted, 1.5/s"
        );
    }
}
