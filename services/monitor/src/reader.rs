//! The prediction reader: an ordered JetStream consumer over the PREDICTIONS stream that counts
//! every `prediction.logged` into its deployment's open window and joins `feedback.received`
//! to the prediction it is about. What it has counted is
//! checkpointed in the database — the last stream sequence and the open windows, together, and
//! together with each closed window's report — so a restart resumes right after the last
//! counted message: no window is lost and nothing is counted twice. With several replicas each
//! reader counts one partition of the deployments (`crate::partitions`), under a lease that
//! fences its checkpoints.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use flywheel_bus::StreamKind;
use flywheel_data::Profile;
use flywheel_events::Event;
use flywheel_events::payloads::{FeedbackReceived, PredictionLogged};
use flywheel_runtime::{CancellationToken, ServiceResult};
use futures::StreamExt;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, TransactionTrait};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::baseline::BaselineRows;
use crate::joins::{JoinStore, JoinStoreConfig};
use crate::performance::PerformanceWindow;
use crate::schema::Checkpoints;
use crate::settings::{MonitoringSettings, ReferenceChoice};
use crate::windows::{PREDICTION, Reference, Span, Window, evaluate};
use crate::{AppState, MonitorError, Result};

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
    /// `performance_window`: labelled outcomes per performance window.
    pub performance_size: u64,
    /// `performance_margin`: how far production may fall short of training (accuracy points,
    /// or RMSE as a share) before the `performance` alert.
    pub performance_margin: f64,
    /// `feedback_pending_max`: predictions remembered while awaiting feedback.
    pub pending_max: usize,
    /// The durable, sampled join store.
    pub join_store: JoinStoreConfig,
}

type Key = (String, u32);

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Which deployments a reader counts, and the lease under which it does.
#[derive(Debug, Clone)]
pub(crate) struct Assignment {
    /// The partition.
    pub(crate) partition: crate::partitions::Partition,
    /// The lease its checkpoints are fenced by.
    pub(crate) lease: flywheel_db::leases::Held,
}

impl Assignment {
    /// The checkpoint's name (one partition keeps the name a single reader always had).
    fn checkpoint(&self) -> String {
        let p = self.partition;
        if p.count == 1 {
            "predictions".to_owned()
        } else {
            format!("predictions-{}-of-{}", p.index, p.count)
        }
    }
}

/// Reads one partition until shutdown, starting over after errors (NATS or database
/// outages); ends when the partition's lease is lost.
pub(crate) async fn run(
    state: AppState,
    config: WindowConfig,
    assignment: Assignment,
    shutdown: CancellationToken,
) -> ServiceResult {
    let mut references = References::default();
    loop {
        match read(&state, &config, &assignment, &mut references, &shutdown).await {
            Ok(()) => return Ok(()),
            Err(e) if e.starts_with(LEASE_LOST) => {
                tracing::warn!(
                    partition = assignment.partition.index,
                    "partition lease lost; stopped counting it"
                );
                return Ok(());
            }
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

/// Seconds before a reference that could not be found is looked up again.
const MISSING_RETRY_MS: i64 = 5_000;

/// A deployment's settings and the references of its versions.
struct DeploymentReferences {
    settings: Arc<MonitoringSettings>,
    versions: HashMap<u32, Arc<Reference>>,
    /// Versions whose reference is unknown, with when to look again.
    missing: HashMap<u32, i64>,
}

/// Settings and references by deployment and version, loaded once (a missing reference is
/// looked up again after a few seconds; new settings clear everything).
#[derive(Default)]
struct References {
    deployments: HashMap<String, DeploymentReferences>,
    generation: u64,
}

impl References {
    /// The deployment's settings and references, loading the settings on first use.
    async fn deployment(
        &mut self,
        state: &AppState,
        deployment: &str,
    ) -> Option<&mut DeploymentReferences> {
        let generation = state.generation.current();
        if generation != self.generation {
            self.deployments.clear();
            self.generation = generation;
        }
        if !self.deployments.contains_key(deployment) {
            let settings = match crate::settings::get(&state.db, deployment).await {
                Ok(settings) => settings,
                Err(e) => {
                    tracing::warn!(deployment, error = %e, "monitoring settings not loaded");
                    return None;
                }
            };
            self.deployments.insert(
                deployment.to_owned(),
                DeploymentReferences {
                    settings: Arc::new(settings),
                    versions: HashMap::new(),
                    missing: HashMap::new(),
                },
            );
        }
        self.deployments.get_mut(deployment)
    }

    /// A deployment's settings (the defaults if they cannot be loaded).
    async fn settings(&mut self, state: &AppState, deployment: &str) -> Arc<MonitoringSettings> {
        self.deployment(state, deployment)
            .await
            .map(|d| d.settings.clone())
            .unwrap_or_default()
    }

    async fn get(
        &mut self,
        state: &AppState,
        deployment: &str,
        model: &str,
        version: u32,
    ) -> Option<Arc<Reference>> {
        let entry = self.deployment(state, deployment).await?;
        // Looked up per prediction: no allocation (nor clock read) on a hit.
        if let Some(reference) = entry.versions.get(&version) {
            return Some(reference.clone());
        }
        let now = now_millis();
        if entry
            .missing
            .get(&version)
            .is_some_and(|retry| now < *retry)
        {
            return None;
        }
        match load_reference(state, &entry.settings, deployment, model, version).await {
            Ok(Some(reference)) => {
                let reference = Arc::new(reference);
                entry.missing.remove(&version);
                entry.versions.insert(version, reference.clone());
                Some(reference)
            }
            Ok(None) => {
                entry.missing.insert(version, now + MISSING_RETRY_MS);
                None
            }
            Err(e) => {
                tracing::warn!(model, version, error = %e, "reference profile not loaded");
                entry.missing.insert(version, now + MISSING_RETRY_MS);
                None
            }
        }
    }

    /// Makes a baseline just built the version's reference.
    fn set(&mut self, deployment: &str, version: u32, reference: Reference) {
        if let Some(entry) = self.deployments.get_mut(deployment) {
            entry.missing.remove(&version);
            entry.versions.insert(version, Arc::new(reference));
        }
    }
}

/// A version's reference as its deployment's settings choose: the training dataset's profile
/// (default), a chosen dataset version's, or the stored profile of its production baseline.
async fn load_reference(
    state: &AppState,
    settings: &MonitoringSettings,
    deployment: &str,
    model: &str,
    version: u32,
) -> Result<Option<Reference>> {
    let training = crate::catalog::training_data_in(&state.db, model, version).await?;
    let target = training.as_ref().and_then(|t| t.target.clone());
    let (dataset, dataset_version) = match (&settings.reference, training) {
        (ReferenceChoice::Baseline { .. }, _) => {
            return Ok(crate::baseline::load(&state.db, deployment, version)
                .await?
                .map(|profile| Reference {
                    profile,
                    target: Some(PREDICTION.to_owned()),
                }));
        }
        (ReferenceChoice::Dataset { dataset, version }, _) => (dataset.clone(), version.clone()),
        (ReferenceChoice::Training, Some(training)) => (training.dataset, training.version),
        (ReferenceChoice::Training, None) => return Ok(None),
    };
    let Some(profile) = load_profile(state, &dataset, &dataset_version).await? else {
        return Ok(None);
    };
    Ok(Some(Reference { profile, target }))
}

/// A dataset version's stored profile, if the monitor knows it.
async fn load_profile(state: &AppState, dataset: &str, version: &str) -> Result<Option<Profile>> {
    let stored = match crate::catalog::dataset(state, dataset, version).await {
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
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| MonitorError::Artifacts(format!("profile {uri}: {e}")))
}

/// What the reader has counted, checkpointed together: open windows of predictions and of
/// labelled outcomes, and where the predictions still awaiting their feedback begin.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Counted {
    windows: Vec<Window>,
    performance: Vec<PerformanceWindow>,
    /// Stream sequence of the oldest prediction still awaiting feedback (0: none); a restart
    /// reads from there to rebuild them, counting nothing again.
    pending_from: u64,
    /// Production baselines being gathered.
    #[serde(default)]
    baselines: Vec<(Key, BaselineRows)>,
}

/// A prediction awaiting its ground truth.
#[derive(Debug)]
struct Pending {
    of: Arc<Identity>,
    predicted: Value,
    /// The probability of the last class, for binary classifiers (AUC).
    score: Option<f64>,
    sequence: u64,
    /// Whether the join store keeps it too (its ground truth is written there).
    kept: bool,
}

/// Whose prediction it was (shared by all of one deployment version's pending predictions).
#[derive(Debug, PartialEq)]
struct Identity {
    deployment: String,
    model: String,
    version: u32,
}

/// The reader's state.
#[derive(Debug, Default)]
struct ReaderState {
    /// Last stream sequence counted.
    sequence: u64,
    windows: BTreeMap<Key, Window>,
    performance: BTreeMap<Key, PerformanceWindow>,
    pending: HashMap<String, Pending>,
    /// The identity of each deployment's latest version.
    identities: HashMap<String, Arc<Identity>>,
    /// Production baselines being gathered, by deployment version.
    baselines: BTreeMap<Key, BaselineRows>,
    /// What goes into the join store with the next checkpoint.
    joins: JoinStore,
}

impl ReaderState {
    /// Remembers a prediction until its feedback comes; past `max`, the oldest tenth is
    /// forgotten at once (amortised, so memory stays bounded at little cost per prediction).
    fn remember(
        &mut self,
        mut prediction: PredictionLogged,
        sequence: u64,
        max: usize,
        kept: bool,
    ) {
        // A shadow answers under the serving version's request id; only the serving answer is
        // held to the ground truth.
        if prediction.shadow || prediction.error.is_some() {
            return;
        }
        let score = crate::performance::binary_score(&prediction.outputs);
        let Some(predicted) = prediction.outputs.remove(PREDICTION) else {
            return;
        };
        let of = match self.identities.get(prediction.deployment.as_str()) {
            Some(of) if of.version == prediction.version && of.model == prediction.model => {
                of.clone()
            }
            _ => {
                let of = Arc::new(Identity {
                    deployment: prediction.deployment.clone(),
                    model: prediction.model,
                    version: prediction.version,
                });
                self.identities.insert(prediction.deployment, of.clone());
                of
            }
        };
        self.pending.insert(
            prediction.request_id,
            Pending {
                of,
                predicted,
                score,
                sequence,
                kept,
            },
        );
        if self.pending.len() > max {
            let mut sequences: Vec<u64> = self.pending.values().map(|p| p.sequence).collect();
            let cut = (max / 10).min(sequences.len() - 1);
            let (_, cutoff, _) = sequences.select_nth_unstable(cut);
            let cutoff = *cutoff;
            self.pending.retain(|_, p| p.sequence > cutoff);
        }
    }

    /// Stream sequence of the oldest prediction awaiting feedback (0: none).
    fn pending_from(&self) -> u64 {
        self.pending.values().map(|p| p.sequence).min().unwrap_or(0)
    }

    fn checkpoint_body(&mut self) -> Result<String> {
        let counted = Counted {
            windows: self.windows.values().cloned().collect(),
            performance: self.performance.values().cloned().collect(),
            pending_from: self.pending_from(),
            baselines: self
                .baselines
                .iter()
                .map(|(k, b)| (k.clone(), b.clone()))
                .collect(),
        };
        serde_json::to_string(&counted).map_err(|e| MonitorError::Invalid(e.to_string()))
    }
}

async fn load_checkpoint(state: &AppState, checkpoint: &str) -> Result<(ReaderState, u64)> {
    let row = state
        .db
        .query_one(
            &Query::select()
                .columns([Checkpoints::Sequence, Checkpoints::Windows])
                .from(Checkpoints::Table)
                .and_where(Expr::col(Checkpoints::Reader).eq(checkpoint))
                .to_owned(),
        )
        .await?;
    let Some(row) = row else {
        return Ok((ReaderState::default(), 0));
    };
    let sequence: i64 = row.try_get("", "sequence")?;
    let counted: Counted = serde_json::from_str(&row.try_get::<String>("", "windows")?)
        .map_err(|e| MonitorError::Invalid(format!("checkpoint: {e}")))?;
    let reader = ReaderState {
        sequence: u64::try_from(sequence).unwrap_or(0),
        windows: counted
            .windows
            .into_iter()
            .map(|w| ((w.span.deployment.clone(), w.span.version), w))
            .collect(),
        performance: counted
            .performance
            .into_iter()
            .map(|w| ((w.span.deployment.clone(), w.span.version), w))
            .collect(),
        baselines: counted.baselines.into_iter().collect(),
        ..ReaderState::default()
    };
    Ok((reader, counted.pending_from))
}

/// Writes the checkpoint with what the join store gathered, in one transaction.
async fn save(
    state: &AppState,
    config: &WindowConfig,
    assignment: &Assignment,
    reader: &mut ReaderState,
) -> Result<()> {
    let txn = state.db.begin().await?;
    fence(&txn, assignment).await?;
    flush_joins(&txn, config, reader).await?;
    save_checkpoint(&txn, assignment, reader).await?;
    txn.commit().await?;
    Ok(())
}

/// Writes the join store's gatherings and counts the outcomes it joined.
async fn flush_joins(
    txn: &sea_orm::DatabaseTransaction,
    config: &WindowConfig,
    reader: &mut ReaderState,
) -> Result<()> {
    let now = now_millis();
    let outcomes = reader.joins.flush(txn, config.join_store, now).await?;
    let sequence = reader.sequence;
    for outcome in outcomes {
        let identity = Identity {
            deployment: outcome.deployment,
            model: outcome.model,
            version: outcome.version,
        };
        count_outcome(
            reader,
            &identity,
            (&outcome.predicted, outcome.score),
            &outcome.truth,
            sequence,
            now,
        );
    }
    Ok(())
}

/// Silence after which a reader behind its stream starts over with a new consumer.
const STALL: Duration = Duration::from_secs(5);

/// Prefix of the reader error that ends it: its partition went to another replica.
const LEASE_LOST: &str = "partition lease lost";

/// Fails the transaction unless this reader still holds its partition, so a replica that
/// paused past its lease writes nothing after its successor began.
async fn fence(txn: &sea_orm::DatabaseTransaction, assignment: &Assignment) -> Result<()> {
    if flywheel_db::leases::fence(txn, crate::SERVICE, &assignment.lease).await? {
        Ok(())
    } else {
        Err(MonitorError::LeaseLost(assignment.lease.name.clone()))
    }
}

async fn save_checkpoint<C: ConnectionTrait>(
    conn: &C,
    assignment: &Assignment,
    reader: &mut ReaderState,
) -> Result<()> {
    let body = reader.checkpoint_body()?;
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
            assignment.checkpoint().into(),
            i64::try_from(reader.sequence).unwrap_or(i64::MAX).into(),
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
    assignment: &Assignment,
    references: &mut References,
    reader: &mut ReaderState,
) -> Result<()> {
    let now = now_millis();
    let max_age = i64::try_from(config.max_age.as_millis()).unwrap_or(i64::MAX);
    let done: Vec<Key> = reader
        .windows
        .iter()
        .filter(|(_, w)| w.is_full(config.size, max_age, now))
        .map(|(k, _)| k.clone())
        .collect();
    let done_performance: Vec<Key> = reader
        .performance
        .iter()
        .filter(|(_, w)| {
            w.labelled >= config.performance_size
                || (w.labelled > 0 && now - w.span.started_at >= max_age)
        })
        .map(|(k, _)| k.clone())
        .collect();
    let done_baselines: Vec<Key> = reader
        .baselines
        .iter()
        .filter(|(_, b)| b.is_full())
        .map(|(k, _)| k.clone())
        .collect();
    if done.is_empty() && done_performance.is_empty() && done_baselines.is_empty() {
        return Ok(());
    }
    let mut closing = Vec::new();
    for key in &done {
        if let Some(window) = reader.windows.remove(key) {
            let reference = references
                .get(
                    state,
                    &window.span.deployment,
                    &window.span.model,
                    window.span.version,
                )
                .await;
            let settings = references.settings(state, &window.span.deployment).await;
            let evaluation = evaluate(&window, reference.as_deref(), &settings, config.drift_share);
            closing.push((window, evaluation));
        }
    }
    let txn = state.db.begin().await?;
    fence(&txn, assignment).await?;
    for (window, evaluation) in &closing {
        crate::reports::close(&txn, state, window, evaluation, now).await?;
    }
    for key in &done_baselines {
        let Some(baseline) = reader.baselines.remove(key) else {
            continue;
        };
        let profile = baseline.profile()?;
        crate::baseline::store(&txn, &key.0, key.1, &profile, now).await?;
        tracing::info!(
            deployment = key.0,
            version = key.1,
            rows = baseline.rows.len(),
            "production baseline profiled"
        );
        references.set(
            &key.0,
            key.1,
            Reference {
                profile,
                target: Some(PREDICTION.to_owned()),
            },
        );
    }
    for key in &done_performance {
        if let Some(window) = reader.performance.remove(key) {
            crate::reports::close_performance(&txn, state, &window, config.performance_margin, now)
                .await?;
        }
    }
    flush_joins(&txn, config, reader).await?;
    save_checkpoint(&txn, assignment, reader).await?;
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    Ok(())
}

async fn read(
    state: &AppState,
    config: &WindowConfig,
    assignment: &Assignment,
    references: &mut References,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let (mut reader, pending_from) = load_checkpoint(state, &assignment.checkpoint())
        .await
        .map_err(|e| e.to_string())?;
    let partition = assignment.partition;
    let subjects = state.bus.subjects();
    let mut stream = state
        .bus
        .jetstream()
        .get_stream(subjects.stream(StreamKind::Predictions))
        .await
        .map_err(|e| e.to_string())?;
    // From the oldest prediction still awaiting feedback, or right after the last counted one.
    let start = match pending_from {
        0 => reader.sequence + 1,
        from => Ord::min(from, reader.sequence + 1),
    };
    let deliver_policy = if start <= 1 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: start,
        }
    };
    // The whole stream: prediction logs and feedback, in the order they were stored.
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // An ordered consumer whose server died can go quiet without an error (seen on a 2.9
    // cluster): when nothing arrives for a while but the stream has more, start over from
    // the checkpoint with a new consumer.
    let mut heard = std::time::Instant::now();
    let mut looked = std::time::Instant::now();
    let mut unsaved = 0u64;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                save(state, config, assignment, &mut reader).await.map_err(|e| e.to_string())?;
                return Ok(());
            }
            _ = tick.tick() => {
                if heard.elapsed() > STALL && looked.elapsed() > STALL {
                    looked = std::time::Instant::now();
                    let last = stream.info().await.map_err(|e| e.to_string())?.state.last_sequence;
                    if last > reader.sequence {
                        save(state, config, assignment, &mut reader).await.map_err(|e| e.to_string())?;
                        return Err(format!("no message for {} s though the stream is at {last} and the reader at {}", STALL.as_secs(), reader.sequence));
                    }
                }
                close_done(state, config, assignment, references, &mut reader).await.map_err(|e| e.to_string())?;
                if unsaved > 0 {
                    save(state, config, assignment, &mut reader).await.map_err(|e| e.to_string())?;
                    unsaved = 0;
                }
            }
            next = messages.next() => {
                let Some(message) = next else {
                    return Err("the prediction stream ended".into());
                };
                let message = message.map_err(|e| e.to_string())?;
                heard = std::time::Instant::now();
                let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
                // Another partition's deployment: told by the subject, without decoding.
                let about = message.subject.as_str().rsplit('.').next().unwrap_or_default().to_owned();
                if !partition.holds(&about) {
                    if seq > reader.sequence {
                        reader.sequence = seq;
                        unsaved += 1;
                    }
                    continue;
                }
                let content_type = message.headers.as_ref().and_then(|h| h.get("Content-Type")).map(|v| v.as_str().to_owned());
                let decoded = flywheel_events::decode_with_header(&message.payload, content_type.as_deref())
                    .map_err(|e| e.to_string())
                    .and_then(|envelope| match &envelope.event {
                        Event::PredictionLogged(PredictionLogged { deployment, .. }) | Event::FeedbackReceived(FeedbackReceived { deployment, .. }) if *deployment != about => {
                            Err(format!("published on `{}` but about deployment `{deployment}`", message.subject))
                        }
                        Event::PredictionLogged(_) | Event::FeedbackReceived(_) => Ok((envelope.event, envelope.project)),
                        other => Err(format!("expected prediction.logged or feedback.received, got {}", other.event_type())),
                    });
                if seq <= reader.sequence {
                    // Counted before the restart: only rebuild what still awaits feedback.
                    match decoded {
                        // It may be in the join store: labelling a row that is not there
                        // changes nothing.
                        Ok((Event::PredictionLogged(p), _)) => reader.remember(p, seq, config.pending_max, true),
                        Ok((Event::FeedbackReceived(f), _)) => {
                            reader.pending.remove(f.request_id.as_str());
                        }
                        _ => {}
                    }
                    continue;
                }
                match decoded {
                    Ok((Event::PredictionLogged(prediction), project)) => {
                        // A database write only the first time a deployment is seen; a failure
                        // leaves it `default` until its next log.
                        if let Err(e) = state.projects.learn(&state.db, &prediction.deployment, &project).await {
                            tracing::warn!(error = %e, deployment = %prediction.deployment, "deployment's project not recorded");
                        }
                        count(state, references, &mut reader, &prediction, seq).await;
                        let kept = reader.joins.keep(&prediction, config.join_store, now_millis());
                        reader.remember(prediction, seq, config.pending_max, kept);
                        metrics::counter!("flywheel_monitor_predictions_total").increment(1);
                    }
                    Ok((Event::FeedbackReceived(feedback), _)) => join(&mut reader, &feedback, seq),
                    Ok(_) => {}
                    Err(reason) => {
                        metrics::counter!("flywheel_monitor_predictions_rejected_total").increment(1);
                        if let Err(e) = state.bus.dead_letter(&message, StreamKind::Predictions, "monitor-reader", &reason).await {
                            return Err(format!("cannot dead-letter a bad prediction log: {e}"));
                        }
                    }
                }
                reader.sequence = seq;
                unsaved += 1;
                let full = reader.windows.values().any(|w| w.count >= config.size)
                    || reader.performance.values().any(|w| w.labelled >= config.performance_size)
                    || reader.baselines.values().any(BaselineRows::is_full);
                if full {
                    close_done(state, config, assignment, references, &mut reader).await.map_err(|e| e.to_string())?;
                    unsaved = 0;
                } else if unsaved >= config.checkpoint_every {
                    save(state, config, assignment, &mut reader).await.map_err(|e| e.to_string())?;
                    unsaved = 0;
                }
            }
        }
    }
}

/// Joins ground truth to its prediction and counts the outcome; feedback for a prediction no
/// longer in memory is looked up in the join store at the next checkpoint.
fn join(reader: &mut ReaderState, feedback: &FeedbackReceived, sequence: u64) {
    let Some(pending) = reader.pending.remove(feedback.request_id.as_str()) else {
        reader
            .joins
            .look_up(&feedback.request_id, &feedback.ground_truth);
        return;
    };
    if pending.kept {
        reader
            .joins
            .label(&feedback.request_id, &feedback.ground_truth);
    }
    count_outcome(
        reader,
        &pending.of,
        (&pending.predicted, pending.score),
        &feedback.ground_truth,
        sequence,
        now_millis(),
    );
}

/// Counts a joined outcome into its deployment version's performance window.
fn count_outcome(
    reader: &mut ReaderState,
    of: &Identity,
    (predicted, score): (&Value, Option<f64>),
    truth: &Value,
    sequence: u64,
    now: i64,
) {
    let key = (of.deployment.clone(), of.version);
    let window = reader.performance.entry(key).or_insert_with(|| {
        PerformanceWindow::open(Span::open(
            &of.deployment,
            &of.model,
            of.version,
            sequence,
            now,
        ))
    });
    window.add(predicted, score, truth, now);
    metrics::counter!("flywheel_monitor_feedback_joined_total").increment(1);
}

/// Counts a prediction into its deployment's window (opening one if needed), and into its
/// production baseline while one is being gathered.
async fn count(
    state: &AppState,
    references: &mut References,
    reader: &mut ReaderState,
    prediction: &PredictionLogged,
    sequence: u64,
) {
    let now = now_millis();
    let reference = references
        .get(
            state,
            &prediction.deployment,
            &prediction.model,
            prediction.version,
        )
        .await;
    let key = (prediction.deployment.clone(), prediction.version);
    if reference.is_none() {
        let settings = references.settings(state, &prediction.deployment).await;
        if let ReferenceChoice::Baseline { rows } = settings.reference {
            reader
                .baselines
                .entry(key.clone())
                .or_insert_with(|| BaselineRows::new(rows))
                .add(prediction);
        }
    }
    reader
        .windows
        .entry(key)
        .or_insert_with(|| Window::open(prediction, reference.as_deref(), sequence, now))
        .add(prediction, reference.as_deref(), now);
}
