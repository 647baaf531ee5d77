//! The EventBridge "Object Created" event from S3. Only picks the route and the
//! partition: what gets loaded comes from listing S3, never from the event. (A waiter
//! for a busy lease also uses the object and its ETag to see whether the holder has
//! loaded it already.)

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::LoaderError;
use crate::protocol::plan::normalise_etag;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectCreatedDetail {
    pub bucket: BucketRef,
    pub object: ObjectRef,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketRef {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectRef {
    pub key: String,
    #[serde(default)]
    pub size: Option<i64>,
    /// AWS says `etag`; moto says `eTag`.
    #[serde(default, alias = "eTag")]
    pub etag: Option<String>,
    #[serde(default)]
    pub sequencer: Option<String>,
}

/// What the loader needs from the event, with the key decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectCreated {
    pub bucket: String,
    /// The form-decoded reading of the key (the raw one when it does not decode). When
    /// it differs from `raw_key`, the handler asks S3 which one exists
    /// ([`crate::run::handler::Loader::settle_key`]).
    pub key: String,
    /// The key exactly as the event carried it.
    pub raw_key: String,
    pub size: Option<i64>,
    /// Without quotes, as the ledger stores it; `None` when the event carried none.
    pub etag: Option<String>,
}

/// Parses and checks an event given as raw JSON, naming what is missing or wrong.
pub fn parse(value: &Value) -> Result<ObjectCreated, LoaderError> {
    let bad = |m: String| LoaderError::BadEvent(m);
    let field = |name: &str| value.get(name).and_then(Value::as_str);
    match field("source") {
        Some("aws.s3") => {}
        Some(other) => return Err(bad(format!("source is {other:?}, expected \"aws.s3\""))),
        None => return Err(bad("missing string field `source`".into())),
    }
    match field("detail-type") {
        Some("Object Created") => {}
        Some(other) => {
            return Err(bad(format!(
                "detail-type is {other:?}, expected \"Object Created\""
            )))
        }
        None => return Err(bad("missing string field `detail-type`".into())),
    }
    let event: EventBridgeEvent<ObjectCreatedDetail> = serde_json::from_value(value.clone())
        .map_err(|e| bad(format!("not an S3 Object Created event: {e}")))?;
    from_event(event)
}

/// S3's limit on a key's length, in bytes of UTF-8.
const MAX_KEY_BYTES: usize = 1024;

pub fn from_event(
    event: EventBridgeEvent<ObjectCreatedDetail>,
) -> Result<ObjectCreated, LoaderError> {
    let d = event.detail;
    if d.bucket.name.is_empty() {
        return Err(LoaderError::BadEvent("detail.bucket.name is empty".into()));
    }
    if d.object.key.is_empty() {
        return Err(LoaderError::BadEvent("detail.object.key is empty".into()));
    }
    // A key that does not form-decode (`50%`, `%FF`) can only be meant raw.
    let key = decode_key(&d.object.key).unwrap_or_else(|_| d.object.key.clone());
    if key.is_empty() {
        return Err(LoaderError::BadEvent("detail.object.key is empty".into()));
    }
    // S3 keys are at most 1,024 bytes of UTF-8
    // (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html): a longer
    // one names no object, and would only reach SQL to be refused there. Found by
    // tests/hostile.rs.
    if key.len() > MAX_KEY_BYTES {
        return Err(LoaderError::BadEvent(format!(
            "detail.object.key is {} bytes; S3 keys are at most {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(ObjectCreated {
        bucket: d.bucket.name,
        key,
        raw_key: d.object.key,
        size: d.object.size,
        etag: d
            .object
            .etag
            .as_deref()
            .map(normalise_etag)
            .filter(|e| !e.is_empty()),
    })
}

/// Decodes a form-encoded key once (`+` is a space, `%XX` a byte). A `%` without two
/// hex digits, or bytes that are not UTF-8, make the key undecodable: an error, since a
/// guessed key could pick the wrong partition.
pub fn decode_key(raw: &str) -> Result<String, LoaderError> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = bytes.len() > i + 2
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(LoaderError::BadEvent(format!(
                    "object key {raw:?} has a '%' that is not followed by two hex digits"
                )));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| LoaderError::BadEvent(format!("object key {raw:?} does not decode to UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(key: &str) -> Value {
        json!({
            "version": "0", "id": "17793124-05d4-b198-2fde-7ededc63b103",
            "detail-type": "Object Created", "source": "aws.s3",
            "account": "123456789012", "time": "2024-05-28T10:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:s3:::lake"],
            "detail": {
                "version": "0", "bucket": {"name": "lake"},
                "object": {"key": key, "size": 1024, "etag": "b1946ac92492d2347c6235b4d2611184",
                           "sequencer": "00617F08299329D189"},
                "request-id": "N4N7GDK58NMKJ12R", "requester": "123456789012",
                "source-ip-address": "1.2.3.4", "reason": "PutObject"
            }
        })
    }

    #[test]
    fn parses_an_aws_event() {
        let e = parse(&event(
            "transformed/orders/order_date=2024-05-28/part-0.parquet",
        ))
        .unwrap();
        assert_eq!(e.bucket, "lake");
        assert_eq!(
            e.key,
            "transformed/orders/order_date=2024-05-28/part-0.parquet"
        );
        assert_eq!(e.size, Some(1024));
        assert_eq!(e.etag.as_deref(), Some("b1946ac92492d2347c6235b4d2611184"));
    }

    #[test]
    fn etag_is_normalised_and_optional() {
        let mut v = event("k");
        v["detail"]["object"]["etag"] = json!("\"abc-3\"");
        assert_eq!(parse(&v).unwrap().etag.as_deref(), Some("abc-3"));
        v["detail"]["object"]["etag"] = json!("");
        assert_eq!(parse(&v).unwrap().etag, None);
        v["detail"]["object"]
            .as_object_mut()
            .unwrap()
            .remove("etag");
        assert_eq!(parse(&v).unwrap().etag, None);
    }

    #[test]
    fn accepts_motos_etag_spelling() {
        let mut v = event("k");
        let obj = v["detail"]["object"].as_object_mut().unwrap();
        obj.remove("etag");
        obj.insert("eTag".into(), json!("abc"));
        let ev: EventBridgeEvent<ObjectCreatedDetail> = serde_json::from_value(v).unwrap();
        assert_eq!(ev.detail.object.etag.as_deref(), Some("abc"));
    }

    #[test]
    fn decodes_form_encoded_keys_once() {
        let e = parse(&event("a/order_date%3D2024-05-28/my+file%2520x.parquet")).unwrap();
        assert_eq!(e.key, "a/order_date=2024-05-28/my file%20x.parquet");
        assert_eq!(e.raw_key, "a/order_date%3D2024-05-28/my+file%2520x.parquet");
        // Undecodable keys are kept raw (awswrangler's `50%`): the only reading.
        let e = parse(&event("t/city=50%/f.parquet")).unwrap();
        assert_eq!(
            (e.key.as_str(), e.raw_key.as_str()),
            ("t/city=50%/f.parquet", "t/city=50%/f.parquet")
        );
        assert_eq!(decode_key("caf%C3%A9").unwrap(), "café");
        assert!(decode_key("a%zz").is_err());
        assert!(decode_key("a%2").is_err());
        assert!(decode_key("a%FF").is_err());
    }

    #[test]
    fn rejects_other_events_with_a_reason() {
        let mut v = event("k");
        v["source"] = json!("aws.ec2");
        assert!(parse(&v).unwrap_err().to_string().contains("aws.ec2"));
        let mut v = event("k");
        v["detail-type"] = json!("Object Deleted");
        assert!(parse(&v)
            .unwrap_err()
            .to_string()
            .contains("Object Deleted"));
        let mut v = event("k");
        v["detail"]["object"].as_object_mut().unwrap().remove("key");
        let e = parse(&v).unwrap_err();
        assert!(e.to_string().contains("key"), "{e}");
        assert_eq!(e.error_type(), "Permanent.BadEvent");
        assert!(parse(&json!({"detail-type": "Object Created"}))
            .unwrap_err()
            .to_string()
            .contains("source"));
        assert!(parse(&json!("not an object")).is_err());
    }
}
