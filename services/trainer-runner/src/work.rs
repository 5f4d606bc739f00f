//! One work-queue message: claim the attempt, train, evaluate, gate, package, report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flywheel_artifacts::package::{self, Manifest, PackageLineage};
use flywheel_bus::{ConsumerSpec, Delivery, Outcome, StreamKind};
use flywheel_events::control::{
    AttemptClaim, AttemptRef, ClaimReply, decode_control, encode_control,
};
use flywheel_events::payloads::{
    Lineage, Metrics, Signature, TrainingJobCompleted, TrainingJobDispatched, TrainingJobFailed,
    TrainingJobProgress, TrainingRequested,
};
use flywheel_events::{ContentType, Envelope, Event};
use tokio_util::sync::CancellationToken;

use crate::{Runner, TrainFailure, Workshop, attempt, builtin, external, gates, registry};

/// The pool's durable consumer, shared by every runner of the pool.
pub(crate) fn consumer_spec(runner: &Runner) -> Result<ConsumerSpec, String> {
    let subject = runner
        .bus
        .subjects()
        .jobs(&runner.config().pool)
        .map_err(|e| e.to_string())?;
    let mut spec = ConsumerSpec::new(
        StreamKind::Jobs,
        format!("runners-{}", runner.config().pool),
        subject,
    );
    spec.concurrency = usize::try_from(runner.config().slots).unwrap_or(1);
    // One message per slot: a busy runner holds no work another runner could start.
    spec.batch = spec.concurrency;
    spec.max_ack_pending = 10_000;
    spec.max_deliver = -1;
    Ok(spec)
}

/// What a trainer produced.
pub(crate) struct Output {
    pub flavor: String,
    pub model_file: String,
    pub files: Vec<(String, Bytes)>,
    pub metrics: std::collections::BTreeMap<String, f64>,
    pub signature: Signature,
    pub lineage: PackageLineage,
}

/// Reports progress of one attempt (best effort: progress is informational).
#[derive(Clone)]
pub(crate) struct Progress {
    sink: ProgressSink,
    attempt: AttemptRef,
    last: Arc<std::sync::Mutex<Option<Instant>>>,
}

/// Where progress goes: to the scheduler over the bus, or (in a Kubernetes pod) to stdout,
/// where the runner following the pod's log relays it.
#[derive(Clone)]
enum ProgressSink {
    Bus {
        runner: Arc<Runner>,
        work: Box<Envelope>,
    },
    Stdout,
}

impl Progress {
    /// Progress reported to the scheduler as caused by `work`.
    pub(crate) fn to_bus(runner: Arc<Runner>, work: Envelope, attempt: AttemptRef) -> Self {
        Self {
            sink: ProgressSink::Bus {
                runner,
                work: Box::new(work),
            },
            attempt,
            last: Arc::default(),
        }
    }

    /// Progress printed as protocol lines on stdout.
    pub(crate) fn to_stdout(attempt: AttemptRef) -> Self {
        Self {
            sink: ProgressSink::Stdout,
            attempt,
            last: Arc::default(),
        }
    }

    /// Sends a progress report, at most one a second unless `force`.
    pub(crate) fn report(&self, fraction: f64, message: &str, force: bool) {
        self.report_metrics(fraction, message, Metrics::default(), force);
    }

    /// Sends a progress report with the metrics measured so far (live metrics for the CLI and
    /// the dashboard), at most one a second unless `force`.
    pub(crate) fn report_metrics(
        &self,
        fraction: f64,
        message: &str,
        metrics: Metrics,
        force: bool,
    ) {
        {
            let Ok(mut last) = self.last.lock() else {
                return;
            };
            if !force && last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return;
            }
            *last = Some(Instant::now());
        }
        let progress = TrainingJobProgress {
            job_id: self.attempt.job_id.clone(),
            attempt: self.attempt.attempt,
            fraction: fraction.clamp(0.0, 1.0),
            step: None,
            message: message.to_owned(),
            metrics,
        };
        match &self.sink {
            ProgressSink::Stdout => attempt::print_progress(&progress),
            ProgressSink::Bus { runner, work } => {
                let event = Event::TrainingJobProgress(progress);
                let envelope = Envelope::caused_by(work, crate::SERVICE, event);
                let runner = runner.clone();
                tokio::spawn(async move {
                    if let Err(e) = runner.report(&envelope).await {
                        tracing::debug!(error = %e, "progress report failed");
                    }
                });
            }
        }
    }
}

enum Claim {
    Granted,
    Refused(String),
    NoAnswer(String),
}

async fn claim(runner: &Runner, attempt: &AttemptRef) -> Claim {
    let message = AttemptClaim {
        attempt: attempt.clone(),
        runner: runner.config().runner_id.clone(),
    };
    let Ok(bytes) = encode_control(&message) else {
        return Claim::NoAnswer("cannot encode claim".into());
    };
    let request = runner
        .bus
        .client()
        .request(runner.bus.subjects().attempt_claims(), bytes.into());
    match tokio::time::timeout(runner.config().claim_timeout, request).await {
        Err(_) => Claim::NoAnswer("no scheduler answered the claim".into()),
        Ok(Err(e)) => Claim::NoAnswer(e.to_string()),
        Ok(Ok(reply)) => match decode_control::<ClaimReply>(&reply.payload) {
            Ok(reply) if reply.granted => Claim::Granted,
            Ok(reply) => Claim::Refused(reply.reason),
            Err(e) => Claim::NoAnswer(format!("unreadable claim reply: {e}")),
        },
    }
}

/// Handles one work-queue message.
pub(crate) async fn handle(runner: Arc<Runner>, delivery: Delivery) -> Outcome {
    let work = delivery.envelope;
    let Event::TrainingJobDispatched(dispatched) = &work.event else {
        return Outcome::poison(format!(
            "expected training.job.dispatched, got {}",
            work.event_type()
        ));
    };
    let Some(request) = dispatched.request.clone() else {
        return Outcome::poison("a work message without the training request");
    };
    let attempt = AttemptRef {
        job_id: dispatched.job_id.clone(),
        attempt: dispatched.attempt,
    };
    match claim(&runner, &attempt).await {
        Claim::Granted => {}
        Claim::Refused(reason) => {
            tracing::info!(job = %attempt.job_id, attempt = attempt.attempt, %reason, "attempt not ours to run");
            return Outcome::Ack;
        }
        Claim::NoAnswer(reason) => return Outcome::retry(Duration::from_secs(2), reason),
    }
    tracing::info!(job = %attempt.job_id, attempt = attempt.attempt, model = %request.model, "attempt started");
    let stop = runner.start(&attempt);
    let started = Instant::now();
    let progress = Progress::to_bus(runner.clone(), work.clone(), attempt.clone());
    let timeout = Duration::from_secs(dispatched.timeout_seconds.max(1));
    let result = tokio::select! {
        result = run_attempt(&runner, dispatched, &request, &progress, stop.clone(), started) => Some(result),
        () = stop.cancelled() => None,
        () = tokio::time::sleep(timeout) => Some(Err(TrainFailure {
            kind: "timed_out",
            message: format!("ran past its limit of {} s", timeout.as_secs()),
        })),
    };
    if let Some(cluster) = &runner.cluster {
        // Stopped, timed out or shutting down: the Job must not run on (a retry has its own).
        let finished = matches!(
            &result,
            Some(Ok(_))
                | Some(Err(TrainFailure {
                    kind: "invalid" | "error",
                    ..
                }))
        );
        if !finished {
            cluster.delete(dispatched).await;
        }
    }
    runner.finish(&attempt);
    let event = match result {
        // Shutting down: say so, so the scheduler retries now rather than after the timeout.
        None if runner.shutdown.is_cancelled() => failed(
            dispatched,
            &TrainFailure::retryable("the runner shut down during the attempt"),
        ),
        None => {
            tracing::warn!(job = %attempt.job_id, attempt = attempt.attempt, "attempt stopped");
            return Outcome::Ack;
        }
        Some(Ok(event)) => event,
        Some(Err(failure)) => failed(dispatched, &failure),
    };
    let report = Envelope::caused_by(&work, crate::SERVICE, event);
    // The report must get out: the attempt's result exists nowhere else.
    let mut delay = Duration::from_millis(200);
    loop {
        match runner.report(&report).await {
            Ok(()) => break,
            Err(e) if runner.shutdown.is_cancelled() && delay > Duration::from_secs(2) => {
                return Outcome::retry(Duration::from_secs(1), format!("report not sent: {e}"));
            }
            Err(e) => {
                tracing::warn!(error = %e, "report failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    Outcome::Ack
}

fn failed(dispatched: &TrainingJobDispatched, failure: &TrainFailure) -> Event {
    tracing::warn!(job = %dispatched.job_id, attempt = dispatched.attempt, kind = failure.kind, error = %failure.message, "attempt failed");
    Event::TrainingJobFailed(TrainingJobFailed {
        job_id: dispatched.job_id.clone(),
        attempt: dispatched.attempt,
        error: failure.message.clone(),
        kind: failure.kind.to_owned(),
        will_retry: false,
    })
}

/// Runs one attempt where the runner's backend runs it; the result event or why it failed.
async fn run_attempt(
    runner: &Arc<Runner>,
    dispatched: &TrainingJobDispatched,
    request: &TrainingRequested,
    progress: &Progress,
    stop: CancellationToken,
    started: Instant,
) -> Result<Event, TrainFailure> {
    match &runner.cluster {
        Some(cluster) => cluster.run(dispatched, progress).await,
        None => {
            let workshop = &runner.workshop;
            let output = execute(workshop, dispatched, request, progress, stop).await?;
            completed(workshop, dispatched, request, output, started).await
        }
    }
}

/// Trains in this process (built-in trainers) or a child process (external trainers).
pub(crate) async fn execute(
    workshop: &Workshop,
    dispatched: &TrainingJobDispatched,
    request: &TrainingRequested,
    progress: &Progress,
    stop: CancellationToken,
) -> Result<Output, TrainFailure> {
    for gate in &request.gates {
        if !gates::known_op(&gate.op) {
            return Err(TrainFailure::invalid(format!(
                "gate on {}: unknown comparison `{}` (>=, >, <=, <, no_regression)",
                gate.metric, gate.op
            )));
        }
    }
    progress.report(0.0, "fetching the dataset", true);
    let (bytes, format) = registry::dataset(workshop, &request.dataset).await?;
    match request.trainer.kind.as_str() {
        "builtin" => builtin::train(request, bytes, &format, progress).await,
        "external" => {
            external::train(
                workshop, dispatched, request, bytes, &format, progress, stop,
            )
            .await
        }
        other => Err(TrainFailure::invalid(format!(
            "unknown trainer kind `{other}`"
        ))),
    }
}

/// Evaluates the gates, uploads the package and describes the result.
pub(crate) async fn completed(
    workshop: &Workshop,
    dispatched: &TrainingJobDispatched,
    request: &TrainingRequested,
    output: Output,
    started: Instant,
) -> Result<Event, TrainFailure> {
    let production = if request.gates.iter().any(|g| g.op == "no_regression") {
        registry::production_metrics(workshop, &request.model).await?
    } else {
        None
    };
    let outcomes = gates::evaluate(&request.gates, &output.metrics, production.as_ref());
    let gates_passed = outcomes.iter().all(|o| o.passed);
    for outcome in &outcomes {
        tracing::info!(job = %dispatched.job_id, passed = outcome.passed, gate = %outcome.detail, "quality gate");
    }
    let manifest = Manifest::describe(
        &output.flavor,
        &output.model_file,
        output.signature.clone(),
        output.metrics.clone(),
        output.lineage.clone(),
        &output.files,
    )
    .map_err(|e| TrainFailure::invalid(format!("packaging: {e}")))?;
    let stored = package::upload(&workshop.artifacts, &manifest, &output.files)
        .await
        .map_err(|e| TrainFailure::retryable(format!("uploading the package: {e}")))?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(Event::TrainingJobCompleted(TrainingJobCompleted {
        job_id: dispatched.job_id.clone(),
        attempt: dispatched.attempt,
        request_id: request.request_id.clone(),
        model: request.model.clone(),
        package_uri: stored.uri,
        metrics: output.metrics,
        gates_passed,
        signature: output.signature,
        lineage: Lineage {
            dataset: Some(request.dataset.clone()),
            job_id: Some(dispatched.job_id.clone()),
            code_ref: output.lineage.code_ref,
            params: output.lineage.params,
            seed: Some(output.lineage.seed),
            ..Lineage::default()
        },
        cpu_seconds: seconds * request.resources.cpu,
        trials: Vec::new(),
    }))
}

/// Publishes a report for the scheduler.
pub(crate) async fn publish_report(runner: &Runner, envelope: &Envelope) -> Result<(), String> {
    runner
        .bus
        .publish_to(
            runner.bus.subjects().job_reports(),
            envelope,
            ContentType::MsgPack,
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
