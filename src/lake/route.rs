//! Which route claims an object, or why it is skipped.

use crate::lake::config::{Config, Route};

#[derive(Debug)]
pub enum Routed<'a> {
    Load(&'a Route),
    Skip(&'static str),
}

/// Why a key is not a data file, if it is not. Used for the event's key and for every
/// key found when listing a partition.
pub fn marker_reason(key: &str, size: Option<i64>) -> Option<&'static str> {
    let name = key.rsplit('/').next().unwrap_or(key);
    if key.ends_with('/') {
        Some("directory placeholder")
    } else if key.split('/').any(|seg| seg == "_temporary") {
        Some("temporary file of a running job (_temporary)")
    } else if name == "_SUCCESS" {
        Some("marker file (_SUCCESS)")
    } else if name.ends_with("_$folder$") {
        Some("folder marker (_$folder$)")
    } else if name.starts_with("_started_") || name.starts_with("_committed_") {
        Some("commit protocol file (_started_/_committed_)")
    } else if name.ends_with(".crc") {
        Some("checksum file (.crc)")
    } else if name.starts_with('_') || name.starts_with('.') {
        Some("hidden file (name starts with _ or .)")
    } else if size == Some(0) {
        Some("zero-byte object")
    } else {
        None
    }
}

pub fn route<'a>(config: &'a Config, bucket: &str, key: &str, size: Option<i64>) -> Routed<'a> {
    if bucket == config.manifest.bucket && key.starts_with(&config.manifest.prefix) {
        return Routed::Skip("loader manifest");
    }
    if let Some(reason) = marker_reason(key, size) {
        return Routed::Skip(reason);
    }
    match config.routes.iter().find(|r| r.claims(bucket, key)) {
        Some(r) => Routed::Load(r),
        None => Routed::Skip("no route claims this key"),
    }
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
        "#,
        )
    }

    fn reason(key: &str, size: i64) -> Option<&'static str> {
        match route(&config(), "lake", key, Some(size)) {
            Routed::Skip(r) => Some(r),
            Routed::Load(_) => None,
        }
    }

    #[test]
    fn data_files_are_routed() {
        assert!(reason("orders/d=1/part-0.parquet", 10).is_none());
        let c = config();
        assert!(matches!(
            route(&c, "lake", "orders/x.parquet", None),
            Routed::Load(_)
        ));
    }

    #[test]
    fn markers_and_strangers_are_skipped() {
        assert_eq!(
            reason("orders/d=1/_SUCCESS", 0),
            Some("marker file (_SUCCESS)")
        );
        assert!(reason("orders/_temporary/0/part-0.parquet", 10)
            .unwrap()
            .contains("_temporary"));
        assert!(reason("orders/d=1/.part-0.parquet.crc", 10)
            .unwrap()
            .contains("crc"));
        assert!(reason("orders/d=1/part-0.parquet.crc", 10)
            .unwrap()
            .contains(".crc"));
        assert!(reason("orders/d=1_$folder$", 0).unwrap().contains("folder"));
        assert!(reason("orders/_committed_8512", 10)
            .unwrap()
            .contains("commit protocol"));
        assert!(reason("orders/_started_8512", 10)
            .unwrap()
            .contains("commit protocol"));
        assert!(reason("orders/._SUCCESS.crc", 8).unwrap().contains(".crc"));
        assert!(reason("orders/d=1/_common_metadata", 10)
            .unwrap()
            .contains("hidden"));
        assert_eq!(
            reason("orders/d=1/part-0.parquet", 0),
            Some("zero-byte object")
        );
        assert_eq!(reason("orders/d=1/", 0), Some("directory placeholder"));
        assert_eq!(
            reason("_loader/s.orders/m.manifest", 10),
            Some("loader manifest")
        );
        assert_eq!(
            reason("customers/x.parquet", 10),
            Some("no route claims this key")
        );
        let c = config();
        assert!(matches!(
            route(&c, "other-bucket", "orders/x.parquet", Some(1)),
            Routed::Skip("no route claims this key")
        ));
    }
}
