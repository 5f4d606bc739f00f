//! The monitor: drift and data-quality monitoring of served models. It reads the prediction logs
//! into tumbling windows per deployment and version (checkpointed with exactly-once counting),
//! judges each closed window against the training dataset's stored profile, stores and
//! publishes a report, raises and resolves drift alerts and — per a model's retraining policy,
//! with a cooldown and a daily budget — asks for a retraining. It also compares datasets offline
//! (`POST /api/v1/drift`: Evidently's data drift report on two samples, with Evidently's methods
//! and verdicts from `crates/drift`).

mod api;
mod baseline;
mod catalog;
pub mod comparison;
mod error;
mod export;
mod joins;
mod migrations;
mod partitions;
mod performance;
mod projects;
mod reader;
pub mod reports;
pub mod rules;
mod schema;
pub mod settings;
mod webhooks;
mod windows;

use std::sync::Arc;

use flywheel_artifacts::ArtifactStore;
use flywheel_bus::Bus;
use flywheel_runtime::{CancellationToken, ServiceKit, ServiceResult, ServiceSettings, Storage};
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;

pub use error::{MonitorError, Result};
pub use joins::JoinStoreConfig;
pub use migrations::Migrator;
pub use reader::WindowConfig;

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
    /// Bumped when monitoring settings change.
    pub generation: settings::Generation,
    /// How a drift retraining exports production rows.
    pub export: Arc<ExportConfig>,
    /// HTTP client (webhooks, the registry).
    pub http: reqwest::Client,
    /// Where webhooks may point (`service.webhook_allowed_hosts`).
    pub(crate) webhook_hosts: Arc<webhooks::AllowedHosts>,
    /// Each deployment's project.
    pub(crate) projects: projects::DeploymentProjects,
}

/// How a drift retraining exports labelled production rows as a dataset version (`[service]`
/// options).
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// `registry_url`: where the dataset version is pushed.
    pub registry_url: String,
    /// The monitor's own credentials for the registry (`auth.service_token`).
    pub credentials: axum::http::HeaderMap,
    /// `export_rows`: the latest labelled rows exported.
    pub rows: u64,
    /// `export_min_rows`: fewer labelled rows than this and the training dataset is used.
    pub min_rows: u64,
}

/// Runs the monitor until `shutdown` is cancelled.
pub async fn run(
    settings: ServiceSettings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> ServiceResult {
    let config = WindowConfig {
        size: settings.option("window_size", 1000u64)?.max(1),
        max_age: std::time::Duration::from_secs(settings.option("window_seconds", 300u64)?.max(1)),
        drift_share: settings.option("drift_share", 0.5f64)?,
        checkpoint_every: settings.option("checkpoint_every", 10_000u64)?.max(1),
        performance_size: settings.option("performance_window", 500u64)?.max(1),
        performance_margin: settings.option("performance_margin", 0.05f64)?,
        pending_max: settings
            .option("feedback_pending_max", 200_000usize)?
            .max(1),
        join_store: JoinStoreConfig {
            per_second: settings.option("join_store_per_second", 50u32)?,
            retention_ms: i64::try_from(settings.option("join_store_hours", 48u64)?)
                .unwrap_or(i64::MAX / 3_600_000)
                .saturating_mul(3_600_000),
        },
    };
    let webhook_hosts =
        webhooks::AllowedHosts::parse(&settings.option("webhook_allowed_hosts", "*".to_owned())?);
    let export = ExportConfig {
        registry_url: settings.option("registry_url", "http://127.0.0.1:8080".to_owned())?,
        credentials: flywheel_runtime::access::service_headers(&settings.auth),
        rows: settings.option("export_rows", 5000u64)?.max(1),
        min_rows: settings.option("export_min_rows", 200u64)?.max(1),
    };
    let partitioning = partitions::Partitioning {
        count: settings.option("partitions", 1u32)?.max(1),
        ttl: std::time::Duration::from_millis(settings.option("lease_ms", 3000u64)?.max(300)),
    };
    if !(0.0..=1.0).contains(&config.drift_share) {
        return Err(flywheel_runtime::ServiceError::Config(
            "service.drift_share: a share from 0 to 1".into(),
        ));
    }
    let kit =
        ServiceKit::start::<Migrator>(SERVICE, settings, listener, shutdown, Storage::Database)
            .await?;
    let projects = projects::DeploymentProjects::load(kit.database()?)
        .await
        .map_err(|e| flywheel_runtime::ServiceError::Config(e.to_string()))?;
    let state = AppState {
        projects,
        db: kit.database()?.clone(),
        bus: kit.bus.clone(),
        artifacts: kit.artifacts.clone(),
        generation: settings::Generation::default(),
        export: Arc::new(export),
        webhook_hosts: Arc::new(webhook_hosts),
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| flywheel_runtime::ServiceError::Config(format!("HTTP client: {e}")))?,
    };
    kit.start_outbox()?;
    let s = state.clone();
    kit.spawn_consumer(catalog::consumer_spec(&state), move |delivery| {
        catalog::handle(s.clone(), delivery)
    });
    let (s, http) = (state.clone(), state.http.clone());
    kit.spawn_consumer(webhooks::consumer_spec(&state), move |delivery| {
        webhooks::handle(s.clone(), http.clone(), delivery)
    });
    kit.spawn(partitions::run(
        state.clone(),
        config,
        partitioning,
        kit.shutdown.clone(),
    ));
    let rule = api::access_rule(state.projects.clone());
    kit.mount_scoped(api::router().with_state(state), rule);
    kit.run_until_shutdown().await
}
