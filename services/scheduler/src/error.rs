//! The scheduler's errors and their one mapping to HTTP.

use axum::response::{IntoResponse, Response};
use flywheel_runtime::{ApiError, ErrorCode};

/// What can go wrong in the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// No such job.
    #[error("{0}")]
    NotFound(String),
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The job is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// Outside the caller's project.
    #[error("{0}")]
    Forbidden(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
}

/// Result with [`SchedulerError`].
pub type Result<T, E = SchedulerError> = std::result::Result<T, E>;

impl IntoResponse for SchedulerError {
    fn into_response(self) -> Response {
        match self {
            SchedulerError::NotFound(m) => ApiError::new(ErrorCode::NotFound, m).into_response(),
            SchedulerError::Invalid(m) => ApiError::new(ErrorCode::BadRequest, m).into_response(),
            SchedulerError::Conflict(m) => ApiError::new(ErrorCode::Conflict, m).into_response(),
            SchedulerError::Forbidden(m) => ApiError::new(ErrorCode::Forbidden, m).into_response(),
            SchedulerError::Db(e) => ApiError::internal(e).into_response(),
        }
    }
}
