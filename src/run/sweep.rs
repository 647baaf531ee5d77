//! The sweep (run on a schedule, and by `loaderctl sweep`): for every table, under
//! every route into it, finds files whose event never came and finishes what a crashed
//! holder left.
//!
//! Its cost is bounded by `look_back_days` (at most [`MAX_LOOK_BACK_DAYS`]), never by
//! the route's age: it lists only the partitions of the last `look_back_days` dates
//! (routes whose first partition column is a date, in the route's bucket or
//! `SWEEP_BUCKET`) and the
//! partitions the ledger loaded in that window, loads each one with the usual protocol
//! (or hands it to the live holder), then takes a free lease to drain wake-ups left
//! behind.
//!
//! Invariant: the sweep starts no step when less than [`lease::reserve`] of its time is
//! left: a take it would cancel may commit anyway and leave a dead holder's lease.
//! Invariant: tables are swept in an order that starts at a table chosen from the
//! sweep's holder (its request id: [`sweep_order`]), so a sweep cut by its deadline does
//! not always leave the same tables (those late in the configuration) undone, and a
//! replayed sweep (same request id) sweeps in the same order.
//! Invariant: a table found busy gets at most one wake-up from one sweep: its live
//! holder drains it, and the next sweep comes back for the other candidates.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::LoaderError;
use crate::io::storage::Storage;
use crate::io::warehouse::Warehouse;
use crate::lake::config::Route;
use crate::lake::partition::{self, Partition};
use crate::lake::route;
use crate::protocol::lease::{self, Acquired, Ctx};
use crate::run::handler::Loader;
use crate::run::outcome::{Outcome, PartitionValues};
use crate::sql::{self, LeaseTables};

/// The longest look-back a sweep accepts: the sweep event comes from any invoker, and
/// its cost grows with the window (one listing per day and route, every partition of
/// the window loaded or queued). A month covers any schedule that runs at all.
pub const MAX_LOOK_BACK_DAYS: u32 = 31;

/// The least time a sweep step needs (a listing, a ledger read, a take: Data API round
/// trips of a few hundred milliseconds each): none is started with less left, whatever
/// the reserve.
const MIN_STEP: Duration = Duration::from_secs(2);

/// What the sweep keeps in hand before `deadline`: the holder's reserve of the time
/// left ([`lease::reserve`]), at least [`MIN_STEP`].
pub fn sweep_reserve(deadline: Instant) -> Duration {
    lease::reserve(deadline.saturating_duration_since(Instant::now())).max(MIN_STEP)
}

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
    /// Sweeps every table ([`Loader::sweep_table`]) in [`sweep_order`], one after the
    /// other, until its deadline nears. One result per partition looked at (plus
    /// errors).
    pub async fn sweep(
        &self,
        holder: &str,
        look_back_days: u32,
        deadline: Instant,
    ) -> Vec<Result<Outcome, LoaderError>> {
        let reserve = sweep_reserve(deadline);
        let mut results = Vec::new();
        for routes in sweep_order(&self.config().routes, holder) {
            if Instant::now() + reserve >= deadline {
                tracing::info!(table = %routes[0].table,
                    "sweep deadline near: this table and those after it wait for the next sweep");
                break;
            }
            results.extend(
                self.sweep_table(&routes, holder, look_back_days, deadline)
                    .await,
            );
        }
        results
    }

    /// Sweeps one table, under each of `routes` (every route into that table): see the
    /// module documentation.
    pub async fn sweep_table(
        &self,
        routes: &[&Route],
        holder: &str,
        look_back_days: u32,
        deadline: Instant,
    ) -> Vec<Result<Outcome, LoaderError>> {
        self.sweep_table_with(routes, holder, look_back_days, deadline, |_| {})
            .await
    }

    /// [`Loader::sweep_table`], telling `step` what it listed and each partition's
    /// result as it goes.
    pub async fn sweep_table_with(
        &self,
        routes: &[&Route],
        holder: &str,
        look_back_days: u32,
        deadline: Instant,
        mut step: impl FnMut(Step<'_>),
    ) -> Vec<Result<Outcome, LoaderError>> {
        let mut results = Vec::new();
        let Some(route) = routes.first().copied() else {
            return results;
        };
        // The drain below is a tenure of its own; each partition's load starts another.
        let tenure = self.tenure(holder);
        let ctx = Ctx::new(
            self.warehouse(),
            self.config(),
            &route.table,
            &tenure,
            deadline,
        );
        let reserve = sweep_reserve(deadline);
        let late = || {
            let late = Instant::now() + reserve >= deadline;
            if late {
                tracing::info!(table = %route.table,
                    "sweep deadline near: the rest of this table waits for the next sweep");
            }
            late
        };
        if late() {
            return results;
        }
        // Hook of issue 21 item 4: S3 wake-ups a crashed gate holder left go to Redshift
        // first, and are drained with the rest below.
        if let Err(e) = Box::pin(self.sweep_gate_of(route, holder, deadline)).await {
            results.push(Err(e));
        }
        if routes.iter().any(|r| r.ready_marker.is_some()) {
            // The sweep's record says 0 rather than nothing when none waits.
            crate::run::metrics::add(|m| {
                m.oldest_marker_wait.get_or_insert(Duration::ZERO);
            });
        }
        let mut candidates = Vec::new();
        for r in routes {
            match self.sweep_candidates(r, look_back_days, deadline).await {
                Ok(found) => candidates.extend(found.into_iter().map(|(b, p)| (*r, b, p))),
                Err(e) => {
                    // Cannot tell what to look at: the next sweep tries this table again. A
                    // missing ledger (before `loaderctl bootstrap`) is named as such.
                    results.push(Err(lease::missing_tables(&ctx, e)));
                    return results;
                }
            }
        }
        step(Step::Listed {
            partitions: candidates.len(),
        });
        for (r, bucket, partition) in &candidates {
            if late() {
                return results;
            }
            let result = self
                .load_partition(r, bucket, partition, None, holder, deadline)
                .await;
            step(Step::Partition {
                partition,
                result: &result,
            });
            let busy = matches!(result, Ok(Outcome::Queued { .. } | Outcome::Running { .. }));
            results.push(result);
            if busy {
                tracing::info!(table = %route.table,
                    "table busy: its holder drains the wake-up; the next sweep comes back for the rest");
                return results;
            }
        }
        if late() {
            return results;
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
        // Partitions loaded within the window under this route, whatever their columns.
        let tables = LeaseTables::for_target(&route.table);
        let sql = sql::recent_partitions(
            &self.config().loader_schema,
            &tables,
            look_back_days,
            &crate::protocol::plan::s3_url(bucket, &route.prefix),
        )?;
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

/// Every table with all its routes (configuration order within a table), starting at a
/// table chosen from `now`'s minute and going round. A fixed start let a sweep cut by
/// its deadline leave the same tables undone every time; a start that moves every
/// minute gives each table its turn first (the schedule's period may be a multiple of
/// the table count, so the start is a hash of the minute, not the minute itself).
pub fn sweep_order<'r>(routes: &'r [Route], holder: &str) -> Vec<Vec<&'r Route>> {
    let mut tables: Vec<Vec<&Route>> = Vec::new();
    for route in routes {
        match tables.iter_mut().find(|t| t[0].table == route.table) {
            Some(t) => t.push(route),
            None => tables.push(vec![route]),
        }
    }
    if !tables.is_empty() {
        // FNV-1a: stable across Rust versions and platforms, unlike `DefaultHasher`.
        let mixed = holder.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let start = usize::try_from(mixed % tables.len() as u64).unwrap_or(0);
        tables.rotate_left(start);
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::config::parse_routes;

    fn routes() -> Vec<Route> {
        parse_routes(
            "[[routes]]\nprefix = \"a/\"\ntable = \"s.a\"\nformat = \"parquet\"\n\
             [[routes]]\nprefix = \"b/\"\ntable = \"s.b\"\nformat = \"parquet\"\n\
             [[routes]]\nprefix = \"a2/\"\ntable = \"s.a\"\nformat = \"parquet\"\n\
             [[routes]]\nprefix = \"c/\"\ntable = \"s.c\"\nformat = \"parquet\"\n",
        )
        .unwrap()
    }

    #[test]
    fn every_route_of_a_table_is_swept_with_it() {
        let routes = routes();
        let order = sweep_order(&routes, "request-1");
        assert_eq!(order.len(), 3);
        let a = order
            .iter()
            .find(|t| t[0].table.to_string() == "s.a")
            .unwrap();
        let prefixes: Vec<_> = a.iter().map(|r| r.prefix.as_str()).collect();
        assert_eq!(prefixes, ["a/", "a2/"]);
    }

    #[test]
    fn every_table_comes_first_for_some_sweep_and_a_replay_keeps_its_order() {
        let routes = routes();
        let mut firsts = std::collections::BTreeSet::new();
        for run in 0..40u64 {
            // Lambda request ids, one per scheduled sweep.
            let holder = format!("7f3a9c2e-{run:04x}-4b1d-9e2f-0c8a6d5b4e31");
            let first = sweep_order(&routes, &holder)[0][0].table.to_string();
            assert_eq!(sweep_order(&routes, &holder)[0][0].table.to_string(), first);
            firsts.insert(first);
        }
        assert_eq!(firsts.len(), 3, "{firsts:?}");
    }
}
