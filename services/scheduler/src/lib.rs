//! The scheduler: a durable, prioritised queue of training jobs. Today it takes requests —
//! `training.requested` from the bus (other systems, the registry, the monitor) and its own HTTP
//! API — into a durable job table, one job per request id, and announces
//! `training.job.queued`. Dispatch to runner pools, quotas, retries and crash safety arrive with
//! the rest of the scheduler issue.

mod api;
mod error;
mod intake;
mod migrations;
mod schema;

use flywheel_bus::Bus;
use flywheel_runtime::{CancellationToken, ServiceKit, ServiceResult, ServiceSettings, Storage};
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;

pub use error::{Result, SchedulerError};
pub use intake::{Job, submit};
pub use migrations::Migrator;

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
}

/// Runs the scheduler until `shutdown` is cancelled.
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
    };
    kit.start_outbox()?;
    let intake_state = state.clone();
    kit.spawn_consumer(intake::consumer_spec(&state), move |delivery| {
        intake::handle(intake_state.clone(), delivery)
    });
    kit.mount(api::router().with_state(state));
    kit.run_until_shutdown().await
}
