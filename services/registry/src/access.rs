//! Tokens, dashboard sessions and who may call which registry route.
//!
//! Tokens live in the shared TOKENS stream (`flywheel-auth`); the registry is where admins
//! create, list and revoke them. The dashboard signs in by posting a token, which comes back as
//! an HTTP-only, `SameSite=Strict` session cookie; its unsafe requests carry the session's CSRF
//! token in `X-CSRF-Token`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use flywheel_auth::{AuthError, NewToken, Principal, Role};
use flywheel_runtime::access::{self, Access, SESSION_COOKIE};
use flywheel_runtime::{AccessRule, ApiJson};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::dashboard::timeline::{self, Filter};
use crate::{AppState, RegistryError, Result};

/// Token and session routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route(
            "/api/v1/session",
            get(session).post(sign_in).delete(sign_out),
        )
        .route("/api/v1/security/denials", get(denials))
}

/// The registry's rule: the dashboard's page and sign-in are public; tokens, policies and the
/// denial log need an admin; deciding promotions an approver; MLflow's read-only searches
/// (POSTs) a viewer; other reads a viewer, other changes an operator.
pub(crate) fn rule() -> AccessRule {
    Arc::new(|method: &Method, route: &str, path: &str| {
        let public = matches!(
            route,
            "/" | "/dashboard/app.js" | "/dashboard/style.css" | "/api/v1/session"
        );
        if public {
            return Access::Public;
        }
        if route.starts_with("/api/v1/tokens")
            || route == "/api/v1/security/denials"
            || (route == "/api/v1/models/{name}/policy" && method != Method::GET)
        {
            return Access::Needs(Role::Admin);
        }
        if route.starts_with("/api/v1/promotions/{id}/") {
            return Access::Needs(Role::Approver);
        }
        let mlflow_read = path.ends_with("/search") || path.ends_with("/get-history-bulk");
        if method == Method::POST && path.starts_with("/api/2.0/mlflow/") && mlflow_read {
            return Access::Needs(Role::Viewer);
        }
        access::default_access(method, route, path)
    })
}

fn tokens(state: &AppState) -> Result<&flywheel_auth::TokenStore> {
    state.tokens.as_ref().ok_or_else(|| {
        RegistryError::Refused("authentication is off (auth.enabled = false): no tokens".into())
    })
}

/// The token store and the admin calling it (the gate put the principal there when
/// authentication is on; off, there are no tokens to manage).
fn managed(
    state: &AppState,
    admin: Option<Extension<Principal>>,
) -> Result<(&flywheel_auth::TokenStore, Principal)> {
    let store = tokens(state)?;
    let Some(Extension(admin)) = admin else {
        return Err(RegistryError::Unauthenticated(
            "authentication required".into(),
        ));
    };
    Ok((store, admin))
}

impl From<AuthError> for RegistryError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthenticated(m) => RegistryError::Unauthenticated(m),
            AuthError::Forbidden(m) => RegistryError::Forbidden(m),
            AuthError::Invalid(m) => RegistryError::InvalidParameter(m),
            AuthError::Store(m) => RegistryError::Unavailable(m),
        }
    }
}

async fn create_token(
    State(state): State<AppState>,
    admin: Option<Extension<Principal>>,
    ApiJson(new): ApiJson<NewToken>,
) -> Result<impl IntoResponse> {
    let (store, admin) = managed(&state, admin)?;
    let issued = store.create(&new, &admin).await?;
    tracing::info!(id = %issued.record.id, name = %issued.record.name, by = %admin.name, "token created");
    Ok((StatusCode::CREATED, Json(issued)))
}

async fn list_tokens(
    State(state): State<AppState>,
    admin: Option<Extension<Principal>>,
) -> Result<impl IntoResponse> {
    let (store, admin) = managed(&state, admin)?;
    Ok(Json(store.list(&admin).await?))
}

async fn revoke_token(
    State(state): State<AppState>,
    admin: Option<Extension<Principal>>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse> {
    let (store, admin) = managed(&state, admin)?;
    let revoked = store.revoke(&id, &admin).await?;
    tracing::info!(id = %revoked.id, by = %admin.name, "token revoked");
    Ok(Json(revoked))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

fn described(principal: &Principal, csrf: Option<String>, auth: bool) -> Value {
    json!({
        "name": principal.name,
        "project": principal.project,
        "role": principal.role,
        "csrf_token": csrf,
        "auth": auth,
    })
}

/// The session cookie holding `token` for `max_age` seconds (0 clears it): HTTP-only, so the
/// page's script cannot read it; Secure and SameSite=Strict, so it travels only to this origin.
fn session_cookie(token: &str, max_age: u32) -> String {
    format!(
        "{SESSION_COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age}"
    )
}

/// Signs the dashboard in: the token becomes the session cookie.
async fn sign_in(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<impl IntoResponse> {
    let token = body.token.trim();
    let principal = tokens(&state)?.authenticate(token).await?;
    Ok((
        [(header::SET_COOKIE, session_cookie(token, 43_200))],
        Json(described(&principal, Some(access::csrf_token(token)), true)),
    ))
}

/// Who the session (or bearer token) is, and its CSRF token.
async fn session(State(state): State<AppState>, headers: HeaderMap) -> Result<impl IntoResponse> {
    let Some(store) = &state.tokens else {
        return Ok(Json(described(&Principal::anonymous(), None, false)));
    };
    let (token, _) = access::credentials(&headers)
        .ok_or_else(|| RegistryError::Unauthenticated("not signed in".into()))?;
    let principal = store.authenticate(&token).await?;
    Ok(Json(described(
        &principal,
        Some(access::csrf_token(&token)),
        true,
    )))
}

async fn sign_out() -> impl IntoResponse {
    (
        [(header::SET_COOKIE, session_cookie("", 0))],
        StatusCode::NO_CONTENT,
    )
}

/// Refused requests across the platform (`security.access.denied`), newest last.
async fn denials(State(state): State<AppState>) -> Result<impl IntoResponse> {
    let events = timeline::read(
        &state.db,
        &Filter {
            types: &["security.access.denied"],
            limit: 1000,
            ..Filter::default()
        },
    )
    .await?;
    Ok(Json(timeline::as_json(&events)))
}
