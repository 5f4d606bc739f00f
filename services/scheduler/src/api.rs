//! The job API under `/api/v1`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use flywheel_events::payloads::TrainingRequested;
use flywheel_runtime::ApiJson;
use serde::Deserialize;

use crate::intake::{self, Job};
use crate::{AppState, Result};

/// The routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/jobs", get(list).post(submit))
        .route("/api/v1/jobs/{id}", get(get_job))
}

/// Submits a training request (the `training.requested` payload); 201 for a new job, 200 for the
/// job that already holds this request id.
async fn submit(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<TrainingRequested>,
) -> Result<(StatusCode, Json<Job>)> {
    let (job, created) = intake::submit(&state, "default", request, None).await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(job),
    ))
}

async fn get_job(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Job>> {
    Ok(Json(intake::get(&state.db, &id).await?))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListQuery {
    status: Option<String>,
    limit: Option<u64>,
}

/// Jobs in queue order (priority, then age).
async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<Job>>> {
    Ok(Json(
        intake::list(
            &state.db,
            query.status.as_deref(),
            query.limit.unwrap_or(1000),
        )
        .await?,
    ))
}
