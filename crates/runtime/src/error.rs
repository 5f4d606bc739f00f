/// Why a service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Configuration is missing or malformed; the message names the key.
    #[error("configuration: {0}")]
    Config(String),
    /// NATS failed.
    #[error(transparent)]
    Bus(#[from] flywheel_bus::BusError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] flywheel_db::DbError),
    /// Artifact storage failed.
    #[error(transparent)]
    Artifacts(#[from] flywheel_artifacts::ArtifactError),
    /// Telemetry could not be set up.
    #[error("telemetry: {0}")]
    Telemetry(String),
    /// Network or file I/O failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Result with [`ServiceError`].
pub type ServiceResult<T = ()> = Result<T, ServiceError>;
