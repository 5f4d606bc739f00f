//! Prediction logs, feedback and `monitor.*` payloads.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `prediction.logged`: one served request (published to the PREDICTIONS stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PredictionLogged {
    /// Deployment name.
    pub deployment: String,
    /// Model name.
    pub model: String,
    /// Version that answered.
    pub version: u32,
    /// Request id, the join key for feedback.
    pub request_id: String,
    /// Input features by name.
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// Outputs by name.
    pub outputs: BTreeMap<String, serde_json::Value>,
    /// Serving latency in microseconds.
    pub latency_us: u64,
    /// Whether the answer came from a shadow copy.
    #[serde(default)]
    pub shadow: bool,
    /// Why the request failed on the server's side (no inputs or outputs then); absent when it
    /// was answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `feedback.received`: ground truth for an earlier prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FeedbackReceived {
    /// Deployment name.
    pub deployment: String,
    /// The prediction's request id.
    pub request_id: String,
    /// The true label or value.
    pub ground_truth: serde_json::Value,
}

/// Drift of one column between reference and window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ColumnDrift {
    /// Column (feature or prediction) name.
    pub column: String,
    /// Method, e.g. `psi`, `ks`, `chisquare`, `jensenshannon`, `wasserstein`.
    pub method: String,
    /// Statistic (or distance).
    pub statistic: f64,
    /// p-value, for tests that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Threshold the verdict used.
    pub threshold: f64,
    /// The verdict.
    pub drifted: bool,
}

/// One feature's distribution in a window beside its reference's, on the reference's bins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FeatureHistogram {
    /// Column name.
    pub column: String,
    /// Bin labels: value ranges (with below/above the reference's range) or categories.
    pub labels: Vec<String>,
    /// Reference counts per bin.
    pub reference: Vec<f64>,
    /// Window counts per bin.
    pub current: Vec<f64>,
}

/// `monitor.report.created`: a window was evaluated against the reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MonitorReportCreated {
    /// Report id.
    pub report_id: String,
    /// Deployment name.
    pub deployment: String,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: u32,
    /// Window start.
    pub window_start: DateTime<Utc>,
    /// Window end.
    pub window_end: DateTime<Utc>,
    /// Predictions in the window.
    pub count: u64,
    /// Share of drifted columns.
    pub drift_share: f64,
    /// Dataset-level drift verdict.
    pub dataset_drift: bool,
    /// Per-column results.
    pub columns: Vec<ColumnDrift>,
    /// Quality and performance metrics of the window.
    #[serde(default)]
    pub metrics: super::common::Metrics,
    /// Per feature, the window's counts beside the reference's (for histogram overlays).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub histograms: Vec<FeatureHistogram>,
}

/// `monitor.alert.raised`: an alert rule fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MonitorAlertRaised {
    /// Alert id.
    pub alert_id: String,
    /// Rule name.
    pub rule: String,
    /// Deployment name.
    pub deployment: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// What happened, in words.
    pub message: String,
    /// The report that triggered it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_id: Option<String>,
}

/// `monitor.alert.resolved`: an alert's condition no longer holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MonitorAlertResolved {
    /// Alert id.
    pub alert_id: String,
    /// Rule name.
    pub rule: String,
    /// Deployment name.
    pub deployment: String,
}
