//! The deployer: serves model versions over the Open Inference Protocol (KServe V2, JSON and
//! binary tensors) and a simple JSON records endpoint. Deployments follow a model's alias (or a
//! pinned version); the deployer learns packages and alias moves from the registry's events,
//! fetches and verifies a package before it serves, keeps serving the previous version when a
//! load fails, rolls new versions out directly, by canary, in shadow or blue-green — judged
//! against the serving version and rolled back on a breach — and logs predictions to the
//! PREDICTIONS stream. Built-in (`flywheel`) models and ONNX (scikit-learn exports among them).

mod access;
mod api;
mod binary;
mod catalog;
mod deployments;
mod error;
mod leadership;
mod logs;
mod migrations;
mod rollouts;
mod routes;
mod schema;
mod serving;
mod v2;

use std::sync::Arc;

use flywheel_artifacts::ArtifactStore;
use flywheel_bus::Bus;
use flywheel_runtime::{CancellationToken, ServiceKit, ServiceResult, ServiceSettings, Storage};
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;

pub use deployments::{Deployment, DeploymentSpec};
pub use error::{DeployerError, Result};
pub use migrations::Migrator;
pub use serving::{Loaded, Serving};

/// The service name: tables, migration table, durable consumers and logs carry it.
pub const SERVICE: &str = "deployer";

/// Default HTTP port (docs/architecture.md lists them all).
pub const DEFAULT_PORT: u16 = 8084;

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The deployer's database.
    pub db: DatabaseConnection,
    /// NATS.
    pub bus: Bus,
    /// Where packages are.
    pub artifacts: ArtifactStore,
    /// What is served.
    pub serving: Arc<serving::Serving>,
    /// Prediction logs on their way to the bus.
    pub(crate) logs: logs::LogQueue,
    /// Rollouts in progress, by deployment.
    pub(crate) rollouts:
        Arc<std::sync::Mutex<std::collections::HashMap<String, CancellationToken>>>,
    /// The service's shutdown, which ends rollouts too.
    pub(crate) shutdown: CancellationToken,
    /// Share of requests whose predictions are logged (0 to 1).
    pub(crate) log_sample_rate: f64,
    /// Whether the API may inject faults into served versions (chaos tests).
    pub(crate) fault_injection: bool,
    /// Each deployment's project and whether its inference needs a token.
    pub(crate) exposure: access::Exposure,
    /// This replica's name (leases, rollout numbers).
    pub(crate) replica: Arc<str>,
    /// Whether this replica takes the rollout decisions.
    pub(crate) leadership: leadership::Leadership,
    /// One activation at a time.
    pub(crate) activation: Arc<tokio::sync::Mutex<()>>,
    /// Versions that failed to load lately, by deployment: (version, when).
    pub(crate) load_failures: Arc<std::sync::Mutex<std::collections::HashMap<String, (i32, i64)>>>,
}

pub(crate) fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs the deployer until `shutdown` is cancelled.
pub async fn run(
    settings: ServiceSettings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> ServiceResult {
    let config_error = |e: String| flywheel_runtime::ServiceError::Config(e);
    let log_sample_rate: f64 = settings.option("prediction_log_sample_rate", 1.0)?;
    if !(0.0..=1.0).contains(&log_sample_rate) {
        return Err(config_error(
            "service.prediction_log_sample_rate: a share from 0 to 1".into(),
        ));
    }
    let log_buffer: usize = settings.option("prediction_log_buffer", 10_000)?;
    if log_buffer == 0 {
        return Err(config_error(
            "service.prediction_log_buffer: at least 1".into(),
        ));
    }
    let log_mode: logs::LogMode =
        settings.option("prediction_log_mode", logs::LogMode::Buffered)?;
    let fault_injection: bool = settings.option("fault_injection", false)?;
    let lease_ttl =
        std::time::Duration::from_millis(settings.option("lease_ms", 3000u64)?.max(300));
    let route_sync =
        std::time::Duration::from_millis(settings.option("route_sync_ms", 500u64)?.max(50));
    let kit =
        ServiceKit::start::<Migrator>(SERVICE, settings, listener, shutdown, Storage::Database)
            .await?;
    let (logs, queue) = logs::LogQueue::new(log_buffer, log_mode);
    let state = AppState {
        db: kit.database()?.clone(),
        bus: kit.bus.clone(),
        artifacts: kit.artifacts.clone(),
        serving: Arc::new(serving::Serving::default()),
        logs,
        rollouts: Arc::default(),
        shutdown: kit.shutdown.clone(),
        log_sample_rate,
        fault_injection,
        exposure: access::Exposure::default(),
        replica: replica_name().into(),
        leadership: leadership::Leadership::default(),
        activation: Arc::default(),
        load_failures: Arc::default(),
    };
    kit.start_outbox()?;
    kit.spawn(logs::publish(kit.bus.clone(), queue, kit.shutdown.clone()));
    // Serve what the routes say before answering (after a restart: the last promoted
    // versions), then keep following them; the rollout leader takes up what is left to decide.
    routes::catch_up(&state).await;
    kit.spawn(routes::follow(
        state.clone(),
        route_sync,
        kit.shutdown.clone(),
    ));
    kit.spawn(leadership::run(
        state.clone(),
        lease_ttl,
        kit.shutdown.clone(),
    ));
    let s = state.clone();
    kit.spawn_consumer(catalog::consumer_spec(&state), move |delivery| {
        catalog::handle(s.clone(), delivery)
    });
    let rule = access::rule(state.exposure.clone());
    kit.mount_scoped(api::router().merge(v2::router()).with_state(state), rule);
    kit.run_until_shutdown().await
}

/// A replica's name: the host (a pod's name on Kubernetes) and a random suffix.
fn replica_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| SERVICE.to_owned());
    format!(
        "{host}-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}
