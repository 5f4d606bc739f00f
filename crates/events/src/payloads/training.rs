//! `training.*` payloads: requests and the job lifecycle.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DatasetRef, Lineage, Metrics, Params, Resources, Signature};

/// Why a training was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrainingReason {
    /// A person asked for it.
    Manual,
    /// A cron-like schedule fired.
    Schedule,
    /// A subscribed dataset got a new version.
    NewData,
    /// The monitor detected drift.
    Drift,
    /// A CI pipeline asked for it.
    Ci,
}

/// Which trainer runs the job and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrainerSpec {
    /// `builtin` (a trainer shipped with Flywheel) or `external` (a container or command).
    pub kind: String,
    /// Trainer name, e.g. `logistic_regression`, or an image / command for external trainers.
    pub name: String,
    /// Trainer parameters.
    #[serde(default)]
    pub params: Params,
}

/// A hyperparameter search over trainer parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HyperparameterSearch {
    /// `grid` or `random`.
    pub strategy: String,
    /// Candidate values per parameter.
    pub space: std::collections::BTreeMap<String, Vec<serde_json::Value>>,
    /// Upper bound on trials.
    pub max_trials: u32,
    /// Metric to optimise.
    pub metric: String,
    /// `maximize` or `minimize`.
    pub goal: String,
}

/// A threshold a trained model must meet before it may be registered as a candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct QualityGate {
    /// Metric name.
    pub metric: String,
    /// Comparison: `>=`, `>`, `<=`, `<`.
    pub op: String,
    /// Threshold value.
    pub threshold: f64,
}

/// `training.requested`: someone or something wants a model trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrainingRequested {
    /// Idempotency key: the same request id submitted twice creates one job.
    pub request_id: String,
    /// Registered model name the result belongs to.
    pub model: String,
    /// Training data.
    pub dataset: DatasetRef,
    /// Trainer to run.
    pub trainer: TrainerSpec,
    /// Resources asked for.
    pub resources: Resources,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i32,
    /// Why.
    pub reason: TrainingReason,
    /// Optional hyperparameter search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<HyperparameterSearch>,
    /// Quality gates on the evaluation metrics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<QualityGate>,
    /// Wall-clock limit per attempt in seconds; the scheduler's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// `training.job.queued`: the scheduler accepted a request as a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrainingJobQueued {
    /// Job id.
    pub job_id: String,
    /// The request it came from.
    pub request_id: String,
    /// Model name.
    pub model: String,
    /// Priority.
    pub priority: i32,
}

/// `training.job.dispatched`: a job attempt was handed to a runner pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrainingJobDispatched {
    /// Job id.
    pub job_id: String,
    /// Attempt number, starting at 1.
    pub attempt: u32,
    /// Runner pool.
    pub pool: String,
    /// What to run: present on the work-queue message runners receive, absent on the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<TrainingRequested>,
    /// Wall-clock limit of this attempt in seconds.
    #[serde(default)]
    pub timeout_seconds: u64,
}

/// `training.job.started`: a runner began an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrainingJobStarted {
    /// Job id.
    pub job_id: String,
    /// Attempt number.
    pub attempt: u32,
    /// Runner instance id.
    pub runner: String,
}

/// `training.job.progress`: a running attempt reports how far it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrainingJobProgress {
    /// Job id.
    pub job_id: String,
    /// Attempt number.
    pub attempt: u32,
    /// Fraction done, 0 to 1.
    pub fraction: f64,
    /// Current step, e.g. epoch or trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// Human-readable stage.
    #[serde(default)]
    pub message: String,
    /// Intermediate metrics.
    #[serde(default, skip_serializing_if = "Metrics::is_empty")]
    pub metrics: Metrics,
}

/// `training.job.completed`: an attempt finished and produced a model package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrainingJobCompleted {
    /// Job id.
    pub job_id: String,
    /// Attempt number (results of superseded attempts must be ignored).
    pub attempt: u32,
    /// The request it came from.
    pub request_id: String,
    /// Model name.
    pub model: String,
    /// Artifact URI of the model package folder.
    pub package_uri: String,
    /// Evaluation metrics.
    pub metrics: Metrics,
    /// Whether every quality gate passed.
    pub gates_passed: bool,
    /// The model's input/output signature (from its package manifest).
    #[serde(default)]
    pub signature: Signature,
    /// Lineage of the produced model.
    pub lineage: Lineage,
    /// Resource-seconds used: cpu core-seconds.
    #[serde(default)]
    pub cpu_seconds: f64,
    /// For a hyperparameter search: every trial, the winner's first (absent otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trials: Vec<TrialResult>,
}

/// One trial of a hyperparameter search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrialResult {
    /// Trial number, from 0.
    pub trial: u32,
    /// The trial's own job.
    pub job_id: String,
    /// The parameters it tried (the search space's choice, on top of the trainer's params).
    pub params: Params,
    /// `succeeded`, `failed`, `cancelled` or `timed_out`.
    pub status: String,
    /// Its evaluation metrics, when it succeeded.
    #[serde(default, skip_serializing_if = "Metrics::is_empty")]
    pub metrics: Metrics,
    /// Its model package, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_uri: Option<String>,
    /// Whether it was picked.
    #[serde(default)]
    pub best: bool,
}

/// `training.job.failed`: an attempt failed or timed out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrainingJobFailed {
    /// Job id.
    pub job_id: String,
    /// Attempt number.
    pub attempt: u32,
    /// What went wrong.
    pub error: String,
    /// `error` (retryable), `invalid` (bad input: never retried), `timed_out` or `lost` (the
    /// runner died).
    pub kind: String,
    /// Whether the scheduler will try again.
    pub will_retry: bool,
}

/// `training.job.cancelled`: a job was cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrainingJobCancelled {
    /// Job id.
    pub job_id: String,
    /// Who or why.
    pub reason: String,
}
