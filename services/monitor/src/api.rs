//! The monitor's HTTP API under `/api/v1`.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use flywheel_runtime::ApiJson;

use crate::comparison::{DriftReport, DriftRequest};
use crate::{AppState, Result};

/// The routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/drift", post(drift))
}

/// Compares two datasets (CSV in the request or registered versions).
async fn drift(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<DriftRequest>,
) -> Result<Json<DriftReport>> {
    Ok(Json(crate::comparison::compare(&state, &request).await?))
}
