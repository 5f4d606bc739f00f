//! Experiments, runs, params, metrics and tags.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::MlflowError;
use super::wire::{WireExperiment, WireKeyValue, WireMetric, WireRun, WireRunInfo, lenient_i64};
use crate::AppState;
use crate::tracking::{
    self, KeyValue, LogBatch, Metric, RunStatus, SearchRuns, ViewType, now_millis,
};

type Reply = Result<Json<Value>, MlflowError>;
type Body<T> = Result<Json<T>, JsonRejection>;
type Params<T> = Result<Query<T>, QueryRejection>;

fn experiment_id(raw: &str) -> Result<i64, MlflowError> {
    raw.trim()
        .parse()
        .map_err(|_| MlflowError::invalid(format!("invalid experiment_id `{raw}`")))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct CreateExperiment {
    name: String,
    artifact_location: Option<String>,
    tags: Vec<WireKeyValue>,
}

pub(super) async fn create_experiment(
    State(state): State<AppState>,
    body: Body<CreateExperiment>,
) -> Reply {
    let Json(request) = body?;
    let tags: Vec<KeyValue> = request.tags.into_iter().map(Into::into).collect();
    let id = tracking::experiments::create(
        &state.db,
        &request.name,
        request.artifact_location.as_deref(),
        &tags,
    )
    .await?;
    Ok(Json(json!({"experiment_id": id.to_string()})))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct ExperimentQuery {
    experiment_id: String,
    experiment_name: String,
}

pub(super) async fn get_experiment(
    State(state): State<AppState>,
    query: Params<ExperimentQuery>,
) -> Reply {
    let Query(query) = query?;
    let experiment =
        tracking::experiments::get(&state.db, experiment_id(&query.experiment_id)?).await?;
    Ok(Json(
        json!({"experiment": WireExperiment::from(experiment)}),
    ))
}

pub(super) async fn get_experiment_by_name(
    State(state): State<AppState>,
    query: Params<ExperimentQuery>,
) -> Reply {
    let Query(query) = query?;
    let experiment = tracking::experiments::get_by_name(&state.db, &query.experiment_name).await?;
    Ok(Json(
        json!({"experiment": WireExperiment::from(experiment)}),
    ))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct SearchExperiments {
    #[serde(deserialize_with = "lenient_i64")]
    max_results: Option<i64>,
    view_type: Option<String>,
    page_token: Option<String>,
    filter: Option<String>,
}

async fn search_experiments_with(state: &AppState, request: SearchExperiments) -> Reply {
    if request
        .filter
        .as_deref()
        .is_some_and(|f| !f.trim().is_empty())
    {
        return Err(MlflowError::invalid(
            "experiment search filters are not supported yet; list without a filter",
        ));
    }
    let view = ViewType::parse(request.view_type.as_deref())?;
    let max = request.max_results.unwrap_or(1000).max(1) as u64;
    let (experiments, next) =
        tracking::experiments::search(&state.db, view, max, request.page_token.as_deref()).await?;
    let experiments: Vec<WireExperiment> = experiments.into_iter().map(Into::into).collect();
    Ok(Json(match next {
        Some(token) => json!({"experiments": experiments, "next_page_token": token}),
        None => json!({"experiments": experiments}),
    }))
}

pub(super) async fn search_experiments(
    State(state): State<AppState>,
    body: Body<SearchExperiments>,
) -> Reply {
    let Json(request) = body?;
    search_experiments_with(&state, request).await
}

pub(super) async fn search_experiments_get(
    State(state): State<AppState>,
    query: Params<SearchExperiments>,
) -> Reply {
    let Query(request) = query?;
    search_experiments_with(&state, request).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct ExperimentRef {
    experiment_id: String,
    key: String,
    value: String,
}

pub(super) async fn delete_experiment(
    State(state): State<AppState>,
    body: Body<ExperimentRef>,
) -> Reply {
    let Json(request) = body?;
    tracking::experiments::set_lifecycle(
        &state.db,
        experiment_id(&request.experiment_id)?,
        "deleted",
    )
    .await?;
    Ok(Json(json!({})))
}

pub(super) async fn restore_experiment(
    State(state): State<AppState>,
    body: Body<ExperimentRef>,
) -> Reply {
    let Json(request) = body?;
    tracking::experiments::set_lifecycle(
        &state.db,
        experiment_id(&request.experiment_id)?,
        "active",
    )
    .await?;
    Ok(Json(json!({})))
}

pub(super) async fn set_experiment_tag(
    State(state): State<AppState>,
    body: Body<ExperimentRef>,
) -> Reply {
    let Json(request) = body?;
    let tag = KeyValue {
        key: request.key,
        value: request.value,
    };
    tracking::experiments::set_tag(&state.db, experiment_id(&request.experiment_id)?, &tag).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct CreateRun {
    experiment_id: String,
    user_id: String,
    run_name: Option<String>,
    #[serde(deserialize_with = "lenient_i64")]
    start_time: Option<i64>,
    tags: Vec<WireKeyValue>,
}

pub(super) async fn create_run(State(state): State<AppState>, body: Body<CreateRun>) -> Reply {
    let Json(request) = body?;
    let experiment = if request.experiment_id.is_empty() {
        0
    } else {
        experiment_id(&request.experiment_id)?
    };
    let tags: Vec<KeyValue> = request.tags.into_iter().map(Into::into).collect();
    let user = if request.user_id.is_empty() {
        "unknown"
    } else {
        &request.user_id
    };
    let run = tracking::runs::create(
        &state.db,
        experiment,
        user,
        request.run_name.as_deref(),
        request.start_time,
        &tags,
    )
    .await?;
    Ok(Json(json!({"run": WireRun::from(run)})))
}

/// Accepts `run_id` or the deprecated `run_uuid`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RunRef {
    run_id: String,
    run_uuid: String,
}

impl RunRef {
    fn id(&self) -> Result<&str, MlflowError> {
        let id = if self.run_id.is_empty() {
            &self.run_uuid
        } else {
            &self.run_id
        };
        if id.is_empty() {
            Err(MlflowError::invalid("missing run_id"))
        } else {
            Ok(id)
        }
    }
}

pub(super) async fn get_run(State(state): State<AppState>, query: Params<RunRef>) -> Reply {
    let Query(run) = query?;
    let run = tracking::runs::get(&state.db, run.id()?).await?;
    Ok(Json(json!({"run": WireRun::from(run)})))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct UpdateRun {
    #[serde(flatten)]
    run: RunRef,
    status: Option<String>,
    #[serde(deserialize_with = "lenient_i64")]
    end_time: Option<i64>,
    run_name: Option<String>,
}

pub(super) async fn update_run(State(state): State<AppState>, body: Body<UpdateRun>) -> Reply {
    let Json(request) = body?;
    let status = request
        .status
        .as_deref()
        .map(RunStatus::parse)
        .transpose()?;
    let info = tracking::runs::update(
        &state.db,
        request.run.id()?,
        status,
        request.end_time,
        request.run_name.as_deref(),
    )
    .await?;
    Ok(Json(json!({"run_info": WireRunInfo::from(info)})))
}

pub(super) async fn delete_run(State(state): State<AppState>, body: Body<RunRef>) -> Reply {
    let Json(run) = body?;
    tracking::runs::set_lifecycle(&state.db, run.id()?, "deleted").await?;
    Ok(Json(json!({})))
}

pub(super) async fn restore_run(State(state): State<AppState>, body: Body<RunRef>) -> Reply {
    let Json(run) = body?;
    tracking::runs::set_lifecycle(&state.db, run.id()?, "active").await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct KeyValueOnRun {
    #[serde(flatten)]
    run: RunRef,
    key: String,
    value: String,
}

pub(super) async fn log_param(State(state): State<AppState>, body: Body<KeyValueOnRun>) -> Reply {
    let Json(request) = body?;
    let batch = LogBatch {
        params: vec![KeyValue {
            key: request.key,
            value: request.value,
        }],
        ..LogBatch::default()
    };
    tracking::runs::log_batch(&state.db, request.run.id()?, &batch).await?;
    Ok(Json(json!({})))
}

pub(super) async fn set_tag(State(state): State<AppState>, body: Body<KeyValueOnRun>) -> Reply {
    let Json(request) = body?;
    let batch = LogBatch {
        tags: vec![KeyValue {
            key: request.key,
            value: request.value,
        }],
        ..LogBatch::default()
    };
    tracking::runs::log_batch(&state.db, request.run.id()?, &batch).await?;
    Ok(Json(json!({})))
}

pub(super) async fn delete_tag(State(state): State<AppState>, body: Body<KeyValueOnRun>) -> Reply {
    let Json(request) = body?;
    tracking::runs::delete_tag(&state.db, request.run.id()?, &request.key).await?;
    Ok(Json(json!({})))
}

fn metric(wire: WireMetric) -> Result<Metric, MlflowError> {
    let value = wire
        .value
        .ok_or_else(|| MlflowError::invalid(format!("metric `{}` has no value", wire.key)))?;
    Ok(Metric {
        key: wire.key,
        value,
        timestamp: wire.timestamp.unwrap_or_else(now_millis),
        step: wire.step.unwrap_or(0),
    })
}

#[derive(Deserialize)]
pub(super) struct LogMetric {
    #[serde(flatten)]
    run: RunRef,
    #[serde(flatten)]
    metric: WireMetric,
}

pub(super) async fn log_metric(State(state): State<AppState>, body: Body<LogMetric>) -> Reply {
    let Json(request) = body?;
    let batch = LogBatch {
        metrics: vec![metric(request.metric)?],
        ..LogBatch::default()
    };
    tracking::runs::log_batch(&state.db, request.run.id()?, &batch).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct LogBatchRequest {
    #[serde(flatten)]
    run: RunRef,
    metrics: Vec<WireMetric>,
    params: Vec<WireKeyValue>,
    tags: Vec<WireKeyValue>,
}

pub(super) async fn log_batch(State(state): State<AppState>, body: Body<LogBatchRequest>) -> Reply {
    let Json(request) = body?;
    if request.metrics.len() > 1000 || request.params.len() + request.tags.len() > 1000 {
        return Err(MlflowError::invalid(
            "a batch may hold at most 1000 metrics and 1000 params and tags",
        ));
    }
    let batch = LogBatch {
        metrics: request
            .metrics
            .into_iter()
            .map(metric)
            .collect::<Result<_, _>>()?,
        params: request.params.into_iter().map(Into::into).collect(),
        tags: request.tags.into_iter().map(Into::into).collect(),
    };
    tracking::runs::log_batch(&state.db, request.run.id()?, &batch).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct SearchRunsRequest {
    experiment_ids: Vec<String>,
    filter: String,
    run_view_type: Option<String>,
    #[serde(deserialize_with = "lenient_i64")]
    max_results: Option<i64>,
    order_by: Vec<String>,
    page_token: Option<String>,
}

pub(super) async fn search_runs(
    State(state): State<AppState>,
    body: Body<SearchRunsRequest>,
) -> Reply {
    let Json(request) = body?;
    let request = SearchRuns {
        experiment_ids: request
            .experiment_ids
            .iter()
            .map(|id| experiment_id(id))
            .collect::<Result<_, _>>()?,
        filter: request.filter,
        view: ViewType::parse(request.run_view_type.as_deref())?,
        max_results: request.max_results.unwrap_or(1000).max(1) as u64,
        order_by: request.order_by,
        page_token: request.page_token,
    };
    let (runs, next) = tracking::runs::search(&state.db, &request).await?;
    let runs: Vec<WireRun> = runs.into_iter().map(Into::into).collect();
    Ok(Json(match next {
        Some(token) => json!({"runs": runs, "next_page_token": token}),
        None => json!({"runs": runs}),
    }))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct HistoryQuery {
    #[serde(flatten)]
    run: RunRef,
    metric_key: String,
    #[serde(deserialize_with = "lenient_i64")]
    max_results: Option<i64>,
    page_token: Option<String>,
}

pub(super) async fn metric_history(
    State(state): State<AppState>,
    query: Params<HistoryQuery>,
) -> Reply {
    let Query(query) = query?;
    let max = query.max_results.unwrap_or(25_000).max(1) as u64;
    let (metrics, next) = tracking::runs::metric_history(
        &state.db,
        query.run.id()?,
        &query.metric_key,
        max,
        query.page_token.as_deref(),
    )
    .await?;
    let metrics: Vec<WireMetric> = metrics.iter().map(WireMetric::from).collect();
    Ok(Json(match next {
        Some(token) => json!({"metrics": metrics, "next_page_token": token}),
        None => json!({"metrics": metrics}),
    }))
}
