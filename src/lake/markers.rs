//! Ready markers (route option `ready_marker`, issue 20 item 1): which files of a
//! partition a writer has declared complete.
//!
//! A partition's files are *ready* when its own marker exists (`…/d=1/_SUCCESS`: every
//! file, also one landing later), or, failing that, when the route's *root* marker
//! (`<prefix>_SUCCESS`, where Spark's `partitionBy` with the default committer writes
//! one for the whole job) is not older than them. Files newer than the root marker
//! belong to a job still running (its next `_SUCCESS` will cover them), so they wait.
//! S3 lists `LastModified` to the second: a file written in the same second as the root
//! marker counts as covered (Spark moves every file before it writes `_SUCCESS`). For a
//! multipart upload S3's `LastModified` is the upload's *initiation* (the S3 user
//! guide's system-defined metadata table,
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingMetadata.html>; not found
//! in this project's search corpus, quoted from that page): a file whose multipart
//! upload began before the root marker but completed after it counts as covered. With
//! Spark's default committer every file is complete before `_SUCCESS` is written; a
//! writer whose next run overlaps the marker should write partition markers instead.
//!
//! Invariant: no file of a route with a marker is loaded unless [`split_ready`] put it
//! on the ready side; the handler applies it to every load (event, wake-up, sweep,
//! backfill), after listing under the lease.

use std::time::{Duration, SystemTime};

use crate::lake::config::{Config, Route};
use crate::lake::partition::{self, Partition};
use crate::lake::route;
use crate::protocol::plan::ListedObject;

/// Where a marker sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerAt {
    /// In a partition (or at the root of a route without partition columns, whose only
    /// partition is the root).
    Partition,
    /// At the root of a partitioned route: the whole job's output.
    Root,
}

/// A route's `ready_marker` must be a file name.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.len() > 255 {
        return Err(format!(
            "{name:?} is not a file name (e.g. \"_SUCCESS\"): no '/', 1 to 255 bytes"
        ));
    }
    Ok(())
}

/// The route whose ready marker `key` is, and where it sits; `None` for any other key
/// (those go through [`route::route`]).
pub fn marker_of<'a>(config: &'a Config, bucket: &str, key: &str) -> Option<(&'a Route, MarkerAt)> {
    if bucket == config.manifest.bucket && key.starts_with(&config.manifest.prefix) {
        return None;
    }
    let name = key.rsplit('/').next().unwrap_or(key);
    let route = config
        .routes
        .iter()
        .find(|r| r.claims(bucket, key) && r.ready_marker.as_deref() == Some(name))?;
    let at = if key.strip_prefix(&route.prefix) == Some(name) && !route.partition_columns.is_empty()
    {
        MarkerAt::Root
    } else {
        MarkerAt::Partition
    };
    Some((route, at))
}

/// Whether a listed key is a data file of the route: not skipped by
/// [`route::marker_reason`] and not the route's marker (a marker with content and a
/// name without `_`, such as `READY`, would otherwise pass as data).
pub fn is_data_file(route: &Route, key: &str, size: i64) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    route::marker_reason(key, Some(size)).is_none() && route.ready_marker.as_deref() != Some(name)
}

/// Whether the listing of a partition (under `prefix`, the partition's own) holds the
/// route's marker. A route without the option has every partition marked.
pub fn partition_marked(route: &Route, prefix: &str, listing: &[ListedObject]) -> bool {
    let Some(marker) = &route.ready_marker else {
        return true;
    };
    let key = format!("{prefix}{marker}");
    listing.iter().any(|o| o.key == key)
}

/// The route's root marker key.
pub fn root_marker_key(route: &Route) -> Option<String> {
    route
        .ready_marker
        .as_ref()
        .map(|m| format!("{}{m}", route.prefix))
}

/// Splits a partition's data files (not marked by its own marker) into those the root
/// marker covers and those that wait. `root` is the root marker's `LastModified`
/// (`None`: no root marker). A file without a `LastModified` waits (the stricter
/// reading: nothing says the job finished after it).
pub fn split_ready(
    files: Vec<ListedObject>,
    root: Option<SystemTime>,
) -> (Vec<ListedObject>, Vec<ListedObject>) {
    files
        .into_iter()
        .partition(|f| matches!((f.last_modified, root), (Some(m), Some(r)) if m <= r))
}

/// How long the oldest of `waiting` has waited at `now` (0 when its time is unknown).
pub fn oldest_wait(waiting: &[ListedObject], now: SystemTime) -> Duration {
    waiting
        .iter()
        .filter_map(|f| f.last_modified)
        .min()
        .and_then(|m| now.duration_since(m).ok())
        .unwrap_or_default()
}

/// The partitions a root marker loads, from a listing of the whole route prefix: those
/// with a data file directly inside them whose `LastModified` is not newer than the
/// marker's (`marker`) and not older than `since` (the look-back window: the previous
/// root marker's time is gone, Spark overwrites `_SUCCESS`, and a job's files older
/// than the window are the backfill's). In partition path order, each once; keys that
/// name no partition of the route are left out (their own events report them).
pub fn root_partitions(
    route: &Route,
    listing: &[ListedObject],
    marker: SystemTime,
    since: SystemTime,
) -> Vec<Partition> {
    let mut found: Vec<Partition> = Vec::new();
    for o in listing {
        if !is_data_file(route, &o.key, o.size) {
            continue;
        }
        let Some(modified) = o.last_modified else {
            continue;
        };
        if modified > marker || modified < since {
            continue;
        }
        let Ok(p) = partition::parse(route, &o.key) else {
            continue;
        };
        let directly_inside = o
            .key
            .strip_prefix(&p.list_prefix(route))
            .is_some_and(|name| !name.contains('/'));
        if directly_inside && !found.iter().any(|f| f.path == p.path) {
            found.push(p);
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

/// One partition that waits for its marker, for `loaderctl status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub partition_path: String,
    pub files: usize,
    /// Since the oldest waiting file was written.
    pub waited: Duration,
}

/// The partitions of a route listing (its whole prefix) whose data files wait for a
/// marker at `now`: no marker in the partition, and newer than the root marker (or no
/// root marker). Files older than `since` are left out (the window's bound). The
/// ledger is not read: a file waiting for a marker was never loaded, unless it was
/// before the route had the option.
pub fn waiting_partitions(
    route: &Route,
    listing: &[ListedObject],
    since: SystemTime,
    now: SystemTime,
) -> Vec<Waiting> {
    if route.ready_marker.is_none() {
        return Vec::new();
    }
    let root_key = root_marker_key(route);
    let root = listing
        .iter()
        .find(|o| Some(&o.key) == root_key.as_ref())
        .and_then(|o| o.last_modified);
    let mut by_partition: Vec<(String, Vec<ListedObject>)> = Vec::new();
    let mut marked: Vec<String> = Vec::new();
    for o in listing {
        let Ok(p) = partition::parse(route, &o.key) else {
            continue;
        };
        let prefix = p.list_prefix(route);
        let Some(name) = o.key.strip_prefix(&prefix).filter(|n| !n.contains('/')) else {
            continue;
        };
        if Some(name) == route.ready_marker.as_deref() {
            marked.push(p.path);
            continue;
        }
        if route::marker_reason(&o.key, Some(o.size)).is_some()
            || o.last_modified.is_some_and(|m| m < since)
        {
            continue;
        }
        match by_partition.iter_mut().find(|(path, _)| *path == p.path) {
            Some((_, files)) => files.push(o.clone()),
            None => by_partition.push((p.path, vec![o.clone()])),
        }
    }
    let mut out: Vec<Waiting> = by_partition
        .into_iter()
        .filter(|(path, _)| !marked.contains(path))
        .filter_map(|(partition_path, files)| {
            let (_, waiting) = split_ready(files, root);
            (!waiting.is_empty()).then(|| Waiting {
                partition_path,
                files: waiting.len(),
                waited: oldest_wait(&waiting, now),
            })
        })
        .collect();
    out.sort_by_key(|w| std::cmp::Reverse(w.waited));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::for_tests(
            r#"
            [[routes]]
            bucket = "lake"
            prefix = "orders/"
            table = "s.orders"
            format = "parquet"
            partition_columns = [{ name = "d", type = "date" }]
            ready_marker = "_SUCCESS"

            [[routes]]
            bucket = "lake"
            prefix = "flat/"
            table = "s.flat"
            format = "parquet"
            ready_marker = "_DONE"

            [[routes]]
            bucket = "lake"
            prefix = "plain/"
            table = "s.plain"
            format = "parquet"
            partition_columns = ["d"]
        "#,
        )
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn obj(key: &str, modified: u64) -> ListedObject {
        ListedObject {
            key: key.into(),
            size: 10,
            etag: "e".into(),
            last_modified: Some(at(modified)),
        }
    }

    #[test]
    fn markers_are_told_by_route_and_place() {
        let c = config();
        let of = |key: &str| marker_of(&c, "lake", key).map(|(r, at)| (r.prefix.clone(), at));
        assert_eq!(
            of("orders/d=2024-01-01/_SUCCESS"),
            Some(("orders/".into(), MarkerAt::Partition))
        );
        assert_eq!(
            of("orders/_SUCCESS"),
            Some(("orders/".into(), MarkerAt::Root))
        );
        // A route without partition columns: its root is its only partition.
        assert_eq!(
            of("flat/_DONE"),
            Some(("flat/".into(), MarkerAt::Partition))
        );
        // Another route's marker name, a route without the option, a data file.
        assert_eq!(of("flat/_SUCCESS"), None);
        assert_eq!(of("plain/d=1/_SUCCESS"), None);
        assert_eq!(of("orders/d=2024-01-01/part-0.parquet"), None);
        assert!(marker_of(&c, "other", "orders/_SUCCESS").is_none());
    }

    #[test]
    fn a_marker_with_content_is_no_data_file() {
        let c = Config::for_tests(
            r#"
            [[routes]]
            prefix = "o/"
            table = "s.o"
            format = "csv"
            partition_columns = ["d"]
            ready_marker = "READY"
        "#,
        );
        let r = &c.routes[0];
        assert!(!is_data_file(r, "o/d=1/READY", 40));
        assert!(is_data_file(r, "o/d=1/part-0.csv", 40));
        assert!(!is_data_file(r, "o/d=1/part-0.csv.crc", 40));
        let listing = [obj("o/READY", 500), obj("o/d=1/part-0.csv", 400)];
        let found = root_partitions(r, &listing, at(500), at(0));
        assert_eq!(found.len(), 1);
        assert!(crate::lake::config::parse_routes(
            "[[routes]]\nprefix = \"o/\"\ntable = \"s.o\"\nformat = \"csv\"\nready_marker = \"a/b\"\n"
        )
        .unwrap_err()
        .to_string()
        .contains("routes[0].ready_marker"));
    }

    #[test]
    fn names_are_file_names() {
        assert!(check_name("_SUCCESS").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a/_SUCCESS").is_err());
        assert!(check_name("..").is_err());
    }

    #[test]
    fn the_root_marker_covers_files_not_newer_than_itself() {
        let files = vec![obj("a", 100), obj("b", 200), obj("c", 201)];
        let (ready, waiting) = split_ready(files.clone(), Some(at(200)));
        assert_eq!(ready.len(), 2);
        assert_eq!(waiting[0].key, "c");
        let (ready, waiting) = split_ready(files, None);
        assert!(ready.is_empty());
        assert_eq!(waiting.len(), 3);
        let unknown = ListedObject {
            last_modified: None,
            ..obj("x", 0)
        };
        assert_eq!(split_ready(vec![unknown], Some(at(9))).1.len(), 1);
    }

    #[test]
    fn a_partition_is_marked_by_its_own_marker_only() {
        let c = config();
        let r = &c.routes[0];
        let listing = [
            obj("orders/d=1/_SUCCESS", 1),
            obj("orders/d=1/p.parquet", 1),
        ];
        assert!(partition_marked(r, "orders/d=1/", &listing));
        assert!(!partition_marked(r, "orders/d=2/", &listing));
        assert!(partition_marked(&c.routes[2], "plain/d=2/", &[]));
    }

    #[test]
    fn a_root_marker_finds_the_jobs_partitions_within_the_window() {
        let c = config();
        let r = &c.routes[0];
        let listing = [
            obj("orders/_SUCCESS", 500),
            obj("orders/d=2024-01-01/part-0.snappy.parquet", 400),
            obj("orders/d=2024-01-01/part-1.snappy.parquet", 450),
            obj("orders/d=2024-01-01/.part-1.snappy.parquet.crc", 450),
            obj("orders/d=2024-01-02/part-0.snappy.parquet", 490),
            obj("orders/d=2024-01-03/part-0.snappy.parquet", 600),
            obj("orders/d=2023-01-01/part-0.snappy.parquet", 10),
            obj("orders/_temporary/0/d=2024-01-04/part-0.parquet", 450),
            obj("orders/d=2024-01-05/_SUCCESS", 450),
            obj("orders/_committed_123", 450),
        ];
        let found: Vec<String> = root_partitions(r, &listing, at(500), at(100))
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(found, ["d=2024-01-01/", "d=2024-01-02/"]);
    }

    #[test]
    fn waiting_partitions_are_those_no_marker_covers() {
        let c = config();
        let r = &c.routes[0];
        let listing = [
            obj("orders/_SUCCESS", 500),
            obj("orders/d=2024-01-01/part-0.parquet", 400),
            obj("orders/d=2024-01-02/part-0.parquet", 600),
            obj("orders/d=2024-01-02/part-1.parquet", 700),
            obj("orders/d=2024-01-03/part-0.parquet", 650),
            obj("orders/d=2024-01-03/_SUCCESS", 660),
        ];
        let w = waiting_partitions(r, &listing, at(0), at(1000));
        assert_eq!(
            w,
            [Waiting {
                partition_path: "d=2024-01-02/".into(),
                files: 2,
                waited: Duration::from_secs(400),
            }]
        );
        assert!(waiting_partitions(&c.routes[2], &listing, at(0), at(1000)).is_empty());
    }
}
