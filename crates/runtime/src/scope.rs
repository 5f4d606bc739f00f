//! Which projects a request may see, and which project what it creates belongs to.
//!
//! The gate computes a [`Scope`] per request from the token's project and the optional
//! `X-Flywheel-Project` header and runs the handler inside it; event handlers run inside the
//! scope of the event's project. Data access reads [`current`] to filter and stamp rows, so a
//! token for project A finds nothing of project B without every handler passing it along.

use std::future::Future;

/// The header that picks a project for tokens valid in every project (and with auth off).
pub const PROJECT_HEADER: &str = "x-flywheel-project";
/// The project of resources created without naming one.
pub const DEFAULT_PROJECT: &str = "default";

/// The projects visible to a piece of work and the one it creates in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `None`: every project.
    visible: Option<String>,
    home: String,
}

impl Scope {
    /// Every project visible; creates go to [`DEFAULT_PROJECT`].
    pub fn all() -> Self {
        Self {
            visible: None,
            home: DEFAULT_PROJECT.to_owned(),
        }
    }

    /// Only `project` visible, and creates go there.
    pub fn project(project: impl Into<String>) -> Self {
        let project = project.into();
        Self {
            visible: Some(project.clone()),
            home: project,
        }
    }

    /// Every project visible (an event handler's reads), creates go to `project`.
    pub fn creating_in(project: impl Into<String>) -> Self {
        Self {
            visible: None,
            home: project.into(),
        }
    }

    /// The one visible project, or `None` when all are.
    pub fn only(&self) -> Option<&str> {
        self.visible.as_deref()
    }

    /// Whether rows of `project` are visible.
    pub fn sees(&self, project: &str) -> bool {
        self.visible.as_deref().is_none_or(|p| p == project)
    }

    /// Where new resources go.
    pub fn home(&self) -> &str {
        &self.home
    }
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// Runs `work` inside `scope`.
pub async fn within<F: Future>(scope: Scope, work: F) -> F::Output {
    SCOPE.scope(scope, work).await
}

/// The scope of the running work: every project when none was set (background work, tests).
pub fn current() -> Scope {
    SCOPE
        .try_with(Clone::clone)
        .unwrap_or_else(|_| Scope::all())
}

/// Keeps rows whose `column` (a project column) is visible to the running work; no condition
/// when every project is.
pub fn confine(
    select: &mut sea_orm::sea_query::SelectStatement,
    column: impl sea_orm::sea_query::IntoColumnRef,
) {
    use sea_orm::sea_query::{Expr, ExprTrait};
    if let Some(project) = current().only() {
        select.and_where(Expr::col(column).eq(project));
    }
}

/// The project a new resource goes to: the one the request names, else the scope's home; an
/// invalid name, or one outside the scope, is refused with a message.
pub fn place(named: Option<&str>) -> Result<String, String> {
    let scope = current();
    let project = named.unwrap_or(scope.home());
    if !valid_project(project) {
        return Err(format!(
            "invalid project `{project}`: 1-64 of a-z, 0-9, - and _"
        ));
    }
    if !scope.sees(project) {
        return Err(format!(
            "cannot create in project {project} from project {}",
            scope.home()
        ));
    }
    Ok(project.to_owned())
}

/// Whether `name` is a valid project name: 1–64 of `a-z 0-9 - _`, starting with a letter or
/// digit.
pub fn valid_project(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=64).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_sees_its_scope_and_everything_outside_one() {
        assert_eq!(current(), Scope::all());
        let inside = within(Scope::project("fraud"), async { current() }).await;
        assert!(inside.sees("fraud"));
        assert!(!inside.sees("default"));
        assert_eq!(inside.home(), "fraud");
        let handler = Scope::creating_in("churn");
        assert!(handler.sees("fraud"));
        assert_eq!(handler.home(), "churn");
        assert!(valid_project("team-a_2"));
        assert!(!valid_project("Team"));
        assert!(!valid_project("-a"));
        assert!(!valid_project(""));
        assert!(!valid_project(&"a".repeat(65)));
        within(Scope::project("fraud"), async {
            assert_eq!(place(None).as_deref(), Ok("fraud"));
            assert_eq!(place(Some("fraud")).as_deref(), Ok("fraud"));
            assert!(place(Some("churn")).is_err());
        })
        .await;
        assert_eq!(place(None).as_deref(), Ok(DEFAULT_PROJECT));
        assert!(place(Some("Bad Name")).is_err());
    }
}
