/// Database failures.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Settings are unusable.
    #[error("{0}")]
    Config(String),
    /// The database did not accept a connection.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    /// A migration failed.
    #[error("migration failed for {service}: {reason}")]
    Migration {
        /// The service whose migrations ran.
        service: String,
        /// Why.
        reason: String,
    },
    /// A query failed.
    #[error(transparent)]
    Query(#[from] sea_orm::DbErr),
}

/// Result with [`DbError`].
pub type Result<T, E = DbError> = std::result::Result<T, E>;
