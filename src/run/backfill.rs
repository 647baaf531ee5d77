//! A backfill: files that existed before the function was deployed, loaded partition by
//! partition with the same protocol ([`Loader::backfill`]). Its work list is pure: the
//! objects listed under `s3://bucket/prefix`, grouped into partitions of their routes,
//! with the files and bytes of each, so that a backfill can show progress (files and
//! bytes of the total) and a dry run can say what it would load.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::LoaderError;
use crate::io::storage::Storage;
use crate::io::warehouse::Warehouse;
use crate::lake::config::{Config, Route};
use crate::lake::partition::{self, Partition};
use crate::lake::route::{self, Routed};
use crate::protocol::plan::ListedObject;
use crate::run::handler::Loader;
use crate::run::outcome::Outcome;

/// One partition to load, with its data files as listed (markers and deeper keys left
/// out, as the load itself leaves them out).
#[derive(Debug)]
pub struct PartitionWork<'c> {
    pub route: &'c Route,
    pub partition: Partition,
    pub files: Vec<ListedObject>,
}

impl PartitionWork<'_> {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size.max(0) as u64).sum()
    }
}

/// The partitions under the listing in route order, then partition path order; and one
/// error per key that a route claims but whose partition cannot be read.
pub fn partitions<'c>(
    config: &'c Config,
    bucket: &str,
    listed: Vec<ListedObject>,
) -> (Vec<PartitionWork<'c>>, Vec<LoaderError>) {
    let mut work: BTreeMap<(usize, String), PartitionWork<'c>> = BTreeMap::new();
    let mut errors = Vec::new();
    for obj in listed {
        let Routed::Load(route) = route::route(config, bucket, &obj.key, Some(obj.size)) else {
            continue;
        };
        let index = config.route_index(route);
        match partition::parse(route, &obj.key) {
            Ok(p) => {
                let prefix = p.list_prefix(route);
                let directly_inside = obj
                    .key
                    .strip_prefix(&prefix)
                    .is_some_and(|name| !name.contains('/'));
                let entry = work
                    .entry((index, p.path.clone()))
                    .or_insert_with(|| PartitionWork {
                        route,
                        partition: p,
                        files: Vec::new(),
                    });
                if directly_inside {
                    entry.files.push(obj);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    (work.into_values().collect(), errors)
}

impl<W: Warehouse, S: Storage> Loader<W, S> {
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
    /// files (see [`partitions`]); for progress and dry runs.
    pub async fn backfill_partitions(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<(Vec<PartitionWork<'_>>, Vec<LoaderError>), LoaderError> {
        let listed = self.storage().list(bucket, prefix).await?;
        Ok(partitions(self.config(), bucket, listed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::for_tests(
            "[[routes]]\nprefix = \"orders/\"\ntable = \"s.orders\"\nformat = \"parquet\"\n\
             partition_columns = [{ name = \"d\", type = \"date\" }]\n",
        )
    }

    fn obj(key: &str, size: i64) -> ListedObject {
        ListedObject {
            key: key.into(),
            size,
            etag: "e".into(),
            last_modified: None,
        }
    }

    #[test]
    fn objects_are_grouped_by_partition_with_their_bytes() {
        let config = config();
        let listed = vec![
            obj("orders/d=2024-05-02/b.parquet", 20),
            obj("orders/d=2024-05-01/a.parquet", 10),
            obj("orders/d=2024-05-02/a.parquet", 5),
            obj("orders/d=2024-05-02/_SUCCESS", 0),
            obj("orders/d=not-a-date/a.parquet", 1),
            obj("elsewhere/x.parquet", 1),
        ];
        let (work, errors) = partitions(&config, "lake", listed);
        assert_eq!(work.len(), 2);
        assert_eq!(work[0].partition.path, "d=2024-05-01/");
        assert_eq!(work[0].files.len(), 1);
        assert_eq!(work[1].partition.path, "d=2024-05-02/");
        assert_eq!(work[1].files.len(), 2, "the marker is not a data file");
        assert_eq!(work[1].bytes(), 25);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].error_type(), "Permanent.BadPartition");
    }
}
