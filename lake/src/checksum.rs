//! A content checksum of a table version's rows, for named snapshots: a model retrained on a
//! snapshot can prove it saw the same rows, byte for byte, whatever engine read them.
//!
//! Format `tern-rows-v1` (`tools/lake/snapshot_checksum.py` computes the same from Python):
//!
//! - each row is serialized column by column, in the table schema's order: a null as the byte
//!   `0x00`; a value as `0x01` and then: a string or binary as its length (u32, little-endian)
//!   and its bytes (UTF-8 for a string); a long, a timestamp (microseconds since the epoch, UTC)
//!   or a timestamp without zone (microseconds) as an i64; an integer or a date (days since
//!   1970-01-01) as an i32; a short as an i16; a byte as an i8; a boolean as one byte (0 or 1); a
//!   double or a float as its IEEE 754 bits (f64, f32), all little-endian;
//! - each row's SHA-256 is taken, and the digests are sorted (bytewise);
//! - the checksum is the SHA-256 of the header `tern-rows-v1\n`, a line `name:type\n` per column
//!   (Delta type names: `string`, `long`, `timestamp`, ...), an empty line, and the sorted
//!   digests, written as `sha256:` and 64 hex digits.
//!
//! Sorting the digests rather than the rows keeps 32 bytes per row in memory, not the rows, and
//! makes the checksum independent of how rows are spread over files (compaction rewrites files,
//! never rows). Two copies of one row count twice.

use std::fmt::Write as _;

use deltalake::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use deltalake::arrow::datatypes::{
    DataType as ArrowType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    Int8Type, TimeUnit, TimestampMicrosecondType,
};
use deltalake::kernel::DataType;
use deltalake::DeltaTable;
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// The name of the serialization above; recorded with each snapshot.
pub const FORMAT: &str = "tern-rows-v1";

/// How a column's values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Binary,
    Long,
    Integer,
    Short,
    Byte,
    Boolean,
    Double,
    Float,
    Date,
    Timestamp,
    TimestampNtz,
}

impl Kind {
    fn of(name: &str, ty: &DataType) -> Result<Self> {
        let kinds = [
            (DataType::STRING, Kind::String),
            (DataType::BINARY, Kind::Binary),
            (DataType::LONG, Kind::Long),
            (DataType::INTEGER, Kind::Integer),
            (DataType::SHORT, Kind::Short),
            (DataType::BYTE, Kind::Byte),
            (DataType::BOOLEAN, Kind::Boolean),
            (DataType::DOUBLE, Kind::Double),
            (DataType::FLOAT, Kind::Float),
            (DataType::DATE, Kind::Date),
            (DataType::TIMESTAMP, Kind::Timestamp),
            (DataType::TIMESTAMP_NTZ, Kind::TimestampNtz),
        ];
        kinds
            .into_iter()
            .find(|(t, _)| t == ty)
            .map(|(_, k)| k)
            .ok_or_else(|| {
                Error::Snapshot(format!(
                    "column {name} has type {ty}, which checksum {FORMAT} does not cover"
                ))
            })
    }

    /// The Arrow type a column is cast to before its values are read.
    fn arrow(self) -> ArrowType {
        match self {
            Kind::String => ArrowType::Utf8,
            Kind::Binary => ArrowType::Binary,
            Kind::Long => ArrowType::Int64,
            Kind::Integer => ArrowType::Int32,
            Kind::Short => ArrowType::Int16,
            Kind::Byte => ArrowType::Int8,
            Kind::Boolean => ArrowType::Boolean,
            Kind::Double => ArrowType::Float64,
            Kind::Float => ArrowType::Float32,
            Kind::Date => ArrowType::Date32,
            Kind::Timestamp => ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::TimestampNtz => ArrowType::Timestamp(TimeUnit::Microsecond, None),
        }
    }
}

/// Row count and checksum of a set of rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowsChecksum {
    /// Rows read.
    pub rows: u64,
    /// `sha256:` and 64 hex digits.
    pub checksum: String,
}

/// Takes in rows batch by batch; [`RowsHasher::finish`] gives the checksum.
pub struct RowsHasher {
    columns: Vec<(String, String, Kind)>,
    digests: Vec<[u8; 32]>,
    row: Vec<u8>,
}

impl RowsHasher {
    /// A hasher for rows of `schema`'s columns (name and Delta type, in table order).
    pub fn new<'a>(schema: impl IntoIterator<Item = (&'a str, &'a DataType)>) -> Result<Self> {
        let columns = schema
            .into_iter()
            .map(|(name, ty)| Ok((name.to_owned(), ty.to_string(), Kind::of(name, ty)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            columns,
            digests: Vec::new(),
            row: Vec::new(),
        })
    }

    /// The columns, in order, as a query's select list (quoted names).
    pub fn select_list(&self) -> String {
        self.columns
            .iter()
            .map(|(name, _, _)| format!("\"{}\"", name.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Takes in the rows of `batch`, whose columns are found by name.
    pub fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let columns: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|(name, _, kind)| {
                let column = batch.column_by_name(name).ok_or_else(|| {
                    Error::Snapshot(format!("the rows read have no column {name}"))
                })?;
                Ok(deltalake::arrow::compute::cast(column, &kind.arrow())?)
            })
            .collect::<Result<_>>()?;
        for i in 0..batch.num_rows() {
            self.row.clear();
            for (column, (_, _, kind)) in columns.iter().zip(&self.columns) {
                write_value(&mut self.row, column.as_ref(), *kind, i)?;
            }
            self.digests.push(Sha256::digest(&self.row).into());
        }
        Ok(())
    }

    /// The row count and the checksum.
    pub fn finish(mut self) -> RowsChecksum {
        self.digests.sort_unstable();
        let mut hasher = Sha256::new();
        hasher.update(FORMAT.as_bytes());
        hasher.update(b"\n");
        for (name, ty, _) in &self.columns {
            hasher.update(format!("{name}:{ty}\n").as_bytes());
        }
        hasher.update(b"\n");
        for digest in &self.digests {
            hasher.update(digest);
        }
        let mut checksum = String::from("sha256:");
        for byte in hasher.finalize() {
            // Writing to a String cannot fail.
            let _ = write!(checksum, "{byte:02x}");
        }
        RowsChecksum {
            rows: self.digests.len() as u64,
            checksum,
        }
    }
}

fn write_value(out: &mut Vec<u8>, column: &dyn Array, kind: Kind, i: usize) -> Result<()> {
    if column.is_null(i) {
        out.push(0);
        return Ok(());
    }
    out.push(1);
    let mut bytes = |b: &[u8]| -> Result<()> {
        let len = u32::try_from(b.len())
            .map_err(|_| Error::Snapshot(format!("a value of {} bytes is over 4 GiB", b.len())))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(b);
        Ok(())
    };
    match kind {
        Kind::String => bytes(column.as_string::<i32>().value(i).as_bytes())?,
        Kind::Binary => bytes(column.as_binary::<i32>().value(i))?,
        Kind::Long => {
            out.extend_from_slice(&column.as_primitive::<Int64Type>().value(i).to_le_bytes())
        }
        Kind::Integer => {
            out.extend_from_slice(&column.as_primitive::<Int32Type>().value(i).to_le_bytes())
        }
        Kind::Short => {
            out.extend_from_slice(&column.as_primitive::<Int16Type>().value(i).to_le_bytes())
        }
        Kind::Byte => {
            out.extend_from_slice(&column.as_primitive::<Int8Type>().value(i).to_le_bytes())
        }
        Kind::Boolean => out.push(u8::from(column.as_boolean().value(i))),
        Kind::Double => out.extend_from_slice(
            &column
                .as_primitive::<Float64Type>()
                .value(i)
                .to_bits()
                .to_le_bytes(),
        ),
        Kind::Float => out.extend_from_slice(
            &column
                .as_primitive::<Float32Type>()
                .value(i)
                .to_bits()
                .to_le_bytes(),
        ),
        Kind::Date => {
            out.extend_from_slice(&column.as_primitive::<Date32Type>().value(i).to_le_bytes())
        }
        Kind::Timestamp | Kind::TimestampNtz => out.extend_from_slice(
            &column
                .as_primitive::<TimestampMicrosecondType>()
                .value(i)
                .to_le_bytes(),
        ),
    }
    Ok(())
}

/// Row count and checksum of every row of `table` at the version it is loaded at.
pub async fn of_table(table: &DeltaTable) -> Result<RowsChecksum> {
    let schema = table.snapshot()?.schema();
    let mut hasher = RowsHasher::new(schema.fields().map(|f| (f.name().as_str(), f.data_type())))?;
    let ctx = crate::query::new_session()?;
    crate::query::register(&ctx, "snapshot_rows", table).await?;
    let sql = format!("SELECT {} FROM snapshot_rows", hasher.select_list());
    let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        hasher.update(&batch?)?;
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use deltalake::arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use deltalake::arrow::datatypes::{Field, Schema};

    fn batch(columns: Vec<(&str, ArrayRef)>) -> Result<RecordBatch> {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
            .collect();
        let arrays = columns.into_iter().map(|(_, a)| a).collect();
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
    }

    fn schema() -> Vec<(String, DataType)> {
        vec![
            ("event_id".into(), DataType::STRING),
            ("seq".into(), DataType::LONG),
            ("at".into(), DataType::TIMESTAMP),
            ("user_id".into(), DataType::STRING),
        ]
    }

    fn rows(ids: &[&str], seqs: &[i64], users: &[Option<&str>]) -> RecordBatch {
        let at: TimestampMicrosecondArray = seqs.iter().map(|s| Some(s * 1000)).collect();
        batch(vec![
            (
                "event_id",
                Arc::new(StringArray::from(ids.to_vec())) as ArrayRef,
            ),
            ("seq", Arc::new(Int64Array::from(seqs.to_vec()))),
            ("at", Arc::new(at.with_timezone("UTC"))),
            ("user_id", Arc::new(StringArray::from(users.to_vec()))),
        ])
        .unwrap()
    }

    fn checksum(batches: &[RecordBatch]) -> RowsChecksum {
        let schema = schema();
        let mut hasher = RowsHasher::new(schema.iter().map(|(n, t)| (n.as_str(), t))).unwrap();
        for b in batches {
            hasher.update(b).unwrap();
        }
        hasher.finish()
    }

    #[test]
    fn the_same_rows_in_other_files_and_order_give_the_same_checksum() {
        let one = checksum(&[rows(
            &["a", "b", "c"],
            &[1, 2, 3],
            &[Some("u"), None, Some("")],
        )]);
        let split = checksum(&[
            rows(&["c"], &[3], &[Some("")]),
            rows(&["b", "a"], &[2, 1], &[None, Some("u")]),
        ]);
        assert_eq!(one, split);
        assert_eq!(one.rows, 3);
        assert!(one.checksum.starts_with("sha256:") && one.checksum.len() == 7 + 64);
    }

    #[test]
    fn any_changed_value_changes_the_checksum() {
        let base = checksum(&[rows(&["a", "b"], &[1, 2], &[Some("u"), None])]);
        // A null is not an empty string.
        let empty = checksum(&[rows(&["a", "b"], &[1, 2], &[Some("u"), Some("")])]);
        let seq = checksum(&[rows(&["a", "b"], &[1, 3], &[Some("u"), None])]);
        // Bytes moved between two columns: lengths are part of the serialization.
        let moved = checksum(&[rows(&["ab", ""], &[1, 2], &[Some("u"), None])]);
        let fewer = checksum(&[rows(&["a"], &[1], &[Some("u")])]);
        let twice = checksum(&[rows(
            &["a", "a", "b"],
            &[1, 1, 2],
            &[Some("u"), Some("u"), None],
        )]);
        for other in [&empty, &seq, &moved, &fewer, &twice] {
            assert_ne!(base.checksum, other.checksum);
        }
        assert_eq!(twice.rows, 3, "a copy counts");
    }

    #[test]
    fn a_type_the_format_does_not_cover_is_an_error_that_names_the_column() {
        let decimal = DataType::decimal(10, 2).unwrap();
        let error = RowsHasher::new([("price", &decimal)]).err().unwrap();
        assert!(error.to_string().contains("price"), "{error}");
    }
}
