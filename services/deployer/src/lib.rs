//! The deployer: model serving over the Open Inference Protocol with safe rollouts and automatic rollback. This crate is the service skeleton its features plug into.

use axum::Router;
use flywheel_runtime::{CancellationToken, ServiceKit, ServiceResult, ServiceSettings, Storage};
use tokio::net::TcpListener;

/// The service name: tables, migration table, durable consumers and logs carry it.
pub const SERVICE: &str = "deployer";

/// Default HTTP port (docs/architecture.md lists them all).
pub const DEFAULT_PORT: u16 = 8084;

flywheel_db::migrator!(
    Migrator,
    "deployer",
    [flywheel_db::inbox::CreateInbox::new("deployer")]
);

/// Runs the deployer until `shutdown` is cancelled.
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
