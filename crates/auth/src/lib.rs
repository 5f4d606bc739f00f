//! Who may do what: API tokens and roles per project.
//!
//! A token is `fwt_<id>_<secret>`. Only the SHA-256 of the secret is stored, as the last message
//! on `<prefix>.tokens.<id>` (the TOKENS stream keeps one per subject), so every service reads
//! the same tokens without a shared database and sees a revocation within moments. A bootstrap
//! admin token from configuration lets the first admin in.

mod config;
mod principal;
mod store;
mod token;

pub use config::AuthConfig;
pub use principal::{ALL_PROJECTS, Principal, Role};
pub use store::TokenStore;
pub use token::{IssuedToken, NewToken, TokenRecord};

/// Why a request is not let in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials, or credentials that identify no one (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// Someone known, without the role this needs (403).
    #[error("{0}")]
    Forbidden(String),
    /// A token request that makes no sense (400).
    #[error("{0}")]
    Invalid(String),
    /// The token store could not be read or written.
    #[error("token store: {0}")]
    Store(String),
}
