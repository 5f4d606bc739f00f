//! Runner reports (`<prefix>.jobs._reports`): progress, completion and failure of attempts.
//! The scheduler fences them — only the current attempt of an active job counts — and forwards
//! what counts as `training.job.*` events through the outbox, in the transaction that records
//! it. So the result of a superseded or cancelled attempt never reaches the registry.

use std::time::Duration;

use flywheel_bus::{ConsumerSpec, Delivery, Outcome, StreamKind};
use flywheel_events::{Envelope, Event};
use sea_orm::TransactionTrait;

use crate::jobs::{self, ACTIVE};
use crate::lifecycle::{self, Ending};
use crate::{AppState, Result, SchedulerError};

/// The durable consumer of runner reports, shared by every scheduler replica.
pub(crate) fn consumer_spec(state: &AppState) -> ConsumerSpec {
    let mut spec = ConsumerSpec::new(
        StreamKind::Jobs,
        "scheduler-reports",
        state.bus.subjects().job_reports(),
    );
    spec.concurrency = 8;
    // Handling a report takes milliseconds; a scheduler that died holding one hands it on
    // after this, not the default 30 s (its runner lists the attempt as finished meanwhile).
    spec.ack_wait = std::time::Duration::from_secs(5);
    spec
}

/// Handles one report.
pub(crate) async fn handle(state: AppState, delivery: Delivery) -> Outcome {
    match apply(&state, &delivery.envelope).await {
        Ok(()) => Outcome::Ack,
        Err(SchedulerError::Invalid(reason)) => Outcome::poison(reason),
        Err(e) => Outcome::retry(Duration::from_secs(1), e.to_string()),
    }
}

async fn apply(state: &AppState, report: &Envelope) -> Result<()> {
    let (job_id, attempt) = match &report.event {
        Event::TrainingJobProgress(e) => (&e.job_id, e.attempt),
        Event::TrainingJobCompleted(e) => (&e.job_id, e.attempt),
        Event::TrainingJobFailed(e) => (&e.job_id, e.attempt),
        other => {
            return Err(SchedulerError::Invalid(format!(
                "runners report progress, completion or failure, not {}",
                other.event_type()
            )));
        }
    };
    let txn = state.db.begin().await?;
    let job = match jobs::get(&txn, job_id).await {
        Ok(job) => job,
        Err(SchedulerError::NotFound(m)) => return Err(SchedulerError::Invalid(m)),
        Err(e) => return Err(e),
    };
    let current =
        i64::from(job.attempts) == i64::from(attempt) && ACTIVE.contains(&job.status.as_str());
    if !current {
        tracing::info!(
            job = %job_id,
            attempt,
            current_attempt = job.attempts,
            status = %job.status,
            event = report.event_type(),
            "ignoring a report of a superseded or finished attempt"
        );
        return Ok(());
    }
    match &report.event {
        Event::TrainingJobProgress(_) => {
            flywheel_runtime::outbox::enqueue(&txn, crate::SERVICE, &state.bus, report).await?;
        }
        Event::TrainingJobCompleted(completed)
            if lifecycle::end_attempt(&txn, state, &job, &ACTIVE, &Ending::Succeeded)
                .await?
                .is_some() =>
        {
            if job.parent_job_id.is_some() {
                // A trial: its search reports the winner when every trial has ended.
                crate::search::trial_ended(&txn, state, &job, Some(completed)).await?;
            } else {
                flywheel_runtime::outbox::enqueue(&txn, crate::SERVICE, &state.bus, report).await?;
            }
        }
        Event::TrainingJobFailed(failed) => {
            let ending = if failed.kind == "timed_out" {
                Ending::TimedOut
            } else {
                Ending::Failed {
                    kind: failed.kind.clone(),
                    error: failed.error.clone(),
                    retryable: failed.kind != "invalid",
                }
            };
            if let Some(done) = lifecycle::end_attempt(&txn, state, &job, &ACTIVE, &ending).await? {
                let event =
                    lifecycle::failed_event(&job, &failed.kind, &failed.error, done.will_retry);
                lifecycle::announce(&txn, state, &job, event, Some(report)).await?;
                if !done.will_retry {
                    crate::search::trial_ended(&txn, state, &job, None).await?;
                }
            }
        }
        _ => {}
    }
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    if !matches!(report.event, Event::TrainingJobProgress(_)) {
        state.wake.notify_one();
    }
    Ok(())
}
