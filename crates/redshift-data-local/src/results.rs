//! PostgreSQL rows turned into the Data API's typed `Field`s and `ColumnMetadata`.

use crate::api::{ColumnMetadata, Field};
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use tokio_postgres::types::{FromSql, Kind, Type};
use tokio_postgres::{Column, Row};

/// A statement's complete result set, kept in memory until it is read.
#[derive(Debug, Clone, Default)]
pub struct ResultSet {
    pub columns: Vec<ColumnMetadata>,
    pub records: Vec<Vec<Field>>,
    /// Approximate size in bytes of the values, as ResultSize reports.
    pub size: i64,
}

/// Any value's raw binary form; decoded by [`decode`] according to its type.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

type DecodeError = Box<dyn std::error::Error + Sync + Send>;

/// Converts all rows, failing with a message naming the column when a type is
/// not one the Data API can return.
pub fn collect(columns: &[Column], rows: &[Row]) -> Result<ResultSet, String> {
    let mut set = ResultSet {
        columns: columns.iter().map(column_metadata).collect(),
        ..ResultSet::default()
    };
    for row in rows {
        let mut record = Vec::with_capacity(columns.len());
        for (i, column) in columns.iter().enumerate() {
            let raw: Option<Raw<'_>> = row
                .try_get(i)
                .map_err(|e| format!("ERROR: cannot read column \"{}\": {e}", column.name()))?;
            let field = match raw {
                None => Field::IsNull(true),
                Some(Raw(bytes)) => decode(column.type_(), bytes).map_err(|e| {
                    format!(
                        "ERROR: column \"{}\" of type {}: {e}",
                        column.name(),
                        column.type_().name()
                    )
                })?,
            };
            set.size += field.approximate_size();
            record.push(field);
        }
        set.records.push(record);
    }
    Ok(set)
}

/// Domains (information_schema is full of them) are returned as their base type.
fn base_type(ty: &Type) -> &Type {
    match ty.kind() {
        Kind::Domain(base) => base_type(base),
        _ => ty,
    }
}

fn decode(ty: &Type, raw: &[u8]) -> Result<Field, DecodeError> {
    let ty = base_type(ty);
    let field = match *ty {
        Type::BOOL => Field::BooleanValue(bool::from_sql(ty, raw)?),
        Type::INT2 => Field::LongValue(i16::from_sql(ty, raw)?.into()),
        Type::INT4 => Field::LongValue(i32::from_sql(ty, raw)?.into()),
        Type::INT8 => Field::LongValue(i64::from_sql(ty, raw)?),
        Type::OID => Field::LongValue(u32::from_sql(ty, raw)?.into()),
        Type::FLOAT4 => Field::DoubleValue(f32::from_sql(ty, raw)?.into()),
        Type::FLOAT8 => Field::DoubleValue(f64::from_sql(ty, raw)?),
        Type::NUMERIC => Field::StringValue(numeric_to_string(raw)?),
        Type::CHAR => Field::StringValue(char::from(i8::from_sql(ty, raw)? as u8).to_string()),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON => {
            Field::StringValue(<&str>::from_sql(ty, raw)?.to_string())
        }
        Type::JSONB => match raw.split_first() {
            Some((1, text)) => Field::StringValue(std::str::from_utf8(text)?.to_string()),
            _ => return Err("unsupported jsonb version".into()),
        },
        Type::DATE => {
            Field::StringValue(NaiveDate::from_sql(ty, raw)?.format("%Y-%m-%d").to_string())
        }
        Type::TIME => Field::StringValue(
            NaiveTime::from_sql(ty, raw)?
                .format("%H:%M:%S%.f")
                .to_string(),
        ),
        Type::TIMESTAMP => Field::StringValue(format_timestamp(NaiveDateTime::from_sql(ty, raw)?)),
        Type::TIMESTAMPTZ => Field::StringValue(format!(
            "{}+00",
            format_timestamp(DateTime::<Utc>::from_sql(ty, raw)?.naive_utc())
        )),
        // Functions returning void (pg_sleep) print as an empty string in psql.
        Type::VOID => Field::StringValue(String::new()),
        Type::BYTEA => Field::BlobValue(base64::engine::general_purpose::STANDARD.encode(raw)),
        _ => {
            return Err(format!(
                "type {} cannot be returned by the Data API emulator; cast it to varchar",
                ty.name()
            )
            .into())
        }
    };
    Ok(field)
}

/// Redshift prints timestamps as `2024-05-28 10:00:00`, with a fraction only when
/// there is one.
pub fn format_timestamp(ts: NaiveDateTime) -> String {
    ts.format("%Y-%m-%d %H:%M:%S%.f").to_string()
}

/// PostgreSQL's binary numeric: ndigits, weight, sign, dscale, then base-10000 digits.
fn numeric_to_string(raw: &[u8]) -> Result<String, DecodeError> {
    let word = |i: usize| -> Result<u16, DecodeError> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".into())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = usize::from(word(3)?);
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digits = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<Vec<u16>, _>>()?;
    let digit_at = |pos: i32| -> u16 {
        usize::try_from(pos)
            .ok()
            .and_then(|p| digits.get(p).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        out.push_str(&digit_at(0).to_string());
        for pos in 1..=weight {
            out.push_str(&format!("{:04}", digit_at(pos)));
        }
    }
    if dscale > 0 {
        let mut fraction = String::new();
        let mut pos = weight + 1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", digit_at(pos)));
            pos += 1;
        }
        fraction.truncate(dscale);
        out.push('.');
        out.push_str(&fraction);
    }
    Ok(out)
}

/// Redshift's name for a PostgreSQL type where the two differ.
fn redshift_type_name(ty: &Type) -> String {
    let ty = base_type(ty);
    match *ty {
        // Redshift's TEXT is VARCHAR(256): it never reports "text".
        Type::TEXT | Type::NAME | Type::UNKNOWN => "varchar".into(),
        _ => ty.name().to_string(),
    }
}

fn column_metadata(column: &Column) -> ColumnMetadata {
    let ty = base_type(column.type_());
    let modifier = column.type_modifier();
    let (length, precision, scale) = match *ty {
        Type::VARCHAR | Type::BPCHAR if modifier >= 4 => (modifier - 4, modifier - 4, 0),
        Type::NUMERIC if modifier >= 4 => {
            let m = modifier - 4;
            (0, (m >> 16) & 0xFFFF, m & 0xFFFF)
        }
        Type::INT2 => (0, 5, 0),
        Type::INT4 => (0, 10, 0),
        Type::INT8 => (0, 19, 0),
        Type::FLOAT4 => (0, 8, 8),
        Type::FLOAT8 => (0, 17, 17),
        _ => (0, 0, 0),
    };
    let signed = matches!(
        *ty,
        Type::INT2 | Type::INT4 | Type::INT8 | Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC
    );
    let case_sensitive = matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME);
    ColumnMetadata {
        name: column.name().to_string(),
        label: column.name().to_string(),
        type_name: redshift_type_name(ty),
        // RowDescription does not say whether a column can be NULL; JDBC's
        // "nullable" (1) is what Redshift reports for ordinary columns.
        nullable: 1,
        length,
        precision,
        scale,
        is_signed: signed,
        is_case_sensitive: case_sensitive,
        is_currency: false,
        schema_name: String::new(),
        table_name: String::new(),
        column_default: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut raw = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale].iter().chain(digits) {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        raw
    }

    #[test]
    fn numerics_print_like_postgres() {
        // 12345.678 = [1, 2345, 6780], weight 1, dscale 3
        assert_eq!(
            numeric_to_string(&numeric(3, 1, 0, 3, &[1, 2345, 6780])).unwrap(),
            "12345.678"
        );
        // -0.05 = [500], weight -1, dscale 2
        assert_eq!(
            numeric_to_string(&numeric(1, -1, 0x4000, 2, &[500])).unwrap(),
            "-0.05"
        );
        // 10000 = [1], weight 1, dscale 0
        assert_eq!(
            numeric_to_string(&numeric(1, 1, 0, 0, &[1])).unwrap(),
            "10000"
        );
        // 0.00 = no digits, dscale 2
        assert_eq!(
            numeric_to_string(&numeric(0, 0, 0, 2, &[])).unwrap(),
            "0.00"
        );
        // 0.0001 = [1], weight -1
        assert_eq!(
            numeric_to_string(&numeric(1, -1, 0, 4, &[1])).unwrap(),
            "0.0001"
        );
        assert_eq!(
            numeric_to_string(&numeric(0, 0, 0xC000, 0, &[])).unwrap(),
            "NaN"
        );
        assert!(numeric_to_string(&[0, 1]).is_err());
    }

    #[test]
    fn timestamps_print_like_redshift() {
        let ts = NaiveDate::from_ymd_opt(2024, 5, 28)
            .unwrap()
            .and_hms_opt(10, 0, 0)
            .unwrap();
        assert_eq!(format_timestamp(ts), "2024-05-28 10:00:00");
        let ts = ts + chrono::Duration::microseconds(123_456);
        assert_eq!(format_timestamp(ts), "2024-05-28 10:00:00.123456");
    }

    #[test]
    fn scalar_types_decode() {
        assert_eq!(
            decode(&Type::INT4, &7i32.to_be_bytes()).unwrap(),
            Field::LongValue(7)
        );
        assert_eq!(
            decode(&Type::FLOAT8, &1.5f64.to_be_bytes()).unwrap(),
            Field::DoubleValue(1.5)
        );
        assert_eq!(
            decode(&Type::BOOL, &[1]).unwrap(),
            Field::BooleanValue(true)
        );
        assert_eq!(
            decode(&Type::TEXT, b"hi").unwrap(),
            Field::StringValue("hi".into())
        );
        assert_eq!(
            decode(&Type::BYTEA, b"hi").unwrap(),
            Field::BlobValue("aGk=".into())
        );
        assert!(decode(&Type::POINT, &[0; 16]).is_err());
        assert_eq!(redshift_type_name(&Type::TEXT), "varchar");
        assert_eq!(redshift_type_name(&Type::INT8), "int8");
    }
}
