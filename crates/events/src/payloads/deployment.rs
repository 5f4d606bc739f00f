//! `deployment.*` payloads, published by the deployer.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a new version replaces the old one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RolloutStrategy {
    /// Switch all traffic at once.
    Direct,
    /// Shift traffic in steps, watching SLOs between steps.
    Canary {
        /// Traffic percentages per step, e.g. `[10, 50, 100]`.
        steps: Vec<u8>,
        /// Seconds to observe each step.
        step_seconds: u64,
    },
    /// Mirror traffic to the new version without serving its answers.
    Shadow {
        /// Seconds to observe before promoting.
        duration_seconds: u64,
    },
    /// Start the new version beside the old one, then switch.
    BlueGreen,
}

/// A version and its share of traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TrafficSplit {
    /// Model version.
    pub version: u32,
    /// Percent of requests, 0 to 100.
    pub percent: u8,
    /// Mirrored (shadow) rather than served.
    #[serde(default)]
    pub shadow: bool,
}

/// `deployment.requested`: deploy a model version under a deployment name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentRequested {
    /// Deployment name (also the serving name).
    pub deployment: String,
    /// Model name.
    pub model: String,
    /// Version to deploy.
    pub version: u32,
    /// How to roll it out.
    pub strategy: RolloutStrategy,
    /// Who asked.
    pub requested_by: String,
}

/// `deployment.rollout_started`: a rollout began.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentRolloutStarted {
    /// Deployment name.
    pub deployment: String,
    /// Rollout id.
    pub rollout_id: String,
    /// Model name.
    pub model: String,
    /// Version serving before, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<u32>,
    /// Version being rolled out.
    pub to_version: u32,
    /// Strategy in use.
    pub strategy: RolloutStrategy,
}

/// `deployment.traffic_shifted`: the traffic split changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentTrafficShifted {
    /// Deployment name.
    pub deployment: String,
    /// Rollout id.
    pub rollout_id: String,
    /// The new split.
    pub splits: Vec<TrafficSplit>,
}

/// `deployment.rolled_out`: the new version serves all traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentRolledOut {
    /// Deployment name.
    pub deployment: String,
    /// Rollout id.
    pub rollout_id: String,
    /// Model name.
    pub model: String,
    /// Version now serving.
    pub version: u32,
}

/// `deployment.rolled_back`: the rollout was undone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentRolledBack {
    /// Deployment name.
    pub deployment: String,
    /// Rollout id.
    pub rollout_id: String,
    /// Version serving again, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_version: Option<u32>,
    /// Why, e.g. the SLO that was breached.
    pub reason: String,
    /// What the new version measured in the step that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<VersionMeasurement>,
    /// What the serving version measured over the same time, for comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<VersionMeasurement>,
}

/// One version's numbers over a rollout step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VersionMeasurement {
    /// Version.
    pub version: u32,
    /// Requests it answered (or, in shadow, mirrored).
    pub requests: u64,
    /// Share of them that failed on the server side.
    pub error_rate: f64,
    /// 99th-percentile latency, milliseconds.
    pub p99_latency_ms: f64,
    /// In shadow: share of mirrored answers that differed from the serving version's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disagreement_rate: Option<f64>,
}

/// `deployment.failed`: a deployment could not be carried out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentFailed {
    /// Deployment name.
    pub deployment: String,
    /// Rollout id, if a rollout had started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<String>,
    /// What went wrong.
    pub error: String,
}
