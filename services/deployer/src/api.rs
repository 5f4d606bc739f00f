//! The deployment API under `/api/v1/deployments`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use flywheel_runtime::ApiJson;

use crate::deployments::{self, Deployment, DeploymentSpec};
use crate::{AppState, DeployerError, Result};

/// The routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/deployments", get(list))
        .route("/api/v1/replica", get(replica))
        .route(
            "/api/v1/deployments/{name}",
            get(show).put(replace).delete(remove),
        )
        .route(
            "/api/v1/deployments/{name}/versions/{version}/fault",
            put(inject_fault),
        )
}

/// A fault to inject: a share of server errors and added latency.
#[derive(Debug, serde::Deserialize)]
struct FaultSpec {
    #[serde(default)]
    error_percent: u8,
    #[serde(default)]
    delay_ms: u32,
}

/// Injects a fault into a served version (stable or candidate): for chaos tests and game
/// days, only when the deployer runs with `service.fault_injection = true`.
async fn inject_fault(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, u32)>,
    ApiJson(spec): ApiJson<FaultSpec>,
) -> Result<Json<serde_json::Value>> {
    if !state.fault_injection {
        return Err(DeployerError::Forbidden(
            "fault injection is off (service.fault_injection = true turns it on)".into(),
        ));
    }
    if spec.error_percent > 100 {
        return Err(DeployerError::Invalid("error_percent: 0 to 100".into()));
    }
    let loaded = state.serving.version(&name, version).ok_or_else(|| {
        DeployerError::NotFound(format!("{name} does not serve version {version}"))
    })?;
    loaded.fault.set(spec.error_percent, spec.delay_ms);
    tracing::warn!(deployment = %name, version, error_percent = spec.error_percent, delay_ms = spec.delay_ms, "fault injected");
    Ok(Json(serde_json::json!({
        "deployment": name,
        "version": version,
        "error_percent": spec.error_percent,
        "delay_ms": spec.delay_ms,
    })))
}

/// This replica: its name, whether it leads rollouts, and what it serves (stable version,
/// candidate and its share) — replicas apply the leader's routes, so they should agree.
async fn replica(State(state): State<AppState>) -> Json<serde_json::Value> {
    let mut serving = serde_json::Map::new();
    for name in state.serving.names() {
        if !flywheel_runtime::scope::current().sees(&state.exposure.project(&name)) {
            continue;
        }
        let candidate = state.serving.candidate(&name);
        serving.insert(
            name.clone(),
            serde_json::json!({
                "model": state.serving.get(&name).map(|l| l.model_name.clone()),
                "stable": state.serving.get(&name).map(|l| l.version),
                "candidate": candidate.as_ref().map(|c| c.loaded.version),
                "percent": candidate.as_ref().map(|c| c.percent.load(std::sync::atomic::Ordering::Relaxed)),
                "shadow": candidate.as_ref().map(|c| c.shadow),
            }),
        );
    }
    Json(serde_json::json!({
        "replica": state.replica.as_ref(),
        "leading": state.leadership.is_leader(),
        "serving": serving,
    }))
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
