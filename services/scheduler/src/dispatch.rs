//! Dispatch: queued jobs, in priority-then-age order, go to runner pools whose live capacity
//! fits them, within their project's quota. One dispatching transaction at a time across
//! replicas (a PostgreSQL advisory lock; SQLite serialises writers), and each dispatch writes
//! the work-queue message and `training.job.dispatched` to the outbox in the same transaction,
//! so a crash never loses or duplicates a dispatch.

use std::collections::HashMap;

use flywheel_events::payloads::TrainingJobDispatched;
use flywheel_events::{Envelope, Event};
use sea_orm::sea_query::{Expr, ExprTrait, Order, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement, TransactionTrait};

use crate::jobs::{self, ACTIVE, Job};
use crate::lifecycle::{self, Ending};
use crate::quotas::{self, Quota, Usage};
use crate::schema::{Attempts, Jobs};
use crate::{AppState, Result};

/// What a pool can take: totals of its live runners, what is in use, and its largest runner.
#[derive(Debug, Clone, Default)]
struct PoolRoom {
    cpu: f64,
    memory_mb: u64,
    gpu: u32,
    slots: u32,
    largest_cpu: f64,
    largest_memory_mb: u64,
    largest_gpu: u32,
    used_cpu: f64,
    used_memory_mb: u64,
    used_gpu: u32,
    used_slots: u32,
}

impl PoolRoom {
    fn could_ever_fit(&self, job: &Job) -> bool {
        let r = &job.request.resources;
        r.cpu <= self.largest_cpu + 1e-9
            && r.memory_mb <= self.largest_memory_mb
            && r.gpu <= self.largest_gpu
    }

    fn fits_now(&self, job: &Job) -> bool {
        let r = &job.request.resources;
        self.could_ever_fit(job)
            && self.used_slots < self.slots
            && self.used_cpu + r.cpu <= self.cpu + 1e-9
            && self.used_memory_mb + r.memory_mb <= self.memory_mb
            && self.used_gpu + r.gpu <= self.gpu
    }

    fn take(&mut self, job: &Job) {
        let r = &job.request.resources;
        self.used_cpu += r.cpu;
        self.used_memory_mb += r.memory_mb;
        self.used_gpu += r.gpu;
        self.used_slots += 1;
    }
}

/// A stable 63-bit key for the advisory lock, from the installation's prefix.
fn lock_key(prefix: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("flywheel-scheduler-dispatch:{prefix}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::try_from(hash >> 1).unwrap_or(0)
}

async fn pools(state: &AppState, txn: &DatabaseTransaction) -> Result<HashMap<String, PoolRoom>> {
    let mut pools: HashMap<String, PoolRoom> = HashMap::new();
    for runner in crate::runners::list(txn, state, false).await? {
        let room = pools.entry(runner.pool).or_default();
        let memory = u64::try_from(runner.memory_mb).unwrap_or(0);
        let gpu = u32::try_from(runner.gpu).unwrap_or(0);
        room.cpu += runner.cpu;
        room.memory_mb += memory;
        room.gpu += gpu;
        room.slots += u32::try_from(runner.slots).unwrap_or(0);
        room.largest_cpu = room.largest_cpu.max(runner.cpu);
        room.largest_memory_mb = Ord::max(room.largest_memory_mb, memory);
        room.largest_gpu = Ord::max(room.largest_gpu, gpu);
    }
    let active = txn
        .query_all(
            &Query::select()
                .columns([Jobs::Pool, Jobs::Cpu, Jobs::MemoryMb, Jobs::Gpu])
                .from(Jobs::Table)
                .and_where(Expr::col(Jobs::Status).is_in(ACTIVE))
                .to_owned(),
        )
        .await?;
    for row in active {
        let pool: Option<String> = row.try_get("", "pool")?;
        if let Some(room) = pool.and_then(|p| pools.get_mut(&p)) {
            room.used_cpu += row.try_get::<f64>("", "cpu")?;
            room.used_memory_mb += u64::try_from(row.try_get::<i64>("", "memory_mb")?).unwrap_or(0);
            room.used_gpu += u32::try_from(row.try_get::<i32>("", "gpu")?).unwrap_or(0);
            room.used_slots += 1;
        }
    }
    Ok(pools)
}

/// Dispatches what fits now; returns how many jobs were dispatched.
pub(crate) async fn dispatch_once(state: &AppState) -> Result<usize> {
    let now = crate::now_millis();
    let txn = state.db.begin().await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [lock_key(state.bus.subjects().prefix()).into()],
        ))
        .await?;
    }
    let candidates = txn
        .query_all(
            &jobs::select()
                .and_where(Expr::col(Jobs::Status).eq("queued"))
                .and_where(Expr::col(Jobs::NotBefore).lte(now))
                .order_by(Jobs::Priority, Order::Desc)
                .order_by(Jobs::CreatedAt, Order::Asc)
                .order_by(Jobs::JobId, Order::Asc)
                .limit(state.config.dispatch_batch)
                .to_owned(),
        )
        .await?;
    if candidates.is_empty() {
        return Ok(0);
    }
    let mut pools = pools(state, &txn).await?;
    let mut projects: HashMap<String, (Quota, Usage)> = HashMap::new();
    let mut dispatched = 0;
    let mut expanded = false;
    for row in candidates {
        let job = jobs::from_row(&row)?;
        if job.request.search.is_some() {
            if crate::search::expand(&txn, state, &job).await? {
                expanded = true;
            }
            continue;
        }
        let r = job.request.resources.clone();
        if !projects.contains_key(&job.project) {
            let quota = quotas::get(&txn, &job.project, state.config.default_quota).await?;
            let usage = quotas::usage(&txn, &job.project).await?;
            projects.insert(job.project.clone(), (quota, usage));
        }
        let Some((quota, usage)) = projects.get_mut(&job.project) else {
            continue;
        };
        if !quota.admits(usage, r.cpu, r.memory_mb, r.gpu) {
            set_detail(&txn, &job, "waiting: the project's quota is in use").await?;
            continue;
        }
        let Some(pool) = pools
            .iter()
            .filter(|(_, room)| room.fits_now(&job))
            .max_by_key(|(name, room)| {
                (
                    room.slots - room.used_slots,
                    std::cmp::Reverse((*name).clone()),
                )
            })
            .map(|(name, _)| name.clone())
        else {
            let anyone_fits = pools.values().any(|room| room.could_ever_fit(&job));
            let waited = now - job.created_at;
            if !anyone_fits
                && !pools.is_empty()
                && waited
                    > i64::try_from(state.config.unschedulable_after.as_millis())
                        .unwrap_or(i64::MAX)
            {
                unschedulable(state, &txn, &job).await?;
            } else {
                let why = if anyone_fits {
                    "waiting: runner capacity is in use"
                } else {
                    "waiting: no live runner is large enough"
                };
                set_detail(&txn, &job, why).await?;
            }
            continue;
        };
        if dispatch(state, &txn, &job, &pool, now).await? {
            if let Some(room) = pools.get_mut(&pool) {
                room.take(&job);
            }
            usage.jobs += 1;
            usage.cpu += r.cpu;
            usage.memory_mb += r.memory_mb;
            usage.gpu += r.gpu;
            dispatched += 1;
        }
    }
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    crate::metrics::dispatched(dispatched);
    if expanded {
        // The trials are queued now: dispatch them without waiting for the next tick.
        state.wake.notify_one();
    }
    Ok(dispatched)
}

async fn set_detail(txn: &DatabaseTransaction, job: &Job, detail: &str) -> Result<()> {
    if job.detail == detail {
        return Ok(());
    }
    txn.execute(
        &Query::update()
            .table(Jobs::Table)
            .value(Jobs::Detail, detail)
            .and_where(Expr::col(Jobs::JobId).eq(job.job_id.as_str()))
            .and_where(Expr::col(Jobs::Status).eq("queued"))
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// Fails a job no live runner could ever run, so it does not wait forever.
async fn unschedulable(state: &AppState, txn: &DatabaseTransaction, job: &Job) -> Result<()> {
    let r = &job.request.resources;
    let error = format!(
        "no runner can fit cpu={} memory_mb={} gpu={}: no live runner in any pool is that large",
        r.cpu, r.memory_mb, r.gpu
    );
    let ending = Ending::Failed {
        kind: "invalid".into(),
        error: error.clone(),
        retryable: false,
    };
    if lifecycle::end_attempt(txn, state, job, &["queued"], &ending)
        .await?
        .is_some()
    {
        let event = lifecycle::failed_event(job, "invalid", &error, false);
        lifecycle::announce(txn, state, job, event, None).await?;
        crate::search::trial_ended(txn, state, job, None).await?;
    }
    Ok(())
}

async fn dispatch(
    state: &AppState,
    txn: &DatabaseTransaction,
    job: &Job,
    pool: &str,
    now: i64,
) -> Result<bool> {
    let attempt = job.attempts + 1;
    let moved = txn
        .execute(
            &Query::update()
                .table(Jobs::Table)
                .value(Jobs::Status, "dispatched")
                .value(Jobs::Attempts, attempt)
                .value(Jobs::Pool, pool)
                .value(Jobs::Runner, Option::<String>::None)
                .value(Jobs::StartedAt, Option::<i64>::None)
                .value(Jobs::Detail, "")
                .value(Jobs::UpdatedAt, now)
                .and_where(Expr::col(Jobs::JobId).eq(job.job_id.as_str()))
                .and_where(Expr::col(Jobs::Attempts).eq(job.attempts))
                .and_where(Expr::col(Jobs::Status).eq("queued"))
                .to_owned(),
        )
        .await?
        .rows_affected()
        == 1;
    if !moved {
        return Ok(false);
    }
    txn.execute(
        &Query::insert()
            .into_table(Attempts::Table)
            .columns([
                Attempts::JobId,
                Attempts::Attempt,
                Attempts::Pool,
                Attempts::Status,
                Attempts::Error,
                Attempts::DispatchedAt,
                Attempts::CpuSeconds,
                Attempts::MemoryMbSeconds,
                Attempts::GpuSeconds,
            ])
            .values([
                job.job_id.clone().into(),
                attempt.into(),
                pool.into(),
                "dispatched".into(),
                String::new().into(),
                now.into(),
                0.0f64.into(),
                0.0f64.into(),
                0.0f64.into(),
            ])
            .map_err(|e| crate::SchedulerError::Invalid(e.to_string()))?
            .to_owned(),
    )
    .await?;
    let payload = TrainingJobDispatched {
        job_id: job.job_id.clone(),
        attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
        pool: pool.to_owned(),
        request: None,
        timeout_seconds: u64::try_from(job.timeout_seconds).unwrap_or(0),
    };
    let event = Envelope::new(
        crate::SERVICE,
        &job.project,
        Event::TrainingJobDispatched(payload.clone()),
    );
    let work = Envelope::caused_by(
        &event,
        crate::SERVICE,
        Event::TrainingJobDispatched(TrainingJobDispatched {
            request: Some(job.request.clone()),
            ..payload
        }),
    );
    flywheel_runtime::outbox::enqueue(txn, crate::SERVICE, &state.bus, &event).await?;
    let subject = state
        .bus
        .subjects()
        .jobs(pool)
        .map_err(|e| crate::SchedulerError::Invalid(e.to_string()))?;
    flywheel_runtime::outbox::enqueue_to(txn, crate::SERVICE, subject, &work).await?;
    Ok(true)
}

/// Dispatches and reaps until shutdown: immediately when a job arrives, else every tick.
pub(crate) async fn run(
    state: AppState,
    shutdown: flywheel_runtime::CancellationToken,
) -> flywheel_runtime::ServiceResult {
    let mut ticks: u64 = 0;
    while !shutdown.is_cancelled() {
        let mut busy = false;
        match dispatch_once(&state).await {
            Ok(n) => busy = u64::try_from(n).unwrap_or(0) >= state.config.dispatch_batch,
            Err(e) => tracing::warn!(error = %e, "dispatch failed; retrying"),
        }
        if let Err(e) = lifecycle::reap(&state).await {
            tracing::warn!(error = %e, "reaping failed; retrying");
        }
        if let Err(e) = crate::triggers::fire_due(&state).await {
            tracing::warn!(error = %e, "firing schedules failed; retrying");
        }
        if ticks.is_multiple_of(20)
            && let Err(e) = crate::metrics::refresh(&state).await
        {
            tracing::debug!(error = %e, "metrics refresh failed");
        }
        ticks += 1;
        if busy {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = state.wake.notified() => {}
            _ = tokio::time::sleep(state.config.tick) => {}
        }
    }
    Ok(())
}
