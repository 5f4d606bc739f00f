//! The trainer-runner: a stateless worker pulling training jobs from its pool's work queue. This crate is the service skeleton its features plug into.

use axum::Router;
use flywheel_runtime::{CancellationToken, ServiceKit, ServiceResult, ServiceSettings, Storage};
use tokio::net::TcpListener;

/// The service name: tables, migration table, durable consumers and logs carry it.
pub const SERVICE: &str = "trainer-runner";

/// Default HTTP port (docs/architecture.md lists them all).
pub const DEFAULT_PORT: u16 = 8082;

/// Runs the trainer-runner until `shutdown` is cancelled.
pub async fn run(
    settings: ServiceSettings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> ServiceResult {
    let kit = ServiceKit::start::<flywheel_runtime::NoMigrations>(
        SERVICE,
        settings,
        listener,
        shutdown,
        Storage::Stateless,
    )
    .await?;
    kit.mount(Router::new());
    kit.run_until_shutdown().await
}
