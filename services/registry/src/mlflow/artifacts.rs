//! Proxied artifacts (`mlflow-artifacts:` URIs): files stored under `mlflow-artifacts/` in the
//! registry's artifact store. Paths are validated: no `..`, no absolute paths.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::MlflowError;
use crate::AppState;

const ROOT: &str = "mlflow-artifacts";

fn key(path: &str) -> String {
    format!("{ROOT}/{}", path.trim_start_matches('/'))
}

pub(super) async fn upload(
    State(state): State<AppState>,
    Path(path): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, MlflowError> {
    state
        .artifacts
        .put(&key(&path), body)
        .await
        .map_err(crate::RegistryError::from)?;
    Ok(Json(json!({})))
}

pub(super) async fn download(
    State(state): State<AppState>,
    Path(path): Path<String>,
) -> Result<Response, MlflowError> {
    let bytes = state
        .artifacts
        .get(&key(&path))
        .await
        .map_err(crate::RegistryError::from)?;
    let name = path
        .rsplit('/')
        .next()
        .unwrap_or("artifact")
        .replace('"', "");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

pub(super) async fn delete(
    State(state): State<AppState>,
    Path(path): Path<String>,
) -> Result<Json<serde_json::Value>, MlflowError> {
    state
        .artifacts
        .delete(&key(&path))
        .await
        .map_err(crate::RegistryError::from)?;
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct ListQuery {
    path: String,
}

/// Immediate children, basenames only; a missing folder is an empty listing (not 404).
pub(super) async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, MlflowError> {
    let prefix = key(query.path.trim_end_matches('/'));
    let (files, dirs) = state
        .artifacts
        .list_dir(prefix.trim_end_matches('/'))
        .await
        .map_err(crate::RegistryError::from)?;
    let mut entries: Vec<serde_json::Value> = dirs
        .iter()
        .map(|d| json!({"path": d.rsplit('/').next().unwrap_or(d), "is_dir": true}))
        .collect();
    entries.extend(
        files.iter().map(|f| json!({"path": f.key.rsplit('/').next().unwrap_or(&f.key), "is_dir": false, "file_size": f.size})),
    );
    Ok(Json(json!({"files": entries})))
}
