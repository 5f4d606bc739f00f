//! Types shared by several payloads.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Named numeric results, e.g. `{"accuracy": 0.93, "rmse": 1.2}`.
pub type Metrics = BTreeMap<String, f64>;

/// Free-form parameters (hyperparameters, trainer options).
pub type Params = BTreeMap<String, serde_json::Value>;

/// Points at one immutable version of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DatasetRef {
    /// Dataset name, unique within the project.
    pub name: String,
    /// Version id (the content hash prefix the registry assigned).
    pub version: String,
}

/// Points at one immutable model version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ModelRef {
    /// Registered model name, unique within the project.
    pub name: String,
    /// Version number, starting at 1.
    pub version: u32,
}

/// Compute resources a training job asks for or used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Resources {
    /// CPU cores (fractions allowed).
    pub cpu: f64,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Whole GPUs.
    #[serde(default)]
    pub gpu: u32,
}

/// One named tensor of a model's input or output signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TensorSpec {
    /// Tensor (or feature) name.
    pub name: String,
    /// V2 protocol datatype, e.g. `FP32`, `INT64`, `BYTES`.
    pub datatype: String,
    /// Shape; `-1` marks a variable dimension.
    pub shape: Vec<i64>,
}

/// A model's input/output contract.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Signature {
    /// Inputs the model expects.
    pub inputs: Vec<TensorSpec>,
    /// Outputs the model produces.
    pub outputs: Vec<TensorSpec>,
}

/// Where a model came from: data, run, code and parameters.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Lineage {
    /// The training dataset version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetRef>,
    /// The experiment run that produced the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The parent run, for nested runs such as hyperparameter trials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
    /// The scheduler job that trained it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Code reference, e.g. a git commit or an image digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_ref: Option<String>,
    /// Parameters the model was trained with.
    #[serde(default, skip_serializing_if = "Params::is_empty")]
    pub params: Params,
    /// Random seed, for reproducibility.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}
