//! Security events.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A request was refused for want of credentials or of a role: the audit trail of attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AccessDenied {
    /// The service that refused it.
    pub service: String,
    /// HTTP method.
    pub method: String,
    /// The path asked for (no query string: it may carry secrets).
    pub path: String,
    /// 401 (who are you?) or 403 (not allowed).
    pub status: u16,
    /// Why, as told to the caller.
    pub reason: String,
    /// The token's holder, when one was recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The token's id, when one was recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
}
