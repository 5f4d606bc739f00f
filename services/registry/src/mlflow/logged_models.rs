//! MLflow 3 LoggedModel endpoints and `runs/outputs`, which `mlflow.<flavor>.log_model` uses.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::MlflowError;
use super::wire::{WireKeyValue, lenient_i64};
use crate::AppState;
use crate::tracking::logged_models::{self, LoggedModel};
use crate::tracking::{KeyValue, parse_experiment_id};

type Reply = Result<Json<Value>, MlflowError>;
type Body<T> = Result<Json<T>, JsonRejection>;

#[derive(Serialize)]
pub(super) struct WireLoggedModel {
    info: Value,
    data: Value,
}

impl From<LoggedModel> for WireLoggedModel {
    fn from(m: LoggedModel) -> Self {
        let kv = |v: &[KeyValue]| v.iter().map(WireKeyValue::from).collect::<Vec<_>>();
        WireLoggedModel {
            info: json!({
                "model_id": m.model_id,
                "experiment_id": m.experiment_id.to_string(),
                "name": m.name,
                "creation_timestamp_ms": m.created_at,
                "last_updated_timestamp_ms": m.updated_at,
                "artifact_uri": m.artifact_uri,
                "status": m.status,
                "source_run_id": m.source_run_id,
                "model_type": m.model_type,
                "tags": kv(&m.tags),
            }),
            data: json!({"params": kv(&m.params), "metrics": []}),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct CreateRequest {
    experiment_id: String,
    name: String,
    source_run_id: Option<String>,
    model_type: Option<String>,
    params: Vec<WireKeyValue>,
    tags: Vec<WireKeyValue>,
}

pub(super) async fn create(State(state): State<AppState>, body: Body<CreateRequest>) -> Reply {
    let Json(request) = body?;
    let params: Vec<KeyValue> = request.params.into_iter().map(Into::into).collect();
    let tags: Vec<KeyValue> = request.tags.into_iter().map(Into::into).collect();
    let model = logged_models::create(
        &state.db,
        parse_experiment_id(&request.experiment_id)?,
        &request.name,
        request.source_run_id.as_deref().filter(|r| !r.is_empty()),
        request.model_type.as_deref(),
        &params,
        &tags,
    )
    .await?;
    Ok(Json(json!({"model": WireLoggedModel::from(model)})))
}

pub(super) async fn get(State(state): State<AppState>, Path(model_id): Path<String>) -> Reply {
    let model = logged_models::get(&state.db, &model_id).await?;
    Ok(Json(json!({"model": WireLoggedModel::from(model)})))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct FinalizeRequest {
    status: String,
}

pub(super) async fn finalize(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    body: Body<FinalizeRequest>,
) -> Reply {
    let Json(request) = body?;
    let model = logged_models::set_status(&state.db, &model_id, &request.status).await?;
    Ok(Json(json!({"model": WireLoggedModel::from(model)})))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct ValuesRequest {
    tags: Vec<WireKeyValue>,
    params: Vec<WireKeyValue>,
}

pub(super) async fn set_tags(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    body: Body<ValuesRequest>,
) -> Reply {
    let Json(request) = body?;
    let tags: Vec<KeyValue> = request.tags.into_iter().map(Into::into).collect();
    logged_models::set_tags(&state.db, &model_id, &tags).await?;
    Ok(Json(json!({})))
}

pub(super) async fn log_params(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    body: Body<ValuesRequest>,
) -> Reply {
    let Json(request) = body?;
    let params: Vec<KeyValue> = request.params.into_iter().map(Into::into).collect();
    logged_models::log_params(&state.db, &model_id, &params).await?;
    Ok(Json(json!({})))
}

pub(super) async fn delete_tag(
    State(state): State<AppState>,
    Path((model_id, key)): Path<(String, String)>,
) -> Reply {
    logged_models::delete_tag(&state.db, &model_id, &key).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct SearchRequest {
    experiment_ids: Vec<String>,
    filter: String,
    #[serde(deserialize_with = "lenient_i64")]
    max_results: Option<i64>,
    page_token: Option<String>,
}

pub(super) async fn search(State(state): State<AppState>, body: Body<SearchRequest>) -> Reply {
    let Json(request) = body?;
    let ids = request
        .experiment_ids
        .iter()
        .map(|id| parse_experiment_id(id))
        .collect::<Result<Vec<_>, _>>()?;
    let max = request.max_results.unwrap_or(50).max(1) as u64;
    let (models, next) = logged_models::search(
        &state.db,
        &ids,
        &request.filter,
        max,
        request.page_token.as_deref(),
    )
    .await?;
    let models: Vec<WireLoggedModel> = models.into_iter().map(Into::into).collect();
    Ok(Json(match next {
        Some(token) => json!({"models": models, "next_page_token": token}),
        None => json!({"models": models}),
    }))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct OutputModel {
    model_id: String,
    #[serde(deserialize_with = "lenient_i64")]
    step: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct OutputsRequest {
    run_id: String,
    models: Vec<OutputModel>,
}

pub(super) async fn run_outputs(
    State(state): State<AppState>,
    body: Body<OutputsRequest>,
) -> Reply {
    let Json(request) = body?;
    let outputs: Vec<(String, i64)> = request
        .models
        .into_iter()
        .map(|m| (m.model_id, m.step.unwrap_or(0)))
        .collect();
    logged_models::add_run_outputs(&state.db, &request.run_id, &outputs).await?;
    Ok(Json(json!({})))
}
