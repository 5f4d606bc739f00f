//! The registry's errors and their one mapping to HTTP (`IntoResponse` for the native API; the
//! MLflow API maps the same errors to MLflow's envelope in `mlflow::error`).

use axum::response::{IntoResponse, Response};
use flywheel_runtime::{ApiError, ErrorCode};

/// What can go wrong in the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// A unique name is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// A value is malformed or not allowed.
    #[error("{0}")]
    InvalidParameter(String),
    /// No credentials, or ones that identify no one.
    #[error("{0}")]
    Unauthenticated(String),
    /// The actor may not do this (e.g. approve their own version under four eyes).
    #[error("{0}")]
    Forbidden(String),
    /// The request is well-formed but the state forbids it (e.g. failed quality gates).
    #[error("{0}")]
    Refused(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// Artifact storage failed.
    #[error(transparent)]
    Artifacts(flywheel_artifacts::ArtifactError),
    /// A dependency (the bus) cannot serve the request now.
    #[error("{0}")]
    Unavailable(String),
}

impl From<flywheel_artifacts::ArtifactError> for RegistryError {
    fn from(e: flywheel_artifacts::ArtifactError) -> Self {
        use flywheel_artifacts::ArtifactError as A;
        match e {
            A::InvalidKey { .. } => RegistryError::InvalidParameter(e.to_string()),
            A::NotFound(key) => RegistryError::NotFound(format!("artifact {key} not found")),
            A::TooLarge { .. } => RegistryError::InvalidParameter(e.to_string()),
            other => RegistryError::Artifacts(other),
        }
    }
}

/// Result with [`RegistryError`].
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

impl RegistryError {
    /// Whether a database error is a unique-constraint violation (a lost race for a name).
    pub(crate) fn is_unique_violation(e: &sea_orm::DbErr) -> bool {
        matches!(
            e.sql_err(),
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
        )
    }

    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            RegistryError::NotFound(_) => ErrorCode::NotFound,
            RegistryError::AlreadyExists(_) => ErrorCode::Conflict,
            RegistryError::InvalidParameter(_) => ErrorCode::BadRequest,
            RegistryError::Unauthenticated(_) => ErrorCode::Unauthorized,
            RegistryError::Forbidden(_) => ErrorCode::Forbidden,
            RegistryError::Refused(_) => ErrorCode::Unprocessable,
            RegistryError::Unavailable(_) => ErrorCode::Unavailable,
            RegistryError::Db(_) | RegistryError::Artifacts(_) => ErrorCode::Internal,
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        match self.code() {
            ErrorCode::Internal => ApiError::internal(&self).into_response(),
            code => ApiError::new(code, self.to_string()).into_response(),
        }
    }
}
