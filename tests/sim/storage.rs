//! The model S3: objects by (bucket, key); strongly consistent listings (as S3's are).
//! Data files are written by the workload over time; manifests by the loader.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use partition_loader::protocol::plan::ListedObject;

#[derive(Debug, Clone)]
pub struct Object {
    pub size: i64,
    pub etag: String,
    /// A file COPY refuses (a permanent failure).
    pub corrupt: bool,
    /// What the loader PUT (manifests); data files have no body here.
    pub body: Option<String>,
}

#[derive(Debug, Default)]
pub struct Objects {
    map: BTreeMap<(String, String), Object>,
    /// The last ETag given to a gate object (each write gets a new one).
    etags: u64,
}

/// One S3 call on the gate's objects (issue 21 item 4): a scheduling point of its own.
#[derive(Debug, Clone, PartialEq)]
pub enum S3Op {
    Put {
        bucket: String,
        key: String,
        body: String,
    },
    /// `expected`: `None` = If-None-Match: *, `Some(etag)` = If-Match.
    PutIf {
        bucket: String,
        key: String,
        body: String,
        expected: Option<String>,
    },
    Get {
        bucket: String,
        key: String,
    },
    Delete {
        bucket: String,
        key: String,
    },
}

/// What an [`S3Op`] answered.
#[derive(Debug, Clone, PartialEq)]
pub enum S3Answer {
    Done,
    Written(bool),
    Got(Option<(String, String)>),
}

impl Objects {
    pub fn insert(&mut self, bucket: &str, key: &str, object: Object) {
        self.map
            .insert((bucket.to_string(), key.to_string()), object);
    }

    /// Applies a gate object call as S3 would: strongly consistent, conditional writes
    /// refused when the key exists (If-None-Match) or its ETag differs (If-Match).
    pub fn apply(&mut self, op: &S3Op) -> S3Answer {
        let id = |b: &str, k: &str| (b.to_string(), k.to_string());
        match op {
            S3Op::Put { bucket, key, body } => {
                self.write(bucket, key, body);
                S3Answer::Done
            }
            S3Op::PutIf {
                bucket,
                key,
                body,
                expected,
            } => {
                let current = self.map.get(&id(bucket, key)).map(|o| o.etag.clone());
                let ok = match expected {
                    None => current.is_none(),
                    Some(e) => current.as_deref() == Some(e.as_str()),
                };
                if ok {
                    self.write(bucket, key, body);
                }
                S3Answer::Written(ok)
            }
            S3Op::Get { bucket, key } => S3Answer::Got(
                self.map
                    .get(&id(bucket, key))
                    .map(|o| (o.body.clone().unwrap_or_default(), o.etag.clone())),
            ),
            S3Op::Delete { bucket, key } => {
                self.map.remove(&id(bucket, key));
                S3Answer::Done
            }
        }
    }

    fn write(&mut self, bucket: &str, key: &str, body: &str) {
        self.etags += 1;
        let etag = format!("g{}", self.etags);
        self.insert(
            bucket,
            key,
            Object {
                size: body.len() as i64,
                etag,
                corrupt: false,
                body: Some(body.to_string()),
            },
        );
    }

    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<ListedObject> {
        self.map
            .range((bucket.to_string(), prefix.to_string())..)
            .take_while(|((b, k), _)| b == bucket && k.starts_with(prefix))
            .map(|((_, k), o)| ListedObject {
                key: k.clone(),
                size: o.size,
                etag: o.etag.clone(),
                last_modified: Some(SystemTime::UNIX_EPOCH),
            })
            .collect()
    }

    pub fn object(&self, url: &str) -> Option<&Object> {
        let (bucket, key) = url.strip_prefix("s3://")?.split_once('/')?;
        self.map.get(&(bucket.to_string(), key.to_string()))
    }

    pub fn body(&self, url: &str) -> Option<String> {
        self.object(url)?.body.clone()
    }

    /// URLs of the data files directly under `prefix` (a partition); zero-byte objects
    /// (ready markers) are none, as the loader skips them.
    pub fn data_files(&self, bucket: &str, prefix: &str) -> BTreeSet<String> {
        self.list(bucket, prefix)
            .into_iter()
            .filter(|o| !o.key[prefix.len()..].contains('/') && o.size > 0)
            .map(|o| format!("s3://{bucket}/{}", o.key))
            .collect()
    }
}
