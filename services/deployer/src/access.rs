//! Who may call the deployer: inference needs a token with at least the viewer role in the
//! deployment's project, unless the deployment is public (`public_inference`); the server's own
//! V2 metadata and health are public; fault injection needs an admin; the deployment API needs
//! a viewer to read and an operator to change, in the deployment's project.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::http::Method;
use flywheel_runtime::access::{self, Access};
use flywheel_runtime::{AccessRule, Role};

/// Each deployment's project and whether its inference answers without a token.
#[derive(Debug, Clone, Default)]
pub(crate) struct Exposure(Arc<RwLock<HashMap<String, Exposed>>>);

#[derive(Debug, Clone)]
struct Exposed {
    project: String,
    public: bool,
}

impl Exposure {
    /// Records `deployment`'s project and whether it is public.
    pub(crate) fn set(&self, deployment: &str, project: &str, public: bool) {
        if let Ok(mut known) = self.0.write() {
            known.insert(
                deployment.to_owned(),
                Exposed {
                    project: project.to_owned(),
                    public,
                },
            );
        }
    }

    /// Forgets a deleted deployment.
    pub(crate) fn remove(&self, deployment: &str) {
        if let Ok(mut known) = self.0.write() {
            known.remove(deployment);
        }
    }

    /// The project of `deployment` (`default` for one this replica does not know).
    pub(crate) fn project(&self, deployment: &str) -> String {
        self.get(deployment).map_or_else(
            || flywheel_runtime::scope::DEFAULT_PROJECT.to_owned(),
            |exposed| exposed.project,
        )
    }

    fn get(&self, deployment: &str) -> Option<Exposed> {
        self.0.read().ok()?.get(deployment).cloned()
    }
}

/// `role` in the deployment's project when the deployment is known (an unknown one is the
/// handler's 404, or a create).
fn in_project_of(known: Option<&Exposed>, role: Role) -> Access {
    match known {
        Some(exposed) => Access::NeedsIn(role, exposed.project.clone()),
        None => Access::Needs(role),
    }
}

/// The deployer's access rule.
pub(crate) fn rule(exposure: Exposure) -> AccessRule {
    Arc::new(move |method: &Method, route: &str, path: &str| {
        if matches!(route, "/v2" | "/v2/health/live" | "/v2/health/ready") {
            return Access::Public;
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let inference = match segments.as_slice() {
            ["v2", "models", name, ..] => Some(*name),
            ["v1", "deployments", name, "predict"] => Some(*name),
            _ => None,
        };
        if let Some(name) = inference {
            let known = exposure.get(name);
            return match &known {
                Some(exposed) if exposed.public => Access::Public,
                _ => in_project_of(known.as_ref(), Role::Viewer),
            };
        }
        let known = match segments.as_slice() {
            ["api", "v1", "deployments", name, ..] => exposure.get(name),
            _ => None,
        };
        if route.ends_with("/fault") {
            return in_project_of(known.as_ref(), Role::Admin);
        }
        match access::default_access(method, route, path) {
            Access::Needs(role) => in_project_of(known.as_ref(), role),
            other => other,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_is_public_only_for_public_deployments() {
        let exposure = Exposure::default();
        exposure.set("open", "default", true);
        exposure.set("fraud-scorer", "fraud", false);
        let rule = rule(exposure.clone());
        let infer = |name: &str| {
            rule(
                &Method::POST,
                "/v2/models/{name}/infer",
                &format!("/v2/models/{name}/infer"),
            )
        };
        assert_eq!(infer("open"), Access::Public);
        assert_eq!(infer("closed"), Access::Needs(Role::Viewer));
        assert_eq!(
            infer("fraud-scorer"),
            Access::NeedsIn(Role::Viewer, "fraud".into())
        );
        let records = rule(
            &Method::POST,
            "/v1/deployments/{name}/predict",
            "/v1/deployments/open/predict",
        );
        assert_eq!(records, Access::Public);
        exposure.set("open", "default", false);
        assert_eq!(
            infer("open"),
            Access::NeedsIn(Role::Viewer, "default".into())
        );
        assert_eq!(
            rule(
                &Method::PUT,
                "/api/v1/deployments/{name}",
                "/api/v1/deployments/open"
            ),
            Access::NeedsIn(Role::Operator, "default".into())
        );
        assert_eq!(
            rule(
                &Method::PUT,
                "/api/v1/deployments/{name}",
                "/api/v1/deployments/new-one"
            ),
            Access::Needs(Role::Operator)
        );
        assert_eq!(
            rule(
                &Method::PUT,
                "/api/v1/deployments/{name}/versions/{version}/fault",
                "/api/v1/deployments/fraud-scorer/versions/1/fault"
            ),
            Access::NeedsIn(Role::Admin, "fraud".into())
        );
        assert_eq!(
            rule(&Method::GET, "/v2/health/ready", "/v2/health/ready"),
            Access::Public
        );
    }
}
