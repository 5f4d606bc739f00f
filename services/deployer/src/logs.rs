//! Prediction logs: every answered row becomes `prediction.logged` on the PREDICTIONS stream,
//! published through a bounded queue. `buffered` (default): off the request path; when the
//! queue is full, logs are dropped and counted (`flywheel_deployer_prediction_logs_dropped_total`)
//! rather than slowing serving, and a crash loses what is queued. `acked`: the answer waits for
//! JetStream's acknowledgement of its rows' logs (503 when they cannot be stored), and a row's
//! log id comes from the deployment and request id, so a client's retry is stored once.

use std::collections::BTreeMap;
use std::time::Duration;

use flywheel_events::payloads::PredictionLogged;
use flywheel_events::{Envelope, Event};
use flywheel_model::{Prediction, Value};
use futures::StreamExt;
use sha2::Digest;
use tokio::sync::{mpsc, oneshot};

use crate::AppState;
use crate::serving::Loaded;

/// One log on its way to the publisher, with whom to tell once it is stored (acked mode).
pub(crate) type Queued = (Envelope, Option<oneshot::Sender<bool>>);

/// How prediction logs reach the bus (`service.prediction_log_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogMode {
    /// Off the request path: fastest; a crash loses what is queued.
    Buffered,
    /// The answer waits until its logs are stored: an answered request is a logged one.
    Acked,
}

impl std::str::FromStr for LogMode {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "buffered" => Ok(Self::Buffered),
            "acked" => Ok(Self::Acked),
            other => Err(format!("`{other}` is neither `buffered` nor `acked`")),
        }
    }
}

/// Queue between request handlers and the publisher.
#[derive(Debug, Clone)]
pub(crate) struct LogQueue {
    sender: mpsc::Sender<Queued>,
    mode: LogMode,
}

impl LogQueue {
    /// A queue of `capacity` logs, and its receiving end for [`publish`].
    pub(crate) fn new(capacity: usize, mode: LogMode) -> (Self, mpsc::Receiver<Queued>) {
        let (sender, receiver) = mpsc::channel(capacity);
        (Self { sender, mode }, receiver)
    }
}

tokio::task_local! {
    /// The acknowledgements a request handler waits for before answering (acked mode).
    static AWAITED: std::cell::RefCell<Vec<oneshot::Receiver<bool>>>;
}

/// Runs a request handler; in acked mode its answer stands only once every log it queued is
/// stored, else it becomes a 503 (the client retries; the logs' ids make the retry one log).
pub(crate) async fn durably<T>(
    state: &AppState,
    handler: impl Future<Output = Result<T, crate::error::InferenceError>>,
) -> Result<T, crate::error::InferenceError> {
    if state.logs.mode == LogMode::Buffered {
        return handler.await;
    }
    let (reply, awaited) = AWAITED
        .scope(std::cell::RefCell::default(), async {
            let reply = handler.await;
            (reply, AWAITED.with(std::cell::RefCell::take))
        })
        .await;
    let answer = reply?;
    for stored in awaited {
        if stored.await != Ok(true) {
            metrics::counter!("flywheel_deployer_prediction_logs_unstored_total").increment(1);
            return Err(crate::DeployerError::NotReady(
                "the prediction was made but its log could not be stored; retry with the same id"
                    .into(),
            )
            .into());
        }
    }
    Ok(answer)
}

fn value(v: &Value) -> serde_json::Value {
    match v {
        Value::Number(n) => serde_json::json!(n),
        Value::Text(t) => serde_json::json!(t),
        Value::Missing => serde_json::Value::Null,
    }
}

/// The `prediction.logged` of one row answered (or failed) by a loaded version.
fn logged(
    loaded: &Loaded,
    request_id: String,
    inputs: BTreeMap<String, serde_json::Value>,
    outputs: BTreeMap<String, serde_json::Value>,
    latency: Duration,
    shadow: bool,
    error: Option<String>,
) -> Event {
    Event::PredictionLogged(PredictionLogged {
        deployment: loaded.deployment.clone(),
        model: loaded.model_name.clone(),
        version: loaded.version,
        request_id,
        inputs,
        outputs,
        latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        shadow,
        error,
    })
}

/// A row's request id: the request's own for one row, `<id>/<row>` for several.
fn row_request_id(request_id: &str, rows: usize, row: usize) -> String {
    if rows == 1 {
        request_id.to_owned()
    } else {
        format!("{request_id}/{row}")
    }
}

/// Whether this request's predictions are logged (`service.prediction_log_sample_rate`).
fn sampled(state: &AppState) -> bool {
    let rate = state.log_sample_rate;
    rate >= 1.0 || (rate > 0.0 && rand::random::<f64>() < rate)
}

/// Queues one `prediction.logged` per row.
pub(crate) fn log(
    state: &AppState,
    loaded: &Loaded,
    request_id: &str,
    rows: &[Vec<Value>],
    predictions: &[Prediction],
    latency: Duration,
    shadow: bool,
) {
    if !sampled(state) {
        return;
    }
    let crate::serving::Served::Flywheel(model) = &loaded.served else {
        return;
    };
    for (i, (row, prediction)) in rows.iter().zip(predictions).enumerate() {
        let inputs: BTreeMap<String, serde_json::Value> = model
            .inputs
            .iter()
            .zip(row)
            .map(|(c, v)| (c.name().to_owned(), value(v)))
            .collect();
        let mut outputs = BTreeMap::new();
        outputs.insert(
            "prediction".to_owned(),
            match &prediction.label {
                Some(label) => serde_json::json!(label),
                None => serde_json::json!(prediction.value),
            },
        );
        if !prediction.probabilities.is_empty() {
            outputs.insert(
                "probabilities".to_owned(),
                serde_json::json!(prediction.probabilities),
            );
        }
        let request_id = row_request_id(request_id, rows.len(), i);
        queue(
            state,
            logged(loaded, request_id, inputs, outputs, latency, shadow, None),
        );
    }
}

/// Queues a `prediction.logged` for a request that failed on the server's side (sampled like
/// the answered ones).
pub(crate) fn log_failure(state: &AppState, loaded: &Loaded, latency: Duration, error: &str) {
    if !sampled(state) {
        return;
    }
    let request_id = uuid::Uuid::now_v7().to_string();
    queue(
        state,
        logged(
            loaded,
            request_id,
            BTreeMap::new(),
            BTreeMap::new(),
            latency,
            false,
            Some(error.to_owned()),
        ),
    );
}

fn queue(state: &AppState, event: Event) {
    // Logs are in their deployment's project, so the monitor's reports and alerts are too.
    let project = match &event {
        Event::PredictionLogged(log) => state.exposure.project(&log.deployment),
        _ => flywheel_runtime::scope::DEFAULT_PROJECT.to_owned(),
    };
    let mut envelope = Envelope::new(crate::SERVICE, project, event);
    let mut stored = None;
    if state.logs.mode == LogMode::Acked {
        if let Event::PredictionLogged(log) = &envelope.event {
            envelope.id = retry_safe_id(log);
        }
        let (told, awaited) = oneshot::channel();
        // Outside a handler (a shadow answer after the reply) nobody waits.
        let _ = AWAITED.try_with(|list| list.borrow_mut().push(awaited));
        stored = Some(told);
    }
    // A full queue drops the log; in acked mode the dropped sender fails the request.
    if state.logs.sender.try_send((envelope, stored)).is_err() {
        metrics::counter!("flywheel_deployer_prediction_logs_dropped_total").increment(1);
    }
}

/// The same id for the same row of the same request to the same deployment, whichever version
/// or process answers it: JetStream's de-duplication then stores a retried request's log once.
fn retry_safe_id(log: &PredictionLogged) -> uuid::Uuid {
    let digest = sha2::Sha256::new()
        .chain_update(log.deployment.as_bytes())
        .chain_update([0])
        .chain_update(log.request_id.as_bytes())
        .chain_update([u8::from(log.shadow)])
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8: custom
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    uuid::Uuid::from_bytes(bytes)
}

/// Queues one `prediction.logged` per row of a tensor model: the input row under the input's
/// name, each output's row under its name.
#[allow(clippy::too_many_arguments)]
pub(crate) fn log_tensors(
    state: &AppState,
    loaded: &Loaded,
    request_id: &str,
    input: &[serde_json::Value],
    input_name: &str,
    width: usize,
    outputs: &[serde_json::Value],
    latency: Duration,
    shadow: bool,
) {
    if !sampled(state) {
        return;
    }
    let rows = input.len().checked_div(width).unwrap_or(0);
    for i in 0..rows {
        let mut inputs = BTreeMap::new();
        inputs.insert(
            input_name.to_owned(),
            serde_json::Value::Array(input[i * width..(i + 1) * width].to_vec()),
        );
        let mut per_row = BTreeMap::new();
        for output in outputs {
            let (Some(name), Some(data)) = (output["name"].as_str(), output["data"].as_array())
            else {
                continue;
            };
            let each = data.len() / rows;
            let slice = &data[i * each..(i + 1) * each];
            let value = if each == 1 {
                slice[0].clone()
            } else {
                serde_json::Value::Array(slice.to_vec())
            };
            per_row.insert(name.to_owned(), value);
        }
        let request_id = row_request_id(request_id, rows, i);
        queue(
            state,
            logged(loaded, request_id, inputs, per_row, latency, shadow, None),
        );
    }
}

/// Publishes queued logs, up to 64 at once; on shutdown, what is queued still goes out.
pub(crate) async fn publish(
    bus: flywheel_bus::Bus,
    mut queue: mpsc::Receiver<Queued>,
    shutdown: flywheel_runtime::CancellationToken,
) -> flywheel_runtime::ServiceResult {
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut closing = false;
    loop {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            next = queue.recv(), if in_flight.len() < 64 => match next {
                Some((envelope, stored)) => {
                    let bus = bus.clone();
                    in_flight.push(async move {
                        let published = bus.publish(&envelope).await;
                        if let Err(e) = &published {
                            metrics::counter!("flywheel_deployer_prediction_logs_dropped_total")
                                .increment(1);
                            tracing::debug!(error = %e, "prediction log not published");
                        }
                        if let Some(stored) = stored {
                            let _ = stored.send(published.is_ok());
                        }
                    });
                }
                None => break,
            },
            () = shutdown.cancelled(), if !closing => {
                closing = true;
                queue.close();
            }
        }
    }
    while in_flight.next().await.is_some() {}
    Ok(())
}
