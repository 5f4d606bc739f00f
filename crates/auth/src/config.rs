//! The `[auth]` section every service shares.

use serde::{Deserialize, Serialize};

/// Authentication settings (`FLYWHEEL__AUTH__<KEY>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Whether requests must carry a token. Off, every caller is an anonymous admin (a local
    /// stack on a laptop); every service warns about it at start.
    pub enabled: bool,
    /// A token accepted as admin of every project, for the first admin to create real tokens.
    /// At least 32 characters.
    pub bootstrap_admin_token: Option<String>,
    /// The token this service presents when it calls another one on its own behalf.
    pub service_token: Option<String>,
}

impl AuthConfig {
    /// Checks the section; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(token) = &self.bootstrap_admin_token
            && token.len() < 32
        {
            return Err("auth.bootstrap_admin_token: at least 32 characters".into());
        }
        if self.enabled && self.bootstrap_admin_token.is_none() {
            tracing::warn!(
                "auth.enabled without auth.bootstrap_admin_token: only tokens created earlier work"
            );
        }
        Ok(())
    }
}
