//! Who may call the deployer: inference needs a token with at least the viewer role, unless the
//! deployment is public (`public_inference`); the server's own V2 metadata and health are
//! public; fault injection needs an admin; the deployment API follows the default rule.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use axum::http::Method;
use flywheel_runtime::access::{self, Access};
use flywheel_runtime::{AccessRule, Role};

/// The deployments whose inference answers without a token.
#[derive(Debug, Clone, Default)]
pub(crate) struct PublicInference(Arc<RwLock<HashSet<String>>>);

impl PublicInference {
    /// Records whether `deployment` is public.
    pub(crate) fn set(&self, deployment: &str, public: bool) {
        if let Ok(mut names) = self.0.write() {
            if public {
                names.insert(deployment.to_owned());
            } else {
                names.remove(deployment);
            }
        }
    }

    fn contains(&self, deployment: &str) -> bool {
        self.0.read().is_ok_and(|names| names.contains(deployment))
    }
}

/// The deployer's access rule.
pub(crate) fn rule(public: PublicInference) -> AccessRule {
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
            return if public.contains(name) {
                Access::Public
            } else {
                Access::Needs(Role::Viewer)
            };
        }
        if route.ends_with("/fault") {
            return Access::Needs(Role::Admin);
        }
        access::default_access(method, route, path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_is_public_only_for_public_deployments() {
        let public = PublicInference::default();
        public.set("open", true);
        let rule = rule(public.clone());
        let infer = |name: &str| {
            rule(
                &Method::POST,
                "/v2/models/{name}/infer",
                &format!("/v2/models/{name}/infer"),
            )
        };
        assert_eq!(infer("open"), Access::Public);
        assert_eq!(infer("closed"), Access::Needs(Role::Viewer));
        let records = rule(
            &Method::POST,
            "/v1/deployments/{name}/predict",
            "/v1/deployments/open/predict",
        );
        assert_eq!(records, Access::Public);
        public.set("open", false);
        assert_eq!(infer("open"), Access::Needs(Role::Viewer));
        assert_eq!(
            rule(
                &Method::PUT,
                "/api/v1/deployments/{name}",
                "/api/v1/deployments/open"
            ),
            Access::Needs(Role::Operator)
        );
        assert_eq!(
            rule(
                &Method::PUT,
                "/api/v1/deployments/{name}/versions/{version}/fault",
                "/api/v1/deployments/open/versions/1/fault"
            ),
            Access::Needs(Role::Admin)
        );
        assert_eq!(
            rule(&Method::GET, "/v2/health/ready", "/v2/health/ready"),
            Access::Public
        );
    }
}
