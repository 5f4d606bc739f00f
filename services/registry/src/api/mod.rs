//! The native REST API under `/api/v1` (grows with the registry issue; errors use the
//! platform's `{"code", "message"}` format through [`RegistryError`]'s `IntoResponse`).

mod openapi;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use flywheel_runtime::ApiJson;
use serde::Deserialize;

use crate::datasets::{self, DatasetVersion};
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
        .route("/api/v1/openapi.json", get(openapi_document))
        .route(
            "/api/v1/models/{name}/versions/{version}/lineage",
            get(lineage),
        )
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/deployments", get(list_deployments))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/models/{name}/retrain", post(retrain))
        .route("/api/v1/datasets", get(list_datasets))
        .route(
            "/api/v1/datasets/{name}/suite",
            get(get_suite).put(set_suite),
        )
        .route(
            "/api/v1/datasets/{name}/versions",
            get(list_dataset_versions).post(push_dataset),
        )
        .route(
            "/api/v1/datasets/{name}/versions/{version}",
            get(get_dataset_version),
        )
        .route(
            "/api/v1/datasets/{name}/versions/{version}/profile",
            get(get_dataset_profile),
        )
}

/// Who is acting: the `X-Flywheel-Actor` header until authentication lands (issue 9).
pub(crate) fn actor(headers: &HeaderMap) -> Result<String> {
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

#[derive(Deserialize, schemars::JsonSchema)]
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

#[derive(Deserialize, Default, schemars::JsonSchema)]
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

async fn get_suite(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<flywheel_data::Expectation>>> {
    Ok(Json(datasets::suite(&state.db, &name).await?))
}

async fn set_suite(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(suite): ApiJson<Vec<flywheel_data::Expectation>>,
) -> Result<Json<Vec<flywheel_data::Expectation>>> {
    datasets::set_suite(&state, &name, &suite).await?;
    Ok(Json(suite))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PushQuery {
    format: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct PushReference {
    /// A key in the artifact store, relative to its root.
    key: String,
    #[serde(default)]
    format: Option<String>,
}

/// Pushes a dataset version: the file as the body (`?format=csv|parquet`, or told by the
/// content type or the Parquet magic bytes), or `{"key": ...}` (JSON) for an object already in
/// the store. 201 for a new version, 200 when the same bytes were pushed before.
async fn push_dataset(
    State(state): State<AppState>,
    Path(name): Path<String>,
    axum::extract::Query(query): axum::extract::Query<PushQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(axum::http::StatusCode, Json<DatasetVersion>)> {
    let actor = actor(&headers)?;
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (version, created) = if content_type.starts_with("application/json") {
        let reference: PushReference = serde_json::from_slice(&body)
            .map_err(|e| RegistryError::InvalidParameter(format!("invalid reference: {e}")))?;
        datasets::push_reference(
            &state,
            &name,
            &reference.key,
            reference.format.as_deref(),
            &actor,
        )
        .await?
    } else {
        let hint = query
            .format
            .as_deref()
            .or(Some(content_type.as_str()).filter(|c| !c.is_empty()));
        datasets::push(&state, &name, body, hint, &actor).await?
    };
    let status = if created {
        axum::http::StatusCode::CREATED
    } else {
        axum::http::StatusCode::OK
    };
    Ok((status, Json(version)))
}

async fn list_dataset_versions(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<DatasetVersion>>> {
    datasets::check_name(&name)?;
    Ok(Json(datasets::list_versions(&state, &name).await?))
}

async fn get_dataset_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<DatasetVersion>> {
    Ok(Json(datasets::get_version(&state, &name, &version).await?))
}

async fn get_dataset_profile(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<flywheel_data::Profile>> {
    Ok(Json(datasets::get_profile(&state, &name, &version).await?))
}

async fn list_jobs(State(state): State<AppState>) -> Result<Json<Vec<crate::readmodels::JobView>>> {
    Ok(Json(crate::readmodels::jobs(&state.db).await?))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DeploymentQuery {
    model: Option<String>,
}

async fn list_deployments(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<DeploymentQuery>,
) -> Result<Json<Vec<crate::readmodels::DeploymentView>>> {
    Ok(Json(
        crate::readmodels::deployments(&state.db, query.model.as_deref()).await?,
    ))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AlertQuery {
    open: bool,
}

async fn list_alerts(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<AlertQuery>,
) -> Result<Json<Vec<crate::readmodels::AlertView>>> {
    Ok(Json(
        crate::readmodels::alerts(&state.db, query.open).await?,
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RetrainRequest {
    dataset: String,
    #[serde(default)]
    dataset_version: Option<String>,
    trainer: flywheel_events::payloads::TrainerSpec,
    #[serde(default)]
    resources: Option<flywheel_events::payloads::Resources>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    gates: Vec<flywheel_events::payloads::QualityGate>,
}

/// Asks for a retraining (`training.requested`, reason `manual`) on a dataset version (the
/// latest when none is named). Returns the request id to follow.
async fn retrain(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<RetrainRequest>,
) -> Result<(axum::http::StatusCode, Json<serde_json::Value>)> {
    let actor = actor(&headers)?;
    models::check_model_name(&name)?;
    let version = match request.dataset_version {
        Some(version) => {
            datasets::get_version(&state, &request.dataset, &version)
                .await?
                .version
        }
        None => {
            datasets::list_versions(&state, &request.dataset)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    RegistryError::NotFound(format!("dataset {} has no versions", request.dataset))
                })?
                .version
        }
    };
    let request_id = models::request_training(
        &state,
        flywheel_events::payloads::TrainingRequested {
            request_id: uuid::Uuid::now_v7().to_string(),
            model: name,
            dataset: flywheel_events::payloads::DatasetRef {
                name: request.dataset,
                version,
            },
            trainer: request.trainer,
            resources: request
                .resources
                .unwrap_or(flywheel_events::payloads::Resources {
                    cpu: 1.0,
                    memory_mb: 1024,
                    gpu: 0,
                }),
            priority: request.priority,
            reason: flywheel_events::payloads::TrainingReason::Manual,
            search: None,
            gates: request.gates,
            timeout_seconds: None,
        },
        &actor,
    )
    .await?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(serde_json::json!({"request_id": request_id})),
    ))
}

async fn openapi_document() -> Json<serde_json::Value> {
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    Json(DOCUMENT.get_or_init(openapi::document).clone())
}

/// Where a model version came from and where it went.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub(crate) struct Lineage {
    model: String,
    version: i64,
    source: String,
    /// Training data (with its stored version, when the registry holds it).
    dataset: Option<flywheel_events::payloads::DatasetRef>,
    dataset_version: Option<DatasetVersion>,
    /// The run, job, code and parameters.
    run_id: Option<String>,
    parent_run_id: Option<String>,
    job_id: Option<String>,
    code_ref: Option<String>,
    params: std::collections::BTreeMap<String, serde_json::Value>,
    metrics: std::collections::BTreeMap<String, f64>,
    aliases: Vec<String>,
    /// Deployments serving this version.
    deployments: Vec<crate::readmodels::DeploymentView>,
}

/// dataset version → run → model version → deployments.
async fn lineage(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, i64)>,
) -> Result<Json<Lineage>> {
    let found = models::get_version(&state.db, &name, version).await?;
    let dataset_version = match &found.lineage.dataset {
        Some(d) => datasets::get_version(&state, &d.name, &d.version)
            .await
            .ok(),
        None => None,
    };
    let deployments = crate::readmodels::deployments(&state.db, Some(&name))
        .await?
        .into_iter()
        .filter(|d| d.version == Some(version))
        .collect();
    Ok(Json(Lineage {
        model: found.name,
        version: found.version,
        source: found.source,
        dataset: found.lineage.dataset,
        dataset_version,
        run_id: found.run_id.or(found.lineage.run_id),
        parent_run_id: found.lineage.parent_run_id,
        job_id: found.lineage.job_id,
        code_ref: found.lineage.code_ref,
        params: found.lineage.params,
        metrics: found.metrics,
        aliases: found.aliases,
        deployments,
    }))
}

/// Every dataset with its version count and latest version.
async fn list_datasets(
    State(state): State<AppState>,
) -> Result<Json<Vec<datasets::DatasetSummary>>> {
    Ok(Json(datasets::list(&state.db).await?))
}
