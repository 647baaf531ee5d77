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
}

impl Objects {
    pub fn insert(&mut self, bucket: &str, key: &str, object: Object) {
        self.map
            .insert((bucket.to_string(), key.to_string()), object);
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
