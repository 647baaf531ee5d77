//! Writes a small Glue-style data set to (local) S3 and the EventBridge events S3
//! would send for it, so that `scripts/demo` replays exactly what AWS delivers.
//!
//! `s3://<bucket>/<prefix>order_date=YYYY-MM-DD/part-0000N-c000.snappy.parquet`,
//! plus a `_SUCCESS` marker per partition. Like Glue's Hive partitions, the files
//! hold no `order_date` column: the loader fills it from the key.
//!
//! ```text
//! cargo run --example demo_data -- --bucket lake --prefix transformed/orders/ --events-out DIR
//! ```
//! The data is deterministic, so a second run rewrites identical objects (same ETags).

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Decimal128Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use aws_sdk_s3::primitives::ByteStream;
use clap::Parser;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::json;

type Error = Box<dyn std::error::Error + Send + Sync>;

const DAYS: [&str; 3] = ["2024-05-26", "2024-05-27", "2024-05-28"];
const FILES_PER_DAY: usize = 2;
const ROWS_PER_FILE: usize = 25;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "lake")]
    bucket: String,
    #[arg(long, default_value = "transformed/orders/")]
    prefix: String,
    /// Directory for one EventBridge event JSON per object written.
    #[arg(long)]
    events_out: PathBuf,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let config = aws_config::load_from_env().await;
    // moto serves buckets by path, not by virtual host.
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );
    ensure_bucket(&s3, &args.bucket).await?;
    std::fs::create_dir_all(&args.events_out)?;

    let mut order_id = 1_000_i64;
    let mut sequence = 0_u64;
    for day in DAYS {
        let partition = format!("{}order_date={day}/", args.prefix);
        let mut objects = Vec::new();
        for part in 0..FILES_PER_DAY {
            let key = format!("{partition}part-{part:05}-c000.snappy.parquet");
            objects.push((key, orders_parquet(day, order_id)?));
            order_id += ROWS_PER_FILE as i64;
        }
        objects.push((format!("{partition}_SUCCESS"), Vec::new()));

        for (key, body) in objects {
            let size = body.len();
            let put = s3
                .put_object()
                .bucket(&args.bucket)
                .key(&key)
                .body(ByteStream::from(body))
                .send()
                .await?;
            let etag = put
                .e_tag()
                .unwrap_or_default()
                .trim_matches('"')
                .to_string();
            sequence += 1;
            let event = object_created(&args.bucket, &key, size, &etag, sequence);
            let name = format!("{sequence:02}-{}.json", key.replace('/', "_"));
            std::fs::write(
                args.events_out.join(name),
                serde_json::to_vec_pretty(&event)?,
            )?;
        }
        println!(
            "demo_data: order_date={day} files={FILES_PER_DAY} rows={}",
            FILES_PER_DAY * ROWS_PER_FILE
        );
    }
    Ok(())
}

async fn ensure_bucket(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<(), Error> {
    if s3.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    s3.create_bucket().bucket(bucket).send().await?;
    Ok(())
}

/// One part file of a day: order_id, customer_id, amount DECIMAL(12,2), ordered_at.
fn orders_parquet(day: &str, first_id: i64) -> Result<Vec<u8>, Error> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("amount", DataType::Decimal128(12, 2), true),
        Field::new(
            "ordered_at",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
    ]));
    let midnight = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")?
        .and_hms_opt(0, 0, 0)
        .ok_or("midnight")?
        .and_utc()
        .timestamp_micros();
    let ids: Vec<i64> = (first_id..first_id + ROWS_PER_FILE as i64).collect();
    let customers: Vec<String> = ids.iter().map(|id| format!("C{:03}", id % 7)).collect();
    // Every tenth amount is NULL, as real data has gaps.
    let amounts: Vec<Option<i128>> = ids
        .iter()
        .map(|id| (id % 10 != 0).then_some(i128::from(id * 137 % 50_000)))
        .collect();
    let times: Vec<i64> = ids
        .iter()
        .map(|id| midnight + (id % 86_400) * 1_000_000)
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(StringArray::from(customers)),
        Arc::new(Decimal128Array::from(amounts).with_precision_and_scale(12, 2)?),
        Arc::new(TimestampMicrosecondArray::from(times)),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(out)
}

/// The key as S3 puts it in event notifications: form-encoded (`=` is `%3D`).
fn form_encode(key: &str) -> String {
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'*')
        .remove(b' ');
    utf8_percent_encode(key, KEEP).to_string().replace(' ', "+")
}

fn object_created(
    bucket: &str,
    key: &str,
    size: usize,
    etag: &str,
    sequence: u64,
) -> serde_json::Value {
    json!({
        "version": "0",
        "id": format!("00000000-0000-4000-8000-{sequence:012}"),
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "123456789012",
        "time": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "region": "us-east-1",
        "resources": [format!("arn:aws:s3:::{bucket}")],
        "detail": {
            "version": "0",
            "bucket": { "name": bucket },
            "object": {
                "key": form_encode(key),
                "size": size,
                "etag": etag,
                "sequencer": format!("{sequence:018X}"),
            },
            "request-id": format!("DEMO{sequence:012}"),
            "requester": "123456789012",
            "source-ip-address": "127.0.0.1",
            "reason": "PutObject",
        },
    })
}
