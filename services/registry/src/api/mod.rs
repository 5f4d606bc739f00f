//! The native REST API under `/api/v1` (grows with the registry issue; errors use the
//! platform's `{"code", "message"}` format through [`RegistryError`]'s `IntoResponse`).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use flywheel_runtime::ApiJson;
use serde::Deserialize;

use crate::models::governance::{self, Policy, Promotion};
use crate::models::{self, AuditEntry};
use crate::{AppState, RegistryError, Result};

/// The native routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/models/{name}/audit", get(audit_log))
        .route(
            "/api/v1/models/{name}/policy",
            get(get_policy).put(set_policy),
        )
        .route(
            "/api/v1/models/{name}/versions/{version}/promotions",
            post(request_promotion),
        )
        .route("/api/v1/promotions/{id}", get(get_promotion))
        .route("/api/v1/promotions/{id}/approve", post(approve))
        .route("/api/v1/promotions/{id}/reject", post(reject))
}

/// Who is acting: the `X-Flywheel-Actor` header until authentication lands (issue 9).
fn actor(headers: &HeaderMap) -> Result<String> {
    let actor = headers
        .get("x-flywheel-actor")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .trim();
    if actor.is_empty() || actor.len() > 250 || actor.chars().any(char::is_control) {
        return Err(RegistryError::InvalidParameter(
            "invalid X-Flywheel-Actor header".into(),
        ));
    }
    Ok(actor.to_owned())
}

/// Every audited change of a model, oldest first.
async fn audit_log(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<AuditEntry>>> {
    models::get_model(&state.db, &name).await?;
    Ok(Json(models::audit_log(&state.db, &name).await?))
}

async fn get_policy(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Policy>> {
    models::get_model(&state.db, &name).await?;
    Ok(Json(governance::get_policy(&state.db, &name).await?))
}

async fn set_policy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(policy): ApiJson<Policy>,
) -> Result<Json<Policy>> {
    governance::set_policy(&state, &name, &policy, &actor(&headers)?).await?;
    Ok(Json(policy))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromotionRequest {
    alias: String,
}

async fn request_promotion(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, i64)>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PromotionRequest>,
) -> Result<Json<Promotion>> {
    Ok(Json(
        governance::request_promotion(&state, &name, version, &request.alias, &actor(&headers)?)
            .await?,
    ))
}

async fn get_promotion(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Promotion>> {
    Ok(Json(governance::get_promotion(&state.db, id).await?))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct DecisionRequest {
    comment: String,
}

async fn approve(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<DecisionRequest>,
) -> Result<Json<Promotion>> {
    Ok(Json(
        governance::decide(&state, id, true, &body.comment, &actor(&headers)?).await?,
    ))
}

async fn reject(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<DecisionRequest>,
) -> Result<Json<Promotion>> {
    Ok(Json(
        governance::decide(&state, id, false, &body.comment, &actor(&headers)?).await?,
    ))
}
