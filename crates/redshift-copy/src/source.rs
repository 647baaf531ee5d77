//! Which S3 objects a COPY loads: a key prefix or a manifest, with Redshift's rules.
//!
//! The rules themselves (URL shape, manifest JSON, `meta.content_length`) are
//! pure functions; [`resolve`] and [`fetch`] are the S3 edges.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use bytes::Bytes;
use serde_json::Value;

use crate::{CopyError, Format};

/// One object the COPY will load.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SourceFile {
    /// Full `s3://bucket/key` URL, as Redshift records it in `stl_load_commits`.
    pub url: String,
    pub bucket: String,
    pub key: String,
    pub size: u64,
}

/// `s3://bucket/key` split into its parts. The key may be empty (a whole bucket).
pub(crate) fn split_s3_url(url: &str) -> Result<(String, String), CopyError> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        CopyError::Rejected(format!("Invalid S3 URL '{url}': must start with s3://"))
    })?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(CopyError::Rejected(format!(
            "Invalid S3 URL '{url}': bucket name is missing"
        )));
    }
    Ok((bucket.to_string(), key.to_string()))
}

/// One manifest entry after validation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ManifestEntry {
    pub url: String,
    pub mandatory: bool,
    /// `meta.content_length`; always present for PARQUET and ORC.
    pub content_length: Option<u64>,
}

/// Redshift's closing sentence for a manifest of the wrong shape.
const MANIFEST_FORMAT_HINT: &str =
    "Please check the user documentation for the correct format of manifest file during copy command.";

fn manifest_field_missing(field: &str) -> CopyError {
    CopyError::Rejected(format!(
        "Manifest file is not in expected format - '{field}' field missing. {MANIFEST_FORMAT_HINT}"
    ))
}

/// Parses and validates a manifest body. Error texts are Redshift's where known
/// ("Manifest file is not in correct json format", "Root must be a json object in
/// the manifest file", "... 'url' field missing ...", "File entry does not have
/// 'meta' key."). Redshift documents that Parquet and ORC entries need
/// `meta.content_length`; the exact text for a `meta` without it is not
/// documented, so it mirrors the `meta` one.
pub(crate) fn parse_manifest(body: &[u8], format: Format) -> Result<Vec<ManifestEntry>, CopyError> {
    let root: Value = serde_json::from_slice(body)
        .map_err(|_| CopyError::Rejected("Manifest file is not in correct json format".into()))?;
    let root = root.as_object().ok_or_else(|| {
        CopyError::Rejected("Root must be a json object in the manifest file".into())
    })?;
    let entries = root
        .get("entries")
        .and_then(Value::as_array)
        .ok_or_else(|| manifest_field_missing("entries"))?;
    let columnar = matches!(format, Format::Parquet | Format::Orc);
    entries
        .iter()
        .map(|entry| parse_entry(entry, columnar))
        .collect()
}

fn parse_entry(entry: &Value, columnar: bool) -> Result<ManifestEntry, CopyError> {
    let url = entry
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| manifest_field_missing("url"))?
        .to_string();
    check_full_object_url(&url)?;
    // Redshift: "The default of mandatory is false."
    let mandatory = match entry.get("mandatory") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(CopyError::Rejected(format!(
                "Manifest file is not in expected format - 'mandatory' must be true or false in entry '{url}'. {MANIFEST_FORMAT_HINT}"
            )))
        }
    };
    let content_length = match entry.get("meta") {
        None if columnar => {
            return Err(CopyError::Rejected(
                "File entry does not have 'meta' key.".into(),
            ))
        }
        None => None,
        Some(meta) => match meta.get("content_length") {
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                CopyError::Rejected(format!(
                    "File entry '{url}' has an invalid 'content_length' in 'meta': {v}"
                ))
            })?),
            None if columnar => {
                return Err(CopyError::Rejected(format!(
                    "File entry does not have 'content_length' key in 'meta'. Entry: '{url}'"
                )))
            }
            None => None,
        },
    };
    Ok(ManifestEntry {
        url,
        mandatory,
        content_length,
    })
}

/// Manifest URLs name objects, never prefixes (Redshift load error 8001).
fn check_full_object_url(url: &str) -> Result<(), CopyError> {
    let (_, key) = split_s3_url(url)?;
    if key.is_empty() || key.ends_with('/') {
        return Err(CopyError::Rejected(format!(
            "COPY with MANIFEST parameter requires full path of an S3 object: '{url}'"
        )));
    }
    Ok(())
}

/// Columnar COPY reads byte ranges by the manifest's length, so Redshift fails
/// when it is wrong (with an S3 range or Parquet footer error). The emulator
/// names the mismatch instead: the stricter, clearer reading.
pub(crate) fn check_content_length(entry: &ManifestEntry, actual: u64) -> Result<(), CopyError> {
    match entry.content_length {
        Some(declared) if declared != actual => Err(CopyError::Rejected(format!(
            "Spectrum Scan Error. File '{}' has content_length {declared} in the manifest but is {actual} bytes in S3",
            entry.url
        ))),
        _ => Ok(()),
    }
}

/// S3 error in the form Redshift relays it ("S3ServiceException:<message>,Status
/// <code>,Error <code>").
fn s3_error<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> String {
    match err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            format!(
                "S3ServiceException:{},Error {}",
                e.message().unwrap_or("S3 request failed"),
                e.code().unwrap_or("Unknown")
            )
        }
        other => format!("S3 request failed: {other}"),
    }
}

/// The files a COPY loads, in load order.
pub(crate) async fn resolve(
    source: &str,
    manifest: bool,
    format: Format,
    s3: &aws_sdk_s3::Client,
) -> Result<Vec<SourceFile>, CopyError> {
    if manifest {
        resolve_manifest(source, format, s3).await
    } else {
        resolve_prefix(source, s3).await
    }
}

async fn resolve_prefix(
    source: &str,
    s3: &aws_sdk_s3::Client,
) -> Result<Vec<SourceFile>, CopyError> {
    let (bucket, prefix) = split_s3_url(source)?;
    let mut pages = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix(&prefix)
        .into_paginator()
        .send();
    let mut files = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| CopyError::S3(s3_error(&e)))?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            let size = u64::try_from(object.size().unwrap_or(0)).unwrap_or(0);
            // A zero-byte "folder/" object is a console folder marker, not data.
            if key.ends_with('/') && size == 0 {
                continue;
            }
            files.push(SourceFile {
                url: format!("s3://{bucket}/{key}"),
                bucket: bucket.clone(),
                key: key.to_string(),
                size,
            });
        }
    }
    if files.is_empty() {
        return Err(CopyError::Rejected(format!(
            "The specified S3 prefix '{prefix}' does not exist"
        )));
    }
    Ok(files)
}

async fn resolve_manifest(
    source: &str,
    format: Format,
    s3: &aws_sdk_s3::Client,
) -> Result<Vec<SourceFile>, CopyError> {
    let (bucket, key) = split_s3_url(source)?;
    let body = get_object(s3, &bucket, &key)
        .await
        .map_err(|e| CopyError::Rejected(format!("Problem reading manifest file - {e}")))?;
    let entries = parse_manifest(&body, format)?;
    let mut files = Vec::new();
    for entry in &entries {
        let (bucket, key) = split_s3_url(&entry.url)?;
        let Some(size) = object_size(s3, &bucket, &key).await? else {
            if entry.mandatory {
                return Err(CopyError::Rejected(format!(
                    "Load file '{}' was not found. The manifest '{source}' marks it mandatory",
                    entry.url
                )));
            }
            continue;
        };
        check_content_length(entry, size)?;
        files.push(SourceFile {
            url: entry.url.clone(),
            bucket,
            key,
            size,
        });
    }
    // Redshift: "Regardless of any mandatory settings, COPY will terminate if
    // no files are found."
    if files.is_empty() {
        return Err(CopyError::Rejected(format!(
            "No files found to load: manifest '{source}' lists {} entries and none exists",
            entries.len()
        )));
    }
    Ok(files)
}

/// `Some(size)` for an existing object, `None` when the exact key is absent.
async fn object_size(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<u64>, CopyError> {
    match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(head) => Ok(Some(
            u64::try_from(head.content_length().unwrap_or(0)).unwrap_or(0),
        )),
        Err(SdkError::ServiceError(se)) if se.err().is_not_found() => Ok(None),
        Err(e) => Err(CopyError::S3(s3_error(&e))),
    }
}

async fn get_object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Bytes, String> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| s3_error(&e))?;
    let body = out
        .body
        .collect()
        .await
        .map_err(|e| format!("S3 read of s3://{bucket}/{key} failed: {e}"))?;
    Ok(body.into_bytes())
}

/// Reads one source file's bytes.
pub(crate) async fn fetch(s3: &aws_sdk_s3::Client, file: &SourceFile) -> Result<Bytes, CopyError> {
    get_object(s3, &file.bucket, &file.key)
        .await
        .map_err(|e| CopyError::S3(format!("{e} (reading '{}')", file.url)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(r: Result<Vec<ManifestEntry>, CopyError>) -> String {
        match r {
            Err(CopyError::Rejected(m)) => m,
            other => panic!("expected Rejected, got {other:?}"),
        }
    }

    #[test]
    fn splits_urls() {
        assert_eq!(
            split_s3_url("s3://b/a/b.parquet").ok(),
            Some(("b".into(), "a/b.parquet".into()))
        );
        assert_eq!(split_s3_url("s3://b").ok(), Some(("b".into(), "".into())));
        assert!(split_s3_url("s3:///k").is_err());
        assert!(split_s3_url("https://b/k").is_err());
    }

    #[test]
    fn parses_a_parquet_manifest() {
        let body = br#"{"entries":[
            {"url":"s3://b/p/1.parquet","mandatory":true,"meta":{"content_length":10}},
            {"url":"s3://c/2.parquet","meta":{"content_length":0}}]}"#;
        let entries = parse_manifest(body, Format::Parquet).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].url, "s3://b/p/1.parquet");
        assert!(entries[0].mandatory);
        assert_eq!(entries[0].content_length, Some(10));
        assert!(!entries[1].mandatory, "mandatory defaults to false");
    }

    #[test]
    fn text_manifests_need_no_meta() {
        let body = br#"{"entries":[{"url":"s3://b/k.csv","mandatory":true}]}"#;
        let entries = parse_manifest(body, Format::Csv).unwrap();
        assert_eq!(entries[0].content_length, None);
    }

    #[test]
    fn rejects_bad_json_and_shapes() {
        assert_eq!(
            rejected(parse_manifest(b"{not json", Format::Csv)),
            "Manifest file is not in correct json format"
        );
        assert_eq!(
            rejected(parse_manifest(b"[1]", Format::Csv)),
            "Root must be a json object in the manifest file"
        );
        assert!(rejected(parse_manifest(b"{}", Format::Csv)).contains("'entries' field missing"));
        assert!(rejected(parse_manifest(
            br#"{"entries":[{"mandatory":true}]}"#,
            Format::Csv
        ))
        .starts_with("Manifest file is not in expected format - 'url' field missing."));
        assert!(rejected(parse_manifest(
            br#"{"entries":[{"url":"s3://b/k","mandatory":"yes"}]}"#,
            Format::Csv
        ))
        .contains("'mandatory'"));
    }

    #[test]
    fn columnar_entries_need_content_length() {
        assert_eq!(
            rejected(parse_manifest(
                br#"{"entries":[{"url":"s3://b/k.parquet","mandatory":true}]}"#,
                Format::Parquet
            )),
            "File entry does not have 'meta' key."
        );
        assert!(rejected(parse_manifest(
            br#"{"entries":[{"url":"s3://b/k.orc","meta":{}}]}"#,
            Format::Orc
        ))
        .contains("'content_length'"));
        assert!(rejected(parse_manifest(
            br#"{"entries":[{"url":"s3://b/k.parquet","meta":{"content_length":-1}}]}"#,
            Format::Parquet
        ))
        .contains("invalid 'content_length'"));
    }

    #[test]
    fn manifest_urls_must_be_objects() {
        for url in ["s3://b/", "s3://b/dir/", "s3://b"] {
            let body = format!(r#"{{"entries":[{{"url":"{url}","mandatory":true}}]}}"#);
            assert!(
                rejected(parse_manifest(body.as_bytes(), Format::Csv))
                    .starts_with("COPY with MANIFEST parameter requires full path of an S3 object"),
                "{url}"
            );
        }
    }

    #[test]
    fn content_length_must_match() {
        let entry = ManifestEntry {
            url: "s3://b/k".into(),
            mandatory: true,
            content_length: Some(100),
        };
        assert!(check_content_length(&entry, 100).is_ok());
        let err = check_content_length(&entry, 99).unwrap_err().to_string();
        assert!(
            err.contains("content_length 100") && err.contains("99 bytes"),
            "{err}"
        );
        let no_meta = ManifestEntry {
            content_length: None,
            ..entry
        };
        assert!(check_content_length(&no_meta, 5).is_ok());
    }
}
