//! Artifact storage for Flywheel on object_store: S3-compatible, local filesystem or memory,
//! chosen by one URL-style setting. Content-addressed puts (sha256) stream large files in
//! multipart uploads; reads of content-addressed objects are verified; keys cannot escape
//! their prefix.

mod config;
mod error;
mod keys;
pub mod package;
mod store;

pub use config::{ArtifactsConfig, S3Config};
pub use error::{ArtifactError, Result};
pub use keys::validate_key;
pub use store::{ArtifactStore, ContentRef, ObjectInfo};
