//! The prediction reader: an ordered JetStream consumer over `<prefix>.predictions.>` that
//! counts every `prediction.logged` into its deployment's open window. What it has counted is
//! checkpointed in the database — the last stream sequence and the open windows, together, and
//! together with each closed window's report — so a restart resumes right after the last
//! counted message: no window is lost and nothing is counted twice. One reader per monitor
//! database (scale-out gives it a leader, issue 10).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use flywheel_bus::StreamKind;
use flywheel_data::Profile;
use flywheel_events::Event;
use flywheel_events::payloads::PredictionLogged;
use flywheel_runtime::{CancellationToken, ServiceResult};
use futures::StreamExt;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, TransactionTrait};

use crate::schema::Checkpoints;
use crate::windows::{Reference, Window, evaluate};
use crate::{AppState, MonitorError, Result};

const READER: &str = "predictions";

/// How windows are cut and judged (`[service]` options).
#[derive(Debug, Clone)]
pub struct WindowConfig {
    /// `window_size`: predictions per window.
    pub size: u64,
    /// `window_seconds`: the longest a window stays open.
    pub max_age: Duration,
    /// `drift_share`: share of drifted features that makes the dataset drifted.
    pub drift_share: f64,
    /// `checkpoint_every`: predictions between checkpoints (besides one a second).
    pub checkpoint_every: u64,
}

type Key = (String, u32);

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Reads until shutdown, starting over after errors (NATS or database outages).
pub(crate) async fn run(
    state: AppState,
    config: WindowConfig,
    shutdown: CancellationToken,
) -> ServiceResult {
    let mut references = References::default();
    loop {
        match read(&state, &config, &mut references, &shutdown).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "prediction reader failed; resuming from the checkpoint");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// References by model version, loaded once (a missing one is looked up again later).
#[derive(Default)]
struct References(HashMap<(String, u32), Arc<Reference>>);

impl References {
    async fn get(&mut self, state: &AppState, model: &str, version: u32) -> Option<Arc<Reference>> {
        let key = (model.to_owned(), version);
        if let Some(reference) = self.0.get(&key) {
            return Some(reference.clone());
        }
        match load_reference(state, model, version).await {
            Ok(Some(reference)) => {
                let reference = Arc::new(reference);
                self.0.insert(key, reference.clone());
                Some(reference)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(model, version, error = %e, "reference profile not loaded");
                None
            }
        }
    }
}

/// The training dataset's profile and target of a model version, if the monitor knows them.
async fn load_reference(state: &AppState, model: &str, version: u32) -> Result<Option<Reference>> {
    let Some(training) = crate::catalog::training_data_in(&state.db, model, version).await? else {
        return Ok(None);
    };
    let stored = match crate::catalog::dataset(state, &training.dataset, &training.version).await {
        Ok(stored) => stored,
        Err(MonitorError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(uri) = stored.profile_uri else {
        return Ok(None);
    };
    let key = state
        .artifacts
        .key_of(&uri)
        .ok_or_else(|| MonitorError::Artifacts(format!("{uri} is outside the artifact store")))?;
    let bytes = state
        .artifacts
        .get(key)
        .await
        .map_err(|e| MonitorError::Artifacts(e.to_string()))?;
    let profile: Profile = serde_json::from_slice(&bytes)
        .map_err(|e| MonitorError::Artifacts(format!("profile {uri}: {e}")))?;
    Ok(Some(Reference {
        profile,
        target: training.target,
    }))
}

async fn load_checkpoint(state: &AppState) -> Result<(u64, BTreeMap<Key, Window>)> {
    let row = state
        .db
        .query_one(
            &Query::select()
                .columns([Checkpoints::Sequence, Checkpoints::Windows])
                .from(Checkpoints::Table)
                .and_where(Expr::col(Checkpoints::Reader).eq(READER))
                .to_owned(),
        )
        .await?;
    let Some(row) = row else {
        return Ok((0, BTreeMap::new()));
    };
    let sequence: i64 = row.try_get("", "sequence")?;
    let windows: Vec<Window> = serde_json::from_str(&row.try_get::<String>("", "windows")?)
        .map_err(|e| MonitorError::Invalid(format!("checkpoint: {e}")))?;
    Ok((
        u64::try_from(sequence).unwrap_or(0),
        windows
            .into_iter()
            .map(|w| ((w.deployment.clone(), w.version), w))
            .collect(),
    ))
}

async fn save_checkpoint<C: ConnectionTrait>(
    conn: &C,
    sequence: u64,
    windows: &BTreeMap<Key, Window>,
) -> Result<()> {
    let body = serde_json::to_string(&windows.values().collect::<Vec<_>>())
        .map_err(|e| MonitorError::Invalid(e.to_string()))?;
    let mut upsert = Query::insert();
    upsert
        .into_table(Checkpoints::Table)
        .columns([
            Checkpoints::Reader,
            Checkpoints::Sequence,
            Checkpoints::Windows,
            Checkpoints::UpdatedAt,
        ])
        .values([
            READER.into(),
            i64::try_from(sequence).unwrap_or(i64::MAX).into(),
            body.into(),
            now_millis().into(),
        ])
        .map_err(|e| MonitorError::Invalid(e.to_string()))?
        .on_conflict(
            OnConflict::column(Checkpoints::Reader)
                .update_columns([
                    Checkpoints::Sequence,
                    Checkpoints::Windows,
                    Checkpoints::UpdatedAt,
                ])
                .to_owned(),
        );
    conn.execute(&upsert).await?;
    Ok(())
}

/// Closes the windows that are done, each with its report, in one transaction with the
/// checkpoint.
async fn close_done(
    state: &AppState,
    config: &WindowConfig,
    references: &mut References,
    sequence: u64,
    windows: &mut BTreeMap<Key, Window>,
) -> Result<()> {
    let now = now_millis();
    let max_age = i64::try_from(config.max_age.as_millis()).unwrap_or(i64::MAX);
    let done: Vec<Key> = windows
        .iter()
        .filter(|(_, w)| w.is_full(config.size, max_age, now))
        .map(|(k, _)| k.clone())
        .collect();
    if done.is_empty() {
        return Ok(());
    }
    let mut closing = Vec::new();
    for key in &done {
        if let Some(window) = windows.remove(key) {
            let reference = references.get(state, &window.model, window.version).await;
            let evaluation = evaluate(&window, reference.as_deref(), config.drift_share);
            closing.push((window, evaluation));
        }
    }
    let txn = state.db.begin().await?;
    for (window, evaluation) in &closing {
        crate::reports::close(&txn, state, window, evaluation, now).await?;
    }
    save_checkpoint(&txn, sequence, windows).await?;
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    Ok(())
}

async fn read(
    state: &AppState,
    config: &WindowConfig,
    references: &mut References,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let (mut sequence, mut windows) = load_checkpoint(state).await.map_err(|e| e.to_string())?;
    let subjects = state.bus.subjects();
    let stream = state
        .bus
        .jetstream()
        .get_stream(subjects.stream(StreamKind::Predictions))
        .await
        .map_err(|e| e.to_string())?;
    let deliver_policy = if sequence == 0 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: sequence + 1,
        }
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: format!("{}.predictions.>", subjects.prefix()),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut unsaved = 0u64;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                save_checkpoint(&state.db, sequence, &windows).await.map_err(|e| e.to_string())?;
                return Ok(());
            }
            _ = tick.tick() => {
                close_done(state, config, references, sequence, &mut windows).await.map_err(|e| e.to_string())?;
                if unsaved > 0 {
                    save_checkpoint(&state.db, sequence, &windows).await.map_err(|e| e.to_string())?;
                    unsaved = 0;
                }
            }
            next = messages.next() => {
                let Some(message) = next else {
                    return Err("the prediction stream ended".into());
                };
                let message = message.map_err(|e| e.to_string())?;
                let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
                if seq <= sequence {
                    continue;
                }
                let content_type = message.headers.as_ref().and_then(|h| h.get("Content-Type")).map(|v| v.as_str().to_owned());
                let decoded = flywheel_events::decode_with_header(&message.payload, content_type.as_deref())
                    .map_err(|e| e.to_string())
                    .and_then(|envelope| match envelope.event {
                        Event::PredictionLogged(p) => Ok(p),
                        other => Err(format!("expected prediction.logged, got {}", other.event_type())),
                    });
                match decoded {
                    Ok(prediction) => count(state, references, &mut windows, &prediction, seq).await,
                    Err(reason) => {
                        metrics::counter!("flywheel_monitor_predictions_rejected_total").increment(1);
                        if let Err(e) = state.bus.dead_letter(&message, StreamKind::Predictions, "monitor-reader", &reason).await {
                            return Err(format!("cannot dead-letter a bad prediction log: {e}"));
                        }
                    }
                }
                metrics::counter!("flywheel_monitor_predictions_total").increment(1);
                sequence = seq;
                unsaved += 1;
                let size = config.size;
                if windows.values().any(|w| w.count >= size) {
                    close_done(state, config, references, sequence, &mut windows).await.map_err(|e| e.to_string())?;
                    unsaved = 0;
                } else if unsaved >= config.checkpoint_every {
                    save_checkpoint(&state.db, sequence, &windows).await.map_err(|e| e.to_string())?;
                    unsaved = 0;
                }
            }
        }
    }
}

/// Counts a prediction into its deployment's window (opening one if needed).
async fn count(
    state: &AppState,
    references: &mut References,
    windows: &mut BTreeMap<Key, Window>,
    prediction: &PredictionLogged,
    sequence: u64,
) {
    let now = now_millis();
    let key = (prediction.deployment.clone(), prediction.version);
    let reference = references
        .get(state, &prediction.model, prediction.version)
        .await;
    let window = windows
        .entry(key)
        .or_insert_with(|| Window::open(prediction, reference.as_deref(), sequence, now));
    window.add(prediction, reference.as_deref(), now);
}
