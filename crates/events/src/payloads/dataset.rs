//! `dataset.*` payloads, published by the registry.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A column of a dataset schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Logical type: `int`, `float`, `bool`, `string`, `timestamp`.
    pub data_type: String,
    /// Whether nulls occur.
    #[serde(default)]
    pub nullable: bool,
}

/// `dataset.version.created`: a new immutable dataset version was stored and profiled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DatasetVersionCreated {
    /// Dataset name.
    pub dataset: String,
    /// Version id.
    pub version: String,
    /// sha256 of the stored bytes, hex.
    pub sha256: String,
    /// Artifact URI of the stored bytes.
    pub uri: String,
    /// `csv` or `parquet`.
    pub format: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Number of rows.
    pub row_count: u64,
    /// Columns in order.
    pub columns: Vec<Column>,
    /// Artifact URI of the stored profile (the monitor's reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_uri: Option<String>,
    /// The version this one follows, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
}

/// The outcome of one expectation of a validation suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExpectationResult {
    /// Expectation name, e.g. `not_null_ratio(age)`.
    pub expectation: String,
    /// Column it applies to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Whether it held.
    pub passed: bool,
    /// What was observed, in words.
    pub message: String,
}

/// `dataset.validation.completed`: a dataset version's validation suite ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DatasetValidationCompleted {
    /// Dataset name.
    pub dataset: String,
    /// Version id.
    pub version: String,
    /// True when every expectation held.
    pub passed: bool,
    /// Every expectation evaluated, failed ones included.
    pub results: Vec<ExpectationResult>,
}
