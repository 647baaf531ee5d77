//! The sweep (run on a schedule, and by `loaderctl sweep`): for every route's table,
//! finds files whose event never came and finishes what a crashed holder left.
//!
//! Its cost is bounded by `look_back_days`, never by the route's age: it lists only the
//! partitions of the last `look_back_days` dates (routes whose first partition column
//! is a date, in the route's bucket or `SWEEP_BUCKET`) and the partitions the ledger
//! loaded in that window, loads each one with the usual protocol (or hands it to the
//! live holder), then takes a free lease to drain wake-ups left behind.

use tokio::time::Instant;

use crate::config::Route;
use crate::error::LoaderError;
use crate::handler::Loader;
use crate::lease::{self, Acquired, Ctx};
use crate::outcome::{Outcome, PartitionValues};
use crate::partition::{self, Partition};
use crate::route;
use crate::sql::{self, LeaseTables};
use crate::storage::Storage;
use crate::warehouse::Warehouse;

/// What a table's sweep reports as it goes (`loaderctl sweep` shows progress by it).
#[derive(Debug)]
pub enum Step<'a> {
    /// The partitions it will look at, listed.
    Listed { partitions: usize },
    /// One partition looked at.
    Partition {
        partition: &'a Partition,
        result: &'a Result<Outcome, LoaderError>,
    },
}

impl<W: Warehouse, S: Storage> Loader<W, S> {
    /// Sweeps every route's table ([`Loader::sweep_table`]), one after the other. One
    /// result per partition looked at (plus errors).
    pub async fn sweep(
        &self,
        holder: &str,
        look_back_days: u32,
        deadline: Instant,
    ) -> Vec<Result<Outcome, LoaderError>> {
        let mut results = Vec::new();
        for route in self.config().table_routes() {
            results.extend(
                self.sweep_table(route, holder, look_back_days, deadline)
                    .await,
            );
        }
        results
    }

    /// Sweeps one table (of `route`, the first route of that table): see the module
    /// documentation.
    pub async fn sweep_table(
        &self,
        route: &Route,
        holder: &str,
        look_back_days: u32,
        deadline: Instant,
    ) -> Vec<Result<Outcome, LoaderError>> {
        self.sweep_table_with(route, holder, look_back_days, deadline, |_| {})
            .await
    }

    /// [`Loader::sweep_table`], telling `step` what it listed and each partition's
    /// result as it goes.
    pub async fn sweep_table_with(
        &self,
        route: &Route,
        holder: &str,
        look_back_days: u32,
        deadline: Instant,
        mut step: impl FnMut(Step<'_>),
    ) -> Vec<Result<Outcome, LoaderError>> {
        let mut results = Vec::new();
        let ctx = Ctx::new(
            self.warehouse(),
            self.config(),
            &route.table,
            holder,
            deadline,
        );
        match self.sweep_candidates(route, look_back_days, deadline).await {
            Ok(candidates) => {
                step(Step::Listed {
                    partitions: candidates.len(),
                });
                for (bucket, partition) in &candidates {
                    let result = self
                        .load_partition(route, bucket, partition, None, holder, deadline)
                        .await;
                    step(Step::Partition {
                        partition,
                        result: &result,
                    });
                    results.push(result);
                }
            }
            Err(e) => {
                // Cannot tell what to look at: the next sweep tries this table again. A
                // missing ledger (before `loaderctl bootstrap`) is named as such.
                results.push(Err(lease::missing_tables(&ctx, e)));
                return results;
            }
        }
        match lease::acquire_if_free(&ctx).await {
            Ok(Acquired::Held(_)) => {
                let drained = Ok(Outcome::UpToDate {
                    table: route.table.to_string(),
                    partition: PartitionValues::default(),
                });
                let r = self.finish_holding(&ctx, route, drained).await;
                if r.is_err() {
                    results.push(r);
                }
            }
            Ok(Acquired::Queued { .. }) => {}
            Err(e) => results.push(Err(e)),
        }
        results
    }

    /// The partitions a sweep lists again for one route: `(bucket, partition)`.
    async fn sweep_candidates(
        &self,
        route: &Route,
        look_back_days: u32,
        deadline: Instant,
    ) -> Result<Vec<(String, Partition)>, LoaderError> {
        let Some(bucket) = self.config().sweep_bucket_of(route) else {
            // A route for any bucket and no SWEEP_BUCKET: nothing to list (doctor says
            // so); wake-ups are still drained.
            return Ok(Vec::new());
        };
        let mut paths: Vec<String> = Vec::new();
        // Date partitions of the window, by prefix: one listing per day.
        if let Some(first) = route
            .partition_columns
            .first()
            .filter(|c| c.ty == sql::PartitionType::Date)
        {
            let today = chrono::Utc::now().date_naive();
            for back in 0..look_back_days {
                let Some(day) = today.checked_sub_days(chrono::Days::new(back.into())) else {
                    continue;
                };
                let prefix = format!("{}{}={}/", route.prefix, first.name, day.format("%Y-%m-%d"));
                for o in self.storage().list(bucket, &prefix).await? {
                    if route::marker_reason(&o.key, Some(o.size)).is_some() {
                        continue;
                    }
                    if let Ok(p) = partition::parse(route, &o.key) {
                        if !paths.contains(&p.path) {
                            paths.push(p.path);
                        }
                    }
                }
            }
        }
        // Partitions loaded within the window, whatever their columns.
        let tables = LeaseTables::for_target(&route.table);
        let sql = sql::recent_partitions(&self.config().loader_schema, &tables, look_back_days);
        for row in self.query(sql, vec![], deadline).await? {
            let path = row.into_iter().next().flatten().unwrap_or_default();
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
        let mut out = Vec::new();
        for path in paths {
            if let Ok(p) = partition::parse(route, &format!("{}{path}_", route.prefix)) {
                out.push((bucket.to_string(), p));
            }
        }
        Ok(out)
    }
}
