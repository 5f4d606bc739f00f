//! The monitor: drift, quality and performance monitoring of served models. This slice compares
//! datasets offline (`POST /api/v1/drift`, Evidently's data drift report on two samples, with
//! Evidently's methods and verdicts from `crates/drift`) and learns where dataset versions are
//! from the registry's events; streaming windows over the prediction logs, alerts and
//! retraining come next (issue 6).

mod api;
mod catalog;
pub mod comparison;
mod error;
mod migrations;
mod schema;

use flywheel_artifacts::ArtifactStore;
use flywheel_bus::Bus;
use flywheel_runtime::{CancellationToken, ServiceKit, ServiceResult, ServiceSettings, Storage};
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;

pub use error::{MonitorError, Result};
pub use migrations::Migrator;

/// The service name: tables, migration table, durable consumers and logs carry it.
pub const SERVICE: &str = "monitor";

/// Default HTTP port (docs/architecture.md lists them all).
pub const DEFAULT_PORT: u16 = 8083;

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The monitor's database.
    pub db: DatabaseConnection,
    /// NATS.
    pub bus: Bus,
    /// Where datasets and profiles are.
    pub artifacts: ArtifactStore,
}

/// Runs the monitor until `shutdown` is cancelled.
pub async fn run(
    settings: ServiceSettings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> ServiceResult {
    let kit =
        ServiceKit::start::<Migrator>(SERVICE, settings, listener, shutdown, Storage::Database)
            .await?;
    let state = AppState {
        db: kit.database()?.clone(),
        bus: kit.bus.clone(),
        artifacts: kit.artifacts.clone(),
    };
    let s = state.clone();
    kit.spawn_consumer(catalog::consumer_spec(&state), move |delivery| {
        catalog::handle(s.clone(), delivery)
    });
    kit.mount(api::router().with_state(state));
    kit.run_until_shutdown().await
}
