/// Artifact storage failures.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A key was refused before touching the store.
    #[error("invalid artifact key `{key}`: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The storage URL or settings are unusable.
    #[error("invalid artifact store configuration: {0}")]
    Config(String),
    /// A model package is malformed or points outside the store.
    #[error("invalid model package: {0}")]
    InvalidPackage(String),
    /// No object under the key.
    #[error("artifact `{0}` not found")]
    NotFound(String),
    /// Stored bytes do not hash to what was recorded.
    #[error("artifact `{key}` is corrupted: expected sha256 {expected}, found {actual}")]
    Corrupted {
        /// The key.
        key: String,
        /// The recorded hash.
        expected: String,
        /// The hash of what was read.
        actual: String,
    },
    /// A streaming put exceeded the size limit.
    #[error("artifact exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The byte source failed while streaming.
    #[error("reading the upload failed: {0}")]
    Source(#[from] std::io::Error),
    /// The object store failed.
    #[error("object store: {0}")]
    Store(object_store::Error),
}

impl From<object_store::Error> for ArtifactError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => ArtifactError::NotFound(path),
            other => ArtifactError::Store(other),
        }
    }
}

/// Result with [`ArtifactError`].
pub type Result<T, E = ArtifactError> = std::result::Result<T, E>;
