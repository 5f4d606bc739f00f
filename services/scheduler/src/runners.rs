//! Runners: heartbeats (pool, capacity, liveness, what they run) and attempt claims, answered
//! over core NATS request/reply by whichever scheduler replica gets the request.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use flywheel_events::Event;
use flywheel_events::control::{
    AttemptClaim, AttemptRef, ClaimReply, HeartbeatReply, RunnerHeartbeat, decode_control,
    encode_control,
};
use flywheel_events::payloads::TrainingJobStarted;
use futures::StreamExt;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, TransactionTrait};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::jobs::{self, ACTIVE};
use crate::schema::{Attempts, Jobs, Runners};
use crate::{AppState, Result, SchedulerError};

/// A runner as last heard from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Runner {
    /// Instance id.
    pub runner_id: String,
    /// Pool.
    pub pool: String,
    /// CPU cores.
    pub cpu: f64,
    /// Memory, MiB.
    pub memory_mb: i64,
    /// GPUs.
    pub gpu: i32,
    /// Concurrent jobs.
    pub slots: i32,
    /// Attempts it reported running.
    pub running: Vec<AttemptRef>,
    /// Last heartbeat, ms.
    pub last_seen: i64,
    /// Whether it is considered alive.
    pub alive: bool,
}

/// Runners heard from within the runner timeout, or all when `include_dead`.
pub(crate) async fn list<C: ConnectionTrait>(
    db: &C,
    state: &AppState,
    include_dead: bool,
) -> Result<Vec<Runner>> {
    let now = crate::now_millis();
    let cutoff = now - i64::try_from(state.config.runner_timeout.as_millis()).unwrap_or(i64::MAX);
    let mut select = Query::select();
    select
        .columns([
            Runners::RunnerId,
            Runners::Pool,
            Runners::Cpu,
            Runners::MemoryMb,
            Runners::Gpu,
            Runners::Slots,
            Runners::Running,
            Runners::LastSeen,
        ])
        .from(Runners::Table);
    if !include_dead {
        select.and_where(Expr::col(Runners::LastSeen).gte(cutoff));
    }
    let rows = db.query_all(&select).await?;
    rows.iter()
        .map(|row| {
            let running: String = row.try_get("", "running")?;
            let last_seen: i64 = row.try_get("", "last_seen")?;
            Ok(Runner {
                runner_id: row.try_get("", "runner_id")?,
                pool: row.try_get("", "pool")?,
                cpu: row.try_get("", "cpu")?,
                memory_mb: row.try_get("", "memory_mb")?,
                gpu: row.try_get("", "gpu")?,
                slots: row.try_get("", "slots")?,
                running: serde_json::from_str(&running).unwrap_or_default(),
                last_seen,
                alive: last_seen >= cutoff,
            })
        })
        .collect()
}

/// Ids of live runners.
pub(crate) async fn live_runner_ids(state: &AppState) -> Result<HashSet<String>> {
    Ok(list(&state.db, state, false)
        .await?
        .into_iter()
        .map(|r| r.runner_id)
        .collect())
}

/// Records a heartbeat and answers with the attempts the runner must stop.
pub(crate) async fn heartbeat(state: &AppState, beat: &RunnerHeartbeat) -> Result<HeartbeatReply> {
    flywheel_events::subjects::check_token(&beat.pool)
        .map_err(|e| SchedulerError::Invalid(e.to_string()))?;
    if beat.runner.is_empty() || beat.runner.len() > 128 {
        return Err(SchedulerError::Invalid(
            "runner id: 1 to 128 characters".into(),
        ));
    }
    let now = crate::now_millis();
    let running =
        serde_json::to_string(&beat.running).map_err(|e| SchedulerError::Invalid(e.to_string()))?;
    state
        .db
        .execute(
            &Query::insert()
                .into_table(Runners::Table)
                .columns([
                    Runners::RunnerId,
                    Runners::Pool,
                    Runners::Cpu,
                    Runners::MemoryMb,
                    Runners::Gpu,
                    Runners::Slots,
                    Runners::Running,
                    Runners::FirstSeen,
                    Runners::LastSeen,
                ])
                .values([
                    beat.runner.clone().into(),
                    beat.pool.clone().into(),
                    beat.capacity.cpu.into(),
                    i64::try_from(beat.capacity.memory_mb)
                        .unwrap_or(i64::MAX)
                        .into(),
                    i32::try_from(beat.capacity.gpu).unwrap_or(i32::MAX).into(),
                    i32::try_from(beat.slots).unwrap_or(i32::MAX).into(),
                    running.into(),
                    now.into(),
                    now.into(),
                ])
                .map_err(|e| SchedulerError::Invalid(e.to_string()))?
                .on_conflict(
                    OnConflict::column(Runners::RunnerId)
                        .update_columns([
                            Runners::Pool,
                            Runners::Cpu,
                            Runners::MemoryMb,
                            Runners::Gpu,
                            Runners::Slots,
                            Runners::Running,
                            Runners::LastSeen,
                        ])
                        .to_owned(),
                )
                .to_owned(),
        )
        .await?;
    forget_unlisted(state, beat, now).await?;
    let mut stop = Vec::new();
    if !beat.running.is_empty() {
        let ids: Vec<&str> = beat.running.iter().map(|a| a.job_id.as_str()).collect();
        let rows = state
            .db
            .query_all(
                &Query::select()
                    .columns([Jobs::JobId, Jobs::Attempts, Jobs::Status, Jobs::Runner])
                    .from(Jobs::Table)
                    .and_where(Expr::col(Jobs::JobId).is_in(ids))
                    .to_owned(),
            )
            .await?;
        let mut current = HashMap::new();
        for row in rows {
            let id: String = row.try_get("", "job_id")?;
            let attempts: i32 = row.try_get("", "attempts")?;
            let status: String = row.try_get("", "status")?;
            let runner: Option<String> = row.try_get("", "runner")?;
            current.insert(id, (attempts, status, runner));
        }
        for attempt in &beat.running {
            let keep = current
                .get(&attempt.job_id)
                .is_some_and(|(n, status, runner)| {
                    i64::from(*n) == i64::from(attempt.attempt)
                        && ACTIVE.contains(&status.as_str())
                        && runner.as_deref().is_none_or(|r| r == beat.runner)
                });
            if !keep {
                stop.push(attempt.clone());
            }
        }
    }
    Ok(HeartbeatReply { stop })
}

/// Grants an attempt to the first runner that claims it while it is dispatched (and again to
/// the same runner, so a lost reply is harmless); refuses everyone else.
pub(crate) async fn claim(state: &AppState, claim: &AttemptClaim) -> Result<ClaimReply> {
    let now = crate::now_millis();
    let attempt = i32::try_from(claim.attempt.attempt).unwrap_or(i32::MAX);
    let txn = state.db.begin().await?;
    let won = txn
        .execute(
            &Query::update()
                .table(Jobs::Table)
                .value(Jobs::Status, "running")
                .value(Jobs::Runner, claim.runner.as_str())
                .value(Jobs::StartedAt, now)
                .value(Jobs::UpdatedAt, now)
                .and_where(Expr::col(Jobs::JobId).eq(claim.attempt.job_id.as_str()))
                .and_where(Expr::col(Jobs::Attempts).eq(attempt))
                .and_where(Expr::col(Jobs::Status).eq("dispatched"))
                .to_owned(),
        )
        .await?
        .rows_affected()
        == 1;
    if won {
        txn.execute(
            &Query::update()
                .table(Attempts::Table)
                .value(Attempts::Status, "running")
                .value(Attempts::Runner, claim.runner.as_str())
                .value(Attempts::StartedAt, now)
                .and_where(Expr::col(Attempts::JobId).eq(claim.attempt.job_id.as_str()))
                .and_where(Expr::col(Attempts::Attempt).eq(attempt))
                .to_owned(),
        )
        .await?;
        let job = jobs::get(&txn, &claim.attempt.job_id).await?;
        let started = Event::TrainingJobStarted(TrainingJobStarted {
            job_id: job.job_id.clone(),
            attempt: claim.attempt.attempt,
            runner: claim.runner.clone(),
        });
        crate::lifecycle::announce(&txn, state, &job, started, None).await?;
        txn.commit().await?;
        flywheel_runtime::outbox::wake();
        crate::metrics::started(&job);
        return Ok(ClaimReply {
            granted: true,
            reason: String::new(),
        });
    }
    drop(txn);
    let job = match jobs::get(&state.db, &claim.attempt.job_id).await {
        Ok(job) => job,
        Err(SchedulerError::NotFound(m)) => {
            return Ok(ClaimReply {
                granted: false,
                reason: m,
            });
        }
        Err(e) => return Err(e),
    };
    if job.attempts == attempt
        && job.status == "running"
        && job.runner.as_deref() == Some(claim.runner.as_str())
    {
        return Ok(ClaimReply {
            granted: true,
            reason: String::new(),
        });
    }
    let reason = if job.attempts != attempt {
        format!(
            "attempt {} is superseded by attempt {}",
            claim.attempt.attempt, job.attempts
        )
    } else {
        format!("job is {}", job.status)
    };
    Ok(ClaimReply {
        granted: false,
        reason,
    })
}

/// Answers heartbeats and claims until shutdown (queue group: one replica answers each).
pub(crate) async fn serve(
    state: AppState,
    shutdown: flywheel_runtime::CancellationToken,
) -> flywheel_runtime::ServiceResult {
    let client = state.bus.client().clone();
    let group = format!("{}-scheduler", state.bus.subjects().prefix());
    let mut beats = client
        .queue_subscribe(state.bus.subjects().runner_heartbeats(), group.clone())
        .await
        .map_err(|e| {
            flywheel_runtime::ServiceError::Io(std::io::Error::other(format!("subscribe: {e}")))
        })?;
    let mut claims = client
        .queue_subscribe(state.bus.subjects().attempt_claims(), group)
        .await
        .map_err(|e| {
            flywheel_runtime::ServiceError::Io(std::io::Error::other(format!("subscribe: {e}")))
        })?;
    // Subscribed once the server has them: from here on, heartbeats reach this replica.
    if let Err(e) = client.flush().await {
        tracing::warn!(error = %e, "NATS flush after subscribing failed");
    }
    state
        .listening_since
        .store(crate::now_millis(), std::sync::atomic::Ordering::Relaxed);
    let permits = Arc::new(Semaphore::new(32));
    loop {
        let (message, is_claim) = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(m) = beats.next() => (m, false),
            Some(m) = claims.next() => (m, true),
            else => break,
        };
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (state, client) = (state.clone(), client.clone());
        tokio::spawn(async move {
            let answer = if is_claim {
                match decode_control::<AttemptClaim>(&message.payload) {
                    Ok(c) => claim(&state, &c).await.map(|r| encode_control(&r)),
                    Err(e) => Err(SchedulerError::Invalid(format!("bad claim: {e}"))),
                }
            } else {
                match decode_control::<RunnerHeartbeat>(&message.payload) {
                    Ok(b) => heartbeat(&state, &b).await.map(|r| encode_control(&r)),
                    Err(e) => Err(SchedulerError::Invalid(format!("bad heartbeat: {e}"))),
                }
            };
            match answer {
                Ok(Ok(bytes)) => {
                    if let Err(e) = client.publish(reply_to, bytes.into()).await {
                        tracing::debug!(error = %e, "reply failed");
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot encode reply"),
                // No reply: the runner retries; a database outage must not grant anything.
                Err(e) => tracing::warn!(error = %e, claim = is_claim, "runner request failed"),
            }
            drop(permit);
        });
    }
    Ok(())
}

/// Attempts the scheduler granted to this runner that its heartbeat no longer lists (a claim
/// reply lost on the way, a runner restarted under the same id) are lost: retried elsewhere.
async fn forget_unlisted(state: &AppState, beat: &RunnerHeartbeat, now: i64) -> Result<()> {
    let rows = state
        .db
        .query_all(
            &jobs::select()
                .and_where(Expr::col(Jobs::Runner).eq(beat.runner.as_str()))
                .and_where(Expr::col(Jobs::Status).eq("running"))
                .and_where(Expr::col(Jobs::StartedAt).lt(
                    now - i64::try_from(state.config.listing_grace.as_millis()).unwrap_or(i64::MAX)
                ))
                .to_owned(),
        )
        .await?;
    for row in rows {
        let job = jobs::from_row(&row)?;
        // Finished attempts count as listed: their reports may still be on the way.
        let listed = beat
            .running
            .iter()
            .chain(&beat.finished)
            .any(|a| a.job_id == job.job_id && i64::from(a.attempt) == i64::from(job.attempts));
        if listed {
            continue;
        }
        let error = format!("runner {} no longer runs this attempt", beat.runner);
        let ending = crate::lifecycle::Ending::Failed {
            kind: "lost".into(),
            error: error.clone(),
            retryable: true,
        };
        let txn = state.db.begin().await?;
        if let Some(done) =
            crate::lifecycle::end_attempt(&txn, state, &job, &ACTIVE, &ending).await?
        {
            tracing::warn!(job = %job.job_id, attempt = job.attempts, runner = %beat.runner, "attempt not listed by its runner; lost");
            let event = crate::lifecycle::failed_event(&job, "lost", &error, done.will_retry);
            crate::lifecycle::announce(&txn, state, &job, event, None).await?;
            if !done.will_retry {
                crate::search::trial_ended(&txn, state, &job, None).await?;
            }
        }
        txn.commit().await?;
    }
    Ok(())
}
