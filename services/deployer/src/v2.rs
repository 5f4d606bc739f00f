//! The Open Inference Protocol (KServe V2) over REST, and the simple records endpoint.
//!
//! Bodies are read as bytes whatever the content type (tritonclient sends none, its aio client
//! `application/octet-stream`); errors are `{"error": "..."}` with 400, 404 or 503. Tensor data
//! may be nested or flat; the element count must match the shape. A model's inputs are either
//! one tensor per input column (`[n]` or `[n, 1]`) or, for all-numeric models, one `[n, k]`
//! tensor with the columns in signature order. Inputs may come as binary tensors (see
//! `binary.rs`); answers are JSON, which tritonclient reads whatever it asked for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use flywheel_model::{InputColumn, Task, Value};
use serde::Deserialize;
use serde_json::{Value as Json_, json};

use crate::error::InferenceError;
use crate::serving::{Loaded, Route, Served};
use crate::{AppState, DeployerError};

type Reply = std::result::Result<Json<Json_>, InferenceError>;
type InferReply = std::result::Result<axum::response::Response, InferenceError>;

/// The routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route(
            "/v2/health/live",
            get(|| async { Json(json!({"live": true})) }),
        )
        .route("/v2/health/ready", get(server_ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(model_metadata_version),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready_version),
        )
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(infer_version),
        )
        .route("/v1/deployments/{name}/predict", post(predict_records))
}

async fn server_metadata() -> Json<Json_> {
    Json(
        json!({"name": "flywheel-deployer", "version": env!("CARGO_PKG_VERSION"), "extensions": []}),
    )
}

async fn server_ready(
    State(state): State<AppState>,
) -> std::result::Result<Json<Json_>, InferenceError> {
    state
        .bus
        .check_ready()
        .await
        .map_err(|e| DeployerError::NotReady(format!("not ready: {e}")))?;
    Ok(Json(json!({"ready": true})))
}

fn not_found(name: &str) -> InferenceError {
    DeployerError::NotFound(format!("model {name} not found")).into()
}

/// The stable version, or a given one (stable or candidate).
fn loaded(
    state: &AppState,
    name: &str,
    version: Option<&str>,
) -> std::result::Result<Arc<Loaded>, InferenceError> {
    let stable = state.serving.get(name).ok_or_else(|| not_found(name))?;
    let Some(version) = version else {
        return Ok(stable);
    };
    version
        .parse::<u32>()
        .ok()
        .and_then(|v| state.serving.version(name, v))
        .ok_or_else(|| {
            DeployerError::NotFound(format!(
                "version {version} of {name} is not served (serving {})",
                stable.version
            ))
            .into()
        })
}

/// Where a request goes: a named version, or the stable/candidate split.
fn route(
    state: &AppState,
    name: &str,
    version: Option<&str>,
) -> std::result::Result<Route, InferenceError> {
    match version {
        Some(_) => Ok(Route {
            primary: loaded(state, name, version)?,
            primary_stats: None,
            shadow: None,
        }),
        None => state.serving.route(name).ok_or_else(|| not_found(name)),
    }
}

/// The built-in model of a loaded version; other flavors have no named inputs.
fn flywheel_model(loaded: &Loaded) -> std::result::Result<&flywheel_model::Model, InferenceError> {
    match &loaded.served {
        Served::Flywheel(model) => Ok(model),
        Served::Onnx(_) => Err(invalid(format!(
            "{} is an ONNX model: send one [n, k] tensor to /v2/models/{}/infer",
            loaded.deployment, loaded.deployment
        ))),
    }
}

/// Predicts rows with the routed version; a shadow copy predicts too, its answers only logged.
fn predict_routed(
    state: &AppState,
    route: &Route,
    id: &str,
    rows: &[Vec<Value>],
    started: Instant,
) -> std::result::Result<Vec<flywheel_model::Prediction>, InferenceError> {
    let predictions: Vec<flywheel_model::Prediction> = rows
        .iter()
        .map(|row| flywheel_model(&route.primary).map(|m| m.predict(row)))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    let elapsed = route.answered(started);
    crate::logs::log(
        state,
        &route.primary,
        id,
        rows,
        &predictions,
        elapsed,
        false,
    );
    if let Some(shadow) = &route.shadow
        && let Served::Flywheel(model) = &shadow.loaded.served
    {
        let shadow_started = Instant::now();
        let mirrored: Result<Vec<_>, _> = rows.iter().map(|row| model.predict(row)).collect();
        let shadow_elapsed = shadow_started.elapsed();
        shadow.stats.record(
            u64::try_from(shadow_elapsed.as_micros()).unwrap_or(u64::MAX),
            mirrored.is_err(),
        );
        if let Ok(mirrored) = mirrored {
            for (ours, theirs) in predictions.iter().zip(&mirrored) {
                shadow.compare(same_prediction(ours, theirs));
            }
            crate::logs::log(
                state,
                &shadow.loaded,
                id,
                rows,
                &mirrored,
                shadow_elapsed,
                true,
            );
        }
    }
    Ok(predictions)
}

/// Whether a mirrored answer is the serving one's: same label, or a value within 1e-9.
fn same_prediction(a: &flywheel_model::Prediction, b: &flywheel_model::Prediction) -> bool {
    match (&a.label, &b.label) {
        (Some(x), Some(y)) => x == y,
        _ => (a.value - b.value).abs() <= 1e-9 * a.value.abs().max(1.0),
    }
}

fn metadata(loaded: &Loaded) -> Json_ {
    if let Served::Onnx(model) = &loaded.served
        && loaded.signature.inputs.is_empty()
    {
        return json!({
            "name": loaded.deployment,
            "versions": [loaded.version.to_string()],
            "platform": "onnx_onnxv1",
            "inputs": [{"name": model.input_name(), "datatype": "FP32", "shape": [-1, model.width()]}],
            "outputs": model.output_names().iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
        });
    }
    let meta = |specs: &[flywheel_events::payloads::TensorSpec]| -> Vec<Json_> {
        specs
            .iter()
            .map(|s| json!({"name": s.name, "datatype": s.datatype, "shape": s.shape}))
            .collect()
    };
    json!({
        "name": loaded.deployment,
        "versions": [loaded.version.to_string()],
        "platform": "flywheel",
        "inputs": meta(&loaded.signature.inputs),
        "outputs": meta(&loaded.signature.outputs),
    })
}

async fn model_metadata(State(state): State<AppState>, Path(name): Path<String>) -> Reply {
    let loaded = loaded(&state, &name, None)?;
    Ok(Json(metadata(&loaded)))
}

async fn model_metadata_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Reply {
    let loaded = loaded(&state, &name, Some(&version))?;
    Ok(Json(metadata(&loaded)))
}

async fn model_ready(State(state): State<AppState>, Path(name): Path<String>) -> Reply {
    loaded(&state, &name, None)?;
    Ok(Json(json!({"name": name, "ready": true})))
}

async fn model_ready_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Reply {
    loaded(&state, &name, Some(&version))?;
    Ok(Json(json!({"name": name, "ready": true})))
}

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<RequestInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestOutput>>,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Json_>>,
}

#[derive(Deserialize)]
struct RequestInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Json_>>,
    #[serde(default)]
    data: Option<Json_>,
}

/// Parses a request, JSON or JSON header + binary tensors.
fn parse_request(
    headers: &HeaderMap,
    body: &[u8],
) -> std::result::Result<InferRequest, InferenceError> {
    let header_length = headers
        .get("inference-header-content-length")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| invalid("Inference-Header-Content-Length must be a number"))
        })
        .transpose()?;
    let Some(length) = header_length else {
        return serde_json::from_slice(body)
            .map_err(|e| invalid(format!("invalid inference request: {e}")));
    };
    if length > body.len() {
        return Err(invalid(format!(
            "Inference-Header-Content-Length {length} exceeds the body ({} bytes)",
            body.len()
        )));
    }
    let (header, mut tail) = body.split_at(length);
    let mut request: InferRequest = serde_json::from_slice(header)
        .map_err(|e| invalid(format!("invalid inference request: {e}")))?;
    for input in &mut request.inputs {
        let size = input
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
            .and_then(Json_::as_u64);
        let Some(size) = size else { continue };
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > tail.len() {
            return Err(invalid(format!(
                "input {}: binary_data_size {size} exceeds the {} bytes left",
                input.name,
                tail.len()
            )));
        }
        let (bytes, rest) = tail.split_at(size);
        tail = rest;
        let elements =
            crate::binary::decode(&input.datatype, bytes, &input.name).map_err(invalid)?;
        input.data = Some(Json_::Array(elements));
    }
    if !tail.is_empty() {
        return Err(invalid(format!(
            "{} bytes of binary data belong to no input",
            tail.len()
        )));
    }
    Ok(request)
}

#[derive(Deserialize)]
struct RequestOutput {
    name: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Json_>>,
}

fn invalid(message: impl Into<String>) -> InferenceError {
    DeployerError::Invalid(message.into()).into()
}

/// A tensor's elements, flattened row-major.
fn elements_of(input: &RequestInput) -> std::result::Result<Vec<Json_>, InferenceError> {
    let data = input
        .data
        .as_ref()
        .ok_or_else(|| invalid(format!("input {}: no data", input.name)))?;
    let mut out = Vec::new();
    flatten(data, &mut out);
    Ok(out)
}

fn flatten(value: &Json_, out: &mut Vec<Json_>) {
    match value {
        Json_::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other.clone()),
    }
}

const NUMERIC: [&str; 11] = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32",
    "FP64",
];

/// One tensor element as a model value, checked against the tensor's datatype.
fn element(
    datatype: &str,
    value: &Json_,
    input: &str,
) -> std::result::Result<Value, InferenceError> {
    match (datatype, value) {
        ("BYTES", Json_::String(s)) => Ok(Value::Text(s.clone())),
        ("BOOL", Json_::Bool(b)) => Ok(Value::Number(f64::from(u8::from(*b)))),
        (dt, Json_::Number(n)) if NUMERIC.contains(&dt) => n
            .as_f64()
            .map(Value::Number)
            .ok_or_else(|| invalid(format!("input {input}: {n} is not a number"))),
        (dt, Json_::Null) if dt.starts_with("FP") => Ok(Value::Missing),
        (dt, other) => Err(invalid(format!(
            "input {input}: {other} is not a {dt} element"
        ))),
    }
}

/// Rows (in input-column order) from the request's tensors.
fn rows(
    loaded: &Loaded,
    inputs: &[RequestInput],
) -> std::result::Result<Vec<Vec<Value>>, InferenceError> {
    let columns = &flywheel_model(loaded)?.inputs;
    let tensor =
        |input: &RequestInput| -> std::result::Result<(Vec<Json_>, Vec<usize>), InferenceError> {
            if !NUMERIC.contains(&input.datatype.as_str()) && input.datatype != "BYTES" {
                return Err(invalid(format!(
                    "input {}: datatype {} is not supported",
                    input.name, input.datatype
                )));
            }
            let shape: Vec<usize> = input
                .shape
                .iter()
                .map(|d| {
                    usize::try_from(*d).map_err(|_| {
                        invalid(format!(
                            "input {}: negative dimension in {:?}",
                            input.name, input.shape
                        ))
                    })
                })
                .collect::<Result<_, _>>()?;
            let data = elements_of(input)?;
            let expected: usize = shape.iter().product();
            if data.len() != expected {
                return Err(invalid(format!(
                    "input {}: shape {:?} holds {expected} elements, data has {}",
                    input.name,
                    input.shape,
                    data.len()
                )));
            }
            Ok((data, shape))
        };
    // One [n, k] tensor whose name is not a column: the columns in signature order.
    if inputs.len() == 1 && !columns.iter().any(|c| c.name() == inputs[0].name) {
        let input = &inputs[0];
        let (data, shape) = tensor(input)?;
        if shape.len() != 2 || shape[1] != columns.len() {
            return Err(invalid(format!(
                "input {}: expected shape [n, {}] (columns {:?}) or one tensor per column",
                input.name,
                columns.len(),
                columns.iter().map(InputColumn::name).collect::<Vec<_>>()
            )));
        }
        return data
            .chunks(columns.len())
            .map(|row| {
                row.iter()
                    .map(|v| element(&input.datatype, v, &input.name))
                    .collect()
            })
            .collect();
    }
    let mut by_column = Vec::with_capacity(columns.len());
    let mut n = None;
    for column in columns {
        let input = inputs
            .iter()
            .find(|i| i.name == column.name())
            .ok_or_else(|| invalid(format!("missing input {}", column.name())))?;
        let (data, shape) = tensor(input)?;
        if shape.len() > 2 || (shape.len() == 2 && shape[1] != 1) {
            return Err(invalid(format!(
                "input {}: expected shape [n] or [n, 1], got {:?}",
                input.name, input.shape
            )));
        }
        if matches!(column, InputColumn::Numeric { .. }) && input.datatype == "BYTES" {
            return Err(invalid(format!(
                "input {}: a numeric input, got BYTES",
                input.name
            )));
        }
        if *n.get_or_insert(data.len()) != data.len() {
            return Err(invalid("inputs disagree on the batch size"));
        }
        by_column.push(
            data.iter()
                .map(|v| element(&input.datatype, v, &input.name))
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    if let Some(extra) = inputs
        .iter()
        .find(|i| !columns.iter().any(|c| c.name() == i.name))
    {
        return Err(invalid(format!("unknown input {}", extra.name)));
    }
    let n = n.unwrap_or(0);
    Ok((0..n)
        .map(|r| by_column.iter().map(|c| c[r].clone()).collect())
        .collect())
}

/// Predictions as output tensors.
fn outputs(
    loaded: &Loaded,
    predictions: &[flywheel_model::Prediction],
) -> std::result::Result<Vec<Json_>, InferenceError> {
    let model = flywheel_model(loaded)?;
    let n = predictions.len();
    let prediction = match &model.task {
        Task::Classification { .. } => {
            json!({"name": "prediction", "datatype": "BYTES", "shape": [n],
            "data": predictions.iter().map(|p| p.label.clone().unwrap_or_default()).collect::<Vec<_>>()})
        }
        Task::Regression => json!({"name": "prediction", "datatype": "FP64", "shape": [n],
            "data": predictions.iter().map(|p| p.value).collect::<Vec<_>>()}),
        Task::Clustering => json!({"name": "prediction", "datatype": "INT64", "shape": [n],
            "data": predictions.iter().map(|p| p.value as i64).collect::<Vec<_>>()}),
    };
    let mut out = vec![prediction];
    if let Task::Classification { classes } = &model.task {
        out.push(
            json!({"name": "probabilities", "datatype": "FP64", "shape": [n, classes.len()],
            "data": predictions.iter().flat_map(|p| p.probabilities.clone()).collect::<Vec<_>>()}),
        );
    }
    Ok(out)
}

/// Counts and times one request of the version that answered it; a server-side failure is
/// logged too, so the monitor sees the error rate.
fn observe<T>(
    state: &AppState,
    loaded: &Loaded,
    started: Instant,
    reply: &std::result::Result<T, InferenceError>,
) {
    let outcome = match reply {
        Ok(_) => "ok",
        Err(e) if e.0.is_client_error() => "client_error",
        Err(e) => {
            crate::logs::log_failure(state, loaded, started.elapsed(), &e.0.to_string());
            "server_error"
        }
    };
    let (deployment, version) = (loaded.deployment.clone(), loaded.version.to_string());
    metrics::histogram!("flywheel_deployer_request_duration_seconds",
        "deployment" => deployment.clone(), "version" => version.clone())
    .record(started.elapsed().as_secs_f64());
    metrics::counter!("flywheel_deployer_requests_total",
        "deployment" => deployment, "version" => version, "outcome" => outcome)
    .increment(1);
}

async fn run_infer(
    state: AppState,
    name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> InferReply {
    let started = Instant::now();
    let route = route(&state, &name, version.as_deref())?;
    let reply = crate::logs::durably(
        &state,
        answer_infer(&state, &route, &headers, &body, started),
    )
    .await;
    observe(&state, &route.primary, started, &reply);
    reply
}

async fn answer_infer(
    state: &AppState,
    route: &Route,
    headers: &HeaderMap,
    body: &Bytes,
    started: Instant,
) -> InferReply {
    let loaded = route.primary.clone();
    let request = parse_request(headers, body)?;
    route.inject(started).await?;
    // An empty id (some clients send one) is no id: ids key the logs.
    let id = request
        .id
        .clone()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let mut tensors = match &loaded.served {
        Served::Onnx(model) => onnx_infer(state, route, model, &request, &id, started).await?,
        Served::Flywheel(_) => {
            let rows = rows(&loaded, &request.inputs)?;
            let predictions = predict_routed(state, route, &id, &rows, started)?;
            outputs(&loaded, &predictions)?
        }
    };
    if let Some(wanted) = &request.outputs {
        for w in wanted {
            if !tensors.iter().any(|t| t["name"] == w.name.as_str()) {
                return Err(invalid(format!("unknown output {}", w.name)));
            }
        }
        tensors.retain(|t| wanted.iter().any(|w| t["name"] == w.name.as_str()));
    }
    let binary = binary_outputs(&request, &tensors);
    let mut tail = Vec::new();
    for (tensor, binary) in tensors.iter_mut().zip(&binary) {
        if !binary {
            continue;
        }
        let datatype = tensor["datatype"].as_str().unwrap_or_default().to_owned();
        let mut elements = Vec::new();
        flatten(&tensor["data"], &mut elements);
        let bytes = crate::binary::encode(&datatype, &elements)
            .map_err(|e| DeployerError::Load(format!("output {}: {e}", tensor["name"])))?;
        if let Some(object) = tensor.as_object_mut() {
            object.remove("data");
            object.insert(
                "parameters".into(),
                json!({"binary_data_size": bytes.len()}),
            );
        }
        tail.extend_from_slice(&bytes);
    }
    let answer = json!({
        "model_name": loaded.deployment,
        "model_version": loaded.version.to_string(),
        "id": id,
        "outputs": tensors,
    });
    if !binary.contains(&true) {
        return Ok(Json(answer).into_response());
    }
    let mut body = serde_json::to_vec(&answer).map_err(|e| DeployerError::Load(e.to_string()))?;
    let header_length = body.len();
    body.extend_from_slice(&tail);
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/octet-stream".to_owned(),
            ),
            (
                axum::http::HeaderName::from_static("inference-header-content-length"),
                header_length.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

/// Which outputs go back as binary tensors: an output's own `binary_data` parameter, else the
/// request's `binary_data_output` (tritonclient asks for binary by default).
fn binary_outputs(request: &InferRequest, tensors: &[Json_]) -> Vec<bool> {
    let flag = |parameters: &Option<serde_json::Map<String, Json_>>, key: &str| {
        parameters
            .as_ref()
            .and_then(|p| p.get(key))
            .and_then(Json_::as_bool)
    };
    let all = flag(&request.parameters, "binary_data_output").unwrap_or(false);
    tensors
        .iter()
        .map(|t| {
            request
                .outputs
                .iter()
                .flatten()
                .find(|o| t["name"] == o.name.as_str())
                .and_then(|o| flag(&o.parameters, "binary_data"))
                .unwrap_or(all)
        })
        .collect()
}

async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> InferReply {
    run_infer(state, name, None, headers, body).await
}

async fn infer_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> InferReply {
    run_infer(state, name, Some(version), headers, body).await
}

/// `POST /v1/deployments/{name}/predict` with `[{"feature": value, ...}, ...]` (or
/// `{"instances": [...]}`).
async fn predict_records(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Reply {
    let started = Instant::now();
    let route = route(&state, &name, None)?;
    let reply = crate::logs::durably(&state, answer_records(&state, &route, &body, started)).await;
    observe(&state, &route.primary, started, &reply);
    reply
}

async fn answer_records(state: &AppState, route: &Route, body: &Bytes, started: Instant) -> Reply {
    let loaded = route.primary.clone();
    let parsed: Json_ =
        serde_json::from_slice(body).map_err(|e| invalid(format!("invalid JSON: {e}")))?;
    let records = match parsed {
        Json_::Array(items) => items,
        Json_::Object(mut o) => match o.remove("instances") {
            Some(Json_::Array(items)) => items,
            _ => {
                return Err(invalid(
                    "expected a list of records or {\"instances\": [...]}",
                ));
            }
        },
        _ => return Err(invalid("expected a list of records")),
    };
    let model = flywheel_model(&loaded)?;
    let mut rows = Vec::with_capacity(records.len());
    for (i, record) in records.iter().enumerate() {
        let object = record
            .as_object()
            .ok_or_else(|| invalid(format!("record {i} is not an object")))?;
        let row = model
            .inputs
            .iter()
            .map(|column| match object.get(column.name()) {
                None | Some(Json_::Null) => Value::Missing,
                Some(Json_::Number(n)) => n.as_f64().map_or(Value::Missing, Value::Number),
                Some(Json_::Bool(b)) => Value::Number(f64::from(u8::from(*b))),
                Some(Json_::String(s)) => Value::Text(s.clone()),
                Some(other) => Value::Text(other.to_string()),
            })
            .collect::<Vec<_>>();
        rows.push(row);
    }
    route.inject(started).await?;
    let id = uuid::Uuid::now_v7().to_string();
    let predictions = predict_routed(state, route, &id, &rows, started)?;
    let classes = match &flywheel_model(&loaded)?.task {
        Task::Classification { classes } => Some(classes),
        _ => None,
    };
    let answers: Vec<Json_> = predictions
        .iter()
        .map(|p| match (classes, &p.label) {
            (Some(classes), Some(label)) => {
                let probabilities: BTreeMap<&String, f64> = classes
                    .iter()
                    .zip(p.probabilities.iter().copied())
                    .collect();
                json!({"prediction": label, "probabilities": probabilities})
            }
            _ => json!({"prediction": p.value}),
        })
        .collect();
    Ok(Json(json!({
        "deployment": loaded.deployment,
        "model": loaded.model_name,
        "version": loaded.version,
        "id": id,
        "predictions": answers,
    })))
}

/// Runs an ONNX model on one `[n, k]` numeric tensor (off the async threads); outputs as the
/// graph names them.
async fn onnx_infer(
    state: &AppState,
    route: &Route,
    model: &flywheel_inference::OnnxModel,
    request: &InferRequest,
    id: &str,
    started: Instant,
) -> std::result::Result<Vec<Json_>, InferenceError> {
    let [input] = request.inputs.as_slice() else {
        return Err(invalid(format!(
            "this model takes one input ({}, [n, {}])",
            model.input_name(),
            model.width()
        )));
    };
    if !NUMERIC.contains(&input.datatype.as_str()) {
        return Err(invalid(format!(
            "input {}: a numeric datatype, got {}",
            input.name, input.datatype
        )));
    }
    let n = match input.shape.as_slice() {
        [n, k] if usize::try_from(*k).ok() == Some(model.width()) => {
            usize::try_from(*n).unwrap_or(0)
        }
        _ => {
            return Err(invalid(format!(
                "input {}: expected shape [n, {}], got {:?}",
                input.name,
                model.width(),
                input.shape
            )));
        }
    };
    let flat = elements_of(input)?;
    if flat.len() != n * model.width() {
        return Err(invalid(format!(
            "input {}: shape {:?} holds {} elements, data has {}",
            input.name,
            input.shape,
            n * model.width(),
            flat.len()
        )));
    }
    let data: Vec<f32> = flat
        .iter()
        .map(|v| match element(&input.datatype, v, &input.name)? {
            Value::Number(x) => Ok(x as f32),
            _ => Err(invalid(format!("input {}: numbers only", input.name))),
        })
        .collect::<Result<_, _>>()?;
    let mirror = route.shadow.as_ref().and_then(|c| match &c.loaded.served {
        Served::Onnx(m) if m.width() == model.width() => Some((c.clone(), m.clone(), data.clone())),
        _ => None,
    });
    let outputs = match run_onnx(model, n, data).await {
        Ok(outputs) => outputs,
        Err(flywheel_inference::OnnxError::Input(e)) => return Err(invalid(e)),
        Err(e) => {
            route.failed(started);
            return Err(DeployerError::Load(e.to_string()).into());
        }
    };
    let elapsed = route.answered(started);
    if let Some((candidate, shadow_model, data)) = mirror {
        let answered = outputs.clone();
        let state = state.clone();
        let (id, flat) = (id.to_owned(), flat.clone());
        // The mirror runs after the answer is on its way: it never slows the caller.
        tokio::spawn(async move {
            let shadow_started = Instant::now();
            let mirrored = run_onnx(&shadow_model, n, data).await;
            let shadow_elapsed = shadow_started.elapsed();
            candidate.stats.record(
                u64::try_from(shadow_elapsed.as_micros()).unwrap_or(u64::MAX),
                mirrored.is_err(),
            );
            if let Ok(mirrored) = mirrored {
                for row in 0..n {
                    candidate.compare(same_row(&answered, &mirrored, row, n));
                }
                let tensors = tensors_json(&mirrored);
                crate::logs::log_tensors(
                    &state,
                    &candidate.loaded,
                    &id,
                    &flat,
                    shadow_model.input_name(),
                    shadow_model.width(),
                    &tensors,
                    shadow_elapsed,
                    true,
                );
            }
        });
    }
    let tensors = tensors_json(&outputs);
    crate::logs::log_tensors(
        state,
        &route.primary,
        id,
        &flat,
        model.input_name(),
        model.width(),
        &tensors,
        elapsed,
        false,
    );
    Ok(tensors)
}

/// Runs an ONNX model: small requests on the calling thread (a handoff costs more than the
/// work), larger ones on the blocking pool so they never stall the async threads.
async fn run_onnx(
    model: &flywheel_inference::OnnxModel,
    rows: usize,
    data: Vec<f32>,
) -> Result<Vec<flywheel_inference::OutputTensor>, flywheel_inference::OnnxError> {
    const INLINE_VALUES: usize = 4096;
    if data.len() <= INLINE_VALUES {
        return model.run(rows, data);
    }
    let runner = model.clone();
    tokio::task::spawn_blocking(move || runner.run(rows, data))
        .await
        .unwrap_or_else(|e| Err(flywheel_inference::OnnxError::Run(format!("panicked: {e}"))))
}

/// Whether row `row` of two runs' outputs agree: labels exactly, numbers within 1e-6.
fn same_row(
    a: &[flywheel_inference::OutputTensor],
    b: &[flywheel_inference::OutputTensor],
    row: usize,
    rows: usize,
) -> bool {
    use flywheel_inference::OutputData as D;
    fn slice<T>(v: &[T], row: usize, rows: usize) -> &[T] {
        let each = v.len() / rows.max(1);
        &v[(row * each).min(v.len())..((row + 1) * each).min(v.len())]
    }
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-6 * x.abs().max(1.0);
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (&x.data, &y.data) {
            (D::I64(p), D::I64(q)) => slice(p, row, rows) == slice(q, row, rows),
            (D::Strings(p), D::Strings(q)) => slice(p, row, rows) == slice(q, row, rows),
            (D::F32(p), D::F32(q)) => slice(p, row, rows)
                .iter()
                .zip(slice(q, row, rows))
                .all(|(u, v)| close(f64::from(*u), f64::from(*v))),
            (D::F64(p), D::F64(q)) => slice(p, row, rows)
                .iter()
                .zip(slice(q, row, rows))
                .all(|(u, v)| close(*u, *v)),
            _ => false,
        })
}

/// Output tensors in the protocol's JSON form.
fn tensors_json(outputs: &[flywheel_inference::OutputTensor]) -> Vec<Json_> {
    outputs
        .iter()
        .map(|o| {
            let data = match &o.data {
                flywheel_inference::OutputData::I64(v) => json!(v),
                flywheel_inference::OutputData::F32(v) => json!(v),
                flywheel_inference::OutputData::F64(v) => json!(v),
                flywheel_inference::OutputData::Strings(v) => json!(v),
            };
            json!({"name": o.name, "datatype": o.data.datatype(), "shape": o.shape, "data": data})
        })
        .collect()
}
