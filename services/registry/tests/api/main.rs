//! The registry's HTTP APIs against the real service on PostgreSQL and SQLite: the
//! MLflow-compatible API (and the stock `mlflow` client, see `client.rs`) and the native API.

mod client;
mod datasets;
mod governance;
mod helpers;
mod jobs;
mod logged_models;
mod openapi;
mod readmodels;
mod registry;
mod tracking;
