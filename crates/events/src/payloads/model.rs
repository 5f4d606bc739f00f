//! `model.version.*` payloads, published by the registry.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Lineage, Metrics, Signature};

/// `model.version.registered`: an immutable model version exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelVersionRegistered {
    /// Model name.
    pub model: String,
    /// Version number.
    pub version: u32,
    /// Artifact URI of the model package.
    pub package_uri: String,
    /// Package flavor, e.g. `flywheel-linear` or `onnx`.
    pub flavor: String,
    /// Evaluation metrics.
    pub metrics: Metrics,
    /// Input/output signature.
    pub signature: Signature,
    /// Data, run, job and code it came from.
    pub lineage: Lineage,
}

/// The outcome of one quality gate on a model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GateResult {
    /// Metric name.
    pub metric: String,
    /// Comparison operator.
    pub op: String,
    /// Threshold.
    pub threshold: f64,
    /// Observed value, if the metric exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<f64>,
    /// Whether the gate held.
    pub passed: bool,
}

/// `model.version.gates_evaluated`: quality gates ran on a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelVersionGatesEvaluated {
    /// Model name.
    pub model: String,
    /// Version number.
    pub version: u32,
    /// True when every gate held.
    pub passed: bool,
    /// Each gate's outcome.
    pub results: Vec<GateResult>,
}

/// `model.version.alias_changed`: an alias such as `production` moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelVersionAliasChanged {
    /// Model name.
    pub model: String,
    /// Alias name.
    pub alias: String,
    /// Version the alias now points to; absent when the alias was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Version it pointed to before, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<u32>,
    /// Who moved it.
    pub changed_by: String,
}

/// `model.version.approval_requested`: a version awaits approval for a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelVersionApprovalRequested {
    /// Model name.
    pub model: String,
    /// Version number.
    pub version: u32,
    /// Target alias or stage, e.g. `production`.
    pub stage: String,
    /// Who asked.
    pub requested_by: String,
}

/// `model.version.approved` / `model.version.rejected`: an approver decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelVersionDecision {
    /// Model name.
    pub model: String,
    /// Version number.
    pub version: u32,
    /// Target alias or stage.
    pub stage: String,
    /// Who decided.
    pub decided_by: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
}
