//! The monitor's errors and their one mapping to HTTP.

use axum::response::{IntoResponse, Response};
use flywheel_runtime::{ApiError, ErrorCode};

/// What can go wrong in the monitor.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// No such dataset version, deployment or report.
    #[error("{0}")]
    NotFound(String),
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Taken by another project.
    #[error("{0}")]
    Conflict(String),
    /// Stored bytes could not be read.
    #[error("artifacts: {0}")]
    Artifacts(String),
    /// A webhook did not take a delivery.
    #[error("{0}")]
    Delivery(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// This replica no longer holds the partition it was counting.
    #[error("partition lease lost: {0}")]
    LeaseLost(String),
}

/// Result with [`MonitorError`].
pub type Result<T, E = MonitorError> = std::result::Result<T, E>;

impl IntoResponse for MonitorError {
    fn into_response(self) -> Response {
        match self {
            MonitorError::NotFound(m) => ApiError::new(ErrorCode::NotFound, m).into_response(),
            MonitorError::Invalid(m) => ApiError::new(ErrorCode::BadRequest, m).into_response(),
            MonitorError::Conflict(m) => ApiError::new(ErrorCode::Conflict, m).into_response(),
            MonitorError::Artifacts(m) | MonitorError::Delivery(m) | MonitorError::LeaseLost(m) => {
                ApiError::internal(m).into_response()
            }
            MonitorError::Db(e) => ApiError::internal(e).into_response(),
        }
    }
}
