//! Intake: a training request becomes exactly one durable job (keyed by its request id) and a
//! `training.job.queued` event in the same transaction (outbox), whichever way it arrived.

use std::time::Duration;

use flywheel_bus::{ConsumerSpec, Delivery, Outcome, StreamKind};
use flywheel_events::payloads::{TrainingJobQueued, TrainingRequested};
use flywheel_events::{Envelope, Event};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ConnectionTrait, TransactionTrait};

use crate::jobs::{self, Job};
use crate::schema::Jobs;
use crate::{AppState, Result, SchedulerError};

fn invalid(message: impl Into<String>) -> SchedulerError {
    SchedulerError::Invalid(message.into())
}

/// Checks what the scheduler needs of a request.
pub(crate) fn validate(project: &str, request: &TrainingRequested) -> Result<()> {
    if request.request_id.trim().is_empty() || request.request_id.len() > 250 {
        return Err(invalid("request_id must have 1 to 250 characters"));
    }
    if request.model.trim().is_empty() || request.model.len() > 250 || request.model.contains('/') {
        return Err(invalid(format!("invalid model name `{}`", request.model)));
    }
    if request.dataset.name.is_empty() || request.dataset.version.is_empty() {
        return Err(invalid("dataset needs a name and a version"));
    }
    let r = &request.resources;
    if !(r.cpu.is_finite() && r.cpu > 0.0 && r.cpu <= 1024.0) || r.memory_mb == 0 || r.gpu > 64 {
        return Err(invalid(
            "resources: cpu in (0, 1024], memory_mb > 0, gpu <= 64",
        ));
    }
    if request.trainer.name.is_empty()
        || !matches!(request.trainer.kind.as_str(), "builtin" | "external")
    {
        return Err(invalid("trainer: kind `builtin` or `external` and a name"));
    }
    if let Some(search) = &request.search {
        crate::search::validate(search)?;
    }
    if request.timeout_seconds == Some(0) {
        return Err(invalid("timeout_seconds must be at least 1"));
    }
    flywheel_events::subjects::check_token(project)
        .map_err(|_| invalid(format!("invalid project `{project}`")))?;
    Ok(())
}

/// Accepts a request: a new job and its `training.job.queued` event, or the existing job of
/// the same request id (`false`). `cause` is the event that carried the request, if any.
pub async fn submit(
    state: &AppState,
    project: &str,
    request: TrainingRequested,
    cause: Option<&Envelope>,
) -> Result<(Job, bool)> {
    validate(project, &request)?;
    let txn = state.db.begin().await?;
    let job_id = uuid::Uuid::now_v7().to_string();
    let timeout = request
        .timeout_seconds
        .unwrap_or(state.config.default_timeout_secs);
    let inserted = jobs::insert(
        &txn,
        jobs::NewJob {
            job_id: &job_id,
            project,
            request: &request,
            timeout_seconds: i64::try_from(timeout).unwrap_or(i64::MAX),
            parent: None,
        },
    )
    .await?;
    if !inserted {
        drop(txn);
        let row = state
            .db
            .query_one(
                &jobs::select()
                    .and_where(Expr::col(Jobs::RequestId).eq(request.request_id.as_str()))
                    .to_owned(),
            )
            .await?
            .ok_or_else(|| {
                SchedulerError::NotFound(format!("request {} vanished", request.request_id))
            })?;
        return Ok((jobs::from_row(&row)?, false));
    }
    let queued = Event::TrainingJobQueued(TrainingJobQueued {
        job_id: job_id.clone(),
        request_id: request.request_id.clone(),
        model: request.model.clone(),
        priority: request.priority,
    });
    let envelope = match cause {
        Some(cause) => Envelope::caused_by(cause, crate::SERVICE, queued),
        None => Envelope::new(crate::SERVICE, project, queued),
    };
    flywheel_runtime::outbox::enqueue(&txn, crate::SERVICE, &state.bus, &envelope).await?;
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    state.wake.notify_one();
    Ok((jobs::get(&state.db, &job_id).await?, true))
}

/// The durable consumer of `training.requested`, shared by every scheduler replica.
pub(crate) fn consumer_spec(state: &AppState) -> ConsumerSpec {
    let prefix = state.bus.subjects().prefix().to_owned();
    ConsumerSpec::new(
        StreamKind::Events,
        "scheduler-training-requests",
        format!("{prefix}.events.training.requested"),
    )
}

/// Handles one `training.requested`: idempotent by request id, so redeliveries are harmless.
pub(crate) async fn handle(state: AppState, delivery: Delivery) -> Outcome {
    let envelope = delivery.envelope;
    let Event::TrainingRequested(request) = envelope.event.clone() else {
        return Outcome::poison(format!(
            "unexpected {} on the training requests consumer",
            envelope.event_type()
        ));
    };
    match submit(&state, &envelope.project, request, Some(&envelope)).await {
        Ok(_) => Outcome::Ack,
        Err(SchedulerError::Invalid(reason)) => Outcome::poison(reason),
        Err(e) => Outcome::retry(Duration::from_secs(2), e.to_string()),
    }
}
