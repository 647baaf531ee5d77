//! The sweep's idle gate: S3 only, before and after the sweep, and the dirty marks of
//! the paths that leave work in Redshift. The decisions are `lake::watermark`'s.
//!
//! Invariant: nothing here calls the Data API; every failure here makes the sweep
//! query (a gate that cannot read, list or write never skips work).
//! Invariant: the clean watermark is written only over the object the gate read at the
//! sweep's start (S3 conditional write), so a dirty mark written meanwhile survives.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// When this container last marked the watermark dirty for a queued event (seconds).
static LAST_MARK: AtomicU64 = AtomicU64::new(0);

/// The longest a dirty mark may take (an S3 PUT of a few hundred bytes).
const MARK_TIMEOUT: Duration = Duration::from_secs(2);

use crate::io::storage::Storage;
use crate::io::warehouse::Warehouse;
use crate::lake::config::Route;
use crate::lake::watermark::{self, Gate, RouteListing, Watermark};
use crate::protocol::plan::ListedObject;
use crate::run::handler::Loader;
use crate::sql;

/// What the gate saw at the sweep's start, for [`Loader::sweep_gate_close`].
#[derive(Debug, Clone, Default)]
pub struct Opened {
    /// The listing's digest; `None` when the window could not be listed whole.
    digest: Option<String>,
    /// The watermark object as read: `Some(None)` there was none, `Some(Some(etag))`
    /// its ETag; `None` it could not be read (then no clean watermark is written).
    seen: Option<Option<String>>,
}

impl<W: Warehouse, S: Storage> Loader<W, S> {
    /// The watermark object: `(bucket, key)` under the manifest prefix.
    pub fn watermark_location(&self) -> (String, String) {
        let m = &self.config().manifest;
        (
            m.bucket.clone(),
            format!("{}{}", m.prefix, watermark::OBJECT_NAME),
        )
    }

    /// Lists the look-back window of every route (S3 only) and reads the watermark:
    /// [`Gate::Idle`] when the sweep may skip Redshift entirely.
    pub async fn sweep_gate_open(&self, look_back_days: u32) -> (Gate, Opened) {
        let mut opened = Opened::default();
        if self.config().sweep_watermark_max_age.is_zero() {
            return (
                Gate::Query("idle gate off (SWEEP_WATERMARK_MAX_AGE_HOURS=0)".into()),
                opened,
            );
        }
        let digest = match self.window_digest(look_back_days).await {
            Ok(d) => d,
            Err(why) => return (Gate::Query(why), opened),
        };
        opened.digest = Some(digest.clone());
        // Any gate or S3 wake-up (issue 21 item 4) is work the listing does not show:
        // a crashed gate holder's wake-ups wait for the sweep.
        let m = &self.config().manifest;
        let gates = format!("{}{}", m.prefix, crate::protocol::gate::GATES_FOLDER);
        match self.storage().list(&m.bucket, &gates).await {
            Ok(listed) if listed.is_empty() => {}
            Ok(listed) => {
                return (
                    Gate::Query(format!("{} S3 gate object(s) pending", listed.len())),
                    opened,
                )
            }
            Err(e) => {
                return (
                    Gate::Query(format!("cannot list the S3 gates: {e}")),
                    opened,
                )
            }
        }
        let (bucket, key) = self.watermark_location();
        let read = match self.storage().get(&bucket, &key).await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, "sweep watermark unreadable; the sweep queries");
                return (Gate::Query(format!("watermark unreadable: {e}")), opened);
            }
        };
        opened.seen = Some(read.as_ref().map(|(_, etag)| etag.clone()));
        let parsed = read.and_then(|(text, _)| Watermark::parse(&text));
        let gate = watermark::decide(parsed.as_ref(), &digest, SystemTime::now());
        (gate, opened)
    }

    /// After a sweep: a clean watermark with the digest of its start when it left
    /// nothing behind (`clean`), else a dirty mark. Best effort: a failed write is
    /// logged, and the next sweep queries (no watermark, a dirty one, or the expiry).
    pub async fn sweep_gate_close(&self, opened: Opened, clean: bool, holder: &str) {
        if self.config().sweep_watermark_max_age.is_zero() {
            return;
        }
        if !clean {
            self.mark_dirty("the sweep left work behind", holder).await;
            return;
        }
        let (Some(digest), Some(seen)) = (opened.digest, opened.seen) else {
            return;
        };
        let (bucket, key) = self.watermark_location();
        let body = Watermark::clean(
            &digest,
            SystemTime::now(),
            self.config().sweep_watermark_max_age,
        )
        .to_json();
        match self
            .storage()
            .put_if(&bucket, &key, body, seen.as_deref())
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::info!(
                "sweep watermark changed during the sweep (a dirty mark): left for the next sweep"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "sweep watermark not written; the next sweep queries")
            }
        }
    }

    /// Marks the watermark dirty: work is left in Redshift that S3's listing does not
    /// show (wake-ups, a failed load, a busy table). Best effort: a failure is logged;
    /// the clean watermark's expiry bounds how long the work then waits.
    pub async fn mark_dirty(&self, reason: &str, holder: &str) {
        if self.config().sweep_watermark_max_age.is_zero() {
            return;
        }
        let (bucket, key) = self.watermark_location();
        let body = Watermark::dirty(reason, holder, SystemTime::now()).to_json();
        // Bounded: a holder marks just before its deadline-forced release.
        let put = self.storage().put(&bucket, &key, body);
        let failed = match tokio::time::timeout(MARK_TIMEOUT, put).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {MARK_TIMEOUT:?}"),
        };
        tracing::warn!(
            error = failed,
            reason,
            "sweep watermark not marked dirty; the next sweep may skip until it expires"
        );
    }

    /// [`Loader::mark_dirty`], skipped when this container marked within the last
    /// minute (a burst of queued events). A sweep that read the watermark before that
    /// earlier mark fails its conditional write; one that read it after may write
    /// clean over this skipped mark, so what it covers (a crashed holder's wake-up)
    /// then waits for the expiry, as without marks.
    pub async fn mark_dirty_at_most_every_minute(&self, reason: &str, holder: &str) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let last = LAST_MARK.load(Ordering::Relaxed);
        if now < last.saturating_add(60) {
            return;
        }
        LAST_MARK.store(now, Ordering::Relaxed);
        self.mark_dirty(reason, holder).await;
    }

    /// The digest of every route's look-back window, or why it cannot be had: a route
    /// the sweep does not list by date (no bucket to list, or a first partition column
    /// that is not a date) has work the listing cannot show, so no sweep is skipped.
    async fn window_digest(&self, look_back_days: u32) -> Result<String, String> {
        let today = chrono::Utc::now().date_naive();
        let mut listings: Vec<(String, Vec<ListedObject>)> = Vec::new();
        for route in &self.config().routes {
            let (bucket, column) = listable(self, route)?;
            let mut objects = Vec::new();
            for back in 0..look_back_days {
                let Some(day) = today.checked_sub_days(chrono::Days::new(back.into())) else {
                    continue;
                };
                let prefix = format!("{}{column}={}/", route.prefix, day.format("%Y-%m-%d"));
                let listed = self
                    .storage()
                    .list(bucket, &prefix)
                    .await
                    .map_err(|e| format!("cannot list s3://{bucket}/{prefix}: {e}"))?;
                objects.extend(listed);
            }
            listings.push((
                format!("{bucket} {} {}", route.prefix, route.table),
                objects,
            ));
        }
        let routes: Vec<RouteListing<'_>> = listings
            .iter()
            .map(|(route, objects)| RouteListing { route, objects })
            .collect();
        Ok(watermark::digest(
            &format!("{today}/{look_back_days}"),
            &routes,
        ))
    }
}

/// The bucket and date column the sweep lists a route by, or why it lists none.
fn listable<'a, W: Warehouse, S: Storage>(
    loader: &'a Loader<W, S>,
    route: &'a Route,
) -> Result<(&'a str, String), String> {
    let Some(bucket) = loader.config().sweep_bucket_of(route) else {
        return Err(format!(
            "route {} has no bucket to list (SWEEP_BUCKET)",
            route.prefix
        ));
    };
    match route.partition_columns.first() {
        Some(c) if c.ty == sql::PartitionType::Date => Ok((bucket, c.name.to_string())),
        _ => Err(format!(
            "route {} is not listed by date: its first partition column is not a date",
            route.prefix
        )),
    }
}
