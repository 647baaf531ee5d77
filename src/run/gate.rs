//! The S3 gate's I/O (issue 21 item 4; the protocol, its objects and why no wake-up is
//! lost: [`crate::protocol::gate`]): an event either becomes its table's gate holder and
//! goes on to Redshift's lease as before, or leaves an S3 wake-up behind a live gate and
//! answers `queued` with no Data API call. The gate holder's exit ([`Loader::leave_gate`])
//! hands every S3 wake-up to Redshift's wake-up table; the sweep does it for a gate left
//! by a crashed holder ([`Loader::sweep_gate_of`]).
//!
//! Invariant: any S3 failure before this invocation is the gate holder sends the event
//! down the Redshift path (today's protocol, correct on its own); the gate only ever
//! saves calls.
//! Invariant: the exit routine runs after the gate holder's own partition on every path
//! (loaded, failed, left running), and lists the wake-ups after every delete of the gate.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{ErrorKind, LoaderError};
use crate::io::storage::Storage;
use crate::io::warehouse::Warehouse;
use crate::lake::config::Route;
use crate::lake::event::ObjectCreated;
use crate::lake::partition::Partition;
use crate::protocol::gate::{self, GateDoc, GateKeys, Seen, WakeUpDoc};
use crate::protocol::lease::{self, Acquired, Ctx};
use crate::protocol::plan;
use crate::run::handler::{partition_values, Loader};
use crate::run::outcome::{Outcome, PartitionValues};
use crate::sql::{self, TableName, WakeUp};

/// Attempts of one S3 call of the exit routine (on top of the SDK's own retries): a
/// gate holder that gives up leaves wake-ups to the gate's expiry and the sweep.
const S3_ATTEMPTS: u32 = 4;

/// Rounds of create / put wake-up / read before an acquirer gives the gate up and takes
/// the Redshift path (only under a storm of creates and deletes).
const ENTER_ROUNDS: u32 = 4;

/// The least time a transfer needs (one Data API batch, a few S3 calls): with less
/// left, the gate holder leaves its gate to expire over the wake-ups it found.
const EXIT_RESERVE: Duration = Duration::from_secs(2);

/// Rounds of the exit routine (each a transfer and a drain) before the gate is left to
/// expire over what is still listed: new wake-ups arriving as fast as they are handed
/// on, or objects that cannot be deleted, must not keep one invocation to its deadline.
const MAX_EXIT_ROUNDS: u32 = 20;

/// Partitions per transfer (one INSERT): the rest wait for the next round of the exit.
const MAX_TRANSFER_ROWS: usize = 200;

/// Bytes of wake-up values per transfer, well below a statement's ~100 KB.
const MAX_TRANSFER_BYTES: usize = 60_000;

/// Whether per-object events go through the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateMode {
    /// The Redshift path only, as before the gate.
    Off,
    On,
    /// BROKEN on purpose, for the simulation's proof that `no_wakeup_stranded` can
    /// fail: an acquirer reads the gate before it writes its wake-up, so the holder may
    /// delete and list in between and never see it.
    #[doc(hidden)]
    ReadsFirst,
}

/// What an event found at the gate.
enum Entered {
    /// This invocation holds the gate: Redshift as without a gate, then the exit.
    Holder,
    /// A live gate holder will hand our wake-up on.
    Queued { holder: String },
    /// S3 failed us: the Redshift path decides (our wake-up object, if written, is gone).
    Bypass,
}

impl<W: Warehouse, S: Storage> Loader<W, S> {
    /// The S3 keys of `table`'s gate, under the manifest location.
    pub fn gate_keys(&self, table: &TableName) -> GateKeys {
        GateKeys::for_table(&self.config().manifest, table)
    }

    /// The plain per-object event's path through the gate (see the module doc).
    pub(crate) async fn load_event_through_gate(
        &self,
        route: &Route,
        bucket: &str,
        partition: &Partition,
        object: &ObjectCreated,
        holder: &str,
        deadline: Instant,
    ) -> Result<Outcome, LoaderError> {
        let keys = self.gate_keys(&route.table);
        let url = plan::s3_url(&object.bucket, &object.key);
        let etag = object
            .etag
            .as_deref()
            .map(plan::normalise_etag)
            .unwrap_or_default();
        let wake = WakeUp {
            bucket,
            partition_path: &partition.path,
            s3_url: &url,
            etag: &etag,
            route_prefix: &route.prefix,
        };
        let direct =
            || self.load_partition(route, bucket, partition, Some(object), holder, deadline);
        match self.enter_gate(&keys, &wake, holder, deadline).await {
            Entered::Queued {
                holder: gate_holder,
            } => Ok(Outcome::Queued {
                table: route.table.to_string(),
                partition: partition_values(partition),
                holder: gate_holder,
            }),
            Entered::Bypass => direct().await,
            Entered::Holder => {
                let result = direct().await;
                // Our own lease must not be taken again while a load of ours may still
                // run: its fence would fail on the rewritten row (issue 21.1).
                let may_take = !matches!(
                    result,
                    Err(LoaderError::Timeout { .. } | LoaderError::LeaseLost { .. })
                        | Ok(Outcome::Running { .. })
                ) && self.left_running(holder, &route.table).is_none();
                let exit =
                    Box::pin(self.leave_gate(&keys, route, holder, deadline, may_take)).await;
                match (result, exit) {
                    // As `finish_holding`: a drain that failed fails the invocation, so
                    // Lambda's retry drains what it left (in Redshift's wake-up table).
                    (Ok(_), Err(e)) => Err(e),
                    (result, _) => result,
                }
            }
        }
    }

    /// Two S3 calls for a queued event: its wake-up, then a read of the gate that finds
    /// it live. Otherwise the gate is created (absent) or taken over (expired), and the
    /// new holder deletes its own wake-up (it loads its event itself).
    async fn enter_gate(
        &self,
        keys: &GateKeys,
        wake: &WakeUp<'_>,
        holder: &str,
        deadline: Instant,
    ) -> Entered {
        let s3 = self.storage();
        let wakeup_key = keys.wakeup_key(holder, wake);
        let reads_first = self.gate_mode() == GateMode::ReadsFirst;
        let mut written = false;
        for _ in 0..ENTER_ROUNDS {
            // The wake-up BEFORE the read: a gate read present after it ends later, and
            // whoever ends it lists the wake-ups after that (protocol::gate).
            if !written && !reads_first {
                if let Err(e) = self.put_wakeup(keys, &wakeup_key, wake).await {
                    // It may exist all the same.
                    return self.bypass(keys, &wakeup_key, true, e).await;
                }
                written = true;
            }
            let read = match s3.get(&keys.bucket, &keys.gate).await {
                Ok(read) => read,
                Err(e) => return self.bypass(keys, &wakeup_key, written, e).await,
            };
            let seen = gate::decide(
                read.as_ref().map(|(b, e)| (b.as_str(), e.as_str())),
                s3.now(),
            );
            let expected = match seen {
                Seen::Live { holder: live } => {
                    if !written {
                        if let Err(e) = self.put_wakeup(keys, &wakeup_key, wake).await {
                            return self.bypass(keys, &wakeup_key, true, e).await;
                        }
                    }
                    return Entered::Queued { holder: live };
                }
                Seen::Absent => None,
                Seen::Expired { etag } => Some(etag),
            };
            let doc = self.gate_doc(holder, deadline);
            match s3
                .put_if(&keys.bucket, &keys.gate, doc, expected.as_deref())
                .await
            {
                Ok(true) => {
                    if expected.is_some() {
                        tracing::info!(gate = keys.gate, "took over an expired gate");
                    }
                    if written {
                        // Not needed: we load our event ourselves. Left (the delete
                        // failed), it is transferred at our exit like any other.
                        let _ = s3.delete(&keys.bucket, &wakeup_key).await;
                    }
                    return Entered::Holder;
                }
                // Someone else created or took it over first: read it again.
                Ok(false) => {}
                Err(e) => return self.bypass(keys, &wakeup_key, written, e).await,
            }
        }
        let e = LoaderError::Storage {
            message: format!("no decision at s3://{}/{}", keys.bucket, keys.gate),
            retryable: true,
        };
        self.bypass(keys, &wakeup_key, written, e).await
    }

    async fn put_wakeup(
        &self,
        keys: &GateKeys,
        wakeup_key: &str,
        wake: &WakeUp<'_>,
    ) -> Result<(), LoaderError> {
        let body = WakeUpDoc::of(wake).to_json();
        self.storage().put(&keys.bucket, wakeup_key, body).await
    }

    /// The Redshift path after an S3 failure at the gate: our wake-up object, which the
    /// Redshift path makes needless, is deleted if it may exist (it must not wait in S3
    /// with no gate over it; if the delete fails too, the sweep transfers it).
    async fn bypass(
        &self,
        keys: &GateKeys,
        wakeup_key: &str,
        written: bool,
        e: LoaderError,
    ) -> Entered {
        tracing::warn!(error = %e, gate = keys.gate,
            "S3 gate unavailable; this event takes the Redshift path");
        if written {
            let _ = retry(|| self.storage().delete(&keys.bucket, wakeup_key)).await;
        }
        Entered::Bypass
    }

    fn gate_doc(&self, holder: &str, deadline: Instant) -> String {
        let remaining = deadline.saturating_duration_since(Instant::now());
        GateDoc::new(holder, self.storage().now(), remaining).to_json()
    }

    /// The gate holder's exit: (a) delete the gate, (b) list the wake-ups (none: done),
    /// (c) create the gate again (refused: done; its holder lists after us), transfer
    /// the wake-ups to Redshift, take the lease if free (`may_take`) and drain; again.
    /// Near the deadline, the gate just created is left to expire over the wake-ups
    /// found (the next event after it, or the sweep, takes it over). The first error
    /// of a drain is returned (after the routine went on to its end); S3 failures are
    /// logged only: what they leave waits behind a gate or for the sweep.
    pub(crate) async fn leave_gate(
        &self,
        keys: &GateKeys,
        route: &Route,
        holder: &str,
        deadline: Instant,
        may_take: bool,
    ) -> Result<(), LoaderError> {
        let s3 = self.storage();
        let mut failed_transfers = 0;
        let mut drained = Ok(());
        for round in 1.. {
            if let Err(e) = retry(|| s3.delete(&keys.bucket, &keys.gate)).await {
                tracing::warn!(error = %e, gate = keys.gate,
                    "gate not deleted: it expires, and the next event or the sweep takes it over");
                return drained;
            }
            let listed = match retry(|| s3.list(&keys.bucket, &keys.wakeups)).await {
                Ok(listed) => listed,
                Err(e) => {
                    // No gate now, so nothing new queues on it; what is listed waits for
                    // the next gate holder's exit or the sweep (which lists the gates).
                    tracing::warn!(error = %e, gate = keys.gate, "S3 wake-ups not listed");
                    return drained;
                }
            };
            let listed: Vec<(String, String)> = listed
                .into_iter()
                .filter_map(|o| Some((keys.group_of_key(&o.key)?.to_string(), o.key.clone())))
                .collect();
            if listed.is_empty() {
                return drained;
            }
            match self.create_gate(keys, holder, deadline).await {
                Ok(true) => {}
                Ok(false) => return drained,
                Err(e) => {
                    tracing::warn!(error = %e, gate = keys.gate,
                        "gate not re-created; the S3 wake-ups wait for the next gate holder or the sweep");
                    return drained;
                }
            }
            if Instant::now() + EXIT_RESERVE >= deadline
                || failed_transfers >= 2
                || round > MAX_EXIT_ROUNDS
            {
                tracing::info!(
                    gate = keys.gate,
                    wakeups = listed.len(),
                    "S3 wake-ups left behind a gate that expires with this invocation"
                );
                return drained;
            }
            match self.transfer(keys, route, holder, listed, deadline).await {
                Ok(()) => {
                    if may_take {
                        if let Err(e) = self.drain_if_free(route, holder, deadline).await {
                            drained = drained.and(Err(e));
                        }
                    }
                }
                Err(e) => {
                    failed_transfers += 1;
                    tracing::warn!(error = %e, error_type = %e.error_type(), gate = keys.gate,
                        "transfer of S3 wake-ups failed");
                }
            }
        }
        drained
    }

    /// `If-None-Match: *` on the gate. A refusal after a failed attempt may be our own
    /// earlier write: read who holds it.
    async fn create_gate(
        &self,
        keys: &GateKeys,
        holder: &str,
        deadline: Instant,
    ) -> Result<bool, LoaderError> {
        let s3 = self.storage();
        let mut failed = false;
        for attempt in 1..=S3_ATTEMPTS {
            let doc = self.gate_doc(holder, deadline);
            match s3.put_if(&keys.bucket, &keys.gate, doc, None).await {
                Ok(true) => return Ok(true),
                Ok(false) if !failed => return Ok(false),
                Ok(false) => {
                    let read = retry(|| s3.get(&keys.bucket, &keys.gate)).await?;
                    return Ok(read.is_some_and(|(body, _)| {
                        GateDoc::parse(&body).is_some_and(|d| d.holder == holder)
                    }));
                }
                Err(e) if e.kind() == ErrorKind::Retryable && attempt < S3_ATTEMPTS => {
                    failed = true;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// One Redshift batch inserting a wake-up row per partition listed (queued by
    /// `holder`), then the listed objects of those partitions deleted: after the INSERT
    /// committed, never before.
    async fn transfer(
        &self,
        keys: &GateKeys,
        route: &Route,
        holder: &str,
        listed: Vec<(String, String)>,
        deadline: Instant,
    ) -> Result<(), LoaderError> {
        let s3 = self.storage();
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (group, key) in listed {
            groups.entry(group).or_default().push(key);
        }
        let (mut docs, mut done, mut bytes) = (Vec::new(), Vec::new(), 0);
        for (_, group_keys) in groups {
            if docs.len() >= MAX_TRANSFER_ROWS || bytes >= MAX_TRANSFER_BYTES {
                break;
            }
            let mut found = None;
            let mut unreadable = Vec::new();
            for key in &group_keys {
                // None: transferred and deleted by another gate holder since our listing.
                if let Some((body, _)) = retry(|| s3.get(&keys.bucket, key)).await? {
                    match WakeUpDoc::parse(&body) {
                        Some(doc) => {
                            found = Some(doc);
                            break;
                        }
                        None => unreadable.push(key.clone()),
                    }
                }
            }
            for key in unreadable {
                tracing::error!(key, "an S3 wake-up that is not one dropped");
                let _ = retry(|| s3.delete(&keys.bucket, &key)).await;
            }
            if let Some(doc) = found {
                bytes += doc.bucket.len()
                    + doc.partition_path.len()
                    + doc.s3_url.len()
                    + doc.etag.len()
                    + doc.route_prefix.len()
                    + holder.len()
                    + 64;
                docs.push(doc);
                done.extend(group_keys);
            }
        }
        if !docs.is_empty() {
            let ctx = Ctx::new(
                self.warehouse(),
                self.config(),
                &route.table,
                holder,
                deadline,
            );
            let wakes: Vec<WakeUp<'_>> = docs.iter().map(WakeUpDoc::as_wakeup).collect();
            let sqls = sql::leave_wakeups_batch(ctx.schema, &ctx.tables, holder, &wakes)?;
            self.warehouse()
                .run_batch(sqls, deadline.max(Instant::now() + lease::RELEASE_GRACE))
                .await
                .map_err(|e| lease::missing_tables(&ctx, e))?;
        }
        if let Err(e) = retry(|| s3.delete_many(&keys.bucket, &done)).await {
            // In Redshift already: a second transfer only lists the partition again.
            tracing::warn!(error = %e, gate = keys.gate, "transferred S3 wake-ups not deleted");
        }
        Ok(())
    }

    /// Takes the Redshift lease if it is free and drains what was transferred; a live
    /// holder (or a statement holding the lease) drains it otherwise. A failed take or
    /// drain is returned.
    async fn drain_if_free(
        &self,
        route: &Route,
        holder: &str,
        deadline: Instant,
    ) -> Result<(), LoaderError> {
        // A tenure of its own, as every take of the lease (`lease::tenure_token`).
        let tenure = self.tenure(holder);
        let ctx = Ctx::new(
            self.warehouse(),
            self.config(),
            &route.table,
            &tenure,
            deadline,
        );
        match lease::acquire_if_free(&ctx).await {
            Ok(Acquired::Held(_)) => {
                let drained = Ok(Outcome::UpToDate {
                    table: route.table.to_string(),
                    partition: PartitionValues::default(),
                });
                Box::pin(self.finish_holding(&ctx, route, drained))
                    .await
                    .map(|_| ())
            }
            Ok(Acquired::Queued { .. }) => Ok(()),
            // The take may have committed and been released again (a failed read after
            // it): the transferred wake-ups wait in Redshift, so the invocation fails and
            // Lambda's retry drains them (as a failed acquire without the gate).
            Err(e) => Err(e),
        }
    }

    /// The sweep's part (a crashed gate holder): when the table's gate is absent with
    /// wake-ups behind it, or expired, take it and run the exit routine. A live gate's
    /// holder lists at its own exit.
    pub(crate) async fn sweep_gate_of(
        &self,
        route: &Route,
        holder: &str,
        deadline: Instant,
    ) -> Result<(), LoaderError> {
        if !self.gate_on() {
            return Ok(());
        }
        let s3 = self.storage();
        let keys = self.gate_keys(&route.table);
        let read = match s3.get(&keys.bucket, &keys.gate).await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, gate = keys.gate, "gate unreadable; next sweep");
                return Ok(());
            }
        };
        let seen = gate::decide(
            read.as_ref().map(|(b, e)| (b.as_str(), e.as_str())),
            s3.now(),
        );
        let taken = match seen {
            Seen::Live { .. } => return Ok(()),
            Seen::Absent => match s3.list(&keys.bucket, &keys.wakeups).await {
                Ok(listed) if listed.is_empty() => return Ok(()),
                Ok(_) => self.create_gate(&keys, holder, deadline).await,
                Err(e) => Err(e),
            },
            Seen::Expired { etag } => {
                s3.put_if(
                    &keys.bucket,
                    &keys.gate,
                    self.gate_doc(holder, deadline),
                    Some(&etag),
                )
                .await
            }
        };
        match taken {
            Ok(true) => {
                tracing::info!(
                    gate = keys.gate,
                    "the sweep hands on the S3 wake-ups of a gate"
                );
                Box::pin(self.leave_gate(&keys, route, holder, deadline, true)).await
            }
            Ok(false) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, gate = keys.gate, "gate not taken; next sweep");
                Ok(())
            }
        }
    }
}

/// An S3 call tried up to [`S3_ATTEMPTS`] times while it fails retryably (no sleep: the
/// SDK backs off within each attempt).
async fn retry<T, F, Fut>(mut call: F) -> Result<T, LoaderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, LoaderError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if e.kind() == ErrorKind::Retryable && attempt < S3_ATTEMPTS => attempt += 1,
            other => return other,
        }
    }
}
