//! The trainer-runner: a stateless worker. It pulls training jobs from its pool's work queue
//! (one message per free slot), claims each attempt from the scheduler before starting it,
//! trains with a built-in trainer or an external command, evaluates and gates the result,
//! uploads a content-addressed model package and reports progress, completion or failure to
//! the scheduler. Heartbeats advertise pool, capacity and what runs; the scheduler's answer
//! stops attempts that were cancelled, timed out or superseded.

mod attempt;
mod builtin;
mod config;
mod external;
mod gates;
mod heartbeat;
mod kubernetes;
mod registry;
mod work;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use flywheel_artifacts::ArtifactStore;
use flywheel_bus::Bus;
use flywheel_events::Envelope;
use flywheel_events::control::AttemptRef;
use flywheel_runtime::{CancellationToken, ServiceKit, ServiceResult, ServiceSettings, Storage};
use tokio::net::TcpListener;

pub use attempt::attempt_main;
pub use config::{Backend, EnvSource, KubernetesOptions, RunnerConfig, SecretVariable};

/// The service name: tables, migration table, durable consumers and logs carry it.
pub const SERVICE: &str = "trainer-runner";

/// Default HTTP port (docs/architecture.md lists them all).
pub const DEFAULT_PORT: u16 = 8082;

/// Why an attempt failed: `invalid` (bad input, never retried), `error` (retried) or
/// `timed_out`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrainFailure {
    pub kind: &'static str,
    pub message: String,
}

impl TrainFailure {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: "invalid",
            message: message.into(),
        }
    }

    pub(crate) fn retryable(message: impl Into<String>) -> Self {
        Self {
            kind: "error",
            message: message.into(),
        }
    }
}

/// What an attempt needs to train, evaluate, package and upload, wherever it runs: in the
/// runner's process or in a Kubernetes pod (`flywheel-trainer-runner attempt`).
#[derive(Debug)]
pub(crate) struct Workshop {
    config: RunnerConfig,
    artifacts: ArtifactStore,
    http: reqwest::Client,
}

impl Workshop {
    fn new(
        config: RunnerConfig,
        artifacts: ArtifactStore,
        settings: &ServiceSettings,
    ) -> Result<Self, flywheel_runtime::ServiceError> {
        // It calls only the registry: its credentials go with every request.
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .default_headers(flywheel_runtime::access::service_headers(&settings.auth))
            .build()
            .map_err(|e| flywheel_runtime::ServiceError::Config(e.to_string()))?;
        Ok(Self {
            config,
            artifacts,
            http,
        })
    }
}

/// What the runner's tasks share.
#[derive(Debug)]
pub(crate) struct Runner {
    workshop: Workshop,
    bus: Bus,
    /// Set when `service.backend = "kubernetes"`: attempts run as Kubernetes Jobs.
    cluster: Option<kubernetes::Cluster>,
    running: Mutex<HashMap<AttemptRef, CancellationToken>>,
    /// Attempts finished recently, with when (listed in heartbeats until their reports surely
    /// reached the scheduler).
    finished: Mutex<Vec<(AttemptRef, std::time::Instant)>>,
    shutdown: CancellationToken,
}

/// How long a finished attempt stays in heartbeats: several report redelivery periods.
const FINISHED_LISTED: std::time::Duration = std::time::Duration::from_secs(300);

impl Runner {
    fn config(&self) -> &RunnerConfig {
        &self.workshop.config
    }

    fn running_attempts(&self) -> Vec<AttemptRef> {
        self.running
            .lock()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn start(&self, attempt: &AttemptRef) -> CancellationToken {
        let token = self.shutdown.child_token();
        if let Ok(mut running) = self.running.lock() {
            running.insert(attempt.clone(), token.clone());
        }
        token
    }

    fn finish(&self, attempt: &AttemptRef) {
        if let Ok(mut finished) = self.finished.lock() {
            finished.push((attempt.clone(), std::time::Instant::now()));
        }
        if let Ok(mut running) = self.running.lock() {
            running.remove(attempt);
        }
    }

    /// Attempts finished within [`FINISHED_LISTED`] (older ones are forgotten).
    fn finished_attempts(&self) -> Vec<AttemptRef> {
        let Ok(mut finished) = self.finished.lock() else {
            return Vec::new();
        };
        finished.retain(|(_, at)| at.elapsed() < FINISHED_LISTED);
        finished.iter().map(|(a, _)| a.clone()).collect()
    }

    fn stop(&self, attempt: &AttemptRef) {
        if let Some(token) = self
            .running
            .lock()
            .ok()
            .and_then(|r| r.get(attempt).cloned())
        {
            token.cancel();
        }
    }

    async fn report(&self, envelope: &Envelope) -> Result<(), String> {
        work::publish_report(self, envelope).await
    }
}

/// Runs the trainer-runner until `shutdown` is cancelled.
pub async fn run(
    settings: ServiceSettings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> ServiceResult {
    let config = RunnerConfig::from_settings(&settings)?;
    let cluster = match &config.backend {
        Backend::Process => None,
        Backend::Kubernetes(options) => {
            let cluster = kubernetes::Cluster::connect(options.as_ref().clone()).await?;
            cluster.remove_orphans().await;
            Some(cluster)
        }
    };
    let kit = ServiceKit::start::<flywheel_runtime::NoMigrations>(
        SERVICE,
        settings,
        listener,
        shutdown,
        Storage::Stateless,
    )
    .await?;
    tracing::info!(runner = %config.runner_id, pool = %config.pool, slots = config.slots, backend = config.backend.name(), "runner ready");
    let runner = Arc::new(Runner {
        workshop: Workshop::new(config, kit.artifacts.clone(), &kit.settings)?,
        bus: kit.bus.clone(),
        cluster,
        running: Mutex::new(HashMap::new()),
        finished: Mutex::new(Vec::new()),
        shutdown: kit.shutdown.clone(),
    });
    // Be known before pulling: the scheduler only grants attempts to runners it has heard of.
    if let Err(e) = heartbeat::beat(&runner).await {
        tracing::warn!(error = %e, "first heartbeat failed; pulling anyway");
    }
    kit.spawn(heartbeat::run(runner.clone(), kit.shutdown.clone()));
    let spec = work::consumer_spec(&runner).map_err(flywheel_runtime::ServiceError::Config)?;
    let handler_runner = runner.clone();
    kit.spawn_consumer(spec, move |delivery| {
        work::handle(handler_runner.clone(), delivery)
    });
    kit.mount(Router::new());
    kit.run_until_shutdown().await
}
