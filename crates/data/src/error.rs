/// Why data could not be read or checked.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The bytes are not a readable file of the claimed format.
    #[error("malformed {format}: {reason}")]
    Malformed {
        /// `csv` or `parquet`.
        format: &'static str,
        /// What the reader said.
        reason: String,
    },
    /// The format could not be told or is not supported.
    #[error("unsupported data format `{0}` (expected csv or parquet)")]
    UnsupportedFormat(String),
    /// The file has no columns.
    #[error("the file has no columns")]
    Empty,
    /// No column of that name.
    #[error("no column `{0}`")]
    NoSuchColumn(String),
    /// An expectation is malformed.
    #[error("invalid expectation: {0}")]
    InvalidExpectation(String),
}

/// Result with [`DataError`].
pub type Result<T, E = DataError> = std::result::Result<T, E>;
