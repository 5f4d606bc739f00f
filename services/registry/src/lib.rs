//! The registry: the system of record and front door (datasets, runs, model versions, lineage, governance, the MLflow-compatible API and the dashboard). This crate is the service skeleton its features plug into.

use axum::Router;
use flywheel_runtime::{CancellationToken, ServiceKit, ServiceResult, ServiceSettings, Storage};
use tokio::net::TcpListener;

/// The service name: tables, migration table, durable consumers and logs carry it.
pub const SERVICE: &str = "registry";

/// Default HTTP port (docs/architecture.md lists them all).
pub const DEFAULT_PORT: u16 = 8080;

flywheel_db::migrator!(
    Migrator,
    "registry",
    [flywheel_db::inbox::CreateInbox::new("registry")]
);

/// Runs the registry until `shutdown` is cancelled.
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
