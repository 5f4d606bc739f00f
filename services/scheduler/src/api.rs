//! The job API under `/api/v1`: submit, list, inspect and cancel jobs; runners; quotas; what
//! training costs per project and model.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use flywheel_events::payloads::TrainingRequested;
use flywheel_runtime::{Access, AccessRule, ApiJson, Role};
use serde::{Deserialize, Serialize};

use crate::jobs::{self, Attempt, Job};
use crate::quotas::{self, Quota, Usage};
use crate::runners::{self, Runner};
use crate::{AppState, Result, SchedulerError};

/// The routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/jobs", get(list).post(submit))
        .route("/api/v1/jobs/{id}", get(get_job))
        .route("/api/v1/jobs/{id}/cancel", post(cancel))
        .route("/api/v1/runners", get(list_runners))
        .route("/api/v1/quotas/{project}", get(get_quota).put(put_quota))
        .route("/api/v1/usage", get(usage))
        .merge(crate::triggers::router())
}

/// The scheduler's rule: a project's quota is read by its viewers and set by its admins; jobs,
/// triggers and usage are confined to the caller's project by their handlers.
pub(crate) fn rule() -> AccessRule {
    Arc::new(|method: &Method, route: &str, path: &str| {
        if route == "/api/v1/quotas/{project}" {
            let project = path.rsplit('/').next().unwrap_or_default().to_owned();
            let role = if *method == Method::GET {
                Role::Viewer
            } else {
                Role::Admin
            };
            return Access::NeedsIn(role, project);
        }
        flywheel_runtime::access::default_access(method, route, path)
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SubmitQuery {
    project: Option<String>,
}

/// Submits a training request (the `training.requested` payload); 201 for a new job, 200 for the
/// job that already holds this request id.
async fn submit(
    State(state): State<AppState>,
    Query(query): Query<SubmitQuery>,
    ApiJson(request): ApiJson<TrainingRequested>,
) -> Result<(StatusCode, Json<Job>)> {
    let project = flywheel_runtime::scope::place(query.project.as_deref())
        .map_err(SchedulerError::Forbidden)?;
    let (job, created) = crate::intake::submit(&state, &project, request, None).await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(job),
    ))
}

/// A job with its attempts.
#[derive(Serialize)]
struct JobDetail {
    #[serde(flatten)]
    job: Job,
    attempt_history: Vec<Attempt>,
}

async fn get_job(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<JobDetail>> {
    let job = jobs::get(&state.db, &id).await?;
    let attempt_history = jobs::attempts(&state.db, &id).await?;
    Ok(Json(JobDetail {
        job,
        attempt_history,
    }))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CancelBody {
    reason: String,
}

/// Cancels a job; 409 when it already finished.
async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Option<Json<CancelBody>>,
) -> Result<Json<Job>> {
    let reason = body.map(|b| b.0.reason).unwrap_or_default();
    Ok(Json(crate::lifecycle::cancel(&state, &id, &reason).await?))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListQuery {
    status: Option<String>,
    model: Option<String>,
    limit: Option<u64>,
}

/// Jobs in queue order (priority, then age).
async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<Job>>> {
    Ok(Json(
        jobs::list(
            &state.db,
            query.status.as_deref(),
            query.model.as_deref(),
            query.limit.unwrap_or(1000),
        )
        .await?,
    ))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RunnersQuery {
    all: bool,
}

/// Live runners (`?all=true` includes the dead).
async fn list_runners(
    State(state): State<AppState>,
    Query(query): Query<RunnersQuery>,
) -> Result<Json<Vec<Runner>>> {
    Ok(Json(runners::list(&state.db, &state, query.all).await?))
}

/// A project's quota and what it uses now.
#[derive(Serialize)]
struct QuotaView {
    project: String,
    quota: Quota,
    usage: Usage,
}

async fn get_quota(
    State(state): State<AppState>,
    Path(project): Path<String>,
) -> Result<Json<QuotaView>> {
    let quota = quotas::get(&state.db, &project, state.config.default_quota).await?;
    let usage = quotas::usage(&state.db, &project).await?;
    Ok(Json(QuotaView {
        project,
        quota,
        usage,
    }))
}

async fn put_quota(
    State(state): State<AppState>,
    Path(project): Path<String>,
    ApiJson(quota): ApiJson<Quota>,
) -> Result<Json<QuotaView>> {
    quotas::put(&state.db, &project, quota).await?;
    state.wake.notify_one();
    get_quota(State(state), Path(project)).await
}

/// Resource-seconds of one project or model, over every attempt.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct UsageRow {
    /// The project or model name.
    pub key: String,
    /// The project (of the model, when grouped by model).
    pub project: String,
    /// Allocated CPU core-seconds.
    pub cpu_seconds: f64,
    /// Allocated memory MiB-seconds.
    pub memory_mb_seconds: f64,
    /// Allocated GPU-seconds.
    pub gpu_seconds: f64,
    /// Attempts counted.
    pub attempts: i64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UsageQuery {
    by: Option<String>,
}

/// `?by=project` (default) or `?by=model`.
async fn usage(
    State(state): State<AppState>,
    Query(query): Query<UsageQuery>,
) -> Result<Json<Vec<UsageRow>>> {
    let by = query.by.unwrap_or_else(|| "project".into());
    if by != "project" && by != "model" {
        return Err(SchedulerError::Invalid(
            "by: expected `project` or `model`".into(),
        ));
    }
    let mut rows = crate::metrics::usage_by(&state, &by).await?;
    let scope = flywheel_runtime::scope::current();
    rows.retain(|row| scope.sees(&row.project));
    Ok(Json(rows))
}
