//! The Flywheel service kit: layered configuration, telemetry (logs, OTLP traces, W3C
//! propagation), the axum server with `/healthz`, `/readyz` and `/metrics`, request ids, the
//! one JSON error format, and graceful shutdown on SIGTERM/ctrl-c.
//!
//! Every service is `run(settings, listener, shutdown)` on top of this crate, and every
//! `main.rs` is one call to [`service_main`].

pub mod access;
mod error;
pub mod http;
mod kit;
mod main_entry;
pub mod metrics;
pub mod outbox;
pub mod readiness;
pub mod scope;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

pub use access::{Access, AccessRule};
pub use error::{ServiceError, ServiceResult};
pub use flywheel_auth::{ALL_PROJECTS, Principal, Role};
pub use flywheel_db::NoMigrations;
pub use http::{ApiError, ApiJson, ErrorCode};
pub use kit::{ServiceKit, Storage};
pub use main_entry::{install_crypto_provider, service_main};
pub use readiness::Readiness;
pub use settings::{HttpConfig, ServiceSettings, load_settings};
pub use telemetry::{TelemetryConfig, TelemetryGuard};
pub use tokio_util::sync::CancellationToken;
