//! The diff between what S3 holds in a partition and what the ledger says is loaded.

use std::collections::{BTreeSet, HashMap};

use crate::error::LoaderError;
use crate::lake::config::Mode;

/// An object found by listing the partition; `etag` without quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: i64,
    pub etag: String,
    /// S3's LastModified: when the object was written, where its freshness lag starts
    /// (`None` when the listing did not say).
    pub last_modified: Option<std::time::SystemTime>,
}

/// A ledger row of the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedFile {
    pub s3_url: String,
    pub etag: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    UpToDate,
    /// Load these files (append: the new ones; replace: all of them, after deleting the
    /// partition).
    Load(Vec<ListedObject>),
}

pub fn s3_url(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

/// S3 returns ETags in quotes; the ledger stores them bare.
pub fn normalise_etag(etag: &str) -> String {
    etag.trim().trim_matches('"').to_string()
}

/// An empty listing is always `UpToDate`: a partition is never emptied because a listing
/// came back empty.
pub fn plan(
    mode: Mode,
    bucket: &str,
    mut listed: Vec<ListedObject>,
    ledger: &[LoadedFile],
) -> Result<Plan, LoaderError> {
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    if listed.is_empty() {
        return Ok(Plan::UpToDate);
    }
    match mode {
        Mode::Append => {
            let loaded: HashMap<&str, &str> = ledger
                .iter()
                .map(|f| (f.s3_url.as_str(), f.etag.as_str()))
                .collect();
            let mut pending = Vec::new();
            for obj in listed {
                let url = s3_url(bucket, &obj.key);
                match loaded.get(url.as_str()) {
                    Some(etag) if *etag == obj.etag => {}
                    Some(etag) => {
                        return Err(LoaderError::Rewritten {
                            url,
                            etag: obj.etag,
                            loaded_etag: etag.to_string(),
                        })
                    }
                    None => pending.push(obj),
                }
            }
            Ok(if pending.is_empty() {
                Plan::UpToDate
            } else {
                Plan::Load(pending)
            })
        }
        Mode::Replace => {
            let now: BTreeSet<(String, &str)> = listed
                .iter()
                .map(|o| (s3_url(bucket, &o.key), o.etag.as_str()))
                .collect();
            let before: BTreeSet<(String, &str)> = ledger
                .iter()
                .map(|f| (f.s3_url.clone(), f.etag.as_str()))
                .collect();
            Ok(if now == before {
                Plan::UpToDate
            } else {
                Plan::Load(listed)
            })
        }
    }
}

/// Groups ledger INSERTs (each with its number of files) into load batches of at most
/// `max_inserts` INSERTs; returns each batch's INSERTs and file count.
pub fn batches(inserts: Vec<(String, usize)>, max_inserts: usize) -> Vec<(Vec<String>, usize)> {
    inserts
        .chunks(max_inserts.max(1))
        .map(|chunk| {
            (
                chunk.iter().map(|(s, _)| s.clone()).collect(),
                chunk.iter().map(|(_, n)| n).sum(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str, etag: &str) -> ListedObject {
        ListedObject {
            key: key.into(),
            size: 1,
            etag: etag.into(),
            last_modified: None,
        }
    }

    fn loaded(key: &str, etag: &str) -> LoadedFile {
        LoadedFile {
            s3_url: s3_url("b", key),
            etag: etag.into(),
        }
    }

    #[test]
    fn append_loads_only_new_objects() {
        let listed = vec![obj("p/c", "3"), obj("p/a", "1"), obj("p/b", "2")];
        let plan = plan(Mode::Append, "b", listed, &[loaded("p/a", "1")]).unwrap();
        assert_eq!(plan, Plan::Load(vec![obj("p/b", "2"), obj("p/c", "3")]));
    }

    #[test]
    fn append_everything_loaded_is_up_to_date() {
        let ledger = [loaded("p/a", "1"), loaded("p/b", "2")];
        let listed = vec![obj("p/a", "1"), obj("p/b", "2")];
        assert_eq!(
            plan(Mode::Append, "b", listed, &ledger).unwrap(),
            Plan::UpToDate
        );
        assert_eq!(
            plan(Mode::Append, "b", vec![], &ledger).unwrap(),
            Plan::UpToDate
        );
    }

    #[test]
    fn append_rewritten_object_is_an_error() {
        let e = plan(
            Mode::Append,
            "b",
            vec![obj("p/a", "9")],
            &[loaded("p/a", "1")],
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("s3://b/p/a") && msg.contains("ETag 9") && msg.contains("replace"));
        assert_eq!(e.error_type(), "Permanent.Rewritten");
    }

    #[test]
    fn replace_reloads_all_when_the_set_changes() {
        let ledger = [loaded("p/a", "1"), loaded("p/b", "2")];
        let same = vec![obj("p/b", "2"), obj("p/a", "1")];
        assert_eq!(
            plan(Mode::Replace, "b", same, &ledger).unwrap(),
            Plan::UpToDate
        );
        let rewritten = vec![obj("p/a", "7"), obj("p/b", "2")];
        assert_eq!(
            plan(Mode::Replace, "b", rewritten.clone(), &ledger).unwrap(),
            Plan::Load(rewritten)
        );
        let fewer = vec![obj("p/a", "1")];
        assert_eq!(
            plan(Mode::Replace, "b", fewer.clone(), &ledger).unwrap(),
            Plan::Load(fewer)
        );
        assert_eq!(
            plan(Mode::Replace, "b", vec![], &ledger).unwrap(),
            Plan::UpToDate
        );
    }

    #[test]
    fn etags_lose_their_quotes() {
        assert_eq!(normalise_etag("\"abc-3\""), "abc-3");
        assert_eq!(normalise_etag("abc"), "abc");
    }

    #[test]
    fn batches_respect_the_insert_limit() {
        let inserts: Vec<(String, usize)> = (0..5).map(|i| (format!("I{i}"), 10)).collect();
        let b = batches(inserts, 2);
        assert_eq!(b.len(), 3);
        assert_eq!(b[0], (vec!["I0".to_string(), "I1".to_string()], 20));
        assert_eq!(b[2], (vec!["I4".to_string()], 10));
    }
}
