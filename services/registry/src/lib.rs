//! The registry: the system of record and front door. Today it holds experiments and runs
//! (params, metrics with history, tags, proxied artifacts) behind an MLflow-compatible API, so
//! the stock `mlflow` client logs to Flywheel. Datasets, model versions, governance and the
//! native `/api/v1` arrive in the rest of the registry issue.

mod access;
mod api;
mod dashboard;
pub mod datasets;
mod error;
mod jobs;
mod migrations;
mod mlflow;
pub mod models;
mod projects;
pub mod readmodels;
mod schema;
pub mod tracking;

use flywheel_artifacts::ArtifactStore;
use flywheel_runtime::{CancellationToken, ServiceKit, ServiceResult, ServiceSettings, Storage};
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;

pub use dashboard::{Peers, RecentEvents};
pub use error::{RegistryError, Result};
pub use migrations::Migrator;

/// The service name: tables, migration table, durable consumers and logs carry it.
pub const SERVICE: &str = "registry";

/// Default HTTP port (docs/architecture.md lists them all).
pub const DEFAULT_PORT: u16 = 8080;

/// What request handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The registry's database.
    pub db: DatabaseConnection,
    /// Artifact storage (MLflow artifacts live under `mlflow-artifacts/`).
    pub artifacts: ArtifactStore,
    /// NATS, for the subjects of outbox events.
    pub bus: flywheel_bus::Bus,
    /// The services the dashboard's actions reach.
    pub peers: Peers,
    /// API tokens, when authentication is on.
    pub tokens: Option<flywheel_auth::TokenStore>,
    /// The dashboard's deployment page reads, shared within a refresh.
    pub recent_events: dashboard::RecentEvents,
}

/// Runs the registry until `shutdown` is cancelled.
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
        artifacts: kit.artifacts.clone(),
        bus: kit.bus.clone(),
        peers: dashboard::Peers::new(
            kit.settings
                .option("scheduler_url", "http://127.0.0.1:8081".to_owned())?,
            kit.settings
                .option("deployer_url", "http://127.0.0.1:8084".to_owned())?,
        ),
        tokens: kit.tokens().cloned(),
        recent_events: dashboard::RecentEvents::default(),
    };
    kit.start_outbox()?;
    let jobs_state = state.clone();
    kit.spawn_consumer(jobs::consumer_spec(&state), move |delivery| {
        jobs::handle(jobs_state.clone(), delivery)
    });
    kit.spawn(dashboard::keep_timeline_pruned(
        state.db.clone(),
        kit.settings.bus.events_max_age_secs,
        kit.shutdown.clone(),
    ));
    let timeline_state = state.clone();
    kit.spawn_consumer(dashboard::timeline_spec(&state), move |delivery| {
        dashboard::record(timeline_state.clone(), delivery)
    });
    for spec in readmodels::consumer_specs(&state) {
        let state = state.clone();
        kit.spawn_consumer(spec, move |delivery| {
            readmodels::handle(state.clone(), delivery)
        });
    }
    kit.mount_scoped(
        mlflow::router()
            .merge(api::router())
            .merge(dashboard::router())
            .merge(access::router())
            .with_state(state),
        access::rule(),
    );
    kit.run_until_shutdown().await
}
