//! The flow of one event: parse → route → partition → lease → diff → manifest → load,
//! then the drain of wake-ups other invocations handed over. The other entry points
//! reuse [`Loader::load_partition`]: an SQS batch (`batch.rs`), the sweep (`sweep.rs`),
//! a backfill (`backfill.rs`); the operator's statements live in `admin.rs`.

use serde_json::Value;
use tokio::time::Instant;

use crate::error::{ErrorKind, LoaderError};
use crate::io::storage::{Storage, S3};
use crate::io::warehouse::LoadEnd;
use crate::io::warehouse::{DataApi, Warehouse};
use crate::lake::config::{Config, Mode, Route};
use crate::lake::csv_header;
use crate::lake::event::ObjectCreated;
use crate::lake::markers;
use crate::lake::partition::{self, Partition};
use crate::lake::route::{self, Routed};
use crate::lake::schema_match::{self, FileSchema, FooterCache, TableColumn};
use crate::protocol::lease::{self, Acquired, Claimed, Ctx, Drain, Held, RELEASE_GRACE};
use crate::protocol::plan::{self, ListedObject, Plan};
use crate::run::outcome::{Outcome, PartitionValues};
use crate::sql::{self, CopyTarget, FileFormat, Ident, LeaseTables, LedgerRow, TableName};
use crate::{lake::event, lake::manifest};

/// Size limits of one load batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Statements per BatchExecuteStatement (the Data API allows 40).
    pub max_statements: usize,
    /// Bytes per statement (Redshift allows about 100 KB; stay clear of it).
    pub max_statement_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_statements: 40,
            max_statement_bytes: 90_000,
        }
    }
}

pub struct Loader<W, S> {
    config: Config,
    warehouse: W,
    storage: S,
    limits: BatchLimits,
    /// Parquet schemas read from footers, kept for the container's life.
    footers: FooterCache,
    /// CSV header lines read, likewise ([`crate::lake::csv_header`]).
    headers: FooterCache<Vec<String>>,
    /// Tables whose lease a load statement of this invocation holds since the
    /// invocation left it running: `(holder, table, statement id)`. The invocation must
    /// not touch such a lease again (a take of its own lease rewrites the row, and the
    /// running statement's fence would fail on the conflict), so further partitions of
    /// the table (an SQS batch, a backfill) come back `running` at once. Only the
    /// current holder's entries are kept.
    left: std::sync::Mutex<Vec<(String, String, String)>>,
    /// Tenures started by this container ([`lease::tenure_token`]).
    tenures: std::sync::atomic::AtomicU64,
    /// Per-object events go through the table's S3 gate first (`run::gate`; on by
    /// default, off for tests and benches that measure the Redshift path alone).
    gate: crate::run::gate::GateMode,
}

impl Loader<DataApi, S3> {
    /// Builds the AWS clients from the standard `AWS_*` environment (endpoint overrides
    /// included).
    pub async fn connect(config: Config) -> Self {
        let sdk = crate::io::sdk::load_config().await;
        let mut s3 = aws_sdk_s3::config::Builder::from(&sdk);
        // A custom endpoint (moto, MinIO) needs path-style addressing; AWS does not.
        if std::env::var_os("AWS_ENDPOINT_URL_S3").is_some() {
            s3 = s3.force_path_style(true);
        }
        let warehouse = DataApi::new(
            aws_sdk_redshiftdata::Client::new(&sdk),
            config.redshift.clone(),
            config.database.clone(),
        );
        let storage = S3::new(aws_sdk_s3::Client::from_conf(s3.build()));
        Loader::new(config, warehouse, storage)
    }
}

impl<W: Warehouse, S: Storage> Loader<W, S> {
    pub fn new(config: Config, warehouse: W, storage: S) -> Self {
        Loader {
            config,
            warehouse,
            storage,
            limits: BatchLimits::default(),
            footers: FooterCache::default(),
            headers: FooterCache::default(),
            left: std::sync::Mutex::new(Vec::new()),
            tenures: std::sync::atomic::AtomicU64::new(0),
            gate: crate::run::gate::GateMode::On,
        }
    }

    /// A new lease token for one tenure of the invocation `holder`
    /// ([`lease::tenure_token`]): every take of a lease starts one.
    pub(crate) fn tenure(&self, holder: &str) -> String {
        let n = self
            .tenures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lease::tenure_token(lease::invocation_of(holder), n)
    }

    /// Turns the S3 gate in front of the Redshift lease on or off (`run::gate`).
    pub fn with_gate(mut self, on: bool) -> Self {
        self.gate = if on {
            crate::run::gate::GateMode::On
        } else {
            crate::run::gate::GateMode::Off
        };
        self
    }

    /// The simulation's broken variants of the gate ([`crate::run::gate::GateMode`]).
    #[doc(hidden)]
    pub fn with_gate_mode(mut self, mode: crate::run::gate::GateMode) -> Self {
        self.gate = mode;
        self
    }

    /// Whether per-object events go through the S3 gate.
    pub fn gate_on(&self) -> bool {
        self.gate != crate::run::gate::GateMode::Off
    }

    pub(crate) fn gate_mode(&self) -> crate::run::gate::GateMode {
        self.gate
    }

    /// Smaller batches than the Data API allows (tests use this to exercise chunking).
    pub fn with_limits(mut self, limits: BatchLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The S3 side (loaderctl doctor's probe object).
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The load batch's limits (a root marker's job packs partitions by them).
    pub(crate) fn limits(&self) -> BatchLimits {
        self.limits
    }

    /// The Redshift side (the sweep's lease steps).
    pub(crate) fn warehouse(&self) -> &W {
        &self.warehouse
    }

    /// Handles one event. `holder` identifies this invocation in the lease table (the
    /// Lambda request id); nothing is started after `deadline`.
    pub async fn handle(
        &self,
        event: &Value,
        holder: &str,
        deadline: Instant,
    ) -> Result<Outcome, LoaderError> {
        self.handle_with(event, holder, deadline, self.gate_on())
            .await
    }

    /// [`Loader::handle`] on the Redshift path only, as before the S3 gate: redrive and
    /// loaderctl, which report each event's own result.
    pub async fn handle_direct(
        &self,
        event: &Value,
        holder: &str,
        deadline: Instant,
    ) -> Result<Outcome, LoaderError> {
        self.handle_with(event, holder, deadline, false).await
    }

    async fn handle_with(
        &self,
        event: &Value,
        holder: &str,
        deadline: Instant,
        gate: bool,
    ) -> Result<Outcome, LoaderError> {
        if let Some(change) = crate::run::completion::parse(event) {
            return self.complete(&change, holder, deadline).await;
        }
        let object = event::parse(event)?;
        let object = self.settle_key(object).await?;
        // A route's ready marker is a trigger, not a file to skip.
        match markers::marker_of(&self.config, &object.bucket, &object.key) {
            Some((route, markers::MarkerAt::Root)) => {
                return self.load_job(route, &object, holder, deadline).await
            }
            Some((route, markers::MarkerAt::Partition)) => {
                let partition = partition::parse(route, &object.key)?;
                return self
                    .load_partition(
                        route,
                        &object.bucket,
                        &partition,
                        Some(&object),
                        holder,
                        deadline,
                    )
                    .await;
            }
            None => {}
        }
        match route::route(&self.config, &object.bucket, &object.key, object.size) {
            Routed::Skip(reason) => Ok(Outcome::Skipped {
                reason: reason.to_string(),
                bucket: object.bucket,
                key: object.key,
            }),
            Routed::Load(route) => {
                let partition = partition::parse(route, &object.key)?;
                if let Some(waiting) = self
                    .waits_for_marker(route, &object.bucket, &partition)
                    .await?
                {
                    return Ok(waiting);
                }
                if gate {
                    // Hook of issue 21 item 4: a burst's queued events cost S3 calls only.
                    return Box::pin(self.load_event_through_gate(
                        route,
                        &object.bucket,
                        &partition,
                        &object,
                        holder,
                        deadline,
                    ))
                    .await;
                }
                self.load_partition(
                    route,
                    &object.bucket,
                    &partition,
                    Some(&object),
                    holder,
                    deadline,
                )
                .await
            }
        }
    }

    /// Picks the reading of the event's key that names an object in S3 (see
    /// [`settle_key`]).
    pub async fn settle_key(&self, object: ObjectCreated) -> Result<ObjectCreated, LoaderError> {
        settle_key(&self.config.routes, &self.storage, object).await
    }

    /// Loads every pending file of one partition under the table's lease, then drains
    /// the wake-ups other invocations queued meanwhile. `object` is the object an event
    /// reported (`None` for a backfill or sweep: the whole partition): when another
    /// holder has the lease, it is handed to that holder and the outcome is `queued`.
    pub async fn load_partition(
        &self,
        route: &Route,
        bucket: &str,
        partition: &Partition,
        object: Option<&ObjectCreated>,
        holder: &str,
        deadline: Instant,
    ) -> Result<Outcome, LoaderError> {
        if let Some(statement_id) = self.left_running(holder, &route.table) {
            return Ok(Outcome::Running {
                table: route.table.to_string(),
                partition: partition_values(partition),
                statement_id,
            });
        }
        let tenure = self.tenure(holder);
        let holder = tenure.as_str();
        let ctx = Ctx::new(
            &self.warehouse,
            &self.config,
            &route.table,
            holder,
            deadline,
        );
        let wait_started = Instant::now();
        let acquired = match object {
            Some(o) => {
                lease::acquire_for_event(&ctx, &route.prefix, bucket, &partition.path, o).await
            }
            None => {
                lease::acquire_for_partition(&ctx, &route.prefix, bucket, &partition.path).await
            }
        };
        crate::run::metrics::add(|m| m.lease_wait += wait_started.elapsed());
        let held = match acquired? {
            Acquired::Held(held) => held,
            Acquired::Queued {
                holder: live_holder,
                ..
            } => {
                // A wake-up now waits in Redshift for a live holder, which marks the
                // watermark itself if its deadline cuts it short; this mark covers a
                // holder that crashes, at most once a minute per container, so a burst
                // of queued events is not a burst of S3 PUTs.
                self.mark_dirty_at_most_every_minute("a wake-up was queued", holder)
                    .await;
                return Ok(Outcome::Queued {
                    table: route.table.to_string(),
                    partition: partition_values(partition),
                    holder: live_holder,
                });
            }
        };
        // Boxed: the load's future is large (debug builds overflowed a test thread's
        // 2 MiB stack through the sweep); on the heap it costs one allocation a load.
        let result = match Box::pin(
            self.load_holding_lease(route, bucket, partition, holder, held, deadline),
        )
        .await
        {
            Ok(Loaded::Committed(o) | Loaded::Nothing(o)) => Ok(o),
            Ok(Loaded::Running(o)) => {
                // Left running: work in Redshift the next sweep must look at.
                self.mark_dirty("a load statement was left running", holder)
                    .await;
                return self.leave(&ctx, route, bucket, partition, o).await;
            }
            Err(e) => Err(e),
        };
        let result = self.finish_holding(&ctx, route, result).await;
        if !matches!(
            result,
            Ok(Outcome::Loaded { .. }
                | Outcome::LoadedJob { .. }
                | Outcome::UpToDate { .. }
                | Outcome::Skipped { .. }
                | Outcome::Waiting { .. })
        ) {
            // A failed load (or any outcome that leaves work running) is work the next
            // sweep must see even if S3 shows nothing new. A partition `waiting` for its
            // marker is not: the marker is a new object the next listing shows.
            self.mark_dirty("a load failed or left work behind", holder)
                .await;
        }
        result
    }

    /// Ends the invocation's part in a table whose load statement it leaves running
    /// (issue 21.1): a wake-up for its own partition (so that a failure of the statement
    /// loses nothing: the next holder lists the partition again), no release, no drain.
    async fn leave(
        &self,
        ctx: &Ctx<'_, W>,
        route: &Route,
        bucket: &str,
        partition: &Partition,
        outcome: Outcome,
    ) -> Result<Outcome, LoaderError> {
        if let Outcome::Running { statement_id, .. } = &outcome {
            self.note_left(ctx.holder, &route.table, statement_id);
        }
        let wake = sql::WakeUp {
            bucket,
            partition_path: &partition.path,
            s3_url: "",
            etag: "",
            route_prefix: &route.prefix,
        };
        // The statement runs on whatever happens here: if this wake-up is not written,
        // the invocation fails and Lambda's retry (same request) queues its own.
        let grace = ctx.deadline.max(Instant::now() + RELEASE_GRACE);
        lease::leave_wakeup(ctx, &wake, grace).await?;
        Ok(outcome)
    }

    /// Keyed by the invocation, not the tenure: the invocation's later tenures of the
    /// table must see it.
    fn note_left(&self, holder: &str, table: &TableName, statement_id: &str) {
        let holder = lease::invocation_of(holder);
        let mut left = self.left.lock().unwrap_or_else(|e| e.into_inner());
        left.retain(|(h, _, _)| h == holder);
        left.push((
            holder.to_string(),
            table.to_string(),
            statement_id.to_string(),
        ));
    }

    pub(crate) fn left_running(&self, holder: &str, table: &TableName) -> Option<String> {
        let holder = lease::invocation_of(holder);
        let left = self.left.lock().unwrap_or_else(|e| e.into_inner());
        let table = table.to_string();
        left.iter()
            .find(|(h, t, _)| h == holder && *t == table)
            .map(|(_, _, id)| id.clone())
    }

    /// After the holder's own partition: drain, or leave the lease as the failure
    /// requires. A timeout leaves it to its TTL and fence (the batch may still run); a
    /// lost lease is not ours to touch.
    pub(crate) async fn finish_holding(
        &self,
        ctx: &Ctx<'_, W>,
        route: &Route,
        result: Result<Outcome, LoaderError>,
    ) -> Result<Outcome, LoaderError> {
        if matches!(
            result,
            Err(LoaderError::Timeout { .. } | LoaderError::LeaseLost { .. })
                | Ok(Outcome::Running { .. })
        ) {
            return result;
        }
        if let Err(e) = Box::pin(self.drain(ctx, route)).await {
            tracing::warn!(table = %route.table, error = %e,
                "draining wake-ups failed; the next holder, a retry or the sweep drains them");
            if !matches!(
                e,
                LoaderError::Timeout { .. } | LoaderError::LeaseLost { .. }
            ) {
                let grace = ctx.deadline.max(Instant::now() + RELEASE_GRACE);
                if let Err(release_error) = lease::release(ctx, grace).await {
                    tracing::warn!(table = %route.table, error = %release_error,
                        "explicit release failed; the lease expires by its TTL");
                }
            }
            if result.is_ok() {
                return Err(e);
            }
        }
        result
    }

    /// Drains the table's wake-ups: each step releases the lease when none is left, or
    /// claims them all; every claimed partition is listed again and loaded under the
    /// route its wake-up names (`route` is the holder's: a table may have several).
    /// Stops (and releases) when the deadline nears ([`Ctx::reserve`]). A transient
    /// failure of a claimed partition ends the drain with that error before the next
    /// step, so the claim's wake-ups are kept for the retry or the next holder.
    async fn drain(&self, ctx: &Ctx<'_, W>, route: &Route) -> Result<(), LoaderError> {
        let mut done = String::new();
        for round in 1.. {
            if Instant::now() + ctx.reserve >= ctx.deadline {
                tracing::info!(table = %route.table,
                    "deadline near: releasing the lease with wake-ups left for the next holder");
                self.mark_dirty("a deadline-forced release left wake-ups", ctx.holder)
                    .await;
                return lease::release(ctx, Instant::now() + RELEASE_GRACE).await;
            }
            let claim = format!("{}#{round}", ctx.holder);
            let partitions = match lease::drain_step(ctx, &done, &claim).await? {
                Drain::Released => return Ok(()),
                Drain::Lost { holder } => {
                    tracing::warn!(table = %route.table, holder = ?holder,
                        "lease lost while draining; its holder drains");
                    return Ok(());
                }
                Drain::Claimed(partitions) => partitions,
            };
            for claimed in &partitions {
                if Instant::now() + ctx.reserve >= ctx.deadline {
                    break;
                }
                if let Some(statement_id) = Box::pin(self.load_claimed(ctx, route, claimed)).await?
                {
                    // Its wake-up stays claimed, never deleted: the next holder claims it
                    // again and finds the partition loaded, or loads it.
                    tracing::info!(table = %route.table, partition = claimed.partition_path,
                        statement_id, "a claimed partition's load left running; it holds the lease");
                    self.note_left(ctx.holder, &route.table, &statement_id);
                    return Ok(());
                }
            }
            done = claim;
        }
        Ok(())
    }

    /// Loads one partition a wake-up named, under the wake-up's route. A permanent
    /// failure of that partition is logged and the drain goes on (its wake-up is
    /// forgotten; its files stay unloaded: the next event for it, a backfill or the
    /// sweep reports the error again); a transient one, losing the lease or the deadline
    /// ends the drain with the error, and the wake-up is kept.
    async fn load_claimed(
        &self,
        ctx: &Ctx<'_, W>,
        holder_route: &Route,
        claimed: &Claimed,
    ) -> Result<Option<String>, LoaderError> {
        let (bucket, path) = (claimed.bucket.as_str(), claimed.partition_path.as_str());
        let Some(route) = self.claimed_route(holder_route, claimed) else {
            tracing::error!(table = %holder_route.table, partition = path,
                route_prefix = ?claimed.route_prefix,
                "wake-up for a route that is no longer configured dropped");
            return Ok(None);
        };
        if crate::run::job::is_job_wakeup(route, path) {
            // A root marker queued while another invocation held the lease.
            let result = self.load_job_holding_lease(ctx, route, bucket).await;
            return self.after_claimed(ctx, route, path, result.map(Some)).await;
        }
        let partition = match partition::parse(route, &format!("{}{path}_", route.prefix)) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(table = %route.table, partition = path, error = %e,
                    "wake-up for an unreadable partition dropped");
                return Ok(None);
            }
        };
        let held = lease::read_partition(ctx, path).await?;
        let result = Box::pin(self.load_holding_lease(
            route,
            bucket,
            &partition,
            ctx.holder,
            held,
            ctx.deadline,
        ))
        .await
        .map(|loaded| match loaded {
            Loaded::Committed(outcome) | Loaded::Running(outcome) => Some(outcome),
            // Nothing to load (up to date, or waiting for its marker, whose own
            // event loads it): the wake-up is done.
            Loaded::Nothing(_) => None,
        });
        self.after_claimed(ctx, route, path, result).await
    }

    /// What a claimed partition's result means for the drain: see [`Self::load_claimed`].
    async fn after_claimed(
        &self,
        ctx: &Ctx<'_, W>,
        route: &Route,
        path: &str,
        result: Result<Option<Outcome>, LoaderError>,
    ) -> Result<Option<String>, LoaderError> {
        match result {
            // Left running (issue 21.1): the drain notes it and leaves the table.
            Ok(Some(Outcome::Running { statement_id, .. })) => Ok(Some(statement_id)),
            Ok(Some(outcome)) => {
                outcome.log();
                Ok(None)
            }
            Ok(None) => Ok(None),
            Err(e @ (LoaderError::Timeout { .. } | LoaderError::LeaseLost { .. })) => Err(e),
            Err(e) if e.kind() == crate::error::ErrorKind::Retryable => Err(e),
            Err(e) => {
                tracing::error!(table = %route.table, partition = path, error = %e,
                    error_type = %e.error_type(), "a handed-off partition failed to load");
                self.mark_dirty("a handed-off partition failed to load", ctx.holder)
                    .await;
                Ok(None)
            }
        }
    }

    /// The route a claimed wake-up came under: the configured route of the holder's
    /// table with its prefix (and bucket), or the holder's own for a wake-up of an
    /// earlier version, which recorded none.
    fn claimed_route<'r>(&'r self, holder_route: &'r Route, c: &Claimed) -> Option<&'r Route> {
        let Some(prefix) = &c.route_prefix else {
            return Some(holder_route);
        };
        self.config.routes.iter().find(|r| {
            r.table == holder_route.table
                && &r.prefix == prefix
                && r.bucket.as_deref().is_none_or(|b| b == c.bucket)
        })
    }

    async fn load_holding_lease(
        &self,
        route: &Route,
        bucket: &str,
        partition: &Partition,
        holder: &str,
        lease: Held,
        deadline: Instant,
    ) -> Result<Loaded, LoaderError> {
        match self
            .prepare(route, bucket, partition, holder, lease, deadline)
            .await?
        {
            Planned::Nothing(outcome) => Ok(Loaded::Nothing(outcome)),
            Planned::Load(prepared, basis) => {
                match self
                    .commit(route, bucket, holder, &prepared, deadline)
                    .await
                {
                    Ok(loaded) => Ok(loaded),
                    Err(e) => {
                        let (partition, files) = (&prepared.partition, prepared.files.clone());
                        self.isolate(route, bucket, partition, holder, &basis, files, e, deadline)
                            .await
                    }
                }
            }
            Planned::Unreadable {
                failure,
                partition,
                files,
                basis,
            } => {
                self.isolate(
                    route, bucket, &partition, holder, &basis, files, failure, deadline,
                )
                .await
            }
        }
    }

    /// One bad file is not a hostage: after `failure`, finds the bad file(s), loads the
    /// rest and quarantines them (append mode; see `run/quarantine.rs`), or returns the
    /// failure.
    #[allow(clippy::too_many_arguments)]
    async fn isolate(
        &self,
        route: &Route,
        bucket: &str,
        partition: &Partition,
        holder: &str,
        basis: &Basis,
        files: Vec<ListedObject>,
        failure: LoaderError,
        deadline: Instant,
    ) -> Result<Loaded, LoaderError> {
        let (statement_id, loaded, quarantined) = self
            .isolate_bad_files(
                route,
                bucket,
                partition,
                holder,
                &basis.lease,
                &basis.target,
                files,
                failure,
                deadline,
            )
            .await?;
        Ok(Loaded::Committed(Outcome::Loaded {
            table: route.table.to_string(),
            partition: partition_values(partition),
            files: loaded,
            statement_id,
            quarantined,
        }))
    }

    /// Plans one partition's load under the lease: lists it, keeps the files its ready
    /// marker covers ([`markers`]), diffs them against the ledger, reads the layouts.
    pub(crate) async fn prepare(
        &self,
        route: &Route,
        bucket: &str,
        partition: &Partition,
        holder: &str,
        lease: Held,
        deadline: Instant,
    ) -> Result<Planned, LoaderError> {
        let table = &route.table;
        if lease.columns.is_empty() {
            return Err(LoaderError::TableMissing(table.to_string()));
        }
        // Rendered for the table's column types, not the route's (issue 18).
        let literals =
            sql::literals_for_table(&partition.literals, &lease.columns, &lease.column_types)
                .map_err(|reason| LoaderError::TableMismatch {
                    table: table.to_string(),
                    reason,
                })?;
        let partition = Partition {
            literals,
            ..partition.clone()
        };
        let target = copy_target(route, &partition, &lease.columns)?;
        if route.mode == Mode::Replace {
            if let Some(reason) =
                sql::blank_in_char_column(&partition.literals, &lease.char_columns)
            {
                return Err(LoaderError::TableMismatch {
                    table: table.to_string(),
                    reason,
                });
            }
        }
        // Listed only now, under the lease: a file written before the lease was taken
        // is seen by this holder or a later one, never missed.
        let prefix = partition.list_prefix(route);
        let (marked, listed, waiting) = self.list_ready(route, bucket, &prefix).await?;
        // A quarantined file stays out while its ETag is the one Redshift refused: a
        // rewrite (new ETag) is a new file, and `loaderctl quarantine release` forgets it.
        let listed = if route.mode == Mode::Append {
            crate::protocol::isolate::without_quarantined(bucket, listed, &lease.quarantined)
        } else {
            listed
        };
        let waiting_outcome = |waiting: &[ListedObject]| {
            Planned::Nothing(waiting_for_marker(route, bucket, &partition, waiting))
        };
        if listed.is_empty() {
            if !waiting.is_empty() {
                return Ok(waiting_outcome(&waiting));
            }
            if route.ready_marker.is_some() && marked {
                // A marker in a partition without data files: nothing to load.
                return Ok(Planned::Nothing(Outcome::UpToDate {
                    table: table.to_string(),
                    partition: partition_values(&partition),
                }));
            }
            return Err(LoaderError::NothingListed {
                url: plan::s3_url(bucket, &prefix),
            });
        }
        // A quarantined file stays out while its ETag is the one Redshift refused: a
        // rewrite (new ETag) is a new file, and `loaderctl quarantine release` forgets it.
        let listed = if route.mode == Mode::Append {
            crate::protocol::isolate::without_quarantined(bucket, listed, &lease.quarantined)
        } else {
            listed
        };
        let files = match plan::plan(route.mode, bucket, listed, &lease.ledger)? {
            Plan::UpToDate if !waiting.is_empty() => return Ok(waiting_outcome(&waiting)),
            Plan::UpToDate => {
                return Ok(Planned::Nothing(Outcome::UpToDate {
                    table: table.to_string(),
                    partition: partition_values(&partition),
                }))
            }
            Plan::Load(files) => files,
        };
        let lease = if route.add_new_columns && reads_footers(route) {
            let ctx = Ctx::new(&self.warehouse, &self.config, table, holder, deadline);
            self.add_new_columns(&ctx, route, bucket, &partition, lease, &files)
                .await?
        } else {
            lease
        };
        match self
            .arrange(route, bucket, &partition, &lease, &target, files.clone())
            .await
        {
            Ok(prepared) => Ok(Planned::Load(prepared, Box::new(Basis { lease, target }))),
            // A file whose footer cannot be read: the search for bad files takes it
            // out (see `load_holding_lease`), as it would a file COPY refused.
            Err(e @ LoaderError::UnreadableFile { .. }) => Ok(Planned::Unreadable {
                failure: e,
                partition: Box::new(partition),
                files,
                basis: Box::new(Basis { lease, target }),
            }),
            Err(e) => Err(e),
        }
    }

    /// One layout per distinct file column order (Parquet footers, CSV headers), the
    /// files reordered so that each layout's files are contiguous (the ledger rows
    /// follow the same order).
    async fn arrange(
        &self,
        route: &Route,
        bucket: &str,
        partition: &Partition,
        lease: &Held,
        target: &CopyTarget,
        files: Vec<ListedObject>,
    ) -> Result<Prepared, LoaderError> {
        let (layouts, files) = if maps_by_name(route) {
            self.layouts(route, bucket, partition, lease, files).await?
        } else {
            let n = files.len();
            (vec![(target.clone(), n)], files)
        };
        let targets: Vec<CopyTarget> = layouts.iter().map(|(t, _)| t.clone()).collect();
        let layout_of: Vec<usize> = layouts
            .iter()
            .enumerate()
            .flat_map(|(i, (_, n))| std::iter::repeat_n(i, *n))
            .collect();
        Ok(Prepared {
            partition: partition.clone(),
            files,
            targets,
            layout_of,
        })
    }

    /// Loads `files` of the partition (a part of a prepared load: the search for a bad
    /// file, `run/quarantine.rs`) in as many load batches as they need, each committing
    /// with its ledger rows and the fence last; the statement id of the last batch.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn load_files(
        &self,
        route: &Route,
        bucket: &str,
        partition: &Partition,
        holder: &str,
        lease: &Held,
        target: &CopyTarget,
        files: &[ListedObject],
        deadline: Instant,
    ) -> Result<String, LoaderError> {
        let prepared = self
            .arrange(route, bucket, partition, lease, target, files.to_vec())
            .await?;
        committed(
            self.commit_batches(route, bucket, holder, &prepared, deadline)
                .await?,
        )
    }

    /// Lists a partition's data files: whether it holds its ready marker, the files
    /// ready to load, those waiting for a marker. Without its own marker, a partition of
    /// a route with one loads only the files the root marker covers; the others wait for
    /// a marker's event or the sweep. (`loaderctl backfill --dry-run` shows the same.)
    pub async fn list_ready(
        &self,
        route: &Route,
        bucket: &str,
        prefix: &str,
    ) -> Result<(bool, Vec<ListedObject>, Vec<ListedObject>), LoaderError> {
        let all = self.storage.list(bucket, prefix).await?;
        let marked = markers::partition_marked(route, prefix, &all);
        let listed: Vec<ListedObject> = all
            .into_iter()
            .filter(|o| {
                let directly_inside = o
                    .key
                    .strip_prefix(prefix)
                    .is_some_and(|name| !name.contains('/'));
                directly_inside && markers::is_data_file(route, &o.key, o.size)
            })
            .collect();
        if marked {
            return Ok((true, listed, Vec::new()));
        }
        let root = self.root_marker_time(route, bucket).await?;
        let (ready, waiting) = markers::split_ready(listed, root);
        Ok((false, ready, waiting))
    }

    /// A data file's event on a route with a ready marker, decided from S3 alone before
    /// the lease: `waiting` when no marker covers any file of the partition (no Data API
    /// call; the marker's event, or the sweep once the marker exists, loads them). A
    /// marker written just after this listing has an event of its own that loads the
    /// partition under the lease, so deciding here loses nothing that deciding under the
    /// lease would keep.
    async fn waits_for_marker(
        &self,
        route: &Route,
        bucket: &str,
        partition: &Partition,
    ) -> Result<Option<Outcome>, LoaderError> {
        if route.ready_marker.is_none() {
            return Ok(None);
        }
        let (_, ready, waiting) = self
            .list_ready(route, bucket, &partition.list_prefix(route))
            .await?;
        Ok((ready.is_empty() && !waiting.is_empty())
            .then(|| waiting_for_marker(route, bucket, partition, &waiting)))
    }

    /// The root marker's `LastModified`, if it exists (one listing of its exact key).
    pub(crate) async fn root_marker_time(
        &self,
        route: &Route,
        bucket: &str,
    ) -> Result<Option<std::time::SystemTime>, LoaderError> {
        let Some(key) = markers::root_marker_key(route) else {
            return Ok(None);
        };
        if route.partition_columns.is_empty() {
            // The root is the only partition: its marker is the partition's own.
            return Ok(None);
        }
        Ok(self
            .storage
            .list(bucket, &key)
            .await?
            .into_iter()
            .find(|o| o.key == key)
            .and_then(|o| o.last_modified))
    }

    /// The ledger INSERTs of a prepared load under `load_id`, each with its file count.
    pub(crate) fn ledger_inserts_of(
        &self,
        route: &Route,
        bucket: &str,
        holder: &str,
        prepared: &Prepared,
        load_id: &str,
    ) -> Result<Vec<(String, usize)>, LoaderError> {
        let tables = LeaseTables::for_target(&route.table);
        let tuples = prepared
            .files
            .iter()
            .map(|f| {
                let row = LedgerRow {
                    s3_url: plan::s3_url(bucket, &f.key),
                    etag: f.etag.clone(),
                    size_bytes: f.size,
                };
                sql::ledger_tuple(&prepared.partition.path, holder, load_id, &row)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(sql::ledger_inserts(
            &sql::table_ledger_insert_head(&self.config.loader_schema, &tables),
            &tuples,
            self.limits.max_statement_bytes,
        ))
    }

    /// Commits a prepared load: one load batch, or several when its ledger INSERTs do
    /// not fit one (append mode only).
    pub(crate) async fn commit(
        &self,
        route: &Route,
        bucket: &str,
        holder: &str,
        prepared: &Prepared,
        deadline: Instant,
    ) -> Result<Loaded, LoaderError> {
        let partition = partition_values(&prepared.partition);
        Ok(
            match self
                .commit_batches(route, bucket, holder, prepared, deadline)
                .await?
            {
                LoadEnd::Committed(statement_id) => Loaded::Committed(Outcome::Loaded {
                    table: route.table.to_string(),
                    partition,
                    files: prepared.files.len(),
                    statement_id,
                    quarantined: Vec::new(),
                }),
                LoadEnd::Running(statement_id) => Loaded::Running(Outcome::Running {
                    table: route.table.to_string(),
                    partition,
                    statement_id,
                }),
            },
        )
    }

    /// [`Self::commit`]'s load batches; the statement id of the last.
    async fn commit_batches(
        &self,
        route: &Route,
        bucket: &str,
        holder: &str,
        prepared: &Prepared,
        deadline: Instant,
    ) -> Result<LoadEnd, LoaderError> {
        let table = &route.table;
        let (files, targets) = (&prepared.files, &prepared.targets);
        let load_id = uuid::Uuid::new_v4().to_string();
        let inserts = self.ledger_inserts_of(route, bucket, holder, prepared, &load_id)?;
        let replace = route.mode == Mode::Replace;
        let room = self
            .limits
            .max_statements
            .saturating_sub(sql::fixed_statements(targets, replace));
        // One layout keeps the old rule (one ledger INSERT per batch at least); more
        // layouts than a batch can COPY are refused rather than split across transactions.
        if room == 0 && targets.len() > 1 {
            return Err(LoaderError::TableMismatch {
                table: table.to_string(),
                reason: format!(
                    "the partition's files have {} different column layouts, more than one load \
                     batch can COPY; rewrite them with one layout",
                    targets.len()
                ),
            });
        }
        let batches = plan::batches(inserts, room);
        if replace && batches.len() > 1 {
            return Err(LoaderError::ReplaceTooLarge {
                files: files.len(),
                batches: batches.len(),
            });
        }
        let mut offset = 0;
        let mut manifests = 0;
        let mut statement_id = String::new();
        for (n, (inserts, count)) in batches.iter().enumerate() {
            let range = offset..offset + count;
            offset += count;
            let sqls = self
                .partition_statements(
                    route,
                    bucket,
                    holder,
                    prepared,
                    range.clone(),
                    inserts,
                    &load_id,
                    n,
                    &mut manifests,
                )
                .await?;
            match self
                .run_load_batch(table, holder, sqls, &files[range], deadline)
                .await?
            {
                LoadEnd::Committed(id) => statement_id = id,
                // Later chunks are not submitted: the running batch holds the lease.
                running @ LoadEnd::Running(_) => return Ok(running),
            }
        }
        Ok(LoadEnd::Committed(statement_id))
    }

    /// The statements of one partition's part of a load batch (its files `range`), the
    /// fence last; writes their manifests.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn partition_statements(
        &self,
        route: &Route,
        bucket: &str,
        holder: &str,
        prepared: &Prepared,
        range: std::ops::Range<usize>,
        inserts: &[String],
        load_id: &str,
        stage_suffix: usize,
        manifests: &mut usize,
    ) -> Result<Vec<String>, LoaderError> {
        let table = &route.table;
        let partition = &prepared.partition;
        let chunk = &prepared.files[range.clone()];
        let chunk_layouts = &prepared.layout_of[range];
        // One manifest per layout present in the chunk (contiguous, see above).
        let mut parts: Vec<(usize, String)> = Vec::new();
        let mut start = 0;
        while start < chunk.len() {
            let layout = chunk_layouts[start];
            let end = start
                + chunk_layouts[start..]
                    .iter()
                    .take_while(|l| **l == layout)
                    .count();
            let manifest_key = manifest::manifest_key(
                &self.config.manifest,
                table,
                &partition.path,
                load_id,
                *manifests,
            );
            *manifests += 1;
            self.storage
                .put(
                    &self.config.manifest.bucket,
                    &manifest_key,
                    manifest::manifest_json(bucket, &chunk[start..end]),
                )
                .await?;
            parts.push((
                layout,
                plan::s3_url(&self.config.manifest.bucket, &manifest_key),
            ));
            start = end;
        }
        let copies: Vec<sql::CopyStep<'_>> = parts
            .iter()
            .map(|(layout, url)| sql::CopyStep {
                manifest_url: url,
                target: &prepared.targets[*layout],
            })
            .collect();
        let replace = route.mode == Mode::Replace;
        sql::load_batch(&sql::LoadBatch {
            schema: &self.config.loader_schema,
            tables: &LeaseTables::for_target(table),
            table,
            partition_path: &partition.path,
            holder,
            iam_role: &self.config.copy_iam_role,
            format: route.format,
            copy_options: &route.copy_options,
            copies: &copies,
            replace: replace.then_some(partition.literals.as_slice()),
            ledger_inserts: inserts,
            load_id,
            ttl_seconds: self.config.lease_ttl.as_secs(),
            stage_suffix,
            statupdate: route.statupdate,
        })
    }

    /// Runs one load batch (one transaction) and counts what it loaded.
    pub(crate) async fn run_load_batch(
        &self,
        table: &TableName,
        holder: &str,
        sqls: Vec<String>,
        chunk: &[ListedObject],
        deadline: Instant,
    ) -> Result<LoadEnd, LoaderError> {
        let copy_started = Instant::now();
        // Left running at `leave_at` (issue 21.1): the leave step ([`Loader::leave`])
        // still needs one short batch before the deadline. Named for its table and
        // holder, so that an acquirer finds it (ListStatements) and the completion
        // event names its lease.
        let leave_at = deadline
            .checked_sub(lease::RELEASE_GRACE)
            .unwrap_or(deadline)
            .max(Instant::now());
        let name = lease::statement_name(&LeaseTables::for_target(table), holder);
        let batch = self.warehouse.run_load_batch(sqls, name, leave_at).await;
        crate::run::metrics::add(|m| m.copy_time += copy_started.elapsed());
        let end = batch.map_err(|e| load_error(table, e))?;
        if let LoadEnd::Committed(_) = end {
            let committed = std::time::SystemTime::now();
            crate::run::metrics::add(|m| {
                m.files += chunk.len() as u64;
                m.bytes += chunk.iter().map(|f| f.size.max(0) as u64).sum::<u64>();
                m.committed_at = Some(committed);
                m.freshness_lags.extend(chunk.iter().filter_map(|f| {
                    crate::run::metrics::freshness_lag(f.last_modified, committed)
                }));
            });
        }
        Ok(end)
    }
}

impl<W: Warehouse, S: Storage> Loader<W, S> {
    /// The files' column layouts read from their Parquet footers or CSV header lines:
    /// each distinct column order with its COPY target and its number of files, the
    /// files regrouped to match. Refuses, before any COPY, a file Redshift would load
    /// wrong or reject ([`schema_match::file_columns`], [`csv_header::file_columns`]).
    async fn layouts(
        &self,
        route: &Route,
        bucket: &str,
        partition: &Partition,
        lease: &Held,
        files: Vec<ListedObject>,
    ) -> Result<(Vec<(CopyTarget, usize)>, Vec<ListedObject>), LoaderError> {
        let mismatch = |reason: String| LoaderError::TableMismatch {
            table: route.table.to_string(),
            reason,
        };
        let table: Vec<TableColumn<'_>> = lease
            .columns
            .iter()
            .zip(
                lease
                    .column_types
                    .iter()
                    .map(String::as_str)
                    .chain(std::iter::repeat("")),
            )
            .map(|(name, data_type)| TableColumn { name, data_type })
            .collect();
        let mut orders: Vec<Vec<String>> = Vec::new();
        let mut grouped: Vec<Vec<ListedObject>> = Vec::new();
        for f in files {
            let url = plan::s3_url(bucket, &f.key);
            let cols = if let FileFormat::Csv { .. } = route.format {
                let names = self.csv_header(route, bucket, &f).await?;
                csv_header::file_columns(&url, &names, &lease.columns).map_err(mismatch)?
            } else {
                let schema = self.file_schema(route, bucket, &f).await?;
                schema_match::file_columns(&url, &schema, &table).map_err(mismatch)?
            };
            // A table column the file lacks loads its DEFAULT or NULL (partition
            // columns from the path); NOT NULL without a DEFAULT would fail the INSERT.
            if let Some(c) = lease.required_columns.iter().find(|c| {
                !cols.contains(c) && !partition.literals.iter().any(|v| v.column.as_str() == *c)
            }) {
                return Err(mismatch(format!(
                    "file {url} lacks column {c}, which is NOT NULL without a DEFAULT: give it \
                     a DEFAULT (or make it nullable), or have the writer write it"
                )));
            }
            match orders.iter().position(|o| *o == cols) {
                Some(i) => grouped[i].push(f),
                None => {
                    orders.push(cols);
                    grouped.push(vec![f]);
                }
            }
        }
        let mut layouts = Vec::with_capacity(orders.len());
        for (cols, group) in orders.iter().zip(&grouped) {
            let idents = cols
                .iter()
                .map(|c| Ident::parse(c).map_err(|e| mismatch(format!("column {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            let target = copy_target_with(route, partition, &lease.columns, Some(idents))?;
            layouts.push((target, group.len()));
        }
        Ok((layouts, grouped.into_iter().flatten().collect()))
    }

    /// One file's schema: from the cache (same URL and ETag), else from a ranged GET of
    /// its end (a second one when the footer is longer than the first read).
    pub(crate) async fn file_schema(
        &self,
        route: &Route,
        bucket: &str,
        f: &ListedObject,
    ) -> Result<std::sync::Arc<FileSchema>, LoaderError> {
        let url = plan::s3_url(bucket, &f.key);
        if let Some(s) = self.footers.get(&url, &f.etag) {
            return Ok(s);
        }
        let size = u64::try_from(f.size).unwrap_or(0);
        let unreadable = |reason: String| LoaderError::UnreadableFile {
            table: route.table.to_string(),
            url: url.clone(),
            reason,
        };
        let mut len = schema_match::FIRST_TAIL_BYTES.min(size);
        for _ in 0..2 {
            let tail = self.storage.tail(bucket, &f.key, &f.etag, len).await?;
            match schema_match::footer(&tail).map_err(unreadable)? {
                schema_match::Footer::Schema(s) => {
                    let s = std::sync::Arc::new(s);
                    self.footers.put(&url, &f.etag, s.clone());
                    return Ok(s);
                }
                schema_match::Footer::NeedTail(n) if n <= size && n > len => len = n,
                schema_match::Footer::NeedTail(n) => {
                    return Err(unreadable(format!(
                        "its footer claims {n} bytes, the file has {size}"
                    )))
                }
            }
        }
        Err(unreadable("its footer could not be read".into()))
    }

    /// One CSV file's header names: from the cache (same URL and ETag), else from a
    /// ranged GET of its first bytes.
    async fn csv_header(
        &self,
        route: &Route,
        bucket: &str,
        f: &ListedObject,
    ) -> Result<std::sync::Arc<Vec<String>>, LoaderError> {
        let url = plan::s3_url(bucket, &f.key);
        if let Some(h) = self.headers.get(&url, &f.etag) {
            return Ok(h);
        }
        let size = u64::try_from(f.size).unwrap_or(0);
        let len = csv_header::FIRST_HEAD_BYTES.min(size);
        let head = self.storage.head(bucket, &f.key, &f.etag, len).await?;
        let delimiter = route
            .copy_options
            .iter()
            .find_map(|o| match o {
                crate::lake::copy_options::CopyOption::Delimiter(c) => Some(*c),
                _ => None,
            })
            .unwrap_or(',');
        let names = csv_header::header(&head, len == size, delimiter).map_err(|reason| {
            LoaderError::TableMismatch {
                table: route.table.to_string(),
                reason: format!("file {url} has no CSV header the loader can read: {reason}"),
            }
        })?;
        let names = std::sync::Arc::new(names);
        self.headers.put(&url, &f.etag, names.clone());
        Ok(names)
    }

    /// Footers read and kept (tests check that a second load reads none).
    pub fn cached_footers(&self) -> usize {
        self.footers.len()
    }
}

/// Whether the loader maps Parquet columns by name from the files' footers: for
/// Parquet routes that do not fix `file_columns` themselves.
fn reads_footers(route: &Route) -> bool {
    route.format == FileFormat::Parquet && route.file_columns.is_none()
}

/// Whether the loader maps each file's columns by name: Parquet from footers, CSV with
/// `header = true` from the header line; not when the route fixes `file_columns` (the
/// loader then trusts it and reads nothing).
fn maps_by_name(route: &Route) -> bool {
    reads_footers(route)
        || (route.format == (FileFormat::Csv { header: true }) && route.file_columns.is_none())
}

/// Picks the reading of an event's key that names an object in S3.
///
/// S3's classic notifications form-encode keys; whether EventBridge does is not
/// documented. When the decoded and the raw reading differ (`C++`, `x%3Ay`, `50%25`)
/// and a route claims either, S3 decides: the decoded reading if that object exists,
/// else the raw one if it exists, else the decoded one (the object may be gone; the
/// partition listing decides what loads). Keys no route claims are not looked up (the
/// function may list only the watched prefixes).
pub async fn settle_key(
    routes: &[Route],
    storage: &impl Storage,
    object: ObjectCreated,
) -> Result<ObjectCreated, LoaderError> {
    if object.key == object.raw_key {
        return Ok(object);
    }
    let claimed = |key: &str| routes.iter().any(|r| r.claims(&object.bucket, key));
    if !claimed(&object.key) && !claimed(&object.raw_key) {
        return Ok(object);
    }
    let reading = if storage.exists(&object.bucket, &object.key).await? {
        "decoded"
    } else if storage.exists(&object.bucket, &object.raw_key).await? {
        "raw"
    } else {
        "decoded (neither reading exists now)"
    };
    tracing::info!(bucket = %object.bucket, raw_key = %object.raw_key,
        decoded_key = %object.key, reading, "event key read as it exists in S3");
    Ok(if reading == "raw" {
        ObjectCreated {
            key: object.raw_key.clone(),
            ..object
        }
    } else {
        object
    })
}

/// A partition's load planned under the lease ([`Loader::prepare`]).
pub(crate) enum Planned {
    /// Nothing to load (up to date, or waiting for its marker).
    Nothing(Outcome),
    Load(Prepared, Box<Basis>),
    /// A file's footer could not be read while arranging the load: the search for bad
    /// files starts from this failure.
    Unreadable {
        failure: LoaderError,
        partition: Box<Partition>,
        files: Vec<ListedObject>,
        basis: Box<Basis>,
    },
}

/// What a prepared load was planned from: the search for a bad file plans its parts
/// from the same.
pub(crate) struct Basis {
    pub(crate) lease: Held,
    pub(crate) target: CopyTarget,
}

/// What one partition loads: its files grouped by layout, the partition's literals
/// rendered for the table.
pub(crate) struct Prepared {
    pub(crate) partition: Partition,
    pub(crate) files: Vec<ListedObject>,
    /// One COPY target per layout.
    pub(crate) targets: Vec<CopyTarget>,
    /// The layout of each of `files`.
    pub(crate) layout_of: Vec<usize>,
}

/// A load batch's statement id once committed. One left running where the caller cannot
/// leave it (a probe of the search for a bad file, a root marker's job) ends the
/// invocation with `Timeout`: the lease stays with the running statement until it ends
/// (acquirers find it by name), and the retry plans from the ledger.
pub(crate) fn committed(end: LoadEnd) -> Result<String, LoaderError> {
    match end {
        LoadEnd::Committed(id) => Ok(id),
        LoadEnd::Running(id) => Err(LoaderError::Timeout {
            status: format!(
                "load statement {id} left running at the deadline; it holds the lease until \
                 it ends"
            ),
            statement_id: id,
        }),
    }
}

pub(crate) enum Loaded {
    /// Loaded; the lease is still ours.
    Committed(Outcome),
    /// Nothing to load.
    Nothing(Outcome),
    /// A load batch still runs at the deadline and was left running: it holds the lease
    /// (`Outcome::Running`); later chunks of the partition were not submitted.
    Running(Outcome),
}

/// The `waiting` outcome of a partition whose `waiting` files no marker covers; counts
/// the wait for `OldestMarkerWaitSeconds`.
fn waiting_for_marker(
    route: &Route,
    bucket: &str,
    partition: &Partition,
    waiting: &[ListedObject],
) -> Outcome {
    let waited = markers::oldest_wait(waiting, std::time::SystemTime::now());
    crate::run::metrics::add(|m| {
        m.oldest_marker_wait = m.oldest_marker_wait.max(Some(waited));
    });
    let marker = route.ready_marker.as_deref().unwrap_or("");
    Outcome::Waiting {
        table: route.table.to_string(),
        partition: partition_values(partition),
        files: waiting.len(),
        marker: plan::s3_url(bucket, &format!("{}{marker}", partition.list_prefix(route))),
        waiting_seconds: waited.as_secs(),
    }
}

pub(crate) fn partition_values(partition: &Partition) -> PartitionValues {
    PartitionValues(
        partition
            .values
            .iter()
            .map(|(c, v)| (c.to_string(), v.clone()))
            .collect(),
    )
}

/// A load batch's end as DescribeStatement reported it, named as [`load_error`] names a
/// failure the holder waited for (the completion step's report).
pub(crate) fn load_failure(
    table: &TableName,
    statement_id: &str,
    state: &str,
    error: Option<&str>,
) -> LoaderError {
    let message = error.unwrap_or(state).to_string();
    let statement_id = statement_id.to_string();
    load_error(
        table,
        if state == "ABORTED" {
            LoaderError::StatementAborted {
                statement_id,
                message,
            }
        } else {
            LoaderError::StatementFailed {
                statement_id,
                message,
            }
        },
    )
}

/// Names what a failed load batch means for the caller.
pub(crate) fn load_error(table: &TableName, e: LoaderError) -> LoaderError {
    match e {
        LoaderError::StatementFailed {
            message,
            statement_id,
        } => {
            if message.contains(sql::LEASE_LOST_MARKER) {
                return LoaderError::LeaseLost {
                    table: table.to_string(),
                    message,
                };
            }
            if message.contains(sql::LOADED_ELSEWHERE_MARKER) {
                return LoaderError::LoadedElsewhere {
                    table: table.to_string(),
                    message,
                };
            }
            let class = crate::protocol::failure::classify(&message);
            match class.kind {
                ErrorKind::Retryable => LoaderError::LoadInterrupted {
                    table: table.to_string(),
                    statement_id,
                    cause: class.cause,
                    message,
                },
                ErrorKind::Permanent => LoaderError::LoadRejected {
                    table: table.to_string(),
                    statement_id,
                    message,
                },
            }
        }
        LoaderError::StatementAborted {
            statement_id,
            message,
        } => LoaderError::LoadInterrupted {
            table: table.to_string(),
            statement_id,
            cause: "aborted",
            message,
        },
        other => other,
    }
}

/// Decides how the COPY fills the table, from the route and the table's columns (in
/// table order, as Redshift reports them).
fn copy_target(
    route: &Route,
    partition: &Partition,
    table_columns: &[String],
) -> Result<CopyTarget, LoaderError> {
    copy_target_with(route, partition, table_columns, None)
}

/// [`copy_target`] for files whose columns are known (`Some`, in the files' order:
/// from their footers), instead of the route's `file_columns` or the table's.
fn copy_target_with(
    route: &Route,
    partition: &Partition,
    table_columns: &[String],
    known: Option<Vec<Ident>>,
) -> Result<CopyTarget, LoaderError> {
    let mismatch = |reason: String| LoaderError::TableMismatch {
        table: route.table.to_string(),
        reason,
    };
    let in_table = |c: &Ident| table_columns.iter().any(|t| t == c.as_str());
    let partition_columns: Vec<&Ident> = route.partition_columns.iter().map(|c| &c.name).collect();
    let file_columns: Vec<Ident> = match known.as_ref().or(route.file_columns.as_ref()) {
        Some(cols) => cols.clone(),
        None => table_columns
            .iter()
            .filter(|t| !partition_columns.iter().any(|p| p.as_str() == t.as_str()))
            .map(|t| Ident::parse(t).map_err(|e| mismatch(format!("column {e}"))))
            .collect::<Result<_, _>>()?,
    };
    if let Some(c) = file_columns.iter().find(|c| !in_table(c)) {
        return Err(mismatch(format!(
            "file column {c} is not a column of the table"
        )));
    }
    if route.mode == Mode::Replace {
        if let Some(p) = partition_columns.iter().find(|p| !in_table(p)) {
            return Err(mismatch(format!(
                "replace mode deletes the partition by its columns, but {p} is not a column of \
                 the table"
            )));
        }
    }
    let fill: Vec<_> = partition
        .literals
        .iter()
        .filter(|v| in_table(&v.column) && !file_columns.contains(&v.column))
        .cloned()
        .collect();
    let all_columns = file_columns.len() == table_columns.len()
        && file_columns
            .iter()
            .zip(table_columns)
            .all(|(f, t)| f.as_str() == t);
    Ok(if !fill.is_empty() {
        CopyTarget::Staged { file_columns, fill }
    } else if all_columns {
        CopyTarget::Direct(None)
    } else if route.format == FileFormat::Parquet {
        // Parquet COPY maps by position and needs the table's column count: a column
        // list does not help, a staging table with exactly the file's columns does.
        CopyTarget::Staged {
            file_columns,
            fill: Vec::new(),
        }
    } else {
        CopyTarget::Direct(Some(file_columns))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::config::parse_routes;

    fn route(extra: &str) -> Route {
        parse_routes(&format!(
            "[[routes]]\nprefix = \"o/\"\ntable = \"s.t\"\nformat = \"parquet\"\n\
             partition_columns = [{{ name = \"d\", type = \"date\" }}]\n{extra}"
        ))
        .unwrap()
        .remove(0)
    }

    fn target(extra: &str, cols: &[&str]) -> Result<CopyTarget, LoaderError> {
        let r = route(extra);
        let p = partition::parse(&r, "o/d=2024-01-02/f.parquet").unwrap();
        let cols: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
        copy_target(&r, &p, &cols)
    }

    #[test]
    fn partition_column_in_table_is_filled_by_staging() {
        match target("", &["id", "d", "amount"]).unwrap() {
            CopyTarget::Staged { file_columns, fill } => {
                let names: Vec<_> = file_columns.iter().map(|c| c.as_str()).collect();
                assert_eq!(names, ["id", "amount"]);
                assert_eq!(fill[0].literal.as_str(), "CAST('2024-01-02' AS DATE)");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn direct_copy_when_files_hold_every_column() {
        assert!(matches!(
            target("", &["id", "amount"]).unwrap(),
            CopyTarget::Direct(None)
        ));
        let t = target("file_columns = [\"d\", \"id\"]", &["id", "d"]).unwrap();
        match t {
            CopyTarget::Staged { file_columns, fill } => {
                assert_eq!(file_columns[0].as_str(), "d");
                assert!(fill.is_empty());
            }
            other => panic!("parquet needs staging to reorder: {other:?}"),
        }
        let r = parse_routes(
            "[[routes]]\nprefix = \"o/\"\ntable = \"s.t\"\nformat = \"csv\"\nfile_columns = [\"b\"]\n",
        )
        .unwrap()
        .remove(0);
        let p = partition::parse(&r, "o/f.csv").unwrap();
        let cols = vec!["a".to_string(), "b".to_string()];
        match copy_target(&r, &p, &cols).unwrap() {
            CopyTarget::Direct(Some(c)) => assert_eq!(c[0].as_str(), "b"),
            other => panic!("csv takes a column list: {other:?}"),
        }
    }

    #[test]
    fn mismatches_are_named() {
        let e = target("file_columns = [\"nope\"]", &["id", "d"]).unwrap_err();
        assert!(e.to_string().contains("nope"));
        let e = target("mode = \"replace\"", &["id"]).unwrap_err();
        assert!(e.to_string().contains("replace mode"));
    }

    /// A scripted bucket: `list` returns the keys under the prefix, counting calls.
    struct Bucket {
        keys: Vec<&'static str>,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Storage for Bucket {
        async fn list(&self, _: &str, prefix: &str) -> Result<Vec<ListedObject>, LoaderError> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(self
                .keys
                .iter()
                .filter(|k| k.starts_with(prefix))
                .map(|k| ListedObject {
                    key: k.to_string(),
                    size: 1,
                    etag: "e".into(),
                    last_modified: None,
                })
                .collect())
        }

        async fn put(&self, _: &str, _: &str, _: String) -> Result<(), LoaderError> {
            Ok(())
        }
    }

    fn settle(keys: Vec<&'static str>, event_key: &str) -> (String, usize) {
        let routes = parse_routes(
            "[[routes]]\nprefix = \"t/\"\ntable = \"s.t\"\nformat = \"parquet\"\n\
             partition_columns = [\"c\"]\n",
        )
        .unwrap();
        let bucket = Bucket {
            keys,
            calls: Default::default(),
        };
        let object = event::parse(&serde_json::json!({
            "source": "aws.s3", "detail-type": "Object Created",
            "version": "0", "id": "1", "account": "1", "time": "2024-05-28T10:00:00Z",
            "region": "us-east-1", "resources": [],
            "detail": {"bucket": {"name": "b"}, "object": {"key": event_key}}
        }))
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let settled = rt.block_on(settle_key(&routes, &bucket, object)).unwrap();
        (settled.key, bucket.calls.into_inner())
    }

    #[test]
    fn the_key_reading_that_exists_in_s3_wins() {
        // Raw key in the event, raw key in S3 (EventBridge sending keys as written).
        for key in [
            "t/c=C++/f",
            "t/c=x%3Ay/f",
            "t/c=k%3Dv/f",
            "t/c=50%25/f",
            "t/c=S%C3%A3o/f",
        ] {
            assert_eq!(settle(vec![key], key), (key.to_string(), 2), "{key}");
        }
        // Form-encoded key in the event: the decoded reading exists, one lookup.
        assert_eq!(
            settle(vec!["t/c=x:y/f"], "t/c%3Dx%3Ay/f"),
            ("t/c=x:y/f".to_string(), 1)
        );
        assert_eq!(
            settle(vec!["t/c=C++/f"], "t/c%3DC%2B%2B/f"),
            ("t/c=C++/f".to_string(), 1)
        );
        assert_eq!(
            settle(vec!["t/c=sp ace/f"], "t/c%3Dsp+ace/f"),
            ("t/c=sp ace/f".to_string(), 1)
        );
        // Neither exists: the decoded reading (S3's documented encoding).
        assert_eq!(settle(vec![], "t/c=C++/f"), ("t/c=C  /f".to_string(), 2));
        // Same reading both ways, or a key no route claims: no lookup at all.
        assert_eq!(settle(vec![], "t/c=a/f"), ("t/c=a/f".to_string(), 0));
        assert_eq!(settle(vec![], "u/c=C++/f"), ("u/c=C  /f".to_string(), 0));
        // A key that does not decode is read raw, without a lookup.
        assert_eq!(settle(vec![], "t/c=50%/f"), ("t/c=50%/f".to_string(), 0));
    }

    #[test]
    fn failed_loads_are_told_apart() {
        let t = TableName::parse("s.t").unwrap();
        let lost = load_error(
            &t,
            LoaderError::StatementFailed {
                statement_id: "x".into(),
                message: "ERROR: partition-loader: lease on s.t is not held by h".into(),
            },
        );
        assert_eq!(lost.error_type(), "Retryable.LeaseLost");
        let rejected = load_error(
            &t,
            LoaderError::StatementFailed {
                statement_id: "x".into(),
                message: "Unmatched number of columns between table and file".into(),
            },
        );
        assert_eq!(rejected.error_type(), "Permanent.LoadRejected");
        let throttled = load_error(
            &t,
            LoaderError::StatementFailed {
                statement_id: "x".into(),
                message: "ERROR: Spectrum Scan Error DETAIL: S3ServiceException:Please reduce \
                          your request rate.,Status 503,Error SlowDown"
                    .into(),
            },
        );
        assert_eq!(throttled.error_type(), "Retryable.LoadInterrupted");
        let aborted = load_error(
            &t,
            LoaderError::StatementAborted {
                statement_id: "x".into(),
                message: "Query (3) cancelled on user's request".into(),
            },
        );
        assert_eq!(aborted.error_type(), "Retryable.LoadInterrupted");
    }
}
