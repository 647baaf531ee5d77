//! A root ready marker (`<prefix>_SUCCESS`, route option `ready_marker`): the end of a
//! job that wrote many partitions (Spark's `partitionBy` with the default committer
//! writes one `_SUCCESS` at the output root). Its event takes the table's lease like any
//! event (a busy table gets a wake-up whose partition path is empty, and its drain loads
//! the job the same way), lists the route prefix once to find the partitions with files
//! the marker covers ([`markers::root_partitions`], bounded by the look-back window),
//! plans each under the lease and commits them in as few load batches as fit: one
//! transaction when they fit (several COPYs and ledger INSERTs, every fence last), so
//! the job's output appears at once; otherwise in chunks, each a whole partition, and
//! the outcome says how many (`transactions`).

use std::time::Duration;

use tokio::time::Instant;

use crate::error::LoaderError;
use crate::io::storage::Storage;
use crate::io::warehouse::Warehouse;
use crate::lake::config::Route;
use crate::lake::event::ObjectCreated;
use crate::lake::markers;
use crate::lake::partition::Partition;
use crate::protocol::lease::{self, Acquired, Ctx};
use crate::protocol::plan;
use crate::run::handler::{Loader, Planned, Prepared};
use crate::run::outcome::{Outcome, PartitionValues};

/// The wake-up of a root marker names this partition path: no partition's path is
/// empty in a route with partition columns.
pub const JOB_PARTITION_PATH: &str = "";

/// The stand-in partition of a root marker (no values): what a batch groups it under.
pub fn job_partition() -> Partition {
    Partition {
        path: JOB_PARTITION_PATH.to_string(),
        values: Vec::new(),
        literals: Vec::new(),
    }
}

/// Whether a claimed wake-up is a root marker's.
pub fn is_job_wakeup(route: &Route, partition_path: &str) -> bool {
    partition_path == JOB_PARTITION_PATH
        && route.ready_marker.is_some()
        && !route.partition_columns.is_empty()
}

impl<W: Warehouse, S: Storage> Loader<W, S> {
    /// Handles a root marker's event: takes the table's lease (or queues a wake-up for
    /// its holder), loads the job, drains.
    pub async fn load_job(
        &self,
        route: &Route,
        marker: &ObjectCreated,
        holder: &str,
        deadline: Instant,
    ) -> Result<Outcome, LoaderError> {
        let tenure = self.tenure(holder);
        let holder = tenure.as_str();
        let ctx = Ctx::new(
            self.warehouse(),
            self.config(),
            &route.table,
            holder,
            deadline,
        );
        let wait_started = Instant::now();
        let acquired = lease::acquire_for_event(
            &ctx,
            &route.prefix,
            &marker.bucket,
            JOB_PARTITION_PATH,
            marker,
        )
        .await;
        crate::run::metrics::add(|m| m.lease_wait += wait_started.elapsed());
        match acquired? {
            Acquired::Held(_) => {}
            Acquired::Queued { holder, .. } => {
                return Ok(Outcome::Queued {
                    table: route.table.to_string(),
                    partition: PartitionValues::default(),
                    holder,
                })
            }
        }
        let result = self
            .load_job_holding_lease(&ctx, route, &marker.bucket)
            .await;
        self.finish_holding(&ctx, route, result).await
    }

    /// Loads the partitions the route's root marker covers, under the lease `ctx` holds.
    pub(crate) async fn load_job_holding_lease(
        &self,
        ctx: &Ctx<'_, W>,
        route: &Route,
        bucket: &str,
    ) -> Result<Outcome, LoaderError> {
        let table = route.table.to_string();
        let marker_key = markers::root_marker_key(route).unwrap_or_default();
        let marker_url = plan::s3_url(bucket, &marker_key);
        let Some(marker_time) = self.root_marker_time(route, bucket).await? else {
            return Ok(Outcome::Skipped {
                reason: "root ready marker no longer exists".into(),
                bucket: bucket.to_string(),
                key: marker_key,
            });
        };
        // The previous root marker's time is gone (the job overwrote it), so the
        // listing is bounded by the sweep's window: older files are the backfill's.
        let window = Duration::from_secs(u64::from(self.config().sweep_look_back_days) * 86_400);
        let since = marker_time
            .checked_sub(window)
            .unwrap_or(std::time::UNIX_EPOCH);
        let listing = self.storage().list(bucket, &route.prefix).await?;
        let partitions = markers::root_partitions(route, &listing, marker_time, since);
        let mut prepared: Vec<Prepared> = Vec::new();
        let mut up_to_date = 0;
        for p in &partitions {
            if Instant::now() + ctx.reserve >= ctx.deadline {
                return Err(LoaderError::Timeout {
                    statement_id: String::new(),
                    status: format!(
                        "deadline near while planning the job of {marker_url}: nothing of it \
                         loaded; the retry or the sweep loads it"
                    ),
                });
            }
            let held = lease::read_partition(ctx, &p.path).await?;
            match self
                .prepare(route, bucket, p, ctx.holder, held, ctx.deadline)
                .await?
            {
                Planned::Nothing(_) => up_to_date += 1,
                Planned::Load(x, _) => prepared.push(x),
                // A root marker's job loads whole partitions: a partition with an
                // unreadable file fails it (its own marker or the sweep isolates it).
                Planned::Unreadable { failure, .. } => return Err(failure),
            }
        }
        if prepared.is_empty() {
            return Ok(Outcome::UpToDate {
                table,
                partition: PartitionValues::default(),
            });
        }
        let committed = self
            .commit_job(route, bucket, ctx.holder, &prepared, ctx)
            .await?;
        Ok(Outcome::LoadedJob {
            table,
            marker: marker_url,
            partitions: prepared.len(),
            files: prepared.iter().map(|p| p.files.len()).sum(),
            transactions: committed.transactions,
            up_to_date,
            statement_id: committed.statement_id,
        })
    }

    /// Commits prepared partitions, as many per load batch as its statement limit
    /// allows (each whole); a partition too large for one batch alone is committed by
    /// itself as any partition is.
    async fn commit_job(
        &self,
        route: &Route,
        bucket: &str,
        holder: &str,
        prepared: &[Prepared],
        ctx: &Ctx<'_, W>,
    ) -> Result<Committed, LoaderError> {
        let max = self.limits().max_statements;
        let replace = route.mode == crate::lake::config::Mode::Replace;
        let mut committed = Committed::default();
        // Greedy packing in partition order: (partition index, its ledger INSERTs).
        let mut group: Vec<(usize, Vec<String>)> = Vec::new();
        let mut group_statements = 0;
        let mut load_id = uuid::Uuid::new_v4().to_string();
        for (i, p) in prepared.iter().enumerate() {
            let inserts = self.ledger_inserts_of(route, bucket, holder, p, &load_id)?;
            let statements = crate::sql::fixed_statements(&p.targets, replace) + inserts.len();
            if statements > max {
                // Too large for any batch with others: loaded on its own, in chunks.
                self.check_deadline(ctx)?;
                let outcome = match self.commit(route, bucket, holder, p, ctx.deadline).await? {
                    crate::run::handler::Loaded::Committed(o)
                    | crate::run::handler::Loaded::Nothing(o) => o,
                    crate::run::handler::Loaded::Running(o) => {
                        let id = match o {
                            Outcome::Running { statement_id, .. } => statement_id,
                            _ => String::new(),
                        };
                        return Err(LoaderError::Timeout {
                            status: format!(
                                "a root marker's load statement {id} left running at the \
                                 deadline; it holds the lease until it ends"
                            ),
                            statement_id: id,
                        });
                    }
                };
                let room = max.saturating_sub(crate::sql::fixed_statements(&p.targets, replace));
                committed.transactions += inserts.len().div_ceil(room.max(1));
                if let Outcome::Loaded { statement_id, .. } = outcome {
                    committed.statement_id = statement_id;
                }
                continue;
            }
            if group_statements + statements > max {
                self.commit_group(route, bucket, holder, prepared, &group, &load_id, ctx)
                    .await
                    .map(|id| committed.add(id))?;
                group.clear();
                group_statements = 0;
                load_id = uuid::Uuid::new_v4().to_string();
                let inserts = self.ledger_inserts_of(route, bucket, holder, p, &load_id)?;
                group_statements += statements;
                group.push((i, inserts.into_iter().map(|(s, _)| s).collect()));
                continue;
            }
            group_statements += statements;
            group.push((i, inserts.into_iter().map(|(s, _)| s).collect()));
        }
        if !group.is_empty() {
            self.commit_group(route, bucket, holder, prepared, &group, &load_id, ctx)
                .await
                .map(|id| committed.add(id))?;
        }
        Ok(committed)
    }

    /// One load batch of whole partitions: each partition's statements in turn (its
    /// replace DELETEs, COPYs, ledger INSERTs), then every partition's fence, last, so
    /// the lease row is written only at the end of the transaction.
    #[allow(clippy::too_many_arguments)]
    async fn commit_group(
        &self,
        route: &Route,
        bucket: &str,
        holder: &str,
        prepared: &[Prepared],
        group: &[(usize, Vec<String>)],
        load_id: &str,
        ctx: &Ctx<'_, W>,
    ) -> Result<String, LoaderError> {
        self.check_deadline(ctx)?;
        let mut statements = Vec::new();
        let mut fences = Vec::new();
        let mut manifests = 0;
        let mut files = Vec::new();
        for (n, (i, inserts)) in group.iter().enumerate() {
            let p = &prepared[*i];
            let mut part = self
                .partition_statements(
                    route,
                    bucket,
                    holder,
                    p,
                    0..p.files.len(),
                    inserts,
                    load_id,
                    n,
                    &mut manifests,
                )
                .await?;
            // sql::load_batch puts the fence last.
            fences.extend(part.pop());
            statements.extend(part);
            files.extend(p.files.iter().cloned());
        }
        statements.extend(fences);
        crate::run::handler::committed(
            self.run_load_batch(&route.table, holder, statements, &files, ctx.deadline)
                .await?,
        )
    }

    fn check_deadline(&self, ctx: &Ctx<'_, W>) -> Result<(), LoaderError> {
        if Instant::now() + ctx.reserve >= ctx.deadline {
            return Err(LoaderError::Timeout {
                statement_id: String::new(),
                status: "deadline near between a job's load batches: the retry or the sweep \
                         loads the rest"
                    .into(),
            });
        }
        Ok(())
    }
}

/// What a job's commits did.
#[derive(Debug, Default)]
struct Committed {
    transactions: usize,
    statement_id: String,
}

impl Committed {
    fn add(&mut self, statement_id: String) {
        self.transactions += 1;
        self.statement_id = statement_id;
    }
}
