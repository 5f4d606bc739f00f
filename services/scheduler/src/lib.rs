//! The scheduler: a durable, prioritised queue of training jobs and their dispatch to runner
//! pools. It takes `training.requested` from the bus and its HTTP API (one job per request
//! id), fires cron and new-data triggers, dispatches within project quotas to pools whose live
//! runners fit the request, grants each attempt to one runner, fences runner reports so only
//! the current attempt counts, retries with backoff, times out, declares silent runners' attempts
//! lost, and accounts resource-seconds per project and model.

mod api;
mod config;
mod dispatch;
mod error;
mod intake;
mod jobs;
mod lifecycle;
mod metrics;
mod migrations;
mod quotas;
mod reports;
mod runners;
mod schema;
mod search;
mod triggers;

use std::sync::Arc;

use flywheel_bus::Bus;
use flywheel_runtime::{CancellationToken, ServiceKit, ServiceResult, ServiceSettings, Storage};
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use config::SchedulerConfig;
pub use error::{Result, SchedulerError};
pub use intake::submit;
pub use jobs::{Attempt, Job};
pub use migrations::Migrator;
pub use quotas::{Quota, Usage};
pub use runners::Runner;
pub use triggers::Trigger;

/// The service name: tables, migration table, durable consumers and logs carry it.
pub const SERVICE: &str = "scheduler";

/// Default HTTP port (docs/architecture.md lists them all).
pub const DEFAULT_PORT: u16 = 8081;

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The scheduler's database.
    pub db: DatabaseConnection,
    /// NATS, for outbox subjects.
    pub bus: Bus,
    /// Options.
    pub config: Arc<SchedulerConfig>,
    /// Wakes the dispatcher when work arrives.
    pub wake: Arc<Notify>,
    /// When this replica began answering heartbeats, ms (0: not yet). Heartbeats sent while
    /// no scheduler listened were heard by no one, so runners get one timeout from here before
    /// their attempts count as lost.
    pub listening_since: Arc<std::sync::atomic::AtomicI64>,
}

pub(crate) fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs the scheduler until `shutdown` is cancelled.
pub async fn run(
    settings: ServiceSettings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> ServiceResult {
    let config = SchedulerConfig::from_settings(&settings)?;
    let kit =
        ServiceKit::start::<Migrator>(SERVICE, settings, listener, shutdown, Storage::Database)
            .await?;
    let state = AppState {
        db: kit.database()?.clone(),
        bus: kit.bus.clone(),
        config: Arc::new(config),
        wake: Arc::new(Notify::new()),
        listening_since: Arc::default(),
    };
    kit.start_outbox()?;
    let s = state.clone();
    kit.spawn_consumer(intake::consumer_spec(&state), move |delivery| {
        intake::handle(s.clone(), delivery)
    });
    let s = state.clone();
    kit.spawn_consumer(reports::consumer_spec(&state), move |delivery| {
        reports::handle(s.clone(), delivery)
    });
    let s = state.clone();
    kit.spawn_consumer(triggers::consumer_spec(&state), move |delivery| {
        triggers::handle(s.clone(), delivery)
    });
    kit.spawn(runners::serve(state.clone(), kit.shutdown.clone()));
    kit.spawn(dispatch::run(state.clone(), kit.shutdown.clone()));
    kit.mount_scoped(api::router().with_state(state), api::rule());
    kit.run_until_shutdown().await
}
