//! Parquet files: columns map by position, and the counts must match.

use arrow_array::{make_array, Array, ArrayRef, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::DataType;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::Row;
use crate::table::TargetColumn;
use crate::CopyError;

/// Redshift's words for a Parquet file whose column count differs from the
/// target's (from its Spectrum scan error, code 15001/15007).
pub(crate) fn check_column_count(
    table_columns: usize,
    data_columns: usize,
    url: &str,
) -> Result<(), CopyError> {
    if table_columns == data_columns {
        return Ok(());
    }
    Err(CopyError::Rejected(format!(
        "Spectrum Scan Error. Unmatched number of columns between table and file. \
         Table columns: {table_columns}, Data columns: {data_columns}, File name: {url}"
    )))
}

/// Types loaded as text; nested types would need Redshift's SUPER and
/// SERIALIZETOJSON, which the emulator does not model.
fn supported(dt: &DataType) -> bool {
    use DataType::*;
    matches!(
        dt,
        Null | Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float16
            | Float32
            | Float64
            | Decimal32(_, _)
            | Decimal64(_, _)
            | Decimal128(_, _)
            | Decimal256(_, _)
            | Utf8
            | LargeUtf8
            | Utf8View
            | Binary
            | LargeBinary
            | BinaryView
            | FixedSizeBinary(_)
            | Date32
            | Date64
            | Timestamp(_, _)
            | Time32(_)
            | Time64(_)
    ) || matches!(dt, Dictionary(_, v) if supported(v))
}

/// Whether a Parquet column of `dt` loads into a column of PostgreSQL type `type_name`
/// (`format_type()`), by position. Redshift reads Parquet through Spectrum, which refuses
/// a file whose column type does not fit the table's ("incompatible Parquet schema",
/// <https://repost.aws/knowledge-center/redshift-spectrum-data-errors>);
/// which conversions it allows is not listed, so the emulator refuses the clear
/// mismatches (text into numbers, dates or booleans; numbers into text, dates or
/// booleans; dates and timestamps into numbers or text) and leaves the rest (`None`:
/// types it does not classify) to PostgreSQL's input functions.
fn compatible(dt: &DataType, type_name: &str) -> Option<bool> {
    use DataType::*;
    let t = type_name.to_ascii_lowercase();
    let table = if t.starts_with("smallint")
        || t.starts_with("integer")
        || t.starts_with("bigint")
        || t.starts_with("numeric")
        || t.starts_with("real")
        || t.starts_with("double")
    {
        "number"
    } else if t.starts_with("character") || t.starts_with("text") || t.starts_with("bpchar") {
        "text"
    } else if t == "date" || t.starts_with("timestamp") {
        "datetime"
    } else if t == "boolean" {
        "bool"
    } else {
        return None;
    };
    let file = match dt {
        Utf8 | LargeUtf8 | Utf8View => "text",
        Dictionary(_, v) => return compatible(v, type_name),
        Int8
        | Int16
        | Int32
        | Int64
        | UInt8
        | UInt16
        | UInt32
        | UInt64
        | Float16
        | Float32
        | Float64
        | Decimal32(_, _)
        | Decimal64(_, _)
        | Decimal128(_, _)
        | Decimal256(_, _) => "number",
        Date32 | Date64 | Timestamp(_, _) => "datetime",
        Boolean => "bool",
        _ => return None,
    };
    Some(file == table)
}

fn spectrum_error(url: &str, detail: impl std::fmt::Display) -> CopyError {
    CopyError::Rejected(format!("Spectrum Scan Error. File '{url}' {detail}"))
}

pub(crate) fn decode_parquet(
    url: &str,
    bytes: &[u8],
    columns: &[TargetColumn],
) -> Result<Vec<Row>, CopyError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::copy_from_slice(bytes))
        .map_err(|e| spectrum_error(url, format_args!("is not a valid Parquet file: {e}")))?;
    let schema = builder.schema().clone();
    check_column_count(columns.len(), schema.fields().len(), url)?;
    for (field, column) in schema.fields().iter().zip(columns) {
        if compatible(field.data_type(), &column.type_name) == Some(false) {
            return Err(spectrum_error(
                url,
                format_args!(
                    "has an incompatible Parquet schema for column '{}'. Column type: {}, \
                     Parquet schema: {}",
                    field.name(),
                    column.type_name.to_uppercase(),
                    field.data_type()
                ),
            ));
        }
    }
    for field in schema.fields() {
        if !supported(field.data_type()) {
            return Err(spectrum_error(
                url,
                format_args!(
                    "has an incompatible Parquet schema for column '{}': {} is not supported by redshift-data-local",
                    field.name(),
                    field.data_type()
                ),
            ));
        }
    }
    let reader = builder
        .build()
        .map_err(|e| spectrum_error(url, format_args!("could not be read: {e}")))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch =
            batch.map_err(|e| spectrum_error(url, format_args!("could not be read: {e}")))?;
        append_rows(&batch, &mut rows).map_err(|e| spectrum_error(url, e))?;
    }
    Ok(rows)
}

/// Text form of every value, as PostgreSQL's input functions read it:
/// ISO dates and timestamps, plain decimals, `true`/`false`.
fn append_rows(batch: &RecordBatch, rows: &mut Vec<Row>) -> Result<(), String> {
    let options = FormatOptions::default();
    let columns = batch
        .columns()
        .iter()
        .map(utc_as_naive)
        .collect::<Result<Vec<_>, _>>()?;
    let formatters = columns
        .iter()
        .map(|(col, _)| ArrayFormatter::try_new(col.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    for i in 0..batch.num_rows() {
        let row = columns
            .iter()
            .zip(&formatters)
            .map(|((col, utc), fmt)| text_value(col.as_ref(), fmt, i, *utc))
            .collect();
        rows.push(row);
    }
    Ok(())
}

/// A zoned timestamp column holds UTC instants whatever its zone name; it is
/// formatted as naive UTC plus `Z` (naming zones like "UTC" would need the
/// chrono-tz tables). PostgreSQL then stores the instant in TIMESTAMPTZ and the
/// UTC wall time in TIMESTAMP, as Redshift does.
fn utc_as_naive(col: &ArrayRef) -> Result<(ArrayRef, bool), String> {
    let DataType::Timestamp(unit, Some(_)) = col.data_type() else {
        return Ok((col.clone(), false));
    };
    let data = col
        .to_data()
        .into_builder()
        .data_type(DataType::Timestamp(*unit, None))
        .build()
        .map_err(|e| e.to_string())?;
    Ok((make_array(data), true))
}

fn text_value(col: &dyn Array, fmt: &ArrayFormatter, i: usize, utc: bool) -> Option<String> {
    if col.is_null(i) {
        return None;
    }
    if utc {
        return Some(format!("{}Z", fmt.value(i)));
    }
    match col.data_type() {
        // Raw bytes load as their UTF-8 text (as Redshift loads BINARY into VARCHAR).
        DataType::Binary => col
            .as_any()
            .downcast_ref::<arrow_array::BinaryArray>()
            .map(|a| String::from_utf8_lossy(a.value(i)).into_owned()),
        DataType::LargeBinary => col
            .as_any()
            .downcast_ref::<arrow_array::LargeBinaryArray>()
            .map(|a| String::from_utf8_lossy(a.value(i)).into_owned()),
        _ => Some(fmt.value(i).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_array::{
        ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array,
        StringArray, TimestampMicrosecondArray,
    };
    use parquet::arrow::ArrowWriter;

    fn parquet_bytes(batch: &RecordBatch) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
        buf
    }

    fn cols(n: usize) -> Vec<TargetColumn> {
        (0..n)
            .map(|i| TargetColumn::new(&format!("c{i}"), "text"))
            .collect()
    }

    #[test]
    fn clear_type_mismatches_are_refused_and_unknown_types_left_alone() {
        assert_eq!(compatible(&DataType::Utf8, "bigint"), Some(false));
        assert_eq!(compatible(&DataType::Int64, "date"), Some(false));
        assert_eq!(
            compatible(&DataType::Int64, "character varying(5)"),
            Some(false)
        );
        assert_eq!(compatible(&DataType::Int32, "numeric(10,2)"), Some(true));
        assert_eq!(
            compatible(&DataType::Date32, "timestamp without time zone"),
            Some(true)
        );
        assert_eq!(compatible(&DataType::Utf8, "jsonb"), None);
    }

    #[test]
    fn column_count_message_is_redshifts() {
        assert!(check_column_count(3, 3, "s3://b/k").is_ok());
        assert_eq!(
            check_column_count(3, 2, "s3://b/k")
                .unwrap_err()
                .to_string(),
            "Spectrum Scan Error. Unmatched number of columns between table and file. \
             Table columns: 3, Data columns: 2, File name: s3://b/k"
        );
    }

    #[test]
    fn formats_values_as_postgres_input_text() {
        let dec = Decimal128Array::from(vec![Some(12345), None])
            .with_precision_and_scale(10, 2)
            .unwrap();
        let batch = RecordBatch::try_from_iter(vec![
            (
                "i",
                Arc::new(Int32Array::from(vec![Some(7), None])) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from(vec![Some("a,\"b\""), Some("")])) as ArrayRef,
            ),
            ("d", Arc::new(dec) as ArrayRef),
            (
                "b",
                Arc::new(BooleanArray::from(vec![Some(true), Some(false)])) as ArrayRef,
            ),
            (
                "dt",
                Arc::new(Date32Array::from(vec![Some(19871), None])) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(vec![
                    Some(1_716_890_400_123_456),
                    None,
                ])) as ArrayRef,
            ),
            (
                "f",
                Arc::new(Float64Array::from(vec![Some(1.5), Some(f64::NAN)])) as ArrayRef,
            ),
            (
                "tz",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(1_716_890_400_000_000), None])
                        .with_timezone("Europe/Paris"),
                ) as ArrayRef,
            ),
        ])
        .unwrap();
        let typed: Vec<TargetColumn> = [
            "integer",
            "text",
            "numeric(10,2)",
            "boolean",
            "date",
            "timestamp without time zone",
            "double precision",
            "timestamp with time zone",
        ]
        .iter()
        .enumerate()
        .map(|(i, t)| TargetColumn::new(&format!("c{i}"), t))
        .collect();
        let rows = decode_parquet("s3://b/k", &parquet_bytes(&batch), &typed).unwrap();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            rows[0],
            vec![
                s("7"),
                s("a,\"b\""),
                s("123.45"),
                s("true"),
                s("2024-05-28"),
                s("2024-05-28T10:00:00.123456"),
                s("1.5"),
                // Zoned: the UTC instant, whatever the zone's name.
                s("2024-05-28T10:00:00Z")
            ]
        );
        assert_eq!(
            rows[1],
            vec![None, s(""), None, s("false"), None, None, s("NaN"), None]
        );
    }

    #[test]
    fn rejects_count_mismatch_and_garbage() {
        let batch = RecordBatch::try_from_iter(vec![(
            "i",
            Arc::new(Int32Array::from(vec![1])) as ArrayRef,
        )])
        .unwrap();
        let err = decode_parquet("s3://b/k", &parquet_bytes(&batch), &cols(2)).unwrap_err();
        assert!(err
            .to_string()
            .contains("Table columns: 2, Data columns: 1"));
        let err = decode_parquet("s3://b/k", b"not parquet", &cols(1)).unwrap_err();
        assert!(
            err.to_string().contains("is not a valid Parquet file"),
            "{err}"
        );
    }
}
