//! The holder's side of one bad file: when a load of a partition fails because Redshift
//! refuses a file's data, find the bad file(s) ([`crate::isolate`]), load the rest in
//! the same lease, and quarantine the bad ones in a batch of their own (the fence
//! last). Append mode only: replace mode reloads a partition all or nothing, so its
//! failure stands, naming the file where Redshift's error (or the footer) does.

use tokio::time::Instant;

use crate::config::{Mode, Route};
use crate::error::LoaderError;
use crate::handler::{load_error, Loader};
use crate::isolate::{self, Loads, Verdict};
use crate::lease::Held;
use crate::partition::Partition;
use crate::plan::{self, ListedObject};
use crate::sql::{self, CopyTarget, LeaseTables, QuarantineRow};
use crate::storage::Storage;
use crate::warehouse::Warehouse;

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

impl<W: Warehouse, S: Storage> Loader<W, S> {
    /// After `files`' load failed with `failure`: in append mode, when the failure is
    /// about a file's data, the statement id of the last committed batch, the files
    /// loaded and the URLs quarantined; otherwise `failure` itself.
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
        if route.mode != Mode::Append
            || isolate::verdict(&failure, bucket, &files) == Verdict::NotAFile
        {
            return Err(failure);
        }
        tracing::warn!(table = %route.table, partition = %partition.path, files = files.len(),
            error = %failure, "a file of the load was refused; finding it and loading the rest");
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
        crate::metrics::add(|m| m.quarantined += rows.len() as u64);
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
