//! The flow of one event: parse → route → partition → lease → diff → manifest → load.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::backfill::{self, PartitionWork};
use crate::backoff::Backoff;
use crate::config::{Config, Mode, Route};
use crate::error::LoaderError;
use crate::event::ObjectCreated;
use crate::outcome::{Outcome, PartitionValues};
use crate::partition::{self, Partition};
use crate::plan::{self, ListedObject, LoadedFile, Plan};
use crate::route::{self, Routed};
use crate::sql::{self, CopyTarget, FileFormat, Ident, LedgerRow, TableName};
use crate::storage::{Storage, S3};
use crate::warehouse::{DataApi, Row, Warehouse};
use crate::{event, manifest};

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
/// Time granted to an explicit release after the work failed near the deadline.
const RELEASE_GRACE: Duration = Duration::from_secs(3);
/// Pauses of a waiter for a busy lease: they grow from the first to the cap. The cap
/// bounds how long a waiter overstays once the holder has loaded its object.
const WAIT_FIRST: Duration = Duration::from_millis(250);
const WAIT_CAP: Duration = Duration::from_secs(2);

pub struct Loader<W, S> {
    config: Config,
    warehouse: W,
    storage: S,
    limits: BatchLimits,
}

impl Loader<DataApi, S3> {
    /// Builds the AWS clients from the standard `AWS_*` environment (endpoint overrides
    /// included).
    pub async fn connect(config: Config) -> Self {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
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

/// What the acquire batch read while taking the lease.
struct Lease {
    ledger: Vec<LoadedFile>,
    columns: Vec<String>,
}

/// How the wait for the lease ended.
enum Acquired {
    Held(Lease),
    /// The event's own object was loaded by this holder while we waited.
    LoadedBy(String),
}

/// What one poll of a waiter read (see [`sql::wait_check`]).
#[derive(Debug, PartialEq, Eq)]
struct WaitCheck {
    /// The holder that loaded the event's object, if the ledger has it.
    loaded_by: Option<String>,
    /// The live lease: holder and expiry.
    lease: Option<(String, String)>,
}

impl<W: Warehouse, S: Storage> Loader<W, S> {
    pub fn new(config: Config, warehouse: W, storage: S) -> Self {
        Loader {
            config,
            warehouse,
            storage,
            limits: BatchLimits::default(),
        }
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

    /// Handles one event. `holder` identifies this invocation in the lease table (the
    /// Lambda request id); nothing is started after `deadline`.
    pub async fn handle(
        &self,
        event: &Value,
        holder: &str,
        deadline: Instant,
    ) -> Result<Outcome, LoaderError> {
        let object = event::parse(event)?;
        let object = self.settle_key(object).await?;
        match route::route(&self.config, &object.bucket, &object.key, object.size) {
            Routed::Skip(reason) => Ok(Outcome::Skipped {
                reason: reason.to_string(),
                bucket: object.bucket,
                key: object.key,
            }),
            Routed::Load(route) => {
                let partition = partition::parse(route, &object.key)?;
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

    /// Creates the loader schema, lease table, ledger and fencing procedures.
    pub async fn bootstrap(&self, deadline: Instant) -> Result<String, LoaderError> {
        self.warehouse
            .run_batch(sql::bootstrap(&self.config.loader_schema), deadline)
            .await
    }

    /// Grants `user` (the function's database user) what it needs on the loader schema
    /// ([`sql::grant_loader`]); run by the schema's owner after [`Loader::bootstrap`].
    pub async fn grant_loader(
        &self,
        user: &sql::DbUser,
        deadline: Instant,
    ) -> Result<String, LoaderError> {
        self.warehouse
            .run_batch(
                sql::grant_loader(&self.config.loader_schema, user),
                deadline,
            )
            .await
    }

    /// Runs one statement (with `:name` parameters) that returns no rows.
    pub async fn execute(
        &self,
        sql: String,
        params: Vec<(&'static str, String)>,
        deadline: Instant,
    ) -> Result<String, LoaderError> {
        self.warehouse.run(sql, params, deadline).await
    }

    /// Runs one statement (with `:name` parameters) and returns its rows.
    pub async fn query(
        &self,
        sql: String,
        params: Vec<(&'static str, String)>,
        deadline: Instant,
    ) -> Result<Vec<Row>, LoaderError> {
        let id = self.warehouse.run(sql, params, deadline).await?;
        self.warehouse.rows(id, deadline).await
    }

    /// Loads every pending file of one partition under the table's lease. `awaited` is
    /// the object an event reported (`None` for a backfill): while another holder has
    /// the lease, finding that object in the ledger ends the wait as `up_to_date`.
    pub async fn load_partition(
        &self,
        route: &Route,
        bucket: &str,
        partition: &Partition,
        awaited: Option<&ObjectCreated>,
        holder: &str,
        deadline: Instant,
    ) -> Result<Outcome, LoaderError> {
        let wait_started = Instant::now();
        let acquired = self
            .acquire(&route.table, holder, &partition.path, awaited, deadline)
            .await;
        crate::metrics::add(|m| m.lease_wait += wait_started.elapsed());
        let acquired = acquired?;
        let lease = match acquired {
            Acquired::Held(lease) => lease,
            Acquired::LoadedBy(other) => {
                return Ok(Outcome::UpToDate {
                    table: route.table.to_string(),
                    partition: partition_values(partition),
                    loaded_by: Some(other),
                })
            }
        };
        let result = self
            .load_holding_lease(route, bucket, partition, holder, lease, deadline)
            .await;
        match result {
            Ok(Loaded::Committed(outcome)) => Ok(outcome),
            Ok(Loaded::Nothing(outcome)) => {
                self.release(&route.table, holder, deadline).await?;
                Ok(outcome)
            }
            // The batch may still be running: leave the lease to its TTL (and fence).
            Err(e @ LoaderError::Timeout { .. }) => Err(e),
            Err(e) => {
                let grace = deadline.max(Instant::now() + RELEASE_GRACE);
                if let Err(release_error) = self.release(&route.table, holder, grace).await {
                    tracing::warn!(table = %route.table, error = %release_error,
                        "explicit release failed; the lease expires by its TTL");
                }
                Err(e)
            }
        }
    }

    /// Takes the table's lease, waiting with jittered backoff while another holder has it.
    ///
    /// A waiter does not repeat the acquire batch (which queues on `LOCK S.locks`) while
    /// the lease is live: it polls with one read-only statement. If the ledger already
    /// holds `awaited`, the holder loaded it, and the wait ends. That is safe because
    /// ledger rows commit only with their COPY, and every object has its own event: an
    /// object not loaded yet keeps its own invocation waiting. Without `awaited` (a
    /// backfill) or once the lease is free, the acquire batch runs again.
    async fn acquire(
        &self,
        table: &TableName,
        holder: &str,
        partition_path: &str,
        awaited: Option<&ObjectCreated>,
        deadline: Instant,
    ) -> Result<Acquired, LoaderError> {
        let sqls = sql::acquire(
            &self.config.loader_schema,
            table,
            holder,
            self.config.lease_ttl.as_secs(),
            partition_path,
        )?;
        let give_up = deadline.min(Instant::now() + self.config.lock_wait);
        let mut backoff = Backoff::new(WAIT_FIRST, WAIT_CAP);
        loop {
            let (mut current, mut expires_at) =
                match self.try_acquire(table, holder, &sqls, deadline).await? {
                    Ok(lease) => return Ok(Acquired::Held(lease)),
                    Err(busy) => busy,
                };
            loop {
                let pause = backoff.next_pause();
                if Instant::now() + pause >= give_up {
                    return Err(LoaderError::LockBusy {
                        table: table.to_string(),
                        holder: current,
                        expires_at,
                    });
                }
                tracing::debug!(table = %table, holder = %current, "lease busy, waiting");
                tokio::time::sleep(pause).await;
                let Some(object) = awaited else { break };
                let check = self
                    .wait_check(table, partition_path, object, deadline)
                    .await?;
                if let Some(loaded_by) = check.loaded_by {
                    return Ok(Acquired::LoadedBy(loaded_by));
                }
                match check.lease {
                    Some(lease) => (current, expires_at) = lease,
                    None => break,
                }
            }
        }
    }

    /// Runs the acquire batch once: our lease, or the current holder and expiry.
    async fn try_acquire(
        &self,
        table: &TableName,
        holder: &str,
        sqls: &[String],
        deadline: Instant,
    ) -> Result<Result<Lease, (String, String)>, LoaderError> {
        let id = match self.warehouse.run_batch(sqls.to_vec(), deadline).await {
            Ok(id) => id,
            Err(e @ LoaderError::Timeout { .. }) => {
                // The cancelled acquire may have committed anyway: do not leave a
                // lease behind for its TTL when dropping it is harmless.
                let grace = Instant::now() + RELEASE_GRACE;
                let _ = self.release(table, holder, grace).await;
                return Err(e);
            }
            Err(LoaderError::StatementFailed { message, .. })
                if message.contains("does not exist")
                    && message.contains(self.config.loader_schema.as_str()) =>
            {
                return Err(LoaderError::Config(format!(
                    "the loader schema {} is not bootstrapped (run `loaderctl bootstrap`): \
                     {message}",
                    self.config.loader_schema
                )))
            }
            Err(e) => return Err(e),
        };
        let read = self.read_acquire_results(&id, holder, deadline).await;
        if read.is_err() {
            // The batch committed, so we may hold the lease without knowing it.
            let grace = deadline.max(Instant::now() + RELEASE_GRACE);
            let _ = self.release(table, holder, grace).await;
        }
        read
    }

    /// One poll of a waiter: is `object` in the ledger, and who holds the lease now?
    async fn wait_check(
        &self,
        table: &TableName,
        partition_path: &str,
        object: &ObjectCreated,
        deadline: Instant,
    ) -> Result<WaitCheck, LoaderError> {
        let mut params = vec![
            ("table", table.to_string()),
            ("s3_url", plan::s3_url(&object.bucket, &object.key)),
        ];
        // A Data API parameter value must not be empty (unpartitioned routes).
        let partitioned = !partition_path.is_empty();
        if partitioned {
            params.push(("partition", partition_path.to_string()));
        }
        if let Some(etag) = &object.etag {
            params.push(("etag", etag.clone()));
        }
        let sql = sql::wait_check(
            &self.config.loader_schema,
            object.etag.is_some(),
            partitioned,
        );
        let id = self.warehouse.run(sql, params, deadline).await?;
        let rows = self.warehouse.rows(id, deadline).await?;
        Ok(read_wait_check(&rows))
    }

    /// Reads the acquire batch's results: our lease with the ledger and table columns,
    /// or the current holder and expiry when the lease is someone else's.
    async fn read_acquire_results(
        &self,
        id: &str,
        holder: &str,
        deadline: Instant,
    ) -> Result<Result<Lease, (String, String)>, LoaderError> {
        let lease = self.warehouse.rows(format!("{id}:4"), deadline).await?;
        let (current, expires_at) = match lease.first().map(|r| r.as_slice()) {
            Some([Some(h), e]) => (h.clone(), e.clone().unwrap_or_default()),
            _ => ("(nobody)".to_string(), String::new()),
        };
        if current != holder {
            return Ok(Err((current, expires_at)));
        }
        let ledger = self
            .warehouse
            .rows(format!("{id}:5"), deadline)
            .await?
            .into_iter()
            .filter_map(|r| match r.as_slice() {
                [Some(url), Some(etag), _] => Some(LoadedFile {
                    s3_url: url.clone(),
                    etag: etag.clone(),
                }),
                _ => None,
            })
            .collect();
        let columns = self
            .warehouse
            .rows(format!("{id}:6"), deadline)
            .await?
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect();
        Ok(Ok(Lease { ledger, columns }))
    }

    /// Drops our lease (no-op when we no longer hold it).
    pub async fn release(
        &self,
        table: &TableName,
        holder: &str,
        deadline: Instant,
    ) -> Result<(), LoaderError> {
        let params = vec![("table", table.to_string()), ("holder", holder.to_string())];
        self.warehouse
            .run(sql::release(&self.config.loader_schema), params, deadline)
            .await
            .map(|_| ())
    }

    async fn load_holding_lease(
        &self,
        route: &Route,
        bucket: &str,
        partition: &Partition,
        holder: &str,
        lease: Lease,
        deadline: Instant,
    ) -> Result<Loaded, LoaderError> {
        let table = &route.table;
        if lease.columns.is_empty() {
            return Err(LoaderError::TableMissing(table.to_string()));
        }
        let target = copy_target(route, partition, &lease.columns)?;
        // Listed only now, under the lease: a file written before the lease was taken
        // is seen by this holder or a later one, never missed.
        let prefix = partition.list_prefix(route);
        let listed: Vec<ListedObject> = self
            .storage
            .list(bucket, &prefix)
            .await?
            .into_iter()
            .filter(|o| {
                let directly_inside = o
                    .key
                    .strip_prefix(&prefix)
                    .is_some_and(|name| !name.contains('/'));
                directly_inside && route::marker_reason(&o.key, Some(o.size)).is_none()
            })
            .collect();
        if listed.is_empty() {
            return Err(LoaderError::NothingListed {
                url: plan::s3_url(bucket, &prefix),
            });
        }
        let files = match plan::plan(route.mode, bucket, listed, &lease.ledger)? {
            Plan::UpToDate => {
                return Ok(Loaded::Nothing(Outcome::UpToDate {
                    table: table.to_string(),
                    partition: partition_values(partition),
                    loaded_by: None,
                }))
            }
            Plan::Load(files) => files,
        };

        let schema = &self.config.loader_schema;
        let load_id = uuid::Uuid::new_v4().to_string();
        let tuples = files
            .iter()
            .map(|f| {
                let row = LedgerRow {
                    s3_url: plan::s3_url(bucket, &f.key),
                    etag: f.etag.clone(),
                    size_bytes: f.size,
                };
                sql::ledger_tuple(table, &partition.path, holder, &load_id, &row)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let inserts = sql::ledger_inserts(
            &sql::ledger_insert_head(schema),
            &tuples,
            self.limits.max_statement_bytes,
        );
        let replace = route.mode == Mode::Replace;
        let room = self
            .limits
            .max_statements
            .saturating_sub(sql::fixed_statements(&target, replace));
        let batches = plan::batches(inserts, room);
        if replace && batches.len() > 1 {
            return Err(LoaderError::ReplaceTooLarge {
                files: files.len(),
                batches: batches.len(),
            });
        }

        let mut offset = 0;
        let mut statement_id = String::new();
        let last = batches.len() - 1;
        for (n, (inserts, count)) in batches.iter().enumerate() {
            let chunk = &files[offset..offset + count];
            offset += count;
            let manifest_key =
                manifest::manifest_key(&self.config.manifest, table, &partition.path, &load_id, n);
            self.storage
                .put(
                    &self.config.manifest.bucket,
                    &manifest_key,
                    manifest::manifest_json(bucket, chunk),
                )
                .await?;
            let manifest_url = plan::s3_url(&self.config.manifest.bucket, &manifest_key);
            let sqls = sql::load_batch(&sql::LoadBatch {
                schema,
                table,
                partition_path: &partition.path,
                holder,
                manifest_url: &manifest_url,
                iam_role: &self.config.copy_iam_role,
                format: route.format,
                copy_options: &route.copy_options,
                target: &target,
                replace: replace.then_some(partition.literals.as_slice()),
                ledger_inserts: inserts,
                renew_ttl_seconds: (n != last).then_some(self.config.lease_ttl.as_secs()),
                stage_suffix: n,
                statupdate: route.statupdate,
            })?;
            let copy_started = Instant::now();
            let batch = self.warehouse.run_batch(sqls, deadline).await;
            crate::metrics::add(|m| m.copy_time += copy_started.elapsed());
            statement_id = batch.map_err(|e| load_error(table, e))?;
            crate::metrics::add(|m| {
                m.files += chunk.len() as u64;
                m.bytes += chunk.iter().map(|f| f.size.max(0) as u64).sum::<u64>();
                m.committed_at = Some(std::time::SystemTime::now());
            });
        }
        Ok(Loaded::Committed(Outcome::Loaded {
            table: table.to_string(),
            partition: partition_values(partition),
            files: files.len(),
            statement_id,
        }))
    }

    /// Loads files that existed before the function was deployed: every partition found
    /// under `s3://bucket/prefix`, one after the other, with the same protocol.
    /// Returns one result per partition (and per key that could not be placed); each
    /// partition gets `per_partition` of time.
    pub async fn backfill(
        &self,
        bucket: &str,
        prefix: &str,
        holder: &str,
        per_partition: Duration,
    ) -> Result<Vec<Result<Outcome, LoaderError>>, LoaderError> {
        let (work, errors) = self.backfill_partitions(bucket, prefix).await?;
        let mut results: Vec<_> = errors.into_iter().map(Err).collect();
        for w in &work {
            let until = Instant::now() + per_partition;
            results.push(
                self.load_partition(w.route, bucket, &w.partition, None, holder, until)
                    .await,
            );
        }
        Ok(results)
    }

    /// The partitions a backfill of `s3://bucket/prefix` would load, with their listed
    /// files (see [`backfill::partitions`]); for progress and dry runs.
    pub async fn backfill_partitions(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<(Vec<PartitionWork<'_>>, Vec<LoaderError>), LoaderError> {
        let listed = self.storage.list(bucket, prefix).await?;
        Ok(backfill::partitions(&self.config, bucket, listed))
    }
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

enum Loaded {
    /// The last load batch released the lease itself.
    Committed(Outcome),
    /// Nothing loaded: the lease is still ours to release.
    Nothing(Outcome),
}

fn partition_values(partition: &Partition) -> PartitionValues {
    PartitionValues(
        partition
            .values
            .iter()
            .map(|(c, v)| (c.to_string(), v.clone()))
            .collect(),
    )
}

/// Reads the rows of [`sql::wait_check`]; rows of an unknown shape are ignored.
fn read_wait_check(rows: &[Row]) -> WaitCheck {
    let mut check = WaitCheck {
        loaded_by: None,
        lease: None,
    };
    for row in rows {
        match row.as_slice() {
            [Some(kind), Some(holder), _] if kind == "loaded" => {
                check.loaded_by = Some(holder.clone())
            }
            [Some(kind), Some(holder), expires_at] if kind == "lease" => {
                check.lease = Some((holder.clone(), expires_at.clone().unwrap_or_default()))
            }
            _ => {}
        }
    }
    check
}

/// Names what a failed load batch means for the caller.
fn load_error(table: &TableName, e: LoaderError) -> LoaderError {
    match e {
        LoaderError::StatementFailed {
            message,
            statement_id,
        } => {
            if message.contains(sql::LEASE_LOST_MARKER) {
                LoaderError::LeaseLost {
                    table: table.to_string(),
                    message,
                }
            } else {
                LoaderError::LoadRejected {
                    table: table.to_string(),
                    statement_id,
                    message,
                }
            }
        }
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
    let mismatch = |reason: String| LoaderError::TableMismatch {
        table: route.table.to_string(),
        reason,
    };
    let in_table = |c: &Ident| table_columns.iter().any(|t| t == c.as_str());
    let partition_columns: Vec<&Ident> = route.partition_columns.iter().map(|c| &c.name).collect();
    let file_columns: Vec<Ident> = match &route.file_columns {
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
    use crate::config::parse_routes;

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

    #[test]
    fn a_poll_reads_who_loaded_the_object_and_who_holds_the_lease() {
        let some = |s: &str| Some(s.to_string());
        let lease_only = vec![vec![
            some("lease"),
            some("req-1"),
            some("2024-05-28 10:00:00"),
        ]];
        assert_eq!(
            read_wait_check(&lease_only),
            WaitCheck {
                loaded_by: None,
                lease: Some(("req-1".into(), "2024-05-28 10:00:00".into())),
            }
        );
        let both = vec![
            vec![some("loaded"), some("req-0"), None],
            vec![some("lease"), some("req-1"), None],
        ];
        let check = read_wait_check(&both);
        assert_eq!(check.loaded_by.as_deref(), Some("req-0"));
        assert_eq!(check.lease, Some(("req-1".into(), String::new())));
        let free = read_wait_check(&[vec![some("other"), some("x"), None], vec![None]]);
        assert_eq!(
            free,
            WaitCheck {
                loaded_by: None,
                lease: None
            }
        );
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
    }
}
