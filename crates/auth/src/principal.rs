//! Roles, and who a request acts as.

use serde::{Deserialize, Serialize};

/// A token for every project.
pub const ALL_PROJECTS: &str = "*";

/// What a token may do in its project; each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything of the project.
    Viewer,
    /// Also trains, pushes datasets, deploys, promotes (subject to policy), cancels.
    Operator,
    /// Also approves or rejects promotions.
    Approver,
    /// Also manages tokens and policies.
    Admin,
}

impl Role {
    /// The role's name as written in tokens and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "approver" => Ok(Role::Approver),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{other}`: viewer, operator, approver or admin"
            )),
        }
    }
}

/// Who a request acts as: a token's holder, the bootstrap admin, or (auth off) anyone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The token's name: what the audit log records as the actor.
    pub name: String,
    /// The token's id (`bootstrap` for the configured admin token, `anonymous` with auth off).
    pub token_id: String,
    /// The project the token belongs to, or [`ALL_PROJECTS`].
    pub project: String,
    /// Its role there.
    pub role: Role,
}

impl Principal {
    /// Everyone, when authentication is off.
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            token_id: "anonymous".into(),
            project: ALL_PROJECTS.into(),
            role: Role::Admin,
        }
    }

    /// Whether this principal has at least `role` in `project`.
    pub fn can(&self, role: Role, project: &str) -> bool {
        self.role >= role && self.sees(project)
    }

    /// Whether anything of `project` is visible to this principal.
    pub fn sees(&self, project: &str) -> bool {
        self.project == ALL_PROJECTS || self.project == project
    }

    /// Whether this principal has at least `role` in its own project (for requests that name no
    /// project: the project is then the token's).
    pub fn has(&self, role: Role) -> bool {
        self.role >= role
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_ones_before_them_and_stop_at_their_project() {
        let approver = Principal {
            name: "ana".into(),
            token_id: "t1".into(),
            project: "fraud".into(),
            role: Role::Approver,
        };
        assert!(approver.can(Role::Viewer, "fraud"));
        assert!(approver.can(Role::Operator, "fraud"));
        assert!(approver.can(Role::Approver, "fraud"));
        assert!(!approver.can(Role::Admin, "fraud"));
        assert!(!approver.can(Role::Viewer, "churn"));
        assert!(Principal::anonymous().can(Role::Admin, "churn"));
        assert_eq!("operator".parse::<Role>(), Ok(Role::Operator));
        assert!("root".parse::<Role>().is_err());
    }
}
