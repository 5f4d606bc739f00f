//! MLflow's error envelope: `{"error_code", "message"}` with the status codes its client expects.
//! Deterministic errors are 4xx: the client retries 5xx for minutes.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::RegistryError;

/// An error rendered the way MLflow renders it.
#[derive(Debug)]
pub(crate) struct MlflowError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl MlflowError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_PARAMETER_VALUE",
            message: message.into(),
        }
    }

    pub(crate) fn endpoint_not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "ENDPOINT_NOT_FOUND",
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "RESOURCE_DOES_NOT_EXIST",
            message: message.into(),
        }
    }
}

impl From<RegistryError> for MlflowError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(m) => Self::not_found(m),
            RegistryError::AlreadyExists(m) => Self {
                status: StatusCode::BAD_REQUEST,
                code: "RESOURCE_ALREADY_EXISTS",
                message: m,
            },
            RegistryError::InvalidParameter(m) | RegistryError::Refused(m) => Self::invalid(m),
            RegistryError::Unauthenticated(m) => Self {
                status: StatusCode::UNAUTHORIZED,
                code: "UNAUTHENTICATED",
                message: m,
            },
            RegistryError::Forbidden(m) => Self {
                status: StatusCode::FORBIDDEN,
                code: "PERMISSION_DENIED",
                message: m,
            },
            other => {
                tracing::error!(error = %other, "MLflow API internal error");
                Self {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    code: "INTERNAL_ERROR",
                    message: "internal error; see the server log".into(),
                }
            }
        }
    }
}

impl From<JsonRejection> for MlflowError {
    fn from(rejection: JsonRejection) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "BAD_REQUEST",
            message: rejection.body_text(),
        }
    }
}

impl From<QueryRejection> for MlflowError {
    fn from(rejection: QueryRejection) -> Self {
        Self::invalid(rejection.body_text())
    }
}

impl IntoResponse for MlflowError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({"error_code": self.code, "message": self.message})),
        )
            .into_response()
    }
}
