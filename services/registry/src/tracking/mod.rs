//! Experiments and runs: params, metrics (with history), tags, status and lineage tags.
//!
//! The store speaks SQL through sea-query, so the same code runs on PostgreSQL and SQLite.
//! Both the MLflow-compatible API and the native API sit on top of it.

pub mod experiments;
pub mod logged_models;
pub mod runs;
pub(crate) mod search;

pub use experiments::{Experiment, ViewType};
pub use runs::{ImportedRun, LogBatch, Metric, Run, RunInfo, RunStatus, SearchRuns};

/// A key/value pair (param or tag).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyValue {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Checks an MLflow entity name (experiment, param, metric or tag key).
pub(crate) fn check_key(kind: &str, key: &str) -> crate::Result<()> {
    if key.is_empty() || key.len() > 250 {
        return Err(crate::RegistryError::InvalidParameter(format!(
            "{kind} `{key}` must have 1 to 250 characters"
        )));
    }
    if key.contains("..") || key.starts_with('/') || key.chars().any(char::is_control) {
        return Err(crate::RegistryError::InvalidParameter(format!(
            "invalid {kind} `{key}`"
        )));
    }
    Ok(())
}

/// Parses an MLflow experiment id (a decimal string on the wire).
pub(crate) fn parse_experiment_id(raw: &str) -> crate::Result<i64> {
    raw.trim().parse().map_err(|_| {
        crate::RegistryError::InvalidParameter(format!("invalid experiment_id `{raw}`"))
    })
}

/// Opaque page tokens: the offset of the next page.
pub(crate) fn parse_page_token(token: Option<&str>) -> crate::Result<u64> {
    match token.filter(|t| !t.is_empty()) {
        None => Ok(0),
        Some(t) => t.parse().map_err(|_| {
            crate::RegistryError::InvalidParameter(format!("invalid page_token `{t}`"))
        }),
    }
}
