//! Reading CSV (schema inferred) and Parquet into Arrow record batches.

use std::io::Cursor;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{DataError, Result};

/// A supported file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// Apache Parquet.
    Parquet,
}

impl Format {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }

    /// Picks the format from a name (`csv`, `parquet`, a file name or a MIME type), falling back
    /// to the Parquet magic bytes.
    pub fn detect(hint: Option<&str>, bytes: &[u8]) -> Result<Self> {
        if let Some(hint) = hint.map(str::to_ascii_lowercase).filter(|h| !h.is_empty()) {
            if hint == "csv" || hint.ends_with(".csv") || hint.starts_with("text/csv") {
                return Ok(Format::Csv);
            }
            if hint == "parquet" || hint.ends_with(".parquet") || hint.contains("parquet") {
                return Ok(Format::Parquet);
            }
            if !(hint.starts_with("application/octet-stream") || hint.contains('.')) {
                return Err(DataError::UnsupportedFormat(hint));
            }
        }
        if bytes.starts_with(b"PAR1") {
            Ok(Format::Parquet)
        } else {
            Ok(Format::Csv)
        }
    }
}

/// A column of a logical schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ColumnSchema {
    /// Column name.
    pub name: String,
    /// `int`, `float`, `bool`, `string`, `date` or `timestamp`.
    pub data_type: String,
    /// Whether nulls occur in this version.
    pub nullable: bool,
}

/// A whole table in memory.
#[derive(Debug, Clone)]
pub struct Table {
    /// Arrow schema.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
}

impl Table {
    /// Number of rows.
    pub fn row_count(&self) -> u64 {
        self.batches.iter().map(|b| b.num_rows() as u64).sum()
    }

    /// The position of a column.
    pub fn column_index(&self, name: &str) -> Result<usize> {
        self.schema
            .index_of(name)
            .map_err(|_| DataError::NoSuchColumn(name.to_owned()))
    }

    /// Whether a column holds numbers (int, float or bool).
    pub fn is_numeric(&self, name: &str) -> Result<bool> {
        let index = self.column_index(name)?;
        Ok(matches!(
            logical_type(self.schema.field(index).data_type()),
            "int" | "float" | "bool"
        ))
    }

    /// A column as f64 row by row; `None` for nulls and values that are not numbers.
    pub fn f64_column(&self, name: &str) -> Result<Vec<Option<f64>>> {
        use arrow::array::{Array, Float64Array};
        let index = self.column_index(name)?;
        let mut values = Vec::with_capacity(usize::try_from(self.row_count()).unwrap_or(0));
        for batch in &self.batches {
            let column = batch.column(index);
            let column = if column.data_type() == &DataType::Boolean {
                arrow::compute::cast(column, &DataType::Int8)
                    .and_then(|c| arrow::compute::cast(&c, &DataType::Float64))
            } else {
                arrow::compute::cast(column, &DataType::Float64)
            };
            match column.ok() {
                Some(cast) => match cast.as_any().downcast_ref::<Float64Array>() {
                    Some(floats) => values.extend(floats.iter().map(|v| v.filter(|v| !v.is_nan()))),
                    None => values.extend(std::iter::repeat_n(None, batch.num_rows())),
                },
                None => values.extend(std::iter::repeat_n(None, batch.num_rows())),
            }
        }
        Ok(values)
    }

    /// A column as text row by row; `None` for nulls.
    pub fn string_column(&self, name: &str) -> Result<Vec<Option<String>>> {
        use arrow::array::{Array, StringArray};
        let index = self.column_index(name)?;
        let mut values = Vec::with_capacity(usize::try_from(self.row_count()).unwrap_or(0));
        for batch in &self.batches {
            let cast = arrow::compute::cast(batch.column(index), &DataType::Utf8).map_err(|e| {
                DataError::Malformed {
                    format: "table",
                    reason: e.to_string(),
                }
            })?;
            match cast.as_any().downcast_ref::<StringArray>() {
                Some(strings) => values.extend(strings.iter().map(|v| v.map(str::to_owned))),
                None => values.extend(std::iter::repeat_n(None, batch.num_rows())),
            }
        }
        Ok(values)
    }

    /// The logical schema, with nullability as observed.
    pub fn columns(&self) -> Vec<ColumnSchema> {
        self.schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, field)| ColumnSchema {
                name: field.name().clone(),
                data_type: logical_type(field.data_type()).to_owned(),
                nullable: self.batches.iter().any(|b| b.column(i).null_count() > 0),
            })
            .collect()
    }
}

/// Flywheel's logical type for an Arrow type.
pub(crate) fn logical_type(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => "int",
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => "int",
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => "float",
        DataType::Boolean => "bool",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Timestamp(_, _) => "timestamp",
        _ => "string",
    }
}

/// Reads a whole file.
pub fn read(bytes: Bytes, format: Format) -> Result<Table> {
    let table = match format {
        Format::Csv => read_csv(bytes)?,
        Format::Parquet => read_parquet(bytes)?,
    };
    if table.schema.fields().is_empty() {
        return Err(DataError::Empty);
    }
    Ok(table)
}

fn read_csv(bytes: Bytes) -> Result<Table> {
    let malformed = |e: arrow::error::ArrowError| DataError::Malformed {
        format: "csv",
        reason: e.to_string(),
    };
    if std::str::from_utf8(&bytes).is_err() {
        return Err(DataError::Malformed {
            format: "csv",
            reason: "not UTF-8 text".into(),
        });
    }
    let csv_format = arrow::csv::reader::Format::default().with_header(true);
    let (schema, _) = csv_format
        .infer_schema(Cursor::new(&bytes[..]), None)
        .map_err(malformed)?;
    let schema = Arc::new(schema);
    let reader = arrow::csv::ReaderBuilder::new(schema.clone())
        .with_format(csv_format)
        .with_batch_size(8192)
        .build(Cursor::new(bytes))
        .map_err(malformed)?;
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(malformed)?;
    Ok(Table { schema, batches })
}

fn read_parquet(bytes: Bytes) -> Result<Table> {
    let malformed = |reason: String| DataError::Malformed {
        format: "parquet",
        reason,
    };
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| malformed(e.to_string()))?;
    let schema = builder.schema().clone();
    let reader = builder
        .with_batch_size(8192)
        .build()
        .map_err(|e| malformed(e.to_string()))?;
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| malformed(e.to_string()))?;
    Ok(Table { schema, batches })
}
