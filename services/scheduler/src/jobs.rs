//! Jobs as stored, read in queue order, with their attempts.

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Order, Query, SelectStatement};
use sea_orm::{ConnectionTrait, QueryResult};
use serde::Serialize;

use flywheel_events::payloads::TrainingRequested;

use crate::schema::{Attempts, Jobs};
use crate::{Result, SchedulerError};

/// Job states: `queued` → `dispatched` → `running` → `succeeded` | `failed` | `cancelled` |
/// `timed_out`; a retryable failure goes back to `queued` for the next attempt.
pub(crate) const ACTIVE: [&str; 2] = ["dispatched", "running"];

/// States a job never leaves.
pub(crate) const TERMINAL: [&str; 4] = ["succeeded", "failed", "cancelled", "timed_out"];

/// The runner name a running hyperparameter search shows: its trials do the work.
pub(crate) const SEARCH_RUNNER: &str = "search";

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    /// Job id (UUIDv7).
    pub job_id: String,
    /// The request it came from (the idempotency key).
    pub request_id: String,
    /// Project.
    pub project: String,
    /// Model to train.
    pub model: String,
    /// Priority (higher first).
    pub priority: i32,
    /// Lifecycle state.
    pub status: String,
    /// Attempts so far (the current attempt's number).
    pub attempts: i32,
    /// Pool of the current attempt.
    pub pool: Option<String>,
    /// Runner of the current attempt.
    pub runner: Option<String>,
    /// Wall-clock limit per attempt, seconds.
    pub timeout_seconds: i64,
    /// Not dispatched before this time (ms; retry backoff).
    pub not_before: i64,
    /// Current attempt started, ms.
    pub started_at: Option<i64>,
    /// Finished, ms.
    pub finished_at: Option<i64>,
    /// Why it is where it is (last error, waiting reason).
    pub detail: String,
    /// The search this job is a trial of.
    pub parent_job_id: Option<String>,
    /// Trial number within that search.
    pub trial: Option<i32>,
    /// The full request.
    pub request: TrainingRequested,
    /// Created, ms.
    pub created_at: i64,
    /// Last change, ms.
    pub updated_at: i64,
}

/// One attempt with what it used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    /// Attempt number.
    pub attempt: i32,
    /// Pool.
    pub pool: String,
    /// Runner that claimed it.
    pub runner: Option<String>,
    /// `dispatched`, `running`, `succeeded`, `failed`, `lost`, `timed_out`, `cancelled`.
    pub status: String,
    /// Error, if it failed.
    pub error: String,
    /// Dispatched, ms.
    pub dispatched_at: i64,
    /// Started, ms.
    pub started_at: Option<i64>,
    /// Finished, ms.
    pub finished_at: Option<i64>,
    /// Allocated CPU core-seconds.
    pub cpu_seconds: f64,
    /// Allocated memory MiB-seconds.
    pub memory_mb_seconds: f64,
    /// Allocated GPU-seconds.
    pub gpu_seconds: f64,
}

/// Jobs of the projects in view (every project for the scheduler's own work).
pub(crate) fn select() -> SelectStatement {
    let mut select = Query::select();
    flywheel_runtime::scope::confine(&mut select, Jobs::Project);
    select
        .columns([
            Jobs::JobId,
            Jobs::RequestId,
            Jobs::Project,
            Jobs::Model,
            Jobs::Request,
            Jobs::Priority,
            Jobs::Status,
            Jobs::Attempts,
            Jobs::Pool,
            Jobs::Runner,
            Jobs::TimeoutSeconds,
            Jobs::NotBefore,
            Jobs::StartedAt,
            Jobs::FinishedAt,
            Jobs::Detail,
            Jobs::ParentJobId,
            Jobs::Trial,
            Jobs::CreatedAt,
            Jobs::UpdatedAt,
        ])
        .from(Jobs::Table)
        .to_owned()
}

pub(crate) fn from_row(row: &QueryResult) -> Result<Job> {
    let request: String = row.try_get("", "request")?;
    Ok(Job {
        job_id: row.try_get("", "job_id")?,
        request_id: row.try_get("", "request_id")?,
        project: row.try_get("", "project")?,
        model: row.try_get("", "model")?,
        priority: row.try_get("", "priority")?,
        status: row.try_get("", "status")?,
        attempts: row.try_get("", "attempts")?,
        pool: row.try_get("", "pool")?,
        runner: row.try_get("", "runner")?,
        timeout_seconds: row.try_get("", "timeout_seconds")?,
        not_before: row.try_get("", "not_before")?,
        started_at: row.try_get("", "started_at")?,
        finished_at: row.try_get("", "finished_at")?,
        detail: row.try_get("", "detail")?,
        parent_job_id: row.try_get("", "parent_job_id")?,
        trial: row.try_get("", "trial")?,
        request: serde_json::from_str(&request)
            .map_err(|e| SchedulerError::Invalid(format!("stored request unreadable: {e}")))?,
        created_at: row.try_get("", "created_at")?,
        updated_at: row.try_get("", "updated_at")?,
    })
}

/// Reads a job.
pub(crate) async fn get<C: ConnectionTrait>(db: &C, job_id: &str) -> Result<Job> {
    let row = db
        .query_one(
            &select()
                .and_where(Expr::col(Jobs::JobId).eq(job_id))
                .to_owned(),
        )
        .await?
        .ok_or_else(|| SchedulerError::NotFound(format!("job {job_id} not found")))?;
    from_row(&row)
}

/// Jobs in queue order: priority first, then age.
pub(crate) async fn list<C: ConnectionTrait>(
    db: &C,
    status: Option<&str>,
    model: Option<&str>,
    limit: u64,
) -> Result<Vec<Job>> {
    let mut select = select();
    if let Some(status) = status {
        select.and_where(Expr::col(Jobs::Status).eq(status));
    }
    if let Some(model) = model {
        select.and_where(Expr::col(Jobs::Model).eq(model));
    }
    select
        .order_by(Jobs::Priority, Order::Desc)
        .order_by(Jobs::CreatedAt, Order::Asc)
        .order_by(Jobs::JobId, Order::Asc)
        .limit(limit.clamp(1, 10_000));
    db.query_all(&select).await?.iter().map(from_row).collect()
}

/// A job's attempts, oldest first.
pub(crate) async fn attempts<C: ConnectionTrait>(db: &C, job_id: &str) -> Result<Vec<Attempt>> {
    let rows = db
        .query_all(
            &Query::select()
                .columns([
                    Attempts::Attempt,
                    Attempts::Pool,
                    Attempts::Runner,
                    Attempts::Status,
                    Attempts::Error,
                    Attempts::DispatchedAt,
                    Attempts::StartedAt,
                    Attempts::FinishedAt,
                    Attempts::CpuSeconds,
                    Attempts::MemoryMbSeconds,
                    Attempts::GpuSeconds,
                ])
                .from(Attempts::Table)
                .and_where(Expr::col(Attempts::JobId).eq(job_id))
                .order_by(Attempts::Attempt, Order::Asc)
                .to_owned(),
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Attempt {
                attempt: row.try_get("", "attempt")?,
                pool: row.try_get("", "pool")?,
                runner: row.try_get("", "runner")?,
                status: row.try_get("", "status")?,
                error: row.try_get("", "error")?,
                dispatched_at: row.try_get("", "dispatched_at")?,
                started_at: row.try_get("", "started_at")?,
                finished_at: row.try_get("", "finished_at")?,
                cpu_seconds: row.try_get("", "cpu_seconds")?,
                memory_mb_seconds: row.try_get("", "memory_mb_seconds")?,
                gpu_seconds: row.try_get("", "gpu_seconds")?,
            })
        })
        .collect()
}

/// A queued job about to be stored.
pub(crate) struct NewJob<'a> {
    pub job_id: &'a str,
    pub project: &'a str,
    pub request: &'a TrainingRequested,
    pub timeout_seconds: i64,
    /// The search this job is a trial of, and its number.
    pub parent: Option<(&'a str, i32)>,
}

/// Stores a queued job; false when a job already holds its request id.
pub(crate) async fn insert<C: ConnectionTrait>(db: &C, job: NewJob<'_>) -> Result<bool> {
    let now = crate::now_millis();
    let request = job.request;
    let stored =
        serde_json::to_string(request).map_err(|e| SchedulerError::Invalid(e.to_string()))?;
    let inserted = db
        .execute(
            &Query::insert()
                .into_table(Jobs::Table)
                .columns([
                    Jobs::JobId,
                    Jobs::RequestId,
                    Jobs::Project,
                    Jobs::Model,
                    Jobs::Request,
                    Jobs::Priority,
                    Jobs::Status,
                    Jobs::Attempts,
                    Jobs::Cpu,
                    Jobs::MemoryMb,
                    Jobs::Gpu,
                    Jobs::TimeoutSeconds,
                    Jobs::NotBefore,
                    Jobs::Detail,
                    Jobs::ParentJobId,
                    Jobs::Trial,
                    Jobs::CreatedAt,
                    Jobs::UpdatedAt,
                ])
                .values([
                    job.job_id.into(),
                    request.request_id.clone().into(),
                    job.project.into(),
                    request.model.clone().into(),
                    stored.into(),
                    request.priority.into(),
                    "queued".into(),
                    0i32.into(),
                    request.resources.cpu.into(),
                    i64::try_from(request.resources.memory_mb)
                        .unwrap_or(i64::MAX)
                        .into(),
                    i32::try_from(request.resources.gpu)
                        .unwrap_or(i32::MAX)
                        .into(),
                    job.timeout_seconds.into(),
                    0i64.into(),
                    String::new().into(),
                    job.parent.map(|(id, _)| id.to_owned()).into(),
                    job.parent.map(|(_, trial)| trial).into(),
                    now.into(),
                    now.into(),
                ])
                .map_err(|e| SchedulerError::Invalid(e.to_string()))?
                .on_conflict(OnConflict::column(Jobs::RequestId).do_nothing().to_owned())
                .to_owned(),
        )
        .await?
        .rows_affected()
        == 1;
    Ok(inserted)
}
