//! COPY manifests: the exact list of files one load batch copies.

use serde::Serialize;

use crate::lake::config::S3Location;
use crate::protocol::plan::ListedObject;
use crate::sql::TableName;

#[derive(Serialize)]
struct Manifest {
    entries: Vec<Entry>,
}

#[derive(Serialize)]
struct Entry {
    url: String,
    mandatory: bool,
    meta: Meta,
}

#[derive(Serialize)]
struct Meta {
    content_length: i64,
}

/// Manifest JSON; every entry mandatory and with `content_length` (Parquet/ORC need it,
/// and it makes Redshift reject a file that changed size since we listed it).
pub fn manifest_json(bucket: &str, files: &[ListedObject]) -> String {
    let m = Manifest {
        entries: files
            .iter()
            .map(|f| Entry {
                url: crate::protocol::plan::s3_url(bucket, &f.key),
                mandatory: true,
                meta: Meta {
                    content_length: f.size,
                },
            })
            .collect(),
    };
    // Serialising plain strings and integers cannot fail.
    serde_json::to_string(&m).unwrap_or_default()
}

/// `<manifest prefix><table>/<partition path><load id>-<n>.manifest`
pub fn manifest_key(
    location: &S3Location,
    table: &TableName,
    partition_path: &str,
    load_id: &str,
    n: usize,
) -> String {
    format!(
        "{}{table}/{partition_path}{load_id}-{n}.manifest",
        location.prefix
    )
}

/// `s3://<bucket>/<manifest prefix><table>/`: where every manifest of `table` lives.
pub fn table_manifest_url(location: &S3Location, table: &TableName) -> String {
    format!("s3://{}/{}{table}/", location.bucket, location.prefix)
}

/// The load id in a manifest URL or key (`…/<load id>-<n>.manifest`).
pub fn load_id_of(manifest: &str) -> Option<&str> {
    let name = manifest.rsplit('/').next()?.strip_suffix(".manifest")?;
    let (load_id, n) = name.rsplit_once('-')?;
    n.parse::<usize>().ok().map(|_| load_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lists_full_urls_with_lengths() {
        let files = vec![
            ListedObject {
                key: "o/d=1/a b.parquet".into(),
                size: 10,
                etag: "e".into(),
                last_modified: None,
            },
            ListedObject {
                key: "o/d=1/b.parquet".into(),
                size: 20,
                etag: "f".into(),
                last_modified: None,
            },
        ];
        let v: serde_json::Value = serde_json::from_str(&manifest_json("lake", &files)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"entries": [
                {"url": "s3://lake/o/d=1/a b.parquet", "mandatory": true, "meta": {"content_length": 10}},
                {"url": "s3://lake/o/d=1/b.parquet", "mandatory": true, "meta": {"content_length": 20}}
            ]})
        );
    }

    #[test]
    fn manifest_key_layout() {
        let loc = S3Location::parse("s3://lake/_loader").unwrap();
        let t = TableName::parse("sales.orders").unwrap();
        assert_eq!(
            manifest_key(&loc, &t, "order_date=2024-05-28/", "id", 0),
            "_loader/sales.orders/order_date=2024-05-28/id-0.manifest"
        );
    }

    #[test]
    fn load_id_comes_back_from_the_manifest_url() {
        let loc = S3Location {
            bucket: "m".into(),
            prefix: "_loader/".into(),
        };
        let t = TableName::parse("s.t").unwrap();
        let key = manifest_key(&loc, &t, "d=1/", "0b0e-4f2a", 3);
        let url = format!("s3://m/{key}");
        assert!(url.starts_with(&table_manifest_url(&loc, &t)));
        assert_eq!(load_id_of(&url), Some("0b0e-4f2a"));
        assert_eq!(load_id_of("s3://m/x/notes.txt"), None);
        assert_eq!(load_id_of("s3://m/x/a-b.manifest"), None);
    }
}
