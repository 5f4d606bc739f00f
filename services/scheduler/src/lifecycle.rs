//! Ending attempts: success, failure with retry and backoff, loss of a runner, timeout and
//! cancellation. Every transition is a compare-and-set on (job, attempt, state), so replicas,
//! redelivered reports and a racing cancel never apply one twice.

use flywheel_events::payloads::{TrainingJobCancelled, TrainingJobFailed};
use flywheel_events::{Envelope, Event};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};

use crate::jobs::{self, ACTIVE, Job};
use crate::schema::{Attempts, Jobs};
use crate::{AppState, Result, SchedulerError};

/// How an attempt ended.
#[derive(Debug, Clone)]
pub(crate) enum Ending {
    /// It produced a model.
    Succeeded,
    /// It failed; `retryable` failures are tried again while attempts remain.
    Failed {
        kind: String,
        error: String,
        retryable: bool,
    },
    /// It ran past its time limit.
    TimedOut,
    /// Someone cancelled the job.
    Cancelled { reason: String },
}

/// What a won transition did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ended {
    /// The job's new state.
    pub status: &'static str,
    /// Whether another attempt will follow.
    pub will_retry: bool,
}

/// Ends `job`'s current attempt (`job.attempts`) if it is still in one of `from`; `None` when
/// something else moved it first.
pub(crate) async fn end_attempt(
    txn: &DatabaseTransaction,
    state: &AppState,
    job: &Job,
    from: &[&str],
    ending: &Ending,
) -> Result<Option<Ended>> {
    let now = crate::now_millis();
    let attempt = job.attempts;
    let (status, will_retry, detail, attempt_status, error) = match ending {
        Ending::Succeeded => (
            "succeeded",
            false,
            String::new(),
            "succeeded",
            String::new(),
        ),
        Ending::Failed {
            kind,
            error,
            retryable,
        } => {
            let retry = *retryable
                && u32::try_from(attempt).unwrap_or(u32::MAX) < state.config.max_attempts;
            let attempt_status = if kind == "lost" { "lost" } else { "failed" };
            if retry {
                (
                    "queued",
                    true,
                    format!("retrying after: {error}"),
                    attempt_status,
                    error.clone(),
                )
            } else {
                (
                    "failed",
                    false,
                    error.clone(),
                    attempt_status,
                    error.clone(),
                )
            }
        }
        Ending::TimedOut => {
            let error = format!("timed out after {} s", job.timeout_seconds);
            ("timed_out", false, error.clone(), "timed_out", error)
        }
        Ending::Cancelled { reason } => (
            "cancelled",
            false,
            reason.clone(),
            "cancelled",
            reason.clone(),
        ),
    };
    let not_before = if will_retry {
        let delay = state
            .config
            .backoff(u32::try_from(attempt).unwrap_or(u32::MAX));
        now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
    } else {
        0
    };
    let mut update = Query::update();
    update
        .table(Jobs::Table)
        .value(Jobs::Status, status)
        .value(Jobs::Detail, detail)
        .value(Jobs::UpdatedAt, now)
        .value(Jobs::NotBefore, not_before)
        .and_where(Expr::col(Jobs::JobId).eq(job.job_id.as_str()))
        .and_where(Expr::col(Jobs::Attempts).eq(attempt))
        .and_where(Expr::col(Jobs::Status).is_in(from.iter().copied()));
    if !will_retry {
        update.value(Jobs::FinishedAt, now);
    }
    if txn.execute(&update).await?.rows_affected() != 1 {
        return Ok(None);
    }
    if attempt > 0 {
        finish_attempt_row(txn, job, attempt_status, &error, now).await?;
    }
    crate::metrics::transition(status);
    Ok(Some(Ended { status, will_retry }))
}

/// Closes the attempt row with its resource-seconds (allocated resources × running time).
async fn finish_attempt_row(
    txn: &DatabaseTransaction,
    job: &Job,
    status: &str,
    error: &str,
    now: i64,
) -> Result<()> {
    let row = txn
        .query_one(
            &Query::select()
                .column(Attempts::StartedAt)
                .from(Attempts::Table)
                .and_where(Expr::col(Attempts::JobId).eq(job.job_id.as_str()))
                .and_where(Expr::col(Attempts::Attempt).eq(job.attempts))
                .to_owned(),
        )
        .await?;
    let started: Option<i64> = match row {
        Some(row) => row.try_get("", "started_at")?,
        None => None,
    };
    #[allow(clippy::cast_precision_loss)]
    let seconds = started.map_or(0.0, |s| Ord::max(now - s, 0) as f64 / 1000.0);
    let r = &job.request.resources;
    #[allow(clippy::cast_precision_loss)]
    let (cpu, memory, gpu) = (
        seconds * r.cpu,
        seconds * r.memory_mb as f64,
        seconds * f64::from(r.gpu),
    );
    txn.execute(
        &Query::update()
            .table(Attempts::Table)
            .value(Attempts::Status, status)
            .value(Attempts::Error, error)
            .value(Attempts::FinishedAt, now)
            .value(Attempts::CpuSeconds, cpu)
            .value(Attempts::MemoryMbSeconds, memory)
            .value(Attempts::GpuSeconds, gpu)
            .and_where(Expr::col(Attempts::JobId).eq(job.job_id.as_str()))
            .and_where(Expr::col(Attempts::Attempt).eq(job.attempts))
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// The `training.job.failed` event of an ended attempt.
pub(crate) fn failed_event(job: &Job, kind: &str, error: &str, will_retry: bool) -> Event {
    Event::TrainingJobFailed(TrainingJobFailed {
        job_id: job.job_id.clone(),
        attempt: u32::try_from(job.attempts).unwrap_or(0),
        error: error.to_owned(),
        kind: kind.to_owned(),
        will_retry,
    })
}

/// Announces `event` about `job` through the outbox, continuing `cause`'s chain when given.
pub(crate) async fn announce(
    txn: &DatabaseTransaction,
    state: &AppState,
    job: &Job,
    event: Event,
    cause: Option<&Envelope>,
) -> Result<()> {
    let envelope = match cause {
        Some(cause) => Envelope::caused_by(cause, crate::SERVICE, event),
        None => Envelope::new(crate::SERVICE, &job.project, event),
    };
    flywheel_runtime::outbox::enqueue(txn, crate::SERVICE, &state.bus, &envelope).await?;
    Ok(())
}

/// Cancels a job that has not finished; a running attempt is told to stop at its runner's
/// next heartbeat, and its result, if any arrives, is ignored.
pub(crate) async fn cancel(state: &AppState, job_id: &str, reason: &str) -> Result<Job> {
    let txn = state.db.begin().await?;
    let job = jobs::get(&txn, job_id).await?;
    let from = ["queued", "dispatched", "running"];
    if !from.contains(&job.status.as_str()) {
        return Err(SchedulerError::Conflict(format!(
            "job {job_id} is already {}",
            job.status
        )));
    }
    let reason = if reason.trim().is_empty() {
        "cancelled"
    } else {
        reason
    };
    let ending = Ending::Cancelled {
        reason: reason.to_owned(),
    };
    if end_attempt(&txn, state, &job, &from, &ending)
        .await?
        .is_none()
    {
        return Err(SchedulerError::Conflict(format!(
            "job {job_id} changed while cancelling; try again"
        )));
    }
    let event = Event::TrainingJobCancelled(TrainingJobCancelled {
        job_id: job.job_id.clone(),
        reason: reason.to_owned(),
    });
    announce(&txn, state, &job, event, None).await?;
    // A search takes its open trials with it; a cancelled trial may end its search.
    let trials = txn
        .query_all(
            &jobs::select()
                .and_where(Expr::col(Jobs::ParentJobId).eq(job.job_id.as_str()))
                .and_where(Expr::col(Jobs::Status).is_in(from))
                .to_owned(),
        )
        .await?;
    for row in trials {
        let trial = jobs::from_row(&row)?;
        if end_attempt(&txn, state, &trial, &from, &ending)
            .await?
            .is_some()
        {
            let event = Event::TrainingJobCancelled(TrainingJobCancelled {
                job_id: trial.job_id.clone(),
                reason: format!("its search was cancelled: {reason}"),
            });
            announce(&txn, state, &trial, event, None).await?;
        }
    }
    crate::search::trial_ended(&txn, state, &job, None).await?;
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    jobs::get(&state.db, job_id).await
}

/// Times out running attempts past their limit and declares attempts of silent runners lost.
pub(crate) async fn reap(state: &AppState) -> Result<usize> {
    let now = crate::now_millis();
    let running = state
        .db
        .query_all(
            &jobs::select()
                .and_where(Expr::col(Jobs::Status).eq("running"))
                .to_owned(),
        )
        .await?;
    let live = crate::runners::live_runner_ids(state).await?;
    let runner_timeout = i64::try_from(state.config.runner_timeout.as_millis()).unwrap_or(i64::MAX);
    let since = state
        .listening_since
        .load(std::sync::atomic::Ordering::Relaxed);
    let judging_liveness = since > 0 && now - since >= runner_timeout;
    let mut ended = 0;
    for row in running {
        let job = jobs::from_row(&row)?;
        if job.runner.as_deref() == Some(jobs::SEARCH_RUNNER) {
            continue;
        }
        let started = job.started_at.unwrap_or(now);
        let (ending, kind) = if now - started > job.timeout_seconds.saturating_mul(1000) {
            (Ending::TimedOut, "timed_out")
        } else if judging_liveness && job.runner.as_ref().is_none_or(|r| !live.contains(r)) {
            let error = format!(
                "runner {} stopped sending heartbeats",
                job.runner.as_deref().unwrap_or("?")
            );
            (
                Ending::Failed {
                    kind: "lost".into(),
                    error,
                    retryable: true,
                },
                "lost",
            )
        } else {
            continue;
        };
        let txn = state.db.begin().await?;
        if let Some(done) = end_attempt(&txn, state, &job, &ACTIVE, &ending).await? {
            let error = match &ending {
                Ending::Failed { error, .. } => error.clone(),
                _ => format!("timed out after {} s", job.timeout_seconds),
            };
            tracing::warn!(job = %job.job_id, attempt = job.attempts, kind, %error, "attempt ended by the scheduler");
            let event = failed_event(&job, kind, &error, done.will_retry);
            announce(&txn, state, &job, event, None).await?;
            if !done.will_retry {
                crate::search::trial_ended(&txn, state, &job, None).await?;
            }
            ended += 1;
        }
        txn.commit().await?;
    }
    for search in crate::search::stalled_searches(state).await? {
        let txn = state.db.begin().await?;
        crate::search::finish_if_done(&txn, state, &search).await?;
        txn.commit().await?;
    }
    Ok(ended)
}
