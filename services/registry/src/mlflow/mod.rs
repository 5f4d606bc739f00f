//! The MLflow-compatible REST subset under `/api/2.0/mlflow/` and the proxied artifact
//! endpoints under `/api/2.0/mlflow-artifacts/`, so the stock `mlflow` client works against
//! Flywheel. Wire rules (status codes, types, envelopes) follow
//! `../shared/reference/mlflow-wire.md`.

mod artifacts;
mod error;
mod logged_models;
mod registry;
mod tracking;
mod wire;

use axum::Router;
use axum::routing::{any, delete, get, patch, post};

use crate::AppState;

/// Unknown MLflow endpoints answer as MLflow does, so clients fall back where they can.
async fn endpoint_not_found(uri: axum::http::Uri) -> error::MlflowError {
    error::MlflowError::endpoint_not_found(format!(
        "{uri} is not supported by Flywheel's MLflow API"
    ))
}

/// Every MLflow route.
pub(crate) fn router() -> Router<AppState> {
    let api = "/api/2.0/mlflow";
    Router::new()
        .route(
            &format!("{api}/experiments/create"),
            post(tracking::create_experiment),
        )
        .route(
            &format!("{api}/experiments/get"),
            get(tracking::get_experiment),
        )
        .route(
            &format!("{api}/experiments/get-by-name"),
            get(tracking::get_experiment_by_name),
        )
        .route(
            &format!("{api}/experiments/search"),
            post(tracking::search_experiments).get(tracking::search_experiments_get),
        )
        .route(
            &format!("{api}/experiments/delete"),
            post(tracking::delete_experiment),
        )
        .route(
            &format!("{api}/experiments/restore"),
            post(tracking::restore_experiment),
        )
        .route(
            &format!("{api}/experiments/set-experiment-tag"),
            post(tracking::set_experiment_tag),
        )
        .route(&format!("{api}/runs/create"), post(tracking::create_run))
        .route(&format!("{api}/runs/get"), get(tracking::get_run))
        .route(&format!("{api}/runs/update"), post(tracking::update_run))
        .route(&format!("{api}/runs/delete"), post(tracking::delete_run))
        .route(&format!("{api}/runs/restore"), post(tracking::restore_run))
        .route(
            &format!("{api}/runs/log-parameter"),
            post(tracking::log_param),
        )
        .route(
            &format!("{api}/runs/log-metric"),
            post(tracking::log_metric),
        )
        .route(&format!("{api}/runs/log-batch"), post(tracking::log_batch))
        .route(&format!("{api}/runs/set-tag"), post(tracking::set_tag))
        .route(
            &format!("{api}/runs/delete-tag"),
            post(tracking::delete_tag),
        )
        .route(&format!("{api}/runs/search"), post(tracking::search_runs))
        .route(
            &format!("{api}/metrics/get-history"),
            get(tracking::metric_history),
        )
        .route(&format!("{api}/logged-models"), post(logged_models::create))
        .route(
            &format!("{api}/logged-models/search"),
            post(logged_models::search),
        )
        .route(
            &format!("{api}/logged-models/{{model_id}}"),
            get(logged_models::get).patch(logged_models::finalize),
        )
        .route(
            &format!("{api}/logged-models/{{model_id}}/tags"),
            patch(logged_models::set_tags),
        )
        .route(
            &format!("{api}/logged-models/{{model_id}}/tags/{{key}}"),
            delete(logged_models::delete_tag),
        )
        .route(
            &format!("{api}/logged-models/{{model_id}}/params"),
            post(logged_models::log_params),
        )
        .route(
            &format!("{api}/runs/outputs"),
            post(logged_models::run_outputs),
        )
        .route(
            &format!("{api}/registered-models/create"),
            post(registry::create_model),
        )
        .route(
            &format!("{api}/registered-models/get"),
            get(registry::get_model),
        )
        .route(
            &format!("{api}/registered-models/search"),
            get(registry::search_models),
        )
        .route(
            &format!("{api}/registered-models/delete"),
            delete(registry::delete_model),
        )
        .route(
            &format!("{api}/registered-models/set-tag"),
            post(registry::set_model_tag),
        )
        .route(
            &format!("{api}/registered-models/alias"),
            post(registry::set_alias)
                .get(registry::get_alias)
                .delete(registry::delete_alias),
        )
        .route(
            &format!("{api}/registered-models/get-latest-versions"),
            post(registry::latest_versions).get(registry::latest_versions_get),
        )
        .route(
            &format!("{api}/model-versions/create"),
            post(registry::create_version),
        )
        .route(
            &format!("{api}/model-versions/get"),
            get(registry::get_version),
        )
        .route(
            &format!("{api}/model-versions/search"),
            get(registry::search_versions),
        )
        .route(
            &format!("{api}/model-versions/set-tag"),
            post(registry::set_version_tag),
        )
        .route(
            &format!("{api}/model-versions/transition-stage"),
            post(registry::transition_stage),
        )
        .route(
            &format!("{api}/model-versions/get-download-uri"),
            get(registry::download_uri),
        )
        .route(&format!("{api}/{{*rest}}"), any(endpoint_not_found))
        .route("/api/2.0/mlflow-artifacts/artifacts", get(artifacts::list))
        .route(
            "/api/2.0/mlflow-artifacts/artifacts/{*path}",
            get(artifacts::download)
                .put(artifacts::upload)
                .delete(artifacts::delete),
        )
}
