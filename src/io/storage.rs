//! The S3 adapter: list a partition, write a manifest.

use std::future::Future;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

use crate::error::LoaderError;
use crate::protocol::plan::{normalise_etag, ListedObject};

pub trait Storage: Send + Sync {
    /// Every object under `prefix` (all pages).
    fn list(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<ListedObject>, LoaderError>> + Send;

    fn put(
        &self,
        bucket: &str,
        key: &str,
        body: String,
    ) -> impl Future<Output = Result<(), LoaderError>> + Send;

    /// Whether the object `key` exists. The default lists with the key as prefix (fakes
    /// get it for free); [`S3`] asks for one key only.
    fn exists(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<bool, LoaderError>> + Send {
        async move {
            let listed = self.list(bucket, key).await?;
            Ok(listed.iter().any(|o| o.key == key))
        }
    }

    /// The first `len` bytes of object `key` (all of it when shorter), of the version
    /// with ETag `etag` only: a CSV header line is read without the file
    /// ([`crate::lake::csv_header`]). Implementations that cannot read objects keep the
    /// default, which refuses.
    fn head(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        len: u64,
    ) -> impl Future<Output = Result<Vec<u8>, LoaderError>> + Send {
        let _ = (etag, len);
        let message = format!("reading s3://{bucket}/{key}: not supported by this storage");
        async move {
            Err(LoaderError::Storage {
                message,
                retryable: false,
            })
        }
    }

    /// The last `len` bytes of object `key` (all of it when shorter), of the version
    /// with ETag `etag` only: a Parquet footer is read without the file
    /// ([`crate::lake::schema_match`]). Implementations that cannot read objects keep the
    /// default, which refuses.
    fn tail(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        len: u64,
    ) -> impl Future<Output = Result<Vec<u8>, LoaderError>> + Send {
        let _ = (etag, len);
        let message = format!("reading s3://{bucket}/{key}: not supported by this storage");
        async move {
            Err(LoaderError::Storage {
                message,
                retryable: false,
            })
        }
    }

    /// Object `key`'s text and ETag (normalised), `None` when there is none: the sweep
    /// reads its watermark ([`crate::lake::watermark`]). Implementations that cannot read
    /// objects keep the default, which refuses (the sweep then queries Redshift).
    fn get(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<(String, String)>, LoaderError>> + Send {
        let message = format!("reading s3://{bucket}/{key}: not supported by this storage");
        async move {
            Err(LoaderError::Storage {
                message,
                retryable: false,
            })
        }
    }

    /// PutObject only if the object is still `expected` (its ETag, or `None`: there is
    /// none): `Ok(false)` when S3 refused because it changed (412 Precondition Failed,
    /// or 409 ConditionalRequestConflict for a concurrent write). The sweep writes its
    /// clean watermark so, never over a dirty mark written after its start. The default
    /// refuses.
    fn put_if(
        &self,
        bucket: &str,
        key: &str,
        body: String,
        expected: Option<&str>,
    ) -> impl Future<Output = Result<bool, LoaderError>> + Send {
        let _ = (body, expected);
        let message = format!("writing s3://{bucket}/{key}: not supported by this storage");
        async move {
            Err(LoaderError::Storage {
                message,
                retryable: false,
            })
        }
    }
    /// Deletes object `key` (a missing one is no error, as S3's DeleteObject): the S3
    /// gate's objects ([`crate::protocol::gate`]). The default refuses.
    fn delete(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<(), LoaderError>> + Send {
        let message = format!("deleting s3://{bucket}/{key}: not supported by this storage");
        async move {
            Err(LoaderError::Storage {
                message,
                retryable: false,
            })
        }
    }

    /// Deletes every object of `keys` (missing ones are no error). The default deletes
    /// them one by one; [`S3`] sends DeleteObjects, 1,000 keys a request: the S3 gate's
    /// holder removes a burst's wake-ups after their transfer.
    fn delete_many(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> impl Future<Output = Result<(), LoaderError>> + Send {
        async move {
            for key in keys {
                self.delete(bucket, key).await?;
            }
            Ok(())
        }
    }

    /// The wall clock a gate's expiry is written and compared in
    /// ([`crate::protocol::gate::GateDoc`]); the simulation answers its model time.
    fn now(&self) -> std::time::SystemTime {
        std::time::SystemTime::now()
    }
}

pub struct S3 {
    client: Client,
}

impl S3 {
    pub fn new(client: Client) -> S3 {
        S3 { client }
    }

    /// One ranged GET of the version `etag` only: a rewrite since the listing fails it
    /// as retryable (the retry lists again).
    async fn ranged(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        range: String,
        what: String,
    ) -> Result<Vec<u8>, LoaderError> {
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .range(range)
            .if_match(format!("\"{etag}\""))
            .send()
            .await
            .map_err(|e| {
                let changed = e.code() == Some("PreconditionFailed");
                let mut err = storage_error(what.clone(), e);
                if changed {
                    if let LoaderError::Storage { retryable, .. } = &mut err {
                        *retryable = true;
                    }
                }
                err
            })?;
        let body = out.body.collect().await.map_err(|e| LoaderError::Storage {
            message: format!("{what}: {e}"),
            retryable: true,
        })?;
        Ok(body.into_bytes().to_vec())
    }
}

fn storage_error<E, R>(what: String, err: SdkError<E, R>) -> LoaderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let retryable = matches!(
        err,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_)
    ) || matches!(
        err.code(),
        Some("SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout")
    );
    let detail = match (err.code(), err.message()) {
        (Some(code), Some(text)) => format!("{code}: {text}"),
        (Some(code), None) => code.to_string(),
        _ => DisplayErrorContext(&err).to_string(),
    };
    LoaderError::Storage {
        message: format!("{what}: {detail}"),
        retryable,
    }
}

impl S3 {
    /// The Region the client is configured for (the function's `AWS_REGION`).
    pub fn region(&self) -> Option<String> {
        self.client.config().region().map(|r| r.to_string())
    }

    /// The bucket's LocationConstraint as GetBucketLocation returns it (`None` or empty
    /// for us-east-1; see [`crate::ops::doctor::bucket_region`]). For loaderctl doctor.
    pub async fn bucket_location(&self, bucket: &str) -> Result<Option<String>, LoaderError> {
        let out = self
            .client
            .get_bucket_location()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| storage_error(format!("reading the Region of bucket {bucket}"), e))?;
        Ok(out.location_constraint().map(|c| c.as_str().to_string()))
    }

    /// Deletes one object (loaderctl doctor's probe; the S3 gate's objects through
    /// [`Storage::delete`]).
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), LoaderError> {
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| storage_error(format!("deleting s3://{bucket}/{key}"), e))?;
        Ok(())
    }
}

impl Storage for S3 {
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), LoaderError> {
        S3::delete(self, bucket, key).await
    }

    async fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<(), LoaderError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        // DeleteObjects takes at most 1,000 keys.
        for chunk in keys.chunks(1000) {
            let what = format!("deleting {} objects in s3://{bucket}", chunk.len());
            let objects = chunk
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| LoaderError::Storage {
                    message: format!("{what}: {e}"),
                    retryable: false,
                })?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| LoaderError::Storage {
                    message: format!("{what}: {e}"),
                    retryable: false,
                })?;
            let out = self
                .client
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| storage_error(what.clone(), e))?;
            // Quiet mode lists only the keys that failed (each may be retried).
            if let Some(failed) = out.errors().first() {
                return Err(LoaderError::Storage {
                    message: format!(
                        "{what}: {} failed, e.g. {} ({})",
                        out.errors().len(),
                        failed.key().unwrap_or_default(),
                        failed.code().unwrap_or_default()
                    ),
                    retryable: true,
                });
            }
        }
        Ok(())
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>, LoaderError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| storage_error(format!("listing s3://{bucket}/{prefix}"), e))?;
            for obj in page.contents() {
                let (Some(key), Some(size)) = (obj.key(), obj.size()) else {
                    continue;
                };
                out.push(ListedObject {
                    key: key.to_string(),
                    size,
                    etag: normalise_etag(obj.e_tag().unwrap_or_default()),
                    last_modified: obj
                        .last_modified()
                        .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                });
            }
        }
        Ok(out)
    }

    /// ListObjectsV2 with the key as prefix and one key: the exact key sorts before every
    /// longer key it prefixes, so it is the first if it exists. Needs only the
    /// `s3:ListBucket` the function already has (HeadObject would need `s3:GetObject`).
    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, LoaderError> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(key)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| storage_error(format!("looking up s3://{bucket}/{key}"), e))?;
        Ok(page.contents().first().and_then(|o| o.key()) == Some(key))
    }

    async fn put(&self, bucket: &str, key: &str, body: String) -> Result<(), LoaderError> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body.into_bytes()))
            .send()
            .await
            .map_err(|e| storage_error(format!("writing s3://{bucket}/{key}"), e))?;
        Ok(())
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Option<(String, String)>, LoaderError> {
        let what = format!("reading s3://{bucket}/{key}");
        let out = match self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.code() == Some("NoSuchKey") => return Ok(None),
            // Without s3:ListBucket on the prefix (the function has GetObject on this
            // one key only) S3 answers a missing key with 403. Read as "none": the
            // caller then only queries more, never less (the sweep skips only on a
            // clean watermark it read).
            Err(e) if e.code() == Some("AccessDenied") => return Ok(None),
            Err(e) => return Err(storage_error(what, e)),
        };
        let etag = normalise_etag(out.e_tag().unwrap_or_default());
        let body = out.body.collect().await.map_err(|e| LoaderError::Storage {
            message: format!("{what}: {e}"),
            retryable: true,
        })?;
        let text = String::from_utf8_lossy(&body.into_bytes()).into_owned();
        Ok(Some((text, etag)))
    }

    /// S3's conditional writes: `If-Match` (the ETag read) or `If-None-Match: *`
    /// (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html>).
    async fn put_if(
        &self,
        bucket: &str,
        key: &str,
        body: String,
        expected: Option<&str>,
    ) -> Result<bool, LoaderError> {
        let request = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body.into_bytes()));
        let request = match expected {
            Some(etag) => request.if_match(format!("\"{etag}\"")),
            None => request.if_none_match("*"),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.code(),
                    Some("PreconditionFailed" | "ConditionalRequestConflict")
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(storage_error(format!("writing s3://{bucket}/{key}"), e)),
        }
    }

    /// A suffix-range GET with `If-Match`: the footer read is the listed version's, or
    /// the read fails as retryable (the object was rewritten since the listing; the
    /// retry lists it again).
    async fn tail(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        len: u64,
    ) -> Result<Vec<u8>, LoaderError> {
        let what = format!("reading the end of s3://{bucket}/{key}");
        self.ranged(bucket, key, etag, format!("bytes=-{len}"), what)
            .await
    }

    /// A range GET of the first bytes with `If-Match`, as [`S3::tail`].
    async fn head(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        len: u64,
    ) -> Result<Vec<u8>, LoaderError> {
        let what = format!("reading the start of s3://{bucket}/{key}");
        let last = len.saturating_sub(1);
        self.ranged(bucket, key, etag, format!("bytes=0-{last}"), what)
            .await
    }
}
