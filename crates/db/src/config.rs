use serde::{Deserialize, Serialize};

/// Database URL and pool settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DbConfig {
    /// `postgres://user[:password]@host:port/db` or `sqlite://path/to/file.db`.
    pub url: String,
    /// PostgreSQL schema to use (search_path); none for the default.
    pub schema: Option<String>,
    /// Pool size upper bound.
    pub max_connections: u32,
    /// Connections kept open when idle.
    pub min_connections: u32,
    /// Seconds to wait for a new connection.
    pub connect_timeout_secs: u64,
    /// Seconds to wait for a pooled connection.
    pub acquire_timeout_secs: u64,
    /// Seconds before an idle connection is closed.
    pub idle_timeout_secs: u64,
    /// Log every SQL statement (debug level).
    pub log_statements: bool,
}

impl Default for DbConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://.flywheel/flywheel.db".into(),
            schema: None,
            max_connections: 10,
            min_connections: 1,
            connect_timeout_secs: 10,
            acquire_timeout_secs: 10,
            idle_timeout_secs: 300,
            log_statements: false,
        }
    }
}

impl DbConfig {
    /// Checks the URL form and pool bounds; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let supported = ["postgres://", "postgresql://", "sqlite:"];
        if !supported.iter().any(|scheme| self.url.starts_with(scheme)) {
            return Err(format!(
                "db.url: expected postgres://user@host:port/db or sqlite://path.db, got `{}`",
                crate::redact(&self.url)
            ));
        }
        if self.max_connections == 0 || self.min_connections > self.max_connections {
            return Err(format!(
                "db.max_connections: expected at least 1 and at least db.min_connections ({}), got {}",
                self.min_connections, self.max_connections
            ));
        }
        Ok(())
    }
}
