//! The monitor's HTTP API under `/api/v1`.

use axum::extract::{Path, Query as UrlQuery, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use flywheel_runtime::ApiJson;
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Order, Query};
use serde::Deserialize;
use serde_json::Value;

use crate::comparison::{DriftReport, DriftRequest};
use crate::projects::{self, DeploymentProjects};
use crate::reports::RetrainingPolicy;
use crate::schema::{Alerts, Policies, Reports};
use crate::settings::MonitoringSettings;
use crate::{AppState, MonitorError, Result};

/// Who may call what: comparing datasets (`POST /api/v1/drift`) only reads, so a viewer may;
/// webhooks (which get every project's alerts) and alert rules (which apply to every
/// deployment) belong to admins of all projects; a deployment's monitoring settings need the
/// role in its project; the rest follows the default rule, confined to the caller's project.
pub(crate) fn access_rule(projects: DeploymentProjects) -> flywheel_runtime::AccessRule {
    std::sync::Arc::new(
        move |method: &axum::http::Method, route: &str, path: &str| {
            use flywheel_runtime::{Access, Role};
            let everywhere = flywheel_runtime::ALL_PROJECTS.to_owned();
            match route {
                "/api/v1/drift" => Access::Needs(Role::Viewer),
                "/api/v1/webhooks" | "/api/v1/webhooks/{name}" => {
                    Access::NeedsIn(Role::Admin, everywhere)
                }
                "/api/v1/rules/{name}" => Access::NeedsIn(Role::Admin, everywhere),
                "/api/v1/monitoring/{deployment}" => {
                    let deployment = path.rsplit('/').next().unwrap_or_default();
                    match flywheel_runtime::access::default_access(method, route, path) {
                        Access::Needs(role) => Access::NeedsIn(role, projects.of(deployment)),
                        other => other,
                    }
                }
                _ => flywheel_runtime::access::default_access(method, route, path),
            }
        },
    )
}

/// The routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/drift", post(drift))
        .route("/api/v1/reports", get(reports))
        .route("/api/v1/reports/{id}", get(report))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/policies/{model}", put(put_policy).get(get_policy))
        .route(
            "/api/v1/monitoring/{deployment}",
            put(put_settings).get(get_settings),
        )
        .route("/api/v1/webhooks", get(list_webhooks))
        .route("/api/v1/rules", get(list_rules))
        .route("/api/v1/rules/{name}", put(put_rule))
        .route("/api/v1/webhooks/{name}", put(put_webhook))
}

/// Compares two datasets (CSV in the request or registered versions).
async fn drift(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<DriftRequest>,
) -> Result<Json<DriftReport>> {
    Ok(Json(crate::comparison::compare(&state, &request).await?))
}

/// Filters of the list endpoints.
#[derive(Debug, Deserialize)]
struct Filter {
    deployment: Option<String>,
    #[serde(default = "hundred")]
    limit: u64,
}

fn hundred() -> u64 {
    100
}

/// Window reports, newest first.
async fn reports(
    State(state): State<AppState>,
    UrlQuery(filter): UrlQuery<Filter>,
) -> Result<Json<Vec<Value>>> {
    let mut query = Query::select();
    query
        .column(Reports::Body)
        .from(Reports::Table)
        .order_by(Reports::WindowStart, Order::Desc)
        .limit(Ord::min(filter.limit, 1000));
    projects::confine(&mut query, Reports::Deployment);
    if let Some(deployment) = &filter.deployment {
        query.and_where(Expr::col(Reports::Deployment).eq(deployment.as_str()));
    }
    let rows = state.db.query_all(&query).await?;
    rows.iter()
        .map(|r| {
            let body: String = r.try_get("", "body")?;
            serde_json::from_str(&body).map_err(|e| MonitorError::Invalid(e.to_string()))
        })
        .collect::<Result<_>>()
        .map(Json)
}

/// One report.
async fn report(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>> {
    let row = state
        .db
        .query_one(
            &Query::select()
                .column(Reports::Body)
                .from(Reports::Table)
                .and_where(Expr::col(Reports::ReportId).eq(id.as_str()))
                .apply(|select| projects::confine(select, Reports::Deployment))
                .to_owned(),
        )
        .await?
        .ok_or_else(|| MonitorError::NotFound(format!("report {id} not found")))?;
    let body: String = row.try_get("", "body")?;
    serde_json::from_str(&body)
        .map(Json)
        .map_err(|e| MonitorError::Invalid(e.to_string()))
}

/// Alerts, newest first.
async fn alerts(
    State(state): State<AppState>,
    UrlQuery(filter): UrlQuery<Filter>,
) -> Result<Json<Vec<Value>>> {
    let mut query = Query::select();
    query
        .columns(crate::schema::ALERT_COLUMNS)
        .column(Alerts::ResolvedAt)
        .from(Alerts::Table)
        .order_by(Alerts::RaisedAt, Order::Desc)
        .limit(Ord::min(filter.limit, 1000));
    projects::confine(&mut query, Alerts::Deployment);
    if let Some(deployment) = &filter.deployment {
        query.and_where(Expr::col(Alerts::Deployment).eq(deployment.as_str()));
    }
    let rows = state.db.query_all(&query).await?;
    rows.iter()
        .map(|r| {
            Ok(serde_json::json!({
                "alert_id": r.try_get::<String>("", "alert_id")?,
                "rule": r.try_get::<String>("", "rule")?,
                "deployment": r.try_get::<String>("", "deployment")?,
                "model": r.try_get::<String>("", "model")?,
                "severity": r.try_get::<String>("", "severity")?,
                "status": r.try_get::<String>("", "status")?,
                "message": r.try_get::<String>("", "message")?,
                "report_id": r.try_get::<Option<String>>("", "report_id")?,
                "raised_at": r.try_get::<i64>("", "raised_at")?,
                "resolved_at": r.try_get::<Option<i64>>("", "resolved_at")?,
            }))
        })
        .collect::<Result<_>>()
        .map(Json)
}

/// Sets how a deployment is monitored (reference, drift share, per-column methods); windows
/// opened afterwards use it.
async fn put_settings(
    State(state): State<AppState>,
    Path(deployment): Path<String>,
    ApiJson(settings): ApiJson<MonitoringSettings>,
) -> Result<Json<MonitoringSettings>> {
    crate::settings::put(&state, &deployment, &settings).await?;
    Ok(Json(settings))
}

/// How a deployment is monitored (the defaults when nothing was set).
async fn get_settings(
    State(state): State<AppState>,
    Path(deployment): Path<String>,
) -> Result<Json<MonitoringSettings>> {
    Ok(Json(crate::settings::get(&state.db, &deployment).await?))
}

/// Sets a model's retraining policy.
async fn put_policy(
    State(state): State<AppState>,
    Path(model): Path<String>,
    ApiJson(policy): ApiJson<RetrainingPolicy>,
) -> Result<Json<RetrainingPolicy>> {
    if policy.daily_budget == 0 {
        return Err(MonitorError::Invalid(
            "daily_budget: at least 1 (delete the policy to stop retraining)".into(),
        ));
    }
    let body = serde_json::to_string(&policy).map_err(|e| MonitorError::Invalid(e.to_string()))?;
    let project = flywheel_runtime::scope::place(None).map_err(MonitorError::Invalid)?;
    let owner = state
        .db
        .query_one(
            &Query::select()
                .column(Policies::Project)
                .from(Policies::Table)
                .and_where(Expr::col(Policies::Model).eq(model.as_str()))
                .to_owned(),
        )
        .await?
        .map(|row| row.try_get::<String>("", "project"))
        .transpose()?;
    if let Some(owner) = owner
        && !flywheel_runtime::scope::current().sees(&owner)
    {
        return Err(MonitorError::Conflict(format!(
            "the retraining policy of {model} belongs to another project"
        )));
    }
    let mut upsert = Query::insert();
    upsert
        .into_table(Policies::Table)
        .columns([Policies::Model, Policies::Body, Policies::Project])
        .values([model.clone().into(), body.into(), project.into()])
        .map_err(|e| MonitorError::Invalid(e.to_string()))?
        .on_conflict(
            OnConflict::column(Policies::Model)
                .update_columns([Policies::Body, Policies::Project])
                .to_owned(),
        );
    state.db.execute(&upsert).await?;
    Ok(Json(policy))
}

/// A model's retraining policy.
async fn get_policy(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>> {
    let row = state
        .db
        .query_one(
            &Query::select()
                .column(Policies::Body)
                .from(Policies::Table)
                .and_where(Expr::col(Policies::Model).eq(model.as_str()))
                .apply(|select| flywheel_runtime::scope::confine(select, Policies::Project))
                .to_owned(),
        )
        .await?
        .ok_or_else(|| MonitorError::NotFound(format!("no retraining policy for {model}")))?;
    let body: String = row.try_get("", "body")?;
    serde_json::from_str(&body)
        .map(Json)
        .map_err(|e| MonitorError::Invalid(e.to_string()))
}

/// A webhook's target.
#[derive(Debug, Deserialize)]
struct WebhookSpec {
    url: String,
}

/// Registers a webhook that gets every alert raised or resolved.
async fn put_webhook(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(spec): ApiJson<WebhookSpec>,
) -> Result<Json<Value>> {
    crate::webhooks::put(&state, &name, &spec.url).await?;
    Ok(Json(serde_json::json!({"name": name, "url": spec.url})))
}

/// The registered webhooks.
async fn list_webhooks(State(state): State<AppState>) -> Result<Json<Vec<Value>>> {
    Ok(Json(
        crate::webhooks::list(&state.db)
            .await?
            .into_iter()
            .map(|(name, url)| serde_json::json!({"name": name, "url": url}))
            .collect(),
    ))
}

/// Stores an alert rule on report metrics.
async fn put_rule(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(rule): ApiJson<crate::rules::AlertRule>,
) -> Result<Json<crate::rules::AlertRule>> {
    crate::rules::put(&state, &name, &rule).await?;
    Ok(Json(rule))
}

/// The alert rules.
async fn list_rules(State(state): State<AppState>) -> Result<Json<Value>> {
    let rules = crate::rules::list(&state.db).await?;
    Ok(Json(serde_json::json!(
        rules
            .into_iter()
            .map(|(name, rule)| serde_json::json!({"name": name, "rule": rule}))
            .collect::<Vec<_>>()
    )))
}
