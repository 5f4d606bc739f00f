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
    /// At least 32 characters. Empty means none (so compose can pass an unset variable).
    #[serde(deserialize_with = "empty_is_none")]
    pub bootstrap_admin_token: Option<String>,
    /// The token this service presents when it calls another one on its own behalf.
    #[serde(deserialize_with = "empty_is_none")]
    pub service_token: Option<String>,
}

fn empty_is_none<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let value = Option::<String>::deserialize(deserializer)?;
    Ok(value.filter(|v| !v.trim().is_empty()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_tokens_are_none_and_short_ones_are_refused() {
        let parsed: Result<AuthConfig, _> = serde_json::from_value(
            serde_json::json!({"enabled": true, "bootstrap_admin_token": "", "service_token": " "}),
        );
        let config = parsed.unwrap_or_default();
        assert!(config.enabled);
        assert_eq!(
            (config.bootstrap_admin_token, config.service_token),
            (None, None)
        );
        let short = AuthConfig {
            bootstrap_admin_token: Some("short".into()),
            ..AuthConfig::default()
        };
        assert!(short.validate().is_err());
    }
}
