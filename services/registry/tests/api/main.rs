//! The registry's HTTP APIs against the real service on PostgreSQL and SQLite: the
//! MLflow-compatible API (and the stock `mlflow` client, see `client.rs`) and the native API.

/// Runs each named suite function once against PostgreSQL and once against SQLite.
macro_rules! on_both_backends {
    ($($name:ident),*) => {
        mod postgres { $(
            #[tokio::test]
            async fn $name() -> anyhow::Result<()> {
                let registry = crate::helpers::Registry::start(crate::helpers::Backend::Postgres).await?;
                super::$name(&registry).await?;
                registry.stop().await
            }
        )* }
        mod sqlite { $(
            #[tokio::test]
            async fn $name() -> anyhow::Result<()> {
                let registry = crate::helpers::Registry::start(crate::helpers::Backend::Sqlite).await?;
                super::$name(&registry).await?;
                registry.stop().await
            }
        )* }
    };
}

mod client;
mod dashboard;
mod datasets;
mod governance;
mod helpers;
mod jobs;
mod logged_models;
mod openapi;
mod readmodels;
mod registry;
mod tracking;
