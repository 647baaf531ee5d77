//! Parquet columns by name (issue 20 item 3): a file's footer → the COPY column list in
//! the file's order, or a refusal that names the column and the fix.
//!
//! Redshift's COPY from Parquet "inserts values into the target table's columns in the
//! same order as the columns occur in the columnar data files. The number of columns in
//! the target table and the number of columns in the data file must match"
//! (<https://docs.aws.amazon.com/redshift/latest/dg/copy-usage_notes-copy-from-columnar.html>).
//! A writer that reorders columns would load values into the wrong columns (silently when
//! the types agree), so the loader reads each file's footer and loads through a staging
//! table holding exactly the file's columns in the file's order (see
//! [`crate::sql::CopyTarget::Staged`]). Whether a COPY column list alone would map a
//! Parquet file by name is not documented; the stricter reading (it does not) is taken.
//!
//! Pure: the bytes come from [`crate::io::storage::Storage::tail`], the table's columns from
//! the holder's reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use parquet::basic::{ConvertedType, LogicalType, Type as PhysicalType};
use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
use parquet::schema::types::Type;

/// Bytes read from the end of a file first: the footer of a typical file fits, so one
/// ranged GET is enough; a larger footer costs a second one of its exact size.
pub const FIRST_TAIL_BYTES: u64 = 64 * 1024;

/// The kind of a Parquet column, as far as the choice of a Redshift type goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParquetKind {
    Boolean,
    Integer,
    Float,
    Decimal,
    String,
    Binary,
    Date,
    Timestamp,
    Time,
    /// Nested (struct, list, map) or a type not listed above.
    Other,
}

impl std::fmt::Display for ParquetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            ParquetKind::Boolean => "boolean",
            ParquetKind::Integer => "integer",
            ParquetKind::Float => "floating point",
            ParquetKind::Decimal => "decimal",
            ParquetKind::String => "string",
            ParquetKind::Binary => "binary",
            ParquetKind::Date => "date",
            ParquetKind::Timestamp => "timestamp",
            ParquetKind::Time => "time",
            ParquetKind::Other => "nested or other",
        };
        f.write_str(name)
    }
}

/// One top-level column of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileColumn {
    /// As written (Redshift folds unquoted identifiers to lower case; matching is
    /// case-insensitive, as Spectrum's is).
    pub name: String,
    pub kind: ParquetKind,
    /// The Redshift type the loader gives this column when it adds it to the table
    /// (route option `add_new_columns`), or why it does not add one ([`added_type`]).
    pub added_type: Result<String, String>,
}

/// A file's top-level columns in the file's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSchema {
    pub columns: Vec<FileColumn>,
}

/// What the last bytes of a file say.
#[derive(Debug, PartialEq, Eq)]
pub enum Footer {
    Schema(FileSchema),
    /// The footer is longer than the bytes read: read this many from the end.
    NeedTail(u64),
}

/// Reads the schema from the last bytes of a Parquet file (`tail`, at most the whole
/// file). `Err` says why the file is not Parquet Redshift can read.
pub fn footer(tail: &[u8]) -> Result<Footer, String> {
    let n = tail.len();
    let last8: [u8; 8] = tail
        .get(n.saturating_sub(8)..)
        .and_then(|s| s.try_into().ok())
        .ok_or("shorter than a Parquet footer")?;
    let ft = FooterTail::try_new(&last8).map_err(|e| e.to_string())?;
    if ft.is_encrypted_footer() {
        return Err("its footer is encrypted".into());
    }
    let needed = ft.metadata_length() + 8;
    if needed > n {
        return Ok(Footer::NeedTail(needed as u64));
    }
    let meta = ParquetMetaDataReader::decode_metadata(&tail[n - needed..n - 8])
        .map_err(|e| format!("its footer cannot be read: {e}"))?;
    let root = meta.file_metadata().schema();
    let columns = root
        .get_fields()
        .iter()
        .map(|f| FileColumn {
            name: f.name().to_string(),
            kind: kind(f),
            added_type: added_type(f),
        })
        .collect();
    Ok(Footer::Schema(FileSchema { columns }))
}

fn kind(t: &Type) -> ParquetKind {
    if !t.is_primitive() {
        return ParquetKind::Other;
    }
    let info = t.get_basic_info();
    if let Some(l) = info.logical_type_ref() {
        return match l {
            LogicalType::String | LogicalType::Enum | LogicalType::Json | LogicalType::Uuid => {
                ParquetKind::String
            }
            LogicalType::Decimal { .. } => ParquetKind::Decimal,
            LogicalType::Date => ParquetKind::Date,
            LogicalType::Time { .. } => ParquetKind::Time,
            LogicalType::Timestamp { .. } => ParquetKind::Timestamp,
            LogicalType::Integer { .. } => ParquetKind::Integer,
            LogicalType::Float16 => ParquetKind::Float,
            _ => ParquetKind::Other,
        };
    }
    match info.converted_type() {
        ConvertedType::UTF8 | ConvertedType::ENUM | ConvertedType::JSON => {
            return ParquetKind::String
        }
        ConvertedType::DECIMAL => return ParquetKind::Decimal,
        ConvertedType::DATE => return ParquetKind::Date,
        ConvertedType::TIME_MILLIS | ConvertedType::TIME_MICROS => return ParquetKind::Time,
        ConvertedType::TIMESTAMP_MILLIS | ConvertedType::TIMESTAMP_MICROS => {
            return ParquetKind::Timestamp
        }
        _ => {}
    }
    match t.get_physical_type() {
        PhysicalType::BOOLEAN => ParquetKind::Boolean,
        PhysicalType::INT32 | PhysicalType::INT64 => ParquetKind::Integer,
        // Spark's default timestamps.
        PhysicalType::INT96 => ParquetKind::Timestamp,
        PhysicalType::FLOAT | PhysicalType::DOUBLE => ParquetKind::Float,
        PhysicalType::BYTE_ARRAY | PhysicalType::FIXED_LEN_BYTE_ARRAY => ParquetKind::Binary,
    }
}

/// The Redshift type a new table column gets for a Parquet column `t` (route option
/// `add_new_columns`), from its physical and logical type; `Err` says why the loader
/// does not add it. Chosen so that the column holds every value the Parquet type can
/// hold (Redshift's types: <https://docs.aws.amazon.com/redshift/latest/dg/c_Supported_data_types.html>),
/// and refused where no Redshift type does or where whether COPY converts is not
/// documented (the stricter reading): unsigned 64-bit, decimals of precision above 38
/// (Redshift's maximum), half floats, UUIDs, binary (the local stack has no VARBYTE to
/// prove it), intervals, nested types (struct, list, map: Redshift loads them only into
/// SUPER with `SERIALIZETOJSON`), and a column of nulls only (no type at all).
pub fn added_type(t: &Type) -> Result<String, String> {
    const STRING: &str = "VARCHAR(65535)";
    if !t.is_primitive() {
        return Err(
            "a nested type (struct, list or map) loads only into a SUPER column \
                    with SERIALIZETOJSON"
                .into(),
        );
    }
    let info = t.get_basic_info();
    let physical = t.get_physical_type();
    if let Some(l) = info.logical_type_ref() {
        return match l {
            LogicalType::String | LogicalType::Enum | LogicalType::Json => Ok(STRING.into()),
            LogicalType::Decimal(d) => decimal(d.precision, d.scale),
            LogicalType::Date => Ok("DATE".into()),
            LogicalType::Time(t) => Ok(if t.is_adjusted_to_u_t_c {
                "TIMETZ"
            } else {
                "TIME"
            }
            .into()),
            LogicalType::Timestamp(t) => Ok(if t.is_adjusted_to_u_t_c {
                "TIMESTAMPTZ"
            } else {
                "TIMESTAMP"
            }
            .into()),
            LogicalType::Integer(i) => match (i.bit_width, i.is_signed) {
                (8 | 16, true) => Ok("SMALLINT".into()),
                (32, true) | (8 | 16, false) => Ok("INTEGER".into()),
                (64, true) | (32, false) => Ok("BIGINT".into()),
                (64, false) => Err("unsigned 64-bit integers do not fit BIGINT, and whether \
                                    COPY converts them into DECIMAL(20,0) is not documented"
                    .into()),
                (w, _) => Err(format!("an integer of {w} bits")),
            },
            LogicalType::Float16 => Err("half-precision floats: whether COPY converts them \
                                         is not documented"
                .into()),
            LogicalType::Uuid => Err("Redshift has no UUID type".into()),
            LogicalType::Unknown => Err("a column of nulls only has no type".into()),
            other => Err(format!("Parquet logical type {other:?}")),
        };
    }
    match info.converted_type() {
        ConvertedType::UTF8 | ConvertedType::ENUM | ConvertedType::JSON => return Ok(STRING.into()),
        ConvertedType::DECIMAL => {
            return decimal(t.get_precision(), t.get_scale());
        }
        ConvertedType::DATE => return Ok("DATE".into()),
        ConvertedType::TIME_MILLIS | ConvertedType::TIME_MICROS => return Ok("TIME".into()),
        ConvertedType::TIMESTAMP_MILLIS | ConvertedType::TIMESTAMP_MICROS => {
            return Ok("TIMESTAMP".into())
        }
        ConvertedType::INT_8 | ConvertedType::INT_16 => return Ok("SMALLINT".into()),
        ConvertedType::INT_32 | ConvertedType::UINT_8 | ConvertedType::UINT_16 => {
            return Ok("INTEGER".into())
        }
        ConvertedType::INT_64 | ConvertedType::UINT_32 => return Ok("BIGINT".into()),
        ConvertedType::UINT_64 => {
            return Err("unsigned 64-bit integers do not fit BIGINT".into());
        }
        ConvertedType::NONE => {}
        other => return Err(format!("Parquet converted type {other:?}")),
    }
    match physical {
        PhysicalType::BOOLEAN => Ok("BOOLEAN".into()),
        PhysicalType::INT32 => Ok("INTEGER".into()),
        PhysicalType::INT64 => Ok("BIGINT".into()),
        // Spark's default timestamps: instants without a zone, read as TIMESTAMP.
        PhysicalType::INT96 => Ok("TIMESTAMP".into()),
        PhysicalType::FLOAT => Ok("REAL".into()),
        PhysicalType::DOUBLE => Ok("DOUBLE PRECISION".into()),
        PhysicalType::BYTE_ARRAY | PhysicalType::FIXED_LEN_BYTE_ARRAY => Err(
            "binary without a string annotation: add a VARBYTE column yourself if that is \
             what it holds"
                .into(),
        ),
    }
}

/// `DECIMAL(p,s)` within Redshift's limit of 38 digits
/// (<https://docs.aws.amazon.com/redshift/latest/dg/r_Numeric_types201.html>).
fn decimal(precision: i32, scale: i32) -> Result<String, String> {
    if !(1..=38).contains(&precision) || !(0..=precision).contains(&scale) {
        return Err(format!(
            "DECIMAL({precision},{scale}): Redshift's DECIMAL holds at most 38 digits"
        ));
    }
    Ok(format!("DECIMAL({precision},{scale})"))
}

/// Whether a column of `kind` may load into a table column whose
/// `information_schema.columns.data_type` is `table_type`. `None`: a table type this
/// list does not know (SUPER, GEOMETRY, …), left to Redshift's COPY to judge.
///
/// Redshift documents no implicit conversion for Parquet COPY beyond "the column types
/// must be compatible"; the list is the strict reading: integer into an integer,
/// numeric or floating column; floating point into a floating one; decimal into
/// numeric or floating; strings into character types; a date into DATE or TIMESTAMP;
/// a timestamp into a timestamp; time into time; boolean into BOOLEAN.
pub fn compatible(kind: ParquetKind, table_type: &str) -> Option<bool> {
    let t = table_type.to_ascii_lowercase();
    let class = match t.as_str() {
        "smallint" | "integer" | "bigint" => "int",
        "numeric" | "decimal" => "numeric",
        "real" | "double precision" => "float",
        "character varying" | "character" | "bpchar" | "text" | "varchar" | "char" => "char",
        "date" => "date",
        "timestamp without time zone"
        | "timestamp with time zone"
        | "timestamp"
        | "timestamptz" => "timestamp",
        "time without time zone" | "time with time zone" | "time" | "timetz" => "time",
        "boolean" => "bool",
        "bytea" | "varbyte" | "binary varying" => "binary",
        _ => return None,
    };
    Some(match kind {
        ParquetKind::Boolean => class == "bool",
        ParquetKind::Integer => matches!(class, "int" | "numeric" | "float"),
        ParquetKind::Float => class == "float",
        ParquetKind::Decimal => matches!(class, "numeric" | "float"),
        ParquetKind::String => class == "char",
        ParquetKind::Binary => class == "binary",
        ParquetKind::Date => matches!(class, "date" | "timestamp"),
        ParquetKind::Timestamp => class == "timestamp",
        ParquetKind::Time => class == "time",
        ParquetKind::Other => false,
    })
}

/// A table column as the holder read it.
#[derive(Debug, Clone)]
pub struct TableColumn<'a> {
    pub name: &'a str,
    pub data_type: &'a str,
}

/// The table's names (lower case, as Redshift stores unquoted identifiers) for the
/// file's columns, in the file's order; or why the file cannot load, naming the
/// column, both types and the fix. Partition columns the file also holds are loaded
/// from the file, as any other column.
pub fn file_columns(
    file_url: &str,
    schema: &FileSchema,
    table: &[TableColumn<'_>],
) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(schema.columns.len());
    for c in &schema.columns {
        let Some(t) = table.iter().find(|t| t.name.eq_ignore_ascii_case(&c.name)) else {
            return Err(format!(
                "file {file_url} has column {:?} ({}), which the table lacks: add it to the \
                 table (ALTER TABLE … ADD COLUMN), or drop it from the writer",
                c.name, c.kind
            ));
        };
        if out.iter().any(|o| o == t.name) {
            return Err(format!(
                "file {file_url} has column {:?} twice (names compare case-insensitively)",
                c.name
            ));
        }
        if compatible(c.kind, t.data_type) == Some(false) {
            return Err(format!(
                "file {file_url} column {:?} is Parquet {} but table column {} is {}: change \
                 the writer's type or the table's",
                c.name, c.kind, t.name, t.data_type
            ));
        }
        out.push(t.name.to_string());
    }
    Ok(out)
}

/// Schemas already read (Parquet footers; CSV headers: `FooterCache<Vec<String>>`), by
/// S3 URL and ETag (a rewrite changes the ETag, so a stale entry is never used).
/// Bounded: emptied when full.
pub struct FooterCache<T = FileSchema> {
    entries: Mutex<HashMap<(String, String), Arc<T>>>,
}

impl<T> Default for FooterCache<T> {
    fn default() -> Self {
        FooterCache {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

/// Entries kept before the cache starts over (a few hundred bytes each).
const CACHE_ENTRIES: usize = 10_000;

impl<T> FooterCache<T> {
    pub fn get(&self, url: &str, etag: &str) -> Option<Arc<T>> {
        let entries = self.entries.lock().ok()?;
        entries.get(&(url.to_string(), etag.to_string())).cloned()
    }

    pub fn put(&self, url: &str, etag: &str, schema: Arc<T>) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CACHE_ENTRIES {
                entries.clear();
            }
            entries.insert((url.to_string(), etag.to_string()), schema);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(cols: &[(&str, ParquetKind)]) -> FileSchema {
        FileSchema {
            columns: cols
                .iter()
                .map(|(n, k)| FileColumn {
                    name: n.to_string(),
                    kind: *k,
                    added_type: Err("not in these tests".into()),
                })
                .collect(),
        }
    }

    fn table() -> Vec<TableColumn<'static>> {
        vec![
            TableColumn {
                name: "id",
                data_type: "bigint",
            },
            TableColumn {
                name: "note",
                data_type: "character varying",
            },
            TableColumn {
                name: "d",
                data_type: "date",
            },
        ]
    }

    #[test]
    fn reordered_columns_keep_the_files_order_by_name() {
        let s = schema(&[("Note", ParquetKind::String), ("id", ParquetKind::Integer)]);
        assert_eq!(
            file_columns("s3://b/k", &s, &table()).unwrap(),
            ["note", "id"]
        );
    }

    #[test]
    fn a_column_the_table_lacks_is_named_with_the_fix() {
        let s = schema(&[("id", ParquetKind::Integer), ("extra", ParquetKind::Float)]);
        let e = file_columns("s3://b/k", &s, &table()).unwrap_err();
        assert!(e.contains("\"extra\"") && e.contains("ADD COLUMN"), "{e}");
    }

    #[test]
    fn a_type_change_names_both_types() {
        let s = schema(&[("d", ParquetKind::Integer)]);
        let e = file_columns("s3://b/k", &s, &table()).unwrap_err();
        assert!(e.contains("Parquet integer") && e.contains("date"), "{e}");
        let s = schema(&[("id", ParquetKind::String)]);
        assert!(file_columns("s3://b/k", &s, &table()).is_err());
    }

    #[test]
    fn unknown_table_types_are_left_to_redshift() {
        assert_eq!(compatible(ParquetKind::String, "super"), None);
        assert_eq!(
            compatible(ParquetKind::Integer, "double precision"),
            Some(true)
        );
        assert_eq!(compatible(ParquetKind::Float, "integer"), Some(false));
    }

    #[test]
    fn footers_that_are_not_parquet_are_refused_and_long_ones_ask_for_more() {
        assert!(footer(b"PAR").is_err());
        assert!(footer(b"12345678nope").is_err());
        let mut tail = 1000u32.to_le_bytes().to_vec();
        tail.extend_from_slice(b"PAR1");
        assert_eq!(footer(&tail).unwrap(), Footer::NeedTail(1008));
    }

    /// The map of README "Columns by name", on schemas as writers declare them.
    #[test]
    fn added_types_follow_the_parquet_type_and_refuse_what_redshift_cannot_hold() {
        let message = "message m {
            required boolean b;
            required int32 i32;
            required int32 i8 (INTEGER(8,true));
            required int32 u16 (INTEGER(16,false));
            required int32 u32 (INTEGER(32,false));
            required int64 i64;
            required int64 u64 (INTEGER(64,false));
            required float f;
            required double d;
            required int64 dec (DECIMAL(18,4));
            required fixed_len_byte_array(20) wide (DECIMAL(40,2));
            required binary s (STRING);
            required binary raw;
            required int32 day (DATE);
            required int64 ts (TIMESTAMP(MICROS,false));
            required int64 tsz (TIMESTAMP(MILLIS,true));
            required int96 spark;
            required int64 t (TIME(MICROS,false));
            optional group nested { required int32 x; }
        }";
        let root = parquet::schema::parser::parse_message_type(message).unwrap();
        let got: Vec<(String, Result<String, String>)> = root
            .get_fields()
            .iter()
            .map(|f| (f.name().to_string(), added_type(f)))
            .collect();
        let ok = |name: &str, ty: &str| (name.to_string(), Ok(ty.to_string()));
        let expected_ok = [
            ok("b", "BOOLEAN"),
            ok("i32", "INTEGER"),
            ok("i8", "SMALLINT"),
            ok("u16", "INTEGER"),
            ok("u32", "BIGINT"),
            ok("i64", "BIGINT"),
            ok("f", "REAL"),
            ok("d", "DOUBLE PRECISION"),
            ok("dec", "DECIMAL(18,4)"),
            ok("s", "VARCHAR(65535)"),
            ok("day", "DATE"),
            ok("ts", "TIMESTAMP"),
            ok("tsz", "TIMESTAMPTZ"),
            ok("spark", "TIMESTAMP"),
            ok("t", "TIME"),
        ];
        for e in &expected_ok {
            assert!(got.contains(e), "{e:?} in {got:?}");
        }
        for refused in ["u64", "wide", "raw", "nested"] {
            let (_, r) = got.iter().find(|(n, _)| n == refused).unwrap();
            assert!(r.is_err(), "{refused}: {r:?}");
        }
        let (_, wide) = got.iter().find(|(n, _)| n == "wide").unwrap();
        assert!(wide.as_ref().unwrap_err().contains("38"), "{wide:?}");
    }
}
