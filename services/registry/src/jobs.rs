//! Training jobs as the registry sees them: a read-model of `training.job.*` for the dashboard,
//! and automatic registration of the model version each completed job produced.
//!
//! Idempotent twice over: the inbox skips a redelivered event, and a job that already has a
//! registered version never registers another (a re-published completion with a new event id).

use std::time::Duration;

use flywheel_bus::{ConsumerSpec, Delivery, Outcome, StreamKind};
use flywheel_events::Event;
use flywheel_events::payloads::TrainingJobCompleted;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, TransactionTrait};

use crate::models::{self, NewVersion};
use crate::schema::Jobs;
use crate::tracking::{KeyValue, now_millis};
use crate::{AppState, RegistryError, Result};

/// The durable consumer shared by every registry replica.
pub(crate) fn consumer_spec(state: &AppState) -> ConsumerSpec {
    let prefix = state.bus.subjects().prefix().to_owned();
    ConsumerSpec::new(
        StreamKind::Events,
        "registry-training-jobs",
        format!("{prefix}.events.training.job.>"),
    )
}

/// Handles one `training.job.*` event.
pub(crate) async fn handle(state: AppState, delivery: Delivery) -> Outcome {
    let envelope = delivery.envelope.clone();
    let outcome = models::caused_by(
        envelope.clone(),
        Box::pin(apply(&state, &envelope, delivery.stream_sequence)),
    )
    .await;
    match outcome {
        Ok(()) => Outcome::Ack,
        Err(RegistryError::Db(e)) => {
            Outcome::retry(Duration::from_secs(2), format!("database: {e}"))
        }
        Err(RegistryError::Artifacts(e)) => {
            Outcome::retry(Duration::from_secs(2), format!("artifacts: {e}"))
        }
        // A version number still taken after retries: a race, not a bad event.
        Err(RegistryError::AlreadyExists(e)) => Outcome::retry(Duration::from_secs(1), e),
        Err(other) => Outcome::poison(other.to_string()),
    }
}

async fn apply(
    state: &AppState,
    envelope: &flywheel_events::Envelope,
    delivery_seq: u64,
) -> Result<()> {
    let txn = state.db.begin().await?;
    if !flywheel_db::inbox::claim(&txn, crate::SERVICE, "training-jobs", envelope.id).await? {
        // Seen before; but a registration that failed after the read-model commit is retried
        // (it is idempotent on its own).
        txn.rollback().await?;
        if let Event::TrainingJobCompleted(completed) = &envelope.event {
            register(state, completed).await?;
        }
        return Ok(());
    }
    let (job_id, model, status, attempt, request_id, detail) = match &envelope.event {
        Event::TrainingJobQueued(e) => (
            &e.job_id,
            e.model.clone(),
            "queued",
            0,
            e.request_id.clone(),
            String::new(),
        ),
        Event::TrainingJobDispatched(e) => (
            &e.job_id,
            String::new(),
            "dispatched",
            e.attempt,
            String::new(),
            e.pool.clone(),
        ),
        Event::TrainingJobStarted(e) => (
            &e.job_id,
            String::new(),
            "running",
            e.attempt,
            String::new(),
            e.runner.clone(),
        ),
        Event::TrainingJobProgress(e) => (
            &e.job_id,
            String::new(),
            "running",
            e.attempt,
            String::new(),
            format!("{:.0}% {}", e.fraction * 100.0, e.message),
        ),
        Event::TrainingJobCompleted(e) => (
            &e.job_id,
            e.model.clone(),
            "succeeded",
            e.attempt,
            e.request_id.clone(),
            String::new(),
        ),
        Event::TrainingJobFailed(e) => (
            &e.job_id,
            String::new(),
            if e.will_retry { "retrying" } else { "failed" },
            e.attempt,
            String::new(),
            e.error.clone(),
        ),
        Event::TrainingJobCancelled(e) => (
            &e.job_id,
            String::new(),
            "cancelled",
            0,
            String::new(),
            e.reason.clone(),
        ),
        other => {
            return Err(RegistryError::InvalidParameter(format!(
                "unexpected {} on the training jobs consumer",
                other.event_type()
            )));
        }
    };
    let seq = i64::try_from(delivery_seq).unwrap_or(i64::MAX);
    upsert_job(
        &txn,
        job_id,
        &model,
        status,
        i64::from(attempt),
        &request_id,
        &detail,
        seq,
        &envelope.project,
    )
    .await?;
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    if let Event::TrainingJobCompleted(completed) = &envelope.event {
        register(state, completed).await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn upsert_job<C: ConnectionTrait>(
    db: &C,
    job_id: &str,
    model: &str,
    status: &str,
    attempt: i64,
    request_id: &str,
    detail: &str,
    seq: i64,
    project: &str,
) -> Result<()> {
    // Handlers run concurrently (and across replicas): a job's row only moves forward in
    // stream order.
    let mut update_columns = vec![
        Jobs::Status,
        Jobs::Attempt,
        Jobs::Detail,
        Jobs::UpdatedAt,
        Jobs::LastSeq,
    ];
    if !model.is_empty() {
        update_columns.push(Jobs::Model);
    }
    if !request_id.is_empty() {
        update_columns.push(Jobs::RequestId);
    }
    db.execute(
        &Query::insert()
            .into_table(Jobs::Table)
            .columns([
                Jobs::JobId,
                Jobs::Model,
                Jobs::Status,
                Jobs::Attempt,
                Jobs::RequestId,
                Jobs::Detail,
                Jobs::UpdatedAt,
                Jobs::LastSeq,
                Jobs::Project,
            ])
            .values([
                job_id.into(),
                model.into(),
                status.into(),
                attempt.into(),
                request_id.into(),
                detail.into(),
                now_millis().into(),
                seq.into(),
                project.into(),
            ])
            .map_err(|e| RegistryError::InvalidParameter(e.to_string()))?
            .on_conflict(
                OnConflict::column(Jobs::JobId)
                    .update_columns(update_columns)
                    .action_and_where(Expr::cust("excluded.last_seq > registry_jobs.last_seq"))
                    .to_owned(),
            )
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// Registers the version a completed job produced, once per job.
async fn register(state: &AppState, completed: &TrainingJobCompleted) -> Result<()> {
    if registered_version(&state.db, &completed.job_id)
        .await?
        .is_some()
    {
        return Ok(());
    }
    match models::create_model(state, &completed.model, "", &[], "training").await {
        Ok(_) | Err(RegistryError::AlreadyExists(_)) => {}
        Err(e) => return Err(e),
    }
    let mut lineage = completed.lineage.clone();
    lineage.job_id = Some(completed.job_id.clone());
    let best_run = if completed.trials.is_empty() {
        None
    } else {
        let (parent, best) = record_search(state, completed).await?;
        lineage.parent_run_id = Some(parent);
        best
    };
    let new = NewVersion {
        source: completed.package_uri.clone(),
        run_id: best_run,
        description: String::new(),
        tags: vec![
            KeyValue {
                key: "flywheel.job_id".into(),
                value: completed.job_id.clone(),
            },
            KeyValue {
                key: "flywheel.request_id".into(),
                value: completed.request_id.clone(),
            },
            KeyValue {
                key: "flywheel.attempt".into(),
                value: completed.attempt.to_string(),
            },
            KeyValue {
                key: "flywheel.trainer_gates_passed".into(),
                value: completed.gates_passed.to_string(),
            },
        ],
        flavor: "flywheel".into(),
        metrics: completed.metrics.clone(),
        signature: completed.signature.clone(),
        lineage,
        claim_job: Some(completed.job_id.clone()),
    };
    match models::create_version(state, &completed.model, new, "training").await {
        Ok(_) => Ok(()),
        // A concurrent completion of the same job won the claim.
        Err(RegistryError::AlreadyExists(_))
            if registered_version(&state.db, &completed.job_id)
                .await?
                .is_some() =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn registered_version<C: ConnectionTrait>(db: &C, job_id: &str) -> Result<Option<i64>> {
    Ok(db
        .query_one(
            &Query::select()
                .column(Jobs::RegisteredVersion)
                .from(Jobs::Table)
                .and_where(Expr::col(Jobs::JobId).eq(job_id))
                .to_owned(),
        )
        .await?
        .map(|row| row.try_get::<Option<i64>>("", "registered_version"))
        .transpose()?
        .flatten())
}

/// Marks `job_id` as having registered `version`, inside the registering transaction; false
/// when the job already has a version. On PostgreSQL the row lock makes a racing transaction
/// wait and then see the claim; SQLite serialises writers.
pub(crate) async fn claim_registration<C: ConnectionTrait>(
    db: &C,
    job_id: &str,
    version: i64,
) -> Result<bool> {
    let result = db
        .execute(
            &Query::update()
                .table(Jobs::Table)
                .value(Jobs::RegisteredVersion, version)
                .and_where(Expr::col(Jobs::JobId).eq(job_id))
                .and_where(Expr::col(Jobs::RegisteredVersion).is_null())
                .to_owned(),
        )
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Records a hyperparameter search as runs: a parent run for the search and a child run per
/// trial (parameters, metrics, status), in the experiment `flywheel/<model>`. Returns the parent
/// run and the winning trial's run. Repeated for the same job, it finds the runs it made.
async fn record_search(
    state: &AppState,
    completed: &TrainingJobCompleted,
) -> Result<(String, Option<String>)> {
    use crate::tracking::{LogBatch, Metric, RunStatus, SearchRuns, experiments, runs};
    let name = format!("flywheel/{}", completed.model);
    let experiment = match experiments::get_by_name(&state.db, &name).await {
        Ok(e) => e.id,
        Err(RegistryError::NotFound(_)) => {
            match experiments::create(&state.db, &name, None, &[]).await {
                Ok(id) => id,
                Err(RegistryError::AlreadyExists(_)) => {
                    experiments::get_by_name(&state.db, &name).await?.id
                }
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    let (existing, _) = runs::search(
        &state.db,
        &SearchRuns {
            experiment_ids: vec![experiment],
            filter: format!("tags.`flywheel.search_job` = '{}'", completed.job_id),
            max_results: 10_000,
            ..SearchRuns::default()
        },
    )
    .await?;
    let find = |trial: Option<u32>| {
        existing.iter().find(|run| {
            let tag = run.tags.iter().find(|t| t.key == "flywheel.trial");
            match trial {
                None => tag.is_none(),
                Some(n) => tag.is_some_and(|t| t.value == n.to_string()),
            }
        })
    };
    let now = now_millis();
    let tag = |key: &str, value: String| KeyValue {
        key: key.into(),
        value,
    };
    let parent = match find(None) {
        Some(run) => run.info.run_id.clone(),
        None => {
            let run = runs::create(
                &state.db,
                experiment,
                "flywheel-scheduler",
                Some(&format!("search {}", completed.job_id)),
                Some(now),
                &[
                    tag("flywheel.search_job", completed.job_id.clone()),
                    tag("flywheel.job_id", completed.job_id.clone()),
                ],
            )
            .await?;
            runs::update(
                &state.db,
                &run.info.run_id,
                Some(RunStatus::Finished),
                Some(now),
                None,
            )
            .await?;
            run.info.run_id
        }
    };
    let mut best = None;
    for trial in &completed.trials {
        let run_id = match find(Some(trial.trial)) {
            Some(run) => run.info.run_id.clone(),
            None => {
                let run = runs::create(
                    &state.db,
                    experiment,
                    "flywheel-scheduler",
                    Some(&format!("trial {}", trial.trial)),
                    Some(now),
                    &[
                        tag("flywheel.search_job", completed.job_id.clone()),
                        tag("flywheel.trial", trial.trial.to_string()),
                        tag("flywheel.job_id", trial.job_id.clone()),
                        tag("mlflow.parentRunId", parent.clone()),
                        tag("flywheel.best", trial.best.to_string()),
                    ],
                )
                .await?;
                let batch = LogBatch {
                    metrics: trial
                        .metrics
                        .iter()
                        .map(|(key, value)| Metric {
                            key: key.clone(),
                            value: *value,
                            timestamp: now,
                            step: 0,
                        })
                        .collect(),
                    params: trial
                        .params
                        .iter()
                        .map(|(key, value)| KeyValue {
                            key: key.clone(),
                            value: match value {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            },
                        })
                        .collect(),
                    tags: Vec::new(),
                };
                runs::log_batch(&state.db, &run.info.run_id, &batch).await?;
                let status = if trial.status == "succeeded" {
                    RunStatus::Finished
                } else {
                    RunStatus::Failed
                };
                runs::update(&state.db, &run.info.run_id, Some(status), Some(now), None).await?;
                run.info.run_id
            }
        };
        if trial.best {
            best = Some(run_id);
        }
    }
    Ok((parent, best))
}
