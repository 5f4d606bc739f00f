//! The native REST API under `/api/v1` (grows with the registry issue; errors use the
//! platform's `{"code", "message"}` format through [`RegistryError`]'s `IntoResponse`).

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};

use crate::models::{self, AuditEntry};
use crate::{AppState, Result};

/// The native routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/models/{name}/audit", get(audit_log))
}

/// Every audited change of a model, oldest first.
async fn audit_log(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<AuditEntry>>> {
    models::get_model(&state.db, &name).await?;
    Ok(Json(models::audit_log(&state.db, &name).await?))
}
