//! The scheduler: durable, prioritised, quota-aware queue of training jobs, dispatching to runner pools over the JOBS work queue. This crate is the service skeleton its features plug into.

use axum::Router;
use flywheel_runtime::{CancellationToken, ServiceKit, ServiceResult, ServiceSettings, Storage};
use tokio::net::TcpListener;

/// The service name: tables, migration table, durable consumers and logs carry it.
pub const SERVICE: &str = "scheduler";

/// Default HTTP port (docs/architecture.md lists them all).
pub const DEFAULT_PORT: u16 = 8081;

flywheel_db::migrator!(
    Migrator,
    "scheduler",
    [flywheel_db::inbox::CreateInbox::new("scheduler")]
);

/// Runs the scheduler until `shutdown` is cancelled.
pub async fn run(
    settings: ServiceSettings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> ServiceResult {
    let kit =
        ServiceKit::start::<Migrator>(SERVICE, settings, listener, shutdown, Storage::Database)
            .await?;
    kit.mount(Router::new());
    kit.run_until_shutdown().await
}
