//! The holder's side of one bad file: when a load of a partition fails because Redshift
//! refuses a file's data, find the bad file(s) ([`crate::protocol::isolate`]), load the rest in
//! the same lease, and quarantine the bad ones in a batch of their own (the fence
//! last). Append mode only: replace mode reloads a partition all or nothing, so its
//! failure stands, naming the file: Redshift's error (or the footer) names it, or
//! probes that roll back (the load batch of half the files under [`PROBE_HOLDER`],
//! whose fence always raises) find it, and nothing of the partition changes.

use tokio::time::Instant;

use crate::error::LoaderError;
use crate::io::storage::Storage;
use crate::io::warehouse::Warehouse;
use crate::lake::config::{Mode, Route};
use crate::lake::partition::Partition;
use crate::protocol::isolate::{self, Loads, Verdict};
use crate::protocol::lease::Held;
use crate::protocol::plan::{self, ListedObject};
use crate::run::handler::{load_error, Loader};
use crate::sql::{self, CopyTarget, LeaseTables, QuarantineRow};

/// The holder's loads of groups of one partition's files, for the search.
struct HolderLoads<'a, W, S> {
    loader: &'a Loader<W, S>,
    route: &'a Route,
    bucket: &'a str,
    partition: &'a Partition,
    holder: &'a str,
    lease: &'a Held,
    target: &'a CopyTarget,
    deadline: Instant,
}

impl<W: Warehouse, S: Storage> Loads for HolderLoads<'_, W, S> {
    async fn load(&self, files: &[ListedObject]) -> Result<String, LoaderError> {
        self.loader
            .load_files(
                self.route,
                self.bucket,
                self.partition,
                self.holder,
                self.lease,
                self.target,
                files,
                self.deadline,
            )
            .await
    }
}

/// The holder a replace-mode probe's fence names: never a lease's holder, so the fence
/// raises and the probe's transaction (DELETE, COPY, ledger rows) rolls back.
pub const PROBE_HOLDER: &str = "partition-loader probe (rolled back)";

/// Replace mode's probes: the same load batch under [`PROBE_HOLDER`], rolled back by
/// its own fence. Passing means the fence was reached (every COPY passed).
struct RolledBackProbes<'a, W, S>(HolderLoads<'a, W, S>);

impl<W: Warehouse, S: Storage> Loads for RolledBackProbes<'_, W, S> {
    async fn load(&self, files: &[ListedObject]) -> Result<String, LoaderError> {
        let l = &self.0;
        match l
            .loader
            .load_files(
                l.route,
                l.bucket,
                l.partition,
                PROBE_HOLDER,
                l.lease,
                l.target,
                files,
                l.deadline,
            )
            .await
        {
            Err(LoaderError::LeaseLost { message, .. }) if message.contains(PROBE_HOLDER) => {
                Ok(String::new())
            }
            Ok(_) => Err(LoaderError::LoadRejected {
                table: l.route.table.to_string(),
                statement_id: String::new(),
                message: "a replace-mode probe committed; its fence should have refused it".into(),
            }),
            Err(e) => Err(e),
        }
    }
}

impl<W: Warehouse, S: Storage> Loader<W, S> {
    /// Replace mode's failure about a file's data that does not name the file: finds
    /// the bad file(s) with probes that roll back (nothing of the partition changes:
    /// all or nothing), and returns the failure naming them. Any other failure is
    /// returned as it is.
    async fn name_bad_files_of_replace(
        &self,
        loads: HolderLoads<'_, W, S>,
        files: Vec<ListedObject>,
        failure: LoaderError,
    ) -> LoaderError {
        if !matches!(
            isolate::verdict(&failure, loads.bucket, &files),
            Verdict::Unnamed { .. }
        ) {
            return failure;
        }
        let (table, bucket) = (loads.route.table.to_string(), loads.bucket);
        let probes = RolledBackProbes(loads);
        match isolate::isolate(&probes, bucket, files, failure).await {
            Ok(found) if !found.bad.is_empty() => {
                let urls: Vec<String> = found
                    .bad
                    .iter()
                    .map(|(f, _)| plan::s3_url(bucket, &f.key))
                    .collect();
                LoaderError::LoadRejected {
                    table,
                    statement_id: String::new(),
                    message: format!(
                        "replace mode loads a partition all or nothing, and Redshift refused \
                         {} (found by probes that were rolled back; nothing loaded): {}",
                        urls.join(", "),
                        found.bad[0].1
                    ),
                }
            }
            Ok(_) => LoaderError::LoadRejected {
                table,
                statement_id: String::new(),
                message: "replace load failed about the data, but every probe of its files \
                          passed"
                    .into(),
            },
            Err(e) => e,
        }
    }

    /// After `files`' load failed with `failure`: in append mode, when the failure is
    /// about a file's data, the statement id of the last committed batch, the files
    /// loaded and the URLs quarantined; otherwise `failure` itself (in replace mode
    /// naming the bad file when Redshift's error did not).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn isolate_bad_files(
        &self,
        route: &Route,
        bucket: &str,
        partition: &Partition,
        holder: &str,
        lease: &Held,
        target: &CopyTarget,
        files: Vec<ListedObject>,
        failure: LoaderError,
        deadline: Instant,
    ) -> Result<(String, usize, Vec<String>), LoaderError> {
        if !isolate::isolates(route.format)
            || isolate::verdict(&failure, bucket, &files) == Verdict::NotAFile
        {
            return Err(failure);
        }
        let loads = HolderLoads {
            loader: self,
            route,
            bucket,
            partition,
            holder,
            lease,
            target,
            deadline,
        };
        if route.mode != Mode::Append {
            return Err(self.name_bad_files_of_replace(loads, files, failure).await);
        }
        tracing::warn!(table = %route.table, partition = %partition.path, files = files.len(),
            error = %failure, "a file of the load was refused; finding it and loading the rest");
        let found = isolate::isolate(&loads, bucket, files, failure).await?;
        let rows: Vec<QuarantineRow> = found
            .bad
            .iter()
            .map(|(f, error)| QuarantineRow {
                s3_url: plan::s3_url(bucket, &f.key),
                etag: f.etag.clone(),
                error: error.clone(),
            })
            .collect();
        let tables = LeaseTables::for_target(&route.table);
        let load_id = uuid::Uuid::new_v4().to_string();
        let sqls = sql::quarantine_batch(&sql::QuarantineBatch {
            schema: &self.config().loader_schema,
            tables: &tables,
            bucket,
            partition_path: &partition.path,
            holder,
            load_id: &load_id,
            ttl_seconds: self.config().lease_ttl.as_secs(),
            rows: &rows,
        })?;
        let statement_id = self
            .warehouse()
            .run_batch(sqls, deadline)
            .await
            .map_err(|e| load_error(&route.table, e))?;
        crate::run::metrics::add(|m| m.quarantined += rows.len() as u64);
        for r in &rows {
            tracing::error!(table = %route.table, partition = %partition.path, url = %r.s3_url,
                etag = %r.etag, error = %r.error, probes = found.probes,
                "file quarantined: Redshift refused it; it loads again when rewritten or \
                 released (loaderctl quarantine release)");
        }
        let last = if found.statement_id.is_empty() {
            statement_id
        } else {
            found.statement_id
        };
        Ok((
            last,
            found.loaded.len(),
            rows.into_iter().map(|r| r.s3_url).collect(),
        ))
    }
}
