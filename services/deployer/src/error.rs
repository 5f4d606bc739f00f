//! The deployer's errors: one mapping to HTTP for the deployment API, and the Open Inference
//! Protocol's `{"error": "..."}` body for `/v2` and the records endpoint.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flywheel_runtime::{ApiError, ErrorCode};

/// What can go wrong in the deployer.
#[derive(Debug, thiserror::Error)]
pub enum DeployerError {
    /// No such deployment, model or version.
    #[error("{0}")]
    NotFound(String),
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The operation is switched off in this deployer's configuration.
    #[error("{0}")]
    Forbidden(String),
    /// The deployment exists but serves nothing yet.
    #[error("{0}")]
    NotReady(String),
    /// A model package could not be fetched, verified or loaded.
    #[error("{0}")]
    Load(String),
    /// A fault injected on purpose (chaos testing).
    #[error("{0}")]
    Fault(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// Only the rollout leader decides; this replica no longer leads.
    #[error("this replica does not lead rollouts")]
    NotLeader,
}

/// Result with [`DeployerError`].
pub type Result<T, E = DeployerError> = std::result::Result<T, E>;

impl DeployerError {
    /// Whether the caller is at fault (a 4xx).
    pub(crate) fn is_client_error(&self) -> bool {
        self.status().is_client_error()
    }

    fn status(&self) -> StatusCode {
        match self {
            DeployerError::NotFound(_) => StatusCode::NOT_FOUND,
            DeployerError::Invalid(_) => StatusCode::BAD_REQUEST,
            DeployerError::Forbidden(_) => StatusCode::FORBIDDEN,
            DeployerError::NotReady(_) | DeployerError::NotLeader => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            DeployerError::Load(_) | DeployerError::Fault(_) | DeployerError::Db(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for DeployerError {
    fn into_response(self) -> Response {
        match self {
            DeployerError::NotFound(m) => ApiError::new(ErrorCode::NotFound, m).into_response(),
            DeployerError::Invalid(m) => ApiError::new(ErrorCode::BadRequest, m).into_response(),
            DeployerError::Forbidden(m) => ApiError::new(ErrorCode::Forbidden, m).into_response(),
            DeployerError::NotReady(m) => ApiError::new(ErrorCode::Unavailable, m).into_response(),
            DeployerError::NotLeader => {
                ApiError::new(ErrorCode::Unavailable, DeployerError::NotLeader.to_string())
                    .into_response()
            }
            DeployerError::Load(m) | DeployerError::Fault(m) => {
                ApiError::internal(m).into_response()
            }
            DeployerError::Db(e) => ApiError::internal(e).into_response(),
        }
    }
}

/// An error in the inference protocol's shape: `{"error": "<message>"}` (tritonclient reads it).
#[derive(Debug)]
pub(crate) struct InferenceError(pub(crate) DeployerError);

impl From<DeployerError> for InferenceError {
    fn from(e: DeployerError) -> Self {
        Self(e)
    }
}

impl IntoResponse for InferenceError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let message = match &self.0 {
            DeployerError::Db(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        if status.is_server_error() {
            tracing::error!(error = %self.0, "inference request failed");
        }
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}
