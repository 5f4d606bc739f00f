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
mod logs;
mod migrations;
mod rollouts;
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
    };
    kit.start_outbox()?;
    kit.spawn(logs::publish(kit.bus.clone(), queue, kit.shutdown.clone()));
    // Serve what was deployed before a restart.
    for deployment in deployments::list(&state.db)
        .await
        .map_err(|e| flywheel_runtime::ServiceError::Config(e.to_string()))?
    {
        state.exposure.set(
            &deployment.name,
            &deployment.project,
            deployment.public_inference,
        );
        if let Err(e) = deployments::activate(&state, &deployment.name).await {
            tracing::warn!(deployment = %deployment.name, error = %e, "cannot serve after restart");
        }
    }
    let s = state.clone();
    kit.spawn_consumer(catalog::consumer_spec(&state), move |delivery| {
        catalog::handle(s.clone(), delivery)
    });
    let rule = access::rule(state.exposure.clone());
    kit.mount_scoped(api::router().merge(v2::router()).with_state(state), rule);
    kit.run_until_shutdown().await
}
