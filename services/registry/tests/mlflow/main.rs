//! The MLflow-compatible API over HTTP against the real registry, on PostgreSQL and SQLite,
//! and the stock `mlflow` Python client against it (see `client.rs`).

mod client;
mod helpers;
mod registry;
mod tracking;
