//! Who may call what: every mounted route passes this gate. With `auth.enabled` a request
//! carries `Authorization: Bearer <token>` (or the dashboard's session cookie, whose unsafe
//! requests must also carry the CSRF token), and the route's rule names the role it needs.
//! Refusals answer 401/403 in the API error format and are published as
//! `security.access.denied`.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flywheel_auth::{AuthError, Principal, Role, TokenStore};
use flywheel_bus::Bus;
use flywheel_events::payloads::AccessDenied;
use flywheel_events::{Envelope, Event};
use sha2::Digest;

use crate::http::{ApiError, ErrorCode};

/// The dashboard's session cookie: the token itself, HTTP-only, `SameSite=Strict`.
pub const SESSION_COOKIE: &str = "flywheel_session";
/// The header unsafe cookie-authenticated requests must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Who acts, as handlers read it: set from the token when authentication is on.
pub const ACTOR_HEADER: &str = "x-flywheel-actor";
pub use crate::scope::DEFAULT_PROJECT;
use crate::scope::{self, PROJECT_HEADER, Scope};

/// What a route needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, the dashboard's page, public inference).
    Public,
    /// A principal with at least this role (where: see [`Gate::with_projects`]).
    Needs(Role),
    /// A principal with at least this role in this project: the route addresses a resource the
    /// rule knows the project of.
    NeedsIn(Role, String),
}

/// A service's rule: the access a request needs, from its method, route template and path.
pub type AccessRule = Arc<dyn Fn(&Method, &str, &str) -> Access + Send + Sync>;

/// Reads need a viewer, changes an operator.
pub fn default_access(method: &Method, _route: &str, _path: &str) -> Access {
    if is_safe(method) {
        Access::Needs(Role::Viewer)
    } else {
        Access::Needs(Role::Operator)
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The gate's state: the token store (none with auth off) and the service's rule.
#[derive(Clone)]
pub struct Gate {
    service: &'static str,
    store: Option<TokenStore>,
    rule: AccessRule,
    bus: Bus,
    /// Whether the service's data carry projects: then a role anywhere admits a request, whose
    /// reads and writes the [`Scope`] confines; otherwise the role must hold in
    /// [`DEFAULT_PROJECT`], where all of the service's data live.
    projects: bool,
    /// Denials being published; a flood of refused requests must not become a flood of tasks.
    reporting: Arc<tokio::sync::Semaphore>,
}

/// Denials published at once; beyond it they are only counted and logged.
const DENIALS_IN_FLIGHT: usize = 64;

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("service", &self.service)
            .field("enabled", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// A gate for `service`; `store` is `None` when authentication is off.
    pub fn new(
        service: &'static str,
        store: Option<TokenStore>,
        rule: AccessRule,
        bus: Bus,
    ) -> Self {
        Self {
            service,
            store,
            rule,
            bus,
            projects: false,
            reporting: Arc::new(tokio::sync::Semaphore::new(DENIALS_IN_FLIGHT)),
        }
    }

    /// This service's data carry projects (see [`crate::scope`]).
    pub fn with_projects(mut self) -> Self {
        self.projects = true;
        self
    }

    /// The token store, when authentication is on.
    pub fn store(&self) -> Option<&TokenStore> {
        self.store.as_ref()
    }
}

/// Headers for a service's own calls to another service: its `auth.service_token`, if any.
/// Only for calls to Flywheel services (never webhooks: the token must not leave).
pub fn service_headers(auth: &flywheel_auth::AuthConfig) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(token) = &auth.service_token
        && let Ok(value) = format!("Bearer {token}").parse()
    {
        headers.insert(header::AUTHORIZATION, value);
    }
    headers
}

/// The CSRF token of a session: derived from the session's token, so it needs no storage and
/// dies with the token.
pub fn csrf_token(session_token: &str) -> String {
    hex::encode(sha2::Sha256::digest(format!(
        "flywheel-csrf:{session_token}"
    )))
}

/// The credentials of a request: the bearer token, else the session cookie's (and whether it
/// came from the cookie).
pub fn credentials(headers: &HeaderMap) -> Option<(String, bool)> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some((bearer.trim().to_owned(), false));
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| (value.to_owned(), true))
}

/// The middleware: authenticates, checks the route's role, and puts the [`Principal`] into
/// the request's extensions.
pub async fn check(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let wanted = match requested_project(request.headers()) {
        Ok(wanted) => wanted,
        Err(error) => return error.into_response(),
    };
    let Some(store) = &gate.store else {
        let scope = wanted.map_or_else(Scope::all, Scope::project);
        return scope::within(scope, next.run(request)).await;
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let (needed, owner) = match (gate.rule)(&method, &route, &path) {
        Access::Public => {
            let scope = wanted.map_or_else(Scope::all, Scope::project);
            return scope::within(scope, next.run(request)).await;
        }
        Access::Needs(role) => (role, None),
        Access::NeedsIn(role, project) => (role, Some(project)),
    };
    let refuse = |status: StatusCode, reason: String, who: Option<&Principal>| {
        deny(&gate, &method, &path, status, reason, who)
    };
    let Some((token, from_cookie)) = credentials(request.headers()) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "authentication required: send Authorization: Bearer <token>".into(),
            None,
        );
    };
    let principal = match store.authenticate(&token).await {
        Ok(principal) => principal,
        Err(AuthError::Store(e)) => {
            tracing::error!(error = %e, "token store unavailable");
            return ApiError::unavailable("cannot check credentials right now").into_response();
        }
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, e.to_string(), None),
    };
    if from_cookie && !is_safe(&method) {
        let sent = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if sent != csrf_token(&token) {
            return refuse(
                StatusCode::FORBIDDEN,
                format!("missing or wrong {CSRF_HEADER} header"),
                Some(&principal),
            );
        }
    }
    let scope = if principal.project == flywheel_auth::ALL_PROJECTS {
        wanted.map_or_else(Scope::all, Scope::project)
    } else {
        match wanted {
            Some(other) if other != principal.project => {
                let reason = format!(
                    "{} holds a token for project {}, not {other}",
                    principal.name, principal.project
                );
                return refuse(StatusCode::FORBIDDEN, reason, Some(&principal));
            }
            _ => Scope::project(principal.project.clone()),
        }
    };
    let (allowed, place) = match (&owner, gate.projects) {
        (Some(project), _) => (
            principal.can(needed, project) && scope.sees(project),
            project.as_str(),
        ),
        (None, true) => (principal.has(needed), principal.project.as_str()),
        (None, false) => (principal.can(needed, DEFAULT_PROJECT), DEFAULT_PROJECT),
    };
    if !allowed {
        let reason = format!(
            "{} {route} needs the {} role in project {place}; {} has {} in {}",
            method,
            needed.as_str(),
            principal.name,
            principal.role.as_str(),
            principal.project
        );
        return refuse(StatusCode::FORBIDDEN, reason, Some(&principal));
    }
    // Handlers read the actor from this header; with auth on it is the token's holder, whatever
    // the caller sent.
    let actor = axum::http::HeaderValue::from_str(&principal.name)
        .or_else(|_| axum::http::HeaderValue::from_str(&principal.token_id));
    if let Ok(actor) = actor {
        request.headers_mut().insert(ACTOR_HEADER, actor);
    }
    request.extensions_mut().insert(principal);
    scope::within(scope, next.run(request)).await
}

/// The project named by `X-Flywheel-Project`, if any; a malformed one is a 400.
fn requested_project(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get(PROJECT_HEADER) else {
        return Ok(None);
    };
    match raw.to_str() {
        Ok(name) if scope::valid_project(name.trim()) => Ok(Some(name.trim().to_owned())),
        _ => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("{PROJECT_HEADER} must be 1-64 characters of a-z, 0-9, - and _"),
        )),
    }
}

/// Answers a refusal and records it (metric, log, `security.access.denied`).
fn deny(
    gate: &Gate,
    method: &Method,
    path: &str,
    status: StatusCode,
    reason: String,
    who: Option<&Principal>,
) -> Response {
    metrics::counter!("flywheel_access_denied_total", "status" => status.as_u16().to_string())
        .increment(1);
    tracing::warn!(service = gate.service, %method, path, status = status.as_u16(), reason, actor = who.map(|p| p.name.as_str()), "access denied");
    let event = Event::SecurityAccessDenied(AccessDenied {
        service: gate.service.to_owned(),
        method: method.to_string(),
        path: path.to_owned(),
        status: status.as_u16(),
        reason: reason.clone(),
        actor: who.map(|p| p.name.clone()),
        token_id: who.map(|p| p.token_id.clone()),
    });
    if let Ok(permit) = gate.reporting.clone().try_acquire_owned() {
        let bus = gate.bus.clone();
        let envelope = Envelope::new(gate.service, DEFAULT_PROJECT, event);
        tokio::spawn(async move {
            if let Err(e) = bus.publish(&envelope).await {
                tracing::warn!(error = %e, "access denial not published");
            }
            drop(permit);
        });
    } else {
        metrics::counter!("flywheel_access_denials_unpublished_total").increment(1);
    }
    let code = if status == StatusCode::UNAUTHORIZED {
        ErrorCode::Unauthorized
    } else {
        ErrorCode::Forbidden
    };
    let mut response = ApiError::new(code, reason).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
    }
    response
}
