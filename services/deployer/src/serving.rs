//! What is being served: one loaded model per deployment, swapped whole when a new version is
//! loaded. Requests clone an `Arc` under a short read lock; no lock is held while predicting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use flywheel_artifacts::ArtifactStore;
use flywheel_artifacts::package::{self, Manifest};
use flywheel_drift::sketch::QuantileSketch;
use flywheel_events::payloads::Signature;
use flywheel_model::Model;
use serde::{Deserialize, Serialize};

use crate::{DeployerError, Result};

/// A model version loaded for serving.
#[derive(Debug)]
pub struct Loaded {
    /// Deployment name.
    pub deployment: String,
    /// Registered model name.
    pub model_name: String,
    /// Version.
    pub version: u32,
    /// The model.
    pub served: Served,
    /// Inputs and outputs.
    pub signature: Signature,
    /// Faults injected into this version (chaos tests, game days); none by default.
    pub fault: Fault,
}

/// Injected failures and slowness of one loaded version, set through the deployment API when
/// the deployer runs with `service.fault_injection = true`.
#[derive(Debug, Default)]
pub struct Fault {
    /// Percent of requests answered with a server error.
    pub error_percent: AtomicU8,
    /// Added latency, milliseconds.
    pub delay_ms: AtomicU32,
    counter: AtomicU64,
}

impl Fault {
    /// Sets the fault (zeros clear it).
    pub fn set(&self, error_percent: u8, delay_ms: u32) {
        self.error_percent
            .store(error_percent.min(100), Ordering::Relaxed);
        self.delay_ms.store(delay_ms, Ordering::Relaxed);
    }

    /// (delay, whether this request fails); errors spread evenly like traffic shares.
    fn next(&self) -> (u32, bool) {
        let percent = self.error_percent.load(Ordering::Relaxed);
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if percent == 0 {
            return (delay, false);
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        (delay, takes(n, percent))
    }
}

/// Requests, server errors and latencies of one version during a rollout step.
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    errors: AtomicU64,
    latencies_us: Mutex<QuantileSketch>,
}

/// A step's numbers as replicas exchange them: counts and a mergeable latency sketch (1 %
/// relative accuracy), so the rollout leader judges every replica's traffic together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepNumbers {
    /// Requests answered or failed.
    pub requests: u64,
    /// Server-side failures among them.
    pub errors: u64,
    /// Latencies, microseconds.
    pub latency_us: QuantileSketch,
}

impl StepNumbers {
    /// Adds another replica's numbers.
    pub fn merge(&mut self, other: &StepNumbers) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency_us.merge(&other.latency_us);
    }

    /// (requests, error rate, p99 latency in ms).
    pub fn summary(&self) -> (u64, f64, f64) {
        let p99 = self.latency_us.quantile(0.99).unwrap_or(0.0) / 1000.0;
        let rate = if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        };
        (self.requests, rate, p99)
    }
}

impl Stats {
    /// Records one answered request.
    pub fn record(&self, latency_us: u64, server_error: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if server_error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut latencies) = self.latencies_us.lock() {
            latencies.add(latency_us as f64);
        }
    }

    /// Starts counting afresh (a new rollout step).
    pub fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
        if let Ok(mut latencies) = self.latencies_us.lock() {
            *latencies = QuantileSketch::new();
        }
    }

    /// This replica's numbers so far in the step.
    pub fn numbers(&self) -> StepNumbers {
        StepNumbers {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency_us: self
                .latencies_us
                .lock()
                .map(|l| l.clone())
                .unwrap_or_default(),
        }
    }
}

/// A version being rolled out beside the stable one.
#[derive(Debug)]
pub struct Candidate {
    /// The new version.
    pub loaded: Arc<Loaded>,
    /// Percent of requests it answers (0 to 100), or mirrors when `shadow`.
    pub percent: AtomicU8,
    /// Mirrored: it sees the traffic, its answers are discarded.
    pub shadow: bool,
    /// Its numbers in the current step.
    pub stats: Arc<Stats>,
    /// The stable version's numbers over the same step, which the candidate is judged against.
    pub baseline: Arc<Stats>,
    /// In shadow: mirrored answers compared with the stable ones, and how many differed.
    pub compared: AtomicU64,
    /// See `compared`.
    pub differing: AtomicU64,
}

impl Candidate {
    /// Records one shadow comparison.
    pub fn compare(&self, same: bool) {
        self.compared.fetch_add(1, Ordering::Relaxed);
        if !same {
            self.differing.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("flywheel_deployer_shadow_disagreements_total",
                "deployment" => self.loaded.deployment.clone(),
                "version" => self.loaded.version.to_string())
            .increment(1);
        }
    }

    /// Share of compared answers that differed (None before any comparison).
    pub fn disagreement_rate(&self) -> Option<f64> {
        let compared = self.compared.load(Ordering::Relaxed);
        (compared > 0).then(|| self.differing.load(Ordering::Relaxed) as f64 / compared as f64)
    }

    /// Starts a new step: both versions' numbers afresh.
    pub fn reset(&self) {
        self.stats.reset();
        self.baseline.reset();
        self.compared.store(0, Ordering::Relaxed);
        self.differing.store(0, Ordering::Relaxed);
    }
}

/// One deployment's versions.
#[derive(Debug)]
struct Slot {
    stable: Arc<Loaded>,
    candidate: Option<Arc<Candidate>>,
    counter: AtomicU64,
}

/// Where one request goes.
#[derive(Debug)]
pub struct Route {
    /// The version that answers.
    pub primary: Arc<Loaded>,
    /// Its stats, when it is a candidate.
    pub primary_stats: Option<Arc<Stats>>,
    /// A shadow copy that also gets the request.
    pub shadow: Option<Arc<Candidate>>,
}

/// Whether request `n` goes to a version taking `percent` of requests: spread evenly (every
/// other request at 50 %, every tenth at 10 %), not in runs.
fn takes(n: u64, percent: u8) -> bool {
    let p = u64::from(percent.min(100));
    (n + 1) * p / 100 > n * p / 100
}

/// A loaded model by flavor.
#[derive(Debug)]
pub enum Served {
    /// A built-in trainer's model (named, typed inputs).
    Flywheel(Model),
    /// An ONNX graph with one `[n, k]` float input.
    Onnx(flywheel_inference::OnnxModel),
}

impl Route {
    /// Records an answered request in the rollout's numbers (during a rollout); returns how
    /// long it took.
    pub fn answered(&self, started: std::time::Instant) -> std::time::Duration {
        let elapsed = started.elapsed();
        if let Some(stats) = &self.primary_stats {
            stats.record(
                u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                false,
            );
        }
        elapsed
    }

    /// Records a server-side failure of the answering version.
    pub fn failed(&self, started: std::time::Instant) {
        if let Some(stats) = &self.primary_stats {
            stats.record(
                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                true,
            );
        }
    }

    /// Applies the answering version's injected fault, if any: waits out the delay, then
    /// fails the request when its share of errors says so.
    pub async fn inject(&self, started: std::time::Instant) -> Result<()> {
        let (delay, fail) = self.primary.fault.next();
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(u64::from(delay))).await;
        }
        if fail {
            self.failed(started);
            return Err(DeployerError::Fault(format!(
                "injected fault in {} version {}",
                self.primary.deployment, self.primary.version
            )));
        }
        Ok(())
    }
}

/// Deployments being served.
#[derive(Debug, Default)]
pub struct Serving {
    slots: RwLock<HashMap<String, Arc<Slot>>>,
}

impl Serving {
    fn slot(&self, deployment: &str) -> Option<Arc<Slot>> {
        self.slots.read().ok()?.get(deployment).cloned()
    }

    /// The stable version of a deployment.
    pub fn get(&self, deployment: &str) -> Option<Arc<Loaded>> {
        self.slot(deployment).map(|s| s.stable.clone())
    }

    /// The loaded version `version` of a deployment, stable or candidate.
    pub fn version(&self, deployment: &str, version: u32) -> Option<Arc<Loaded>> {
        let slot = self.slot(deployment)?;
        if slot.stable.version == version {
            return Some(slot.stable.clone());
        }
        slot.candidate
            .as_ref()
            .filter(|c| c.loaded.version == version)
            .map(|c| c.loaded.clone())
    }

    /// Picks the version for the next request: the candidate for its share of requests
    /// (spread evenly by a counter), else the stable one.
    pub fn route(&self, deployment: &str) -> Option<Route> {
        let slot = self.slot(deployment)?;
        let n = slot.counter.fetch_add(1, Ordering::Relaxed);
        match &slot.candidate {
            Some(c) if c.shadow => Some(Route {
                primary: slot.stable.clone(),
                primary_stats: Some(c.baseline.clone()),
                shadow: Some(c.clone()),
            }),
            Some(c) if takes(n, c.percent.load(Ordering::Relaxed)) => Some(Route {
                primary: c.loaded.clone(),
                primary_stats: Some(c.stats.clone()),
                shadow: None,
            }),
            Some(c) => Some(Route {
                primary: slot.stable.clone(),
                primary_stats: Some(c.baseline.clone()),
                shadow: None,
            }),
            _ => Some(Route {
                primary: slot.stable.clone(),
                primary_stats: None,
                shadow: None,
            }),
        }
    }

    /// Serves `loaded` as the stable version from now on, ending any rollout.
    pub fn put(&self, loaded: Loaded) {
        self.put_arc(Arc::new(loaded));
    }

    fn put_arc(&self, loaded: Arc<Loaded>) {
        if let Ok(mut map) = self.slots.write() {
            map.insert(
                loaded.deployment.clone(),
                Arc::new(Slot {
                    stable: loaded,
                    candidate: None,
                    counter: AtomicU64::new(0),
                }),
            );
        }
    }

    /// Starts a candidate beside the stable version.
    pub fn start_candidate(
        &self,
        loaded: Loaded,
        percent: u8,
        shadow: bool,
    ) -> Option<Arc<Candidate>> {
        let mut map = self.slots.write().ok()?;
        let slot = map.get(&loaded.deployment)?.clone();
        let candidate = Arc::new(Candidate {
            loaded: Arc::new(loaded),
            percent: AtomicU8::new(percent.min(100)),
            shadow,
            stats: Arc::new(Stats::default()),
            baseline: Arc::new(Stats::default()),
            compared: AtomicU64::new(0),
            differing: AtomicU64::new(0),
        });
        map.insert(
            candidate.loaded.deployment.clone(),
            Arc::new(Slot {
                stable: slot.stable.clone(),
                candidate: Some(candidate.clone()),
                counter: AtomicU64::new(0),
            }),
        );
        Some(candidate)
    }

    /// Makes the candidate stable (promote) or drops it (rollback).
    pub fn end_candidate(&self, deployment: &str, promote: bool) {
        let Some(slot) = self.slot(deployment) else {
            return;
        };
        let Some(candidate) = &slot.candidate else {
            return;
        };
        let stable = if promote {
            candidate.loaded.clone()
        } else {
            slot.stable.clone()
        };
        self.put_arc(stable);
    }

    /// The candidate of a rollout in progress, if any.
    pub fn candidate(&self, deployment: &str) -> Option<Arc<Candidate>> {
        self.slot(deployment)?.candidate.clone()
    }

    /// The deployments served.
    pub fn names(&self) -> Vec<String> {
        self.slots
            .read()
            .map(|map| map.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Stops serving a deployment.
    pub fn remove(&self, deployment: &str) {
        if let Ok(mut map) = self.slots.write() {
            map.remove(deployment);
        }
    }
}

/// Fetches a package, verifies every file against its manifest and loads the model. A package
/// that fails any step never serves.
pub(crate) async fn load(
    store: &ArtifactStore,
    deployment: &str,
    model_name: &str,
    version: u32,
    package_uri: &str,
) -> Result<Loaded> {
    let (manifest, files): (Manifest, _) = package::download(store, package_uri)
        .await
        .map_err(|e| DeployerError::Load(format!("package {package_uri}: {e}")))?;
    let file = |manifest: &Manifest| {
        files
            .iter()
            .find(|(path, _)| *path == manifest.model_file)
            .map(|(_, bytes)| bytes.clone())
            .ok_or_else(|| DeployerError::Load("the model file is missing".into()))
    };
    let served = match manifest.flavor.as_str() {
        "flywheel" => Served::Flywheel(
            serde_json::from_slice::<Model>(&file(&manifest)?)
                .map_err(|e| DeployerError::Load(format!("model.json: {e}")))?,
        ),
        "onnx" => {
            let bytes = file(&manifest)?;
            // Optimising a graph is CPU work: off the async threads.
            let model =
                tokio::task::spawn_blocking(move || flywheel_inference::OnnxModel::load(&bytes))
                    .await
                    .map_err(|e| DeployerError::Load(format!("loading panicked: {e}")))?
                    .map_err(|e| DeployerError::Load(e.to_string()))?;
            Served::Onnx(model)
        }
        other => {
            return Err(DeployerError::Load(format!(
                "flavor `{other}` cannot be served (built-in `flywheel` and `onnx` can)"
            )));
        }
    };
    Ok(Loaded {
        deployment: deployment.to_owned(),
        model_name: model_name.to_owned(),
        version,
        served,
        signature: manifest.signature,
        fault: Fault::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::takes;

    #[test]
    fn shares_are_exact_and_interleaved() {
        for percent in [0u8, 1, 10, 33, 50, 99, 100] {
            let taken = (0..1000).filter(|n| takes(*n, percent)).count();
            assert_eq!(taken, usize::from(percent) * 10, "{percent}%");
        }
        let first: Vec<bool> = (0..4).map(|n| takes(n, 50)).collect();
        assert_eq!(first, [false, true, false, true]);
    }
}
