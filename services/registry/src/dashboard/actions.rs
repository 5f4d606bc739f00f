//! Dashboard actions that reach past the registry: cancelling a job (the scheduler's) and
//! rolling a deployment back (an alias move under the model's governance, or a pinned version
//! set on the deployer). The other actions — approve, reject, promote, alias, retrain — are the
//! registry's own APIs.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use flywheel_events::Event;
use serde_json::{Value, json};

use super::timeline::{self, Filter};
use crate::models::governance;
use crate::{AppState, RegistryError, Result};

/// Where the other services answer (`service.scheduler_url`, `service.deployer_url`).
#[derive(Debug, Clone)]
pub struct Peers {
    /// The scheduler's base URL.
    pub scheduler_url: String,
    /// The deployer's base URL.
    pub deployer_url: String,
    http: reqwest::Client,
}

impl Peers {
    /// Peers at these URLs.
    pub fn new(scheduler_url: String, deployer_url: String) -> Self {
        Self {
            scheduler_url: scheduler_url.trim_end_matches('/').to_owned(),
            deployer_url: deployer_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(15))
                .build()
                .unwrap_or_default(),
        }
    }
}

/// The caller's credentials, passed on: a relayed action is allowed only if the caller may do
/// it at the service that does it.
fn forwarded(headers: &HeaderMap) -> HeaderMap {
    let mut passed = HeaderMap::new();
    if let Some((token, _)) = flywheel_runtime::access::credentials(headers)
        && let Ok(value) = format!("Bearer {token}").parse()
    {
        passed.insert(axum::http::header::AUTHORIZATION, value);
    }
    passed
}

fn unreachable(service: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(format!("the {service} does not answer: {e}"))
}

/// Cancels a job through the scheduler, answering what it answered.
pub(crate) async fn cancel_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Result<impl IntoResponse> {
    let actor = crate::api::actor(&headers)?;
    let response = state
        .peers
        .http
        .post(format!(
            "{}/api/v1/jobs/{job_id}/cancel",
            state.peers.scheduler_url
        ))
        .header("x-flywheel-actor", actor)
        .headers(forwarded(&headers))
        .send()
        .await
        .map_err(|e| unreachable("scheduler", e))?;
    let status = StatusCode::from_u16(response.status().as_u16())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = response
        .json()
        .await
        .map_err(|e| unreachable("scheduler", e))?;
    Ok((status, axum::Json(body)))
}

/// Rolls a deployment back to the version that served before the current one.
pub(crate) async fn rollback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<impl IntoResponse> {
    let actor = crate::api::actor(&headers)?;
    let url = format!("{}/api/v1/deployments/{name}", state.peers.deployer_url);
    let response = state
        .peers
        .http
        .get(&url)
        .headers(forwarded(&headers))
        .send()
        .await
        .map_err(|e| unreachable("deployer", e))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(RegistryError::NotFound(format!(
            "deployment `{name}` not found"
        )));
    }
    let spec: Value = response
        .json()
        .await
        .map_err(|e| unreachable("deployer", e))?;
    let serving = spec["serving_version"]
        .as_i64()
        .ok_or_else(|| RegistryError::Refused(format!("`{name}` serves no version yet")))?;
    let previous = previous_version(&state, &name, serving)
        .await?
        .ok_or_else(|| {
            RegistryError::Refused(format!(
                "`{name}` has served only version {serving}: nothing to roll back to"
            ))
        })?;
    let model = spec["model"].as_str().unwrap_or_default().to_owned();
    if let Some(alias) = spec["alias"].as_str() {
        // The deployment follows an alias: moving it back is a promotion like any other,
        // so the model's approvals apply and the audit log says who did it.
        let promotion =
            governance::request_promotion(&state, &model, previous, alias, &actor).await?;
        return Ok(axum::Json(json!({
            "deployment": name,
            "from_version": serving,
            "to_version": previous,
            "via": format!("alias {alias}"),
            "promotion": promotion,
        })));
    }
    let mut replacement = json!({
        "model": model,
        "version": previous,
        "strategy": {"kind": "direct"},
        "slo": spec["slo"],
    });
    if let Some(project) = spec["project"].as_str() {
        replacement["project"] = json!(project);
    }
    let response = state
        .peers
        .http
        .put(&url)
        .header("x-flywheel-actor", &actor)
        .headers(forwarded(&headers))
        .json(&replacement)
        .send()
        .await
        .map_err(|e| unreachable("deployer", e))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(RegistryError::Refused(format!(
            "the deployer refused the rollback (HTTP {status}): {body}"
        )));
    }
    Ok(axum::Json(json!({
        "deployment": name,
        "from_version": serving,
        "to_version": previous,
        "via": "pinned version",
    })))
}

/// The version rolled out before `serving` on this deployment, from the event log.
async fn previous_version(state: &AppState, name: &str, serving: i64) -> Result<Option<i64>> {
    let events = timeline::read(
        &state.db,
        &Filter {
            deployment: Some(name),
            types: &["deployment.rolled_out"],
            limit: 1000,
            ..Filter::default()
        },
    )
    .await?;
    Ok(events
        .iter()
        .rev()
        .filter_map(|e| match &e.event {
            Event::DeploymentRolledOut(r) => Some(i64::from(r.version)),
            _ => None,
        })
        .find(|v| *v != serving))
}
