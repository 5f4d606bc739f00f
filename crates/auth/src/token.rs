//! Token strings, their stored records, and checking one against the other.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{AuthError, Principal, Role};

const PREFIX: &str = "fwt_";

/// What an admin asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Who or what holds it: the actor in audit logs.
    pub name: String,
    /// Its project, or `*` for all.
    pub project: String,
    /// Its role there.
    pub role: Role,
    /// When it stops working; none = until revoked.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A token as stored: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id, part of the token string.
    pub id: String,
    /// Who holds it.
    pub name: String,
    /// Its project, or `*`.
    pub project: String,
    /// Its role.
    pub role: Role,
    /// Hex SHA-256 of the secret part.
    pub secret_sha256: String,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token just created: the only time its secret is seen.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedToken {
    /// The whole token, to send as `Authorization: Bearer <token>`.
    pub token: String,
    /// What is stored about it.
    #[serde(flatten)]
    pub record: TokenRecord,
}

/// SHA-256 of a secret, hex.
pub(crate) fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Equal without telling by timing how much of it matched.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

/// Splits `fwt_<id>_<secret>`.
pub(crate) fn parse(token: &str) -> Result<(&str, &str), AuthError> {
    let malformed = || AuthError::Unauthenticated("malformed token".into());
    let rest = token.strip_prefix(PREFIX).ok_or_else(malformed)?;
    let (id, secret) = rest.split_once('_').ok_or_else(malformed)?;
    if id.len() != 16 || secret.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed());
    }
    Ok((id, secret))
}

/// Creates a token for `new`, issued by `created_by`.
pub(crate) fn issue(new: &NewToken, created_by: &str) -> Result<IssuedToken, AuthError> {
    let name = new.name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(AuthError::Invalid(
            "name: 1 to 100 printable characters".into(),
        ));
    }
    let project_ok = new.project == crate::ALL_PROJECTS
        || (!new.project.is_empty()
            && new.project.len() <= 64
            && new
                .project
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    if !project_ok {
        return Err(AuthError::Invalid(
            "project: `*` or 1 to 64 letters, digits, `-` or `_`".into(),
        ));
    }
    let now = Utc::now();
    if new.expires_at.is_some_and(|at| at <= now) {
        return Err(AuthError::Invalid("expires_at is in the past".into()));
    }
    let id = hex::encode(rand::random::<[u8; 8]>());
    let secret = hex::encode(rand::random::<[u8; 32]>());
    Ok(IssuedToken {
        token: format!("{PREFIX}{id}_{secret}"),
        record: TokenRecord {
            id,
            name: name.to_owned(),
            project: new.project.clone(),
            role: new.role,
            secret_sha256: digest(&secret),
            created_by: created_by.to_owned(),
            created_at: now,
            expires_at: new.expires_at,
            revoked_at: None,
        },
    })
}

impl TokenRecord {
    /// The principal `secret` proves, if it is this token's and the token still works.
    pub(crate) fn check(&self, secret: &str, now: DateTime<Utc>) -> Result<Principal, AuthError> {
        if !same(&digest(secret), &self.secret_sha256) {
            return Err(AuthError::Unauthenticated("invalid token".into()));
        }
        if self.revoked_at.is_some() {
            return Err(AuthError::Unauthenticated("token revoked".into()));
        }
        if self.expires_at.is_some_and(|at| at <= now) {
            return Err(AuthError::Unauthenticated("token expired".into()));
        }
        Ok(Principal {
            name: self.name.clone(),
            token_id: self.id.clone(),
            project: self.project.clone(),
            role: self.role,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_token(expires_at: Option<DateTime<Utc>>) -> NewToken {
        NewToken {
            name: "ci".into(),
            project: "fraud".into(),
            role: Role::Operator,
            expires_at,
        }
    }

    #[test]
    fn an_issued_token_checks_only_with_its_secret_and_stores_no_secret() -> Result<(), AuthError> {
        let issued = issue(&new_token(None), "admin")?;
        let (id, secret) = parse(&issued.token)?;
        assert_eq!(id, issued.record.id);
        assert!(!serde_json::to_string(&issued.record).is_ok_and(|s| s.contains(secret)));
        let principal = issued.record.check(secret, Utc::now())?;
        assert_eq!(
            (principal.name.as_str(), principal.role),
            ("ci", Role::Operator)
        );
        let mut wrong = secret.to_owned();
        wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
        assert!(issued.record.check(&wrong, Utc::now()).is_err());
        Ok(())
    }

    #[test]
    fn revoked_and_expired_tokens_are_refused() -> Result<(), AuthError> {
        let soon = Utc::now() + chrono::Duration::seconds(60);
        let mut issued = issue(&new_token(Some(soon)), "admin")?;
        let (_, secret) = parse(&issued.token)?;
        let secret = secret.to_owned();
        assert!(issued.record.check(&secret, Utc::now()).is_ok());
        let later = soon + chrono::Duration::seconds(1);
        let expired = issued.record.check(&secret, later).map(|_| ());
        assert!(matches!(expired, Err(AuthError::Unauthenticated(m)) if m == "token expired"));
        issued.record.revoked_at = Some(Utc::now());
        let revoked = issued.record.check(&secret, Utc::now()).map(|_| ());
        assert!(matches!(revoked, Err(AuthError::Unauthenticated(m)) if m == "token revoked"));
        Ok(())
    }

    #[test]
    fn malformed_tokens_and_requests_are_refused() {
        for token in [
            "",
            "fwt_",
            "Bearer x",
            "fwt_zz_yy",
            &format!("fwt_{}_{}", "g".repeat(16), "a".repeat(64)),
        ] {
            assert!(parse(token).is_err(), "{token}");
        }
        let past = Utc::now() - chrono::Duration::seconds(1);
        assert!(issue(&new_token(Some(past)), "admin").is_err());
        let mut bad = new_token(None);
        bad.project = "a.b".into();
        assert!(issue(&bad, "admin").is_err());
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
