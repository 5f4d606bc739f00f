//! `flywheel-trainer-runner attempt`: one attempt inside a Kubernetes pod.
//!
//! The runner that created the Job passes the work (`training.job.dispatched` with its request)
//! as JSON in `FLYWHEEL_ATTEMPT_SPEC`; settings come from `FLYWHEEL__…` variables as for every
//! service. The pod trains, evaluates the gates, uploads the package and prints its result as
//! one protocol line on stdout, which the runner reads from the pod's log. It needs the
//! registry and the artifact store, not NATS: the runner reports for it.

use std::process::ExitCode;
use std::time::Instant;

use flywheel_artifacts::ArtifactStore;
use flywheel_events::Event;
use flywheel_events::control::AttemptRef;
use flywheel_events::payloads::{TrainingJobCompleted, TrainingJobDispatched, TrainingJobProgress};
use flywheel_runtime::{CancellationToken, ServiceSettings};
use serde::{Deserialize, Serialize};

use crate::config::Backend;
use crate::work::{self, Progress};
use crate::{RunnerConfig, TrainFailure, Workshop};

/// The variable holding the attempt's work as JSON.
pub(crate) const SPEC_VARIABLE: &str = "FLYWHEEL_ATTEMPT_SPEC";
/// Prefix of a progress line: a `training.job.progress` payload as JSON follows.
pub(crate) const PROGRESS_LINE: &str = "FLYWHEEL_POD_PROGRESS ";
/// Prefix of the result line: a [`PodResult`] as JSON follows.
pub(crate) const RESULT_LINE: &str = "FLYWHEEL_POD_RESULT ";

/// How an attempt in a pod ended, as the pod prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PodResult {
    /// Trained, packaged and uploaded.
    Completed(Box<TrainingJobCompleted>),
    /// Failed: `kind` is `invalid` (never retried), `error` or `timed_out`.
    Failed { kind: String, message: String },
}

impl PodResult {
    /// The result line in a pod's log (the last one wins: only the runner prints it last).
    pub(crate) fn find_in(log: &str) -> Option<Self> {
        log.lines()
            .rev()
            .filter_map(|line| line.strip_prefix(RESULT_LINE))
            .find_map(|json| serde_json::from_str(json).ok())
    }

    /// The event to report, or the failure.
    pub(crate) fn into_event(self) -> Result<Event, TrainFailure> {
        match self {
            Self::Completed(completed) => Ok(Event::TrainingJobCompleted(*completed)),
            Self::Failed { kind, message } => Err(TrainFailure {
                kind: match kind.as_str() {
                    "invalid" => "invalid",
                    "timed_out" => "timed_out",
                    _ => "error",
                },
                message,
            }),
        }
    }

    fn print(&self) {
        if let Ok(json) = serde_json::to_string(self) {
            println!("{RESULT_LINE}{json}");
        }
    }
}

/// Prints one progress line (the runner following the log relays it to the scheduler).
pub(crate) fn print_progress(progress: &TrainingJobProgress) {
    if let Ok(json) = serde_json::to_string(progress) {
        println!("{PROGRESS_LINE}{json}");
    }
}

fn fail(kind: &str, message: String) -> ExitCode {
    eprintln!("flywheel-trainer-runner attempt: {message}");
    PodResult::Failed {
        kind: kind.to_owned(),
        message,
    }
    .print();
    ExitCode::FAILURE
}

/// Runs the attempt described by `FLYWHEEL_ATTEMPT_SPEC`; exit 0 when it completed, 1 when it
/// failed (the result line says why either way).
pub fn attempt_main() -> ExitCode {
    // One TLS crypto provider for the process, whatever a dependency turns on.
    flywheel_runtime::install_crypto_provider();
    let dispatched = match std::env::var(SPEC_VARIABLE)
        .map_err(|e| e.to_string())
        .and_then(|json| {
            serde_json::from_str::<TrainingJobDispatched>(&json).map_err(|e| e.to_string())
        }) {
        Ok(dispatched) => dispatched,
        Err(e) => return fail("invalid", format!("{SPEC_VARIABLE}: {e}")),
    };
    let config_file = std::env::var_os("FLYWHEEL_CONFIG").map(std::path::PathBuf::from);
    let defaults = ServiceSettings::defaults_for(crate::SERVICE, crate::DEFAULT_PORT);
    let settings = match flywheel_runtime::load_settings(&defaults, config_file.as_deref())
        .and_then(|s| s.validate().map(|()| s))
    {
        Ok(settings) => settings,
        Err(e) => return fail("invalid", format!("the pod's settings: {e}")),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail("error", format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async move {
        let guard = match flywheel_runtime::telemetry::init(&settings.telemetry, crate::SERVICE) {
            Ok(guard) => guard,
            Err(e) => return fail("invalid", e.to_string()),
        };
        let result = run(&settings, &dispatched).await;
        guard.shutdown().await;
        match result {
            Ok(completed) => {
                PodResult::Completed(Box::new(completed)).print();
                ExitCode::SUCCESS
            }
            Err(failure) => fail(failure.kind, failure.message),
        }
    })
}

async fn run(
    settings: &ServiceSettings,
    dispatched: &TrainingJobDispatched,
) -> Result<TrainingJobCompleted, TrainFailure> {
    let config =
        RunnerConfig::from_settings(settings).map_err(|e| TrainFailure::invalid(e.to_string()))?;
    if !matches!(config.backend, Backend::Process) {
        return Err(TrainFailure::invalid(
            "service.backend must be `process` inside a training pod",
        ));
    }
    let artifacts = ArtifactStore::from_config(&settings.artifacts)
        .map_err(|e| TrainFailure::invalid(format!("artifacts: {e}")))?;
    let workshop = Workshop::new(config, artifacts, settings)
        .map_err(|e| TrainFailure::invalid(e.to_string()))?;
    let request = dispatched
        .request
        .clone()
        .ok_or_else(|| TrainFailure::invalid("the attempt's work has no training request"))?;
    let progress = Progress::to_stdout(AttemptRef {
        job_id: dispatched.job_id.clone(),
        attempt: dispatched.attempt,
    });
    let started = Instant::now();
    let output = work::execute(
        &workshop,
        dispatched,
        &request,
        &progress,
        CancellationToken::new(),
    )
    .await?;
    match work::completed(&workshop, dispatched, &request, output, started).await? {
        Event::TrainingJobCompleted(completed) => Ok(completed),
        other => Err(TrainFailure::retryable(format!(
            "unexpected result {}",
            other.event_type()
        ))),
    }
}
