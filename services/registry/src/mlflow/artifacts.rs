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

/// Artifacts live under their experiment's id (`mlflow-artifacts:/<id>/…`): work confined to
/// a project reaches only its own experiments' artifacts.
async fn check_visible(state: &AppState, path: &str) -> Result<(), MlflowError> {
    if flywheel_runtime::scope::current().only().is_none() {
        return Ok(());
    }
    let first = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    let not_found = || crate::RegistryError::NotFound(format!("artifact {path} not found"));
    let id: i64 = first.parse().map_err(|_| not_found())?;
    crate::tracking::experiments::get(&state.db, id)
        .await
        .map_err(|_| not_found())?;
    Ok(())
}

pub(super) async fn upload(
    State(state): State<AppState>,
    Path(path): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, MlflowError> {
    check_visible(&state, &path).await?;
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
    check_visible(&state, &path).await?;
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
    check_visible(&state, &path).await?;
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
    let at_root = query.path.trim_matches('/').is_empty();
    if !at_root {
        check_visible(&state, &query.path).await?;
    }
    let prefix = key(query.path.trim_end_matches('/'));
    let (files, dirs) = state
        .artifacts
        .list_dir(prefix.trim_end_matches('/'))
        .await
        .map_err(crate::RegistryError::from)?;
    let mut visible_dirs = Vec::new();
    for dir in &dirs {
        let name = dir.rsplit('/').next().unwrap_or(dir);
        if !at_root || check_visible(&state, name).await.is_ok() {
            visible_dirs.push(dir);
        }
    }
    let mut entries: Vec<serde_json::Value> = visible_dirs
        .iter()
        .map(|d| json!({"path": d.rsplit('/').next().unwrap_or(d), "is_dir": true}))
        .collect();
    entries.extend(
        files.iter().map(|f| json!({"path": f.key.rsplit('/').next().unwrap_or(&f.key), "is_dir": false, "file_size": f.size})),
    );
    Ok(Json(json!({"files": entries})))
}
