//! The MLflow model registry: registered models, versions, tags, aliases and stages.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, RawQuery, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::MlflowError;
use super::wire::WireKeyValue;
use crate::AppState;
use crate::models::{self, ModelVersion, NewVersion, RegisteredModel, SearchModels};
use crate::tracking::KeyValue;
use crate::tracking::logged_models;

type Reply = Result<Json<Value>, MlflowError>;
type Body<T> = Result<Json<T>, JsonRejection>;
type Params<T> = Result<Query<T>, QueryRejection>;

/// Who acts through the MLflow API until authentication lands.
const ACTOR: &str = "mlflow-client";

fn version_number(raw: &str) -> Result<i64, MlflowError> {
    raw.trim()
        .parse()
        .map_err(|_| MlflowError::invalid(format!("invalid model version `{raw}`")))
}

#[derive(Serialize)]
struct WireAlias {
    alias: String,
    version: String,
}

#[derive(Serialize)]
struct WireModelVersion {
    name: String,
    version: String,
    creation_timestamp: i64,
    last_updated_timestamp: i64,
    user_id: String,
    current_stage: String,
    description: String,
    source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<String>,
    status: String,
    tags: Vec<WireKeyValue>,
    aliases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_id: Option<String>,
}

impl From<ModelVersion> for WireModelVersion {
    fn from(v: ModelVersion) -> Self {
        let model_id = logged_model_of(&v.source, None);
        WireModelVersion {
            version: v.version.to_string(),
            creation_timestamp: v.created_at,
            last_updated_timestamp: v.updated_at,
            user_id: v.created_by,
            current_stage: v.current_stage,
            description: v.description,
            source: v.source,
            run_id: v.run_id,
            status: v.status,
            tags: v.tags.iter().map(WireKeyValue::from).collect(),
            aliases: v.aliases,
            model_id,
            name: v.name,
        }
    }
}

#[derive(Serialize)]
struct WireRegisteredModel {
    name: String,
    creation_timestamp: i64,
    last_updated_timestamp: i64,
    user_id: String,
    description: String,
    latest_versions: Vec<WireModelVersion>,
    tags: Vec<WireKeyValue>,
    aliases: Vec<WireAlias>,
}

impl From<RegisteredModel> for WireRegisteredModel {
    fn from(m: RegisteredModel) -> Self {
        WireRegisteredModel {
            name: m.name,
            creation_timestamp: m.created_at,
            last_updated_timestamp: m.updated_at,
            user_id: m.created_by,
            description: m.description,
            latest_versions: m.latest_versions.into_iter().map(Into::into).collect(),
            tags: m.tags.iter().map(WireKeyValue::from).collect(),
            aliases: m
                .aliases
                .into_iter()
                .map(|(alias, version)| WireAlias {
                    alias,
                    version: version.to_string(),
                })
                .collect(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct ModelRequest {
    name: String,
    description: String,
    tags: Vec<WireKeyValue>,
    alias: String,
    version: String,
    key: String,
    value: String,
}

pub(super) async fn create_model(State(state): State<AppState>, body: Body<ModelRequest>) -> Reply {
    let Json(request) = body?;
    let tags: Vec<KeyValue> = request.tags.into_iter().map(Into::into).collect();
    let model =
        models::create_model(&state, &request.name, &request.description, &tags, ACTOR).await?;
    Ok(Json(
        json!({"registered_model": WireRegisteredModel::from(model)}),
    ))
}

pub(super) async fn get_model(State(state): State<AppState>, query: Params<ModelRequest>) -> Reply {
    let Query(request) = query?;
    let model = models::get_model(&state.db, &request.name).await?;
    Ok(Json(
        json!({"registered_model": WireRegisteredModel::from(model)}),
    ))
}

pub(super) async fn delete_model(State(state): State<AppState>, body: Body<ModelRequest>) -> Reply {
    let Json(request) = body?;
    models::delete_model(&state, &request.name, ACTOR).await?;
    Ok(Json(json!({})))
}

pub(super) async fn set_model_tag(
    State(state): State<AppState>,
    body: Body<ModelRequest>,
) -> Reply {
    let Json(request) = body?;
    models::set_model_tag(
        &state,
        &request.name,
        &KeyValue {
            key: request.key,
            value: request.value,
        },
        ACTOR,
    )
    .await?;
    Ok(Json(json!({})))
}

pub(super) async fn set_alias(State(state): State<AppState>, body: Body<ModelRequest>) -> Reply {
    let Json(request) = body?;
    models::set_alias(
        &state,
        &request.name,
        &request.alias,
        version_number(&request.version)?,
        ACTOR,
    )
    .await?;
    Ok(Json(json!({})))
}

pub(super) async fn get_alias(State(state): State<AppState>, query: Params<ModelRequest>) -> Reply {
    let Query(request) = query?;
    let version = models::get_by_alias(&state.db, &request.name, &request.alias).await?;
    Ok(Json(
        json!({"model_version": WireModelVersion::from(version)}),
    ))
}

pub(super) async fn delete_alias(State(state): State<AppState>, body: Body<ModelRequest>) -> Reply {
    let Json(request) = body?;
    models::delete_alias(&state, &request.name, &request.alias, ACTOR).await?;
    Ok(Json(json!({})))
}

/// Query strings with repeated keys (`order_by=a&order_by=b`), as the MLflow client sends them.
struct MultiQuery(Vec<(String, String)>);

impl MultiQuery {
    fn parse(raw: Option<String>) -> Self {
        MultiQuery(
            form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn one(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn search(&self, default_max: u64) -> Result<SearchModels, MlflowError> {
        let max_results = match self.one("max_results") {
            Some(raw) => raw
                .parse()
                .map_err(|_| MlflowError::invalid(format!("invalid max_results `{raw}`")))?,
            None => default_max,
        };
        Ok(SearchModels {
            filter: self.one("filter").unwrap_or_default().to_owned(),
            max_results,
            order_by: self.all("order_by"),
            page_token: self.one("page_token").map(str::to_owned),
        })
    }
}

pub(super) async fn search_models(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Reply {
    let request = MultiQuery::parse(raw).search(100)?;
    let (found, next) = models::search_models(&state.db, &request).await?;
    let found: Vec<WireRegisteredModel> = found.into_iter().map(Into::into).collect();
    Ok(Json(match next {
        Some(token) => json!({"registered_models": found, "next_page_token": token}),
        None => json!({"registered_models": found}),
    }))
}

pub(super) async fn search_versions(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Reply {
    let request = MultiQuery::parse(raw).search(10_000)?;
    let (found, next) = models::search_versions(&state.db, &request).await?;
    let found: Vec<WireModelVersion> = found.into_iter().map(Into::into).collect();
    Ok(Json(match next {
        Some(token) => json!({"model_versions": found, "next_page_token": token}),
        None => json!({"model_versions": found}),
    }))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct LatestRequest {
    name: String,
    stages: Vec<String>,
}

pub(super) async fn latest_versions(
    State(state): State<AppState>,
    body: Body<LatestRequest>,
) -> Reply {
    let Json(request) = body?;
    latest_reply(&state, &request.name, &request.stages).await
}

pub(super) async fn latest_versions_get(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Reply {
    let query = MultiQuery::parse(raw);
    latest_reply(
        &state,
        query.one("name").unwrap_or_default(),
        &query.all("stages"),
    )
    .await
}

async fn latest_reply(state: &AppState, name: &str, stages: &[String]) -> Reply {
    models::get_model(&state.db, name).await?;
    let versions = models::latest_versions(&state.db, name, stages).await?;
    let versions: Vec<WireModelVersion> = versions.into_iter().map(Into::into).collect();
    Ok(Json(json!({"model_versions": versions})))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct VersionRequest {
    name: String,
    version: String,
    source: String,
    run_id: Option<String>,
    description: String,
    tags: Vec<WireKeyValue>,
    key: String,
    value: String,
    stage: String,
    archive_existing_versions: bool,
    model_id: Option<String>,
}

/// The LoggedModel a version's source names (`models:/m-…`), if any.
fn logged_model_of(source: &str, model_id: Option<&str>) -> Option<String> {
    model_id
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            source
                .strip_prefix("models:/")
                .filter(|rest| rest.starts_with("m-") && !rest.contains('/'))
                .map(str::to_owned)
        })
}

pub(super) async fn create_version(
    State(state): State<AppState>,
    body: Body<VersionRequest>,
) -> Reply {
    let Json(request) = body?;
    let logged_model = logged_model_of(&request.source, request.model_id.as_deref());
    let mut run_id = request.run_id.filter(|r| !r.is_empty());
    if let Some(model_id) = &logged_model {
        // MLflow fills the run from the LoggedModel when the client sends none.
        let logged = logged_models::get(&state.db, model_id).await?;
        if run_id.is_none() {
            run_id = logged.source_run_id;
        }
    }
    let new = NewVersion {
        source: request.source,
        run_id,
        description: request.description,
        tags: request.tags.into_iter().map(Into::into).collect(),
        ..NewVersion::default()
    };
    let version = models::create_version(&state, &request.name, new, ACTOR).await?;
    if let Some(model_id) = &logged_model {
        // The LoggedModel lists its registrations in a JSON array tag, which the client appends to.
        let logged = logged_models::get(&state.db, model_id).await?;
        let mut registrations: Vec<Value> = logged
            .tags
            .iter()
            .find(|t| t.key == "mlflow.modelVersions")
            .and_then(|t| serde_json::from_str(&t.value).ok())
            .unwrap_or_default();
        registrations.push(json!({"name": version.name, "version": version.version.to_string()}));
        let tag = KeyValue {
            key: "mlflow.modelVersions".into(),
            value: Value::Array(registrations).to_string(),
        };
        logged_models::set_tags(&state.db, model_id, &[tag]).await?;
    }
    let mut wire = WireModelVersion::from(version);
    wire.model_id = logged_model;
    Ok(Json(json!({"model_version": wire})))
}

pub(super) async fn get_version(
    State(state): State<AppState>,
    query: Params<VersionRequest>,
) -> Reply {
    let Query(request) = query?;
    let version =
        models::get_version(&state.db, &request.name, version_number(&request.version)?).await?;
    Ok(Json(
        json!({"model_version": WireModelVersion::from(version)}),
    ))
}

pub(super) async fn set_version_tag(
    State(state): State<AppState>,
    body: Body<VersionRequest>,
) -> Reply {
    let Json(request) = body?;
    let tag = KeyValue {
        key: request.key,
        value: request.value,
    };
    models::set_version_tag(
        &state,
        &request.name,
        version_number(&request.version)?,
        &tag,
        ACTOR,
    )
    .await?;
    Ok(Json(json!({})))
}

pub(super) async fn transition_stage(
    State(state): State<AppState>,
    body: Body<VersionRequest>,
) -> Reply {
    let Json(request) = body?;
    let version = models::transition_stage(
        &state,
        &request.name,
        version_number(&request.version)?,
        &request.stage,
        request.archive_existing_versions,
        ACTOR,
    )
    .await?;
    Ok(Json(
        json!({"model_version": WireModelVersion::from(version)}),
    ))
}

pub(super) async fn download_uri(
    State(state): State<AppState>,
    query: Params<VersionRequest>,
) -> Reply {
    let Query(request) = query?;
    let version =
        models::get_version(&state.db, &request.name, version_number(&request.version)?).await?;
    // `models:/<model_id>` resolves to the LoggedModel's files, as MLflow does.
    let uri = match logged_model_of(&version.source, None) {
        Some(model_id) => logged_models::get(&state.db, &model_id).await?.artifact_uri,
        None => version.source,
    };
    Ok(Json(json!({"artifact_uri": uri})))
}
