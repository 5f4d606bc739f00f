//! The deployment API under `/api/v1/deployments`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use flywheel_runtime::ApiJson;

use crate::deployments::{self, Deployment, DeploymentSpec};
use crate::{AppState, Result};

/// The routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/deployments", get(list)).route(
        "/api/v1/deployments/{name}",
        get(show).put(replace).delete(remove),
    )
}

async fn list(State(state): State<AppState>) -> Result<Json<Vec<Deployment>>> {
    Ok(Json(deployments::list(&state.db).await?))
}

async fn show(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Deployment>> {
    Ok(Json(deployments::get(&state.db, &name).await?))
}

/// Creates or replaces a deployment: `{"model": "churn", "alias": "production"}` or
/// `{"model": "churn", "version": 3}`.
async fn replace(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(spec): ApiJson<DeploymentSpec>,
) -> Result<Json<Deployment>> {
    Ok(Json(deployments::put(&state, &name, spec).await?))
}

async fn remove(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode> {
    deployments::delete(&state, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
