//! The operator dashboard, served by the registry and working offline: the page and its script
//! and styles are embedded in the binary (no CDN). The overview shows the loop — datasets,
//! jobs, models, deployments, alerts — with counts that update live: the page listens to
//! `GET /api/v1/events/stream` (server-sent events relayed from the bus) and refetches
//! `GET /api/v1/overview` when something happens.

use std::convert::Infallible;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, Query};
use serde::Serialize;
use serde_json::{Value, json};

mod actions;
mod charts;
mod delivery;
pub(crate) mod timeline;
mod views;

pub use actions::Peers;
pub(crate) use timeline::{
    CreateTimeline, consumer_spec as timeline_spec, handle as record,
    keep_pruned as keep_timeline_pruned,
};
pub use views::RecentEvents;

use crate::projects;
use crate::schema::{Alerts, DatasetVersions, Datasets, Deployments, Jobs, Models, Versions};
use crate::{AppState, RegistryError, Result};

const PAGE: &str = include_str!("overview.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

/// The dashboard's routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/dashboard/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    SCRIPT,
                )
            }),
        )
        .route(
            "/dashboard/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }),
        )
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/events/stream", get(events))
        .route("/api/v1/events/recent", get(views::recent))
        .route("/api/v1/delivery", get(views::delivery))
        .route("/api/v1/dashboard/jobs", get(views::jobs))
        .route("/api/v1/dashboard/models/{name}", get(views::model))
        .route("/api/v1/dashboard/runs/{run_id}", get(views::run))
        .route(
            "/api/v1/deployments/{name}/history",
            get(views::deployment_history),
        )
        .route(
            "/api/v1/deployments/{name}/rollback",
            post(actions::rollback),
        )
        .route("/api/v1/jobs/{id}/cancel", post(actions::cancel_job))
        .route("/dashboard/charts/delivery.svg", get(views::delivery_chart))
        .route(
            "/dashboard/charts/models/{name}/lineage.svg",
            get(views::lineage_chart),
        )
        .route(
            "/dashboard/charts/models/{name}/metrics.svg",
            get(views::model_metrics_chart),
        )
        .route(
            "/favicon.ico",
            get(|| async { axum::http::StatusCode::NO_CONTENT }),
        )
        .route(
            "/dashboard/charts/runs/{run_id}/{key}",
            get(views::metric_chart),
        )
        .route(
            "/dashboard/charts/deployments/{name}/{kind}",
            get(views::deployment_chart),
        )
}

/// Counts of everything in the loop.
#[derive(Debug, Serialize)]
pub(crate) struct Overview {
    datasets: i64,
    dataset_versions: i64,
    models: i64,
    model_versions: i64,
    /// Jobs by status.
    jobs: Value,
    /// Deployments by status.
    deployments: Value,
    open_alerts: i64,
}

async fn count<C: ConnectionTrait>(
    db: &C,
    table: impl sea_orm::sea_query::IntoTableRef,
    confine: impl FnOnce(&mut sea_orm::sea_query::SelectStatement),
    filter: Option<sea_orm::sea_query::SimpleExpr>,
) -> Result<i64> {
    let mut query = Query::select();
    query
        .expr_as(
            Func::count(Expr::col(sea_orm::sea_query::Asterisk)),
            Alias::new("n"),
        )
        .from(table);
    confine(&mut query);
    if let Some(filter) = filter {
        query.and_where(filter);
    }
    let row = db.query_one(&query).await?;
    Ok(row
        .map(|r| r.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0))
}

async fn by_status<C: ConnectionTrait>(
    db: &C,
    table: impl sea_orm::sea_query::IntoTableRef,
    status: impl sea_orm::sea_query::IntoColumnRef + Copy,
    project: impl sea_orm::sea_query::IntoColumnRef,
) -> Result<Value> {
    let rows = db
        .query_all(
            &Query::select()
                .expr_as(Expr::col(status), Alias::new("status"))
                .expr_as(
                    Func::count(Expr::col(sea_orm::sea_query::Asterisk)),
                    Alias::new("n"),
                )
                .from(table)
                .apply(|select| crate::projects::confine(select, project))
                .group_by_col(status)
                .to_owned(),
        )
        .await?;
    let mut counts = serde_json::Map::new();
    for row in rows {
        let status: String = row.try_get("", "status")?;
        counts.insert(status, json!(row.try_get::<i64>("", "n")?));
    }
    Ok(Value::Object(counts))
}

/// The overview's counts.
pub(crate) async fn counts(state: &AppState) -> Result<Overview> {
    let db = &state.db;
    Ok(Overview {
        datasets: count(
            db,
            Datasets::Table,
            |s| projects::confine(s, Datasets::Project),
            None,
        )
        .await?,
        dataset_versions: count(
            db,
            DatasetVersions::Table,
            |s| projects::confine_to_datasets(s, DatasetVersions::Name),
            None,
        )
        .await?,
        models: count(
            db,
            Models::Table,
            |s| projects::confine(s, Models::Project),
            None,
        )
        .await?,
        model_versions: count(
            db,
            Versions::Table,
            |s| projects::confine_to_models(s, Versions::Name),
            None,
        )
        .await?,
        jobs: by_status(db, Jobs::Table, Jobs::Status, Jobs::Project).await?,
        deployments: by_status(
            db,
            Deployments::Table,
            Deployments::Status,
            Deployments::Project,
        )
        .await?,
        open_alerts: count(
            db,
            Alerts::Table,
            |s| projects::confine(s, Alerts::Project),
            Some(Expr::col(Alerts::Status).eq("open")),
        )
        .await?,
    })
}

async fn overview(State(state): State<AppState>) -> Result<axum::Json<Overview>> {
    Ok(axum::Json(counts(&state).await?))
}

/// Every domain event as it is published, as server-sent events (`type`, `id`, `time`,
/// `source`, `data`); a comment every 15 s keeps proxies from closing the stream.
async fn events(
    State(state): State<AppState>,
    principal: Option<axum::Extension<flywheel_auth::Principal>>,
) -> Result<impl IntoResponse> {
    // Refused requests are for admins' eyes (and everyone's with authentication off).
    let security = principal.is_none_or(|p| p.has(flywheel_auth::Role::Admin));
    // The stream outlives the request's task: it keeps the request's scope itself.
    let scope = flywheel_runtime::scope::current();
    let subject = format!("{}.events.>", state.bus.subjects().prefix());
    let subscriber = state
        .bus
        .client()
        .subscribe(subject)
        .await
        .map_err(|e| RegistryError::Unavailable(format!("the event stream: {e}")))?;
    Ok(Sse::new(relay(subscriber, security, scope)).keep_alive(KeepAlive::default()))
}

fn relay(
    subscriber: async_nats::Subscriber,
    security: bool,
    scope: flywheel_runtime::scope::Scope,
) -> impl Stream<Item = std::result::Result<SseEvent, Infallible>> {
    subscriber.filter_map(move |message| {
        let scope = scope.clone();
        async move {
            let content_type = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Content-Type"))
                .map(|v| v.as_str().to_owned());
            let envelope =
                flywheel_events::decode_with_header(&message.payload, content_type.as_deref())
                    .ok()?;
            if !security
                && matches!(
                    envelope.event,
                    flywheel_events::Event::SecurityAccessDenied(_)
                )
            {
                return None;
            }
            if !scope.sees(&envelope.project) {
                return None;
            }
            let body =
                flywheel_events::encode(&envelope, flywheel_events::ContentType::Json).ok()?;
            let body = String::from_utf8(body).ok()?;
            Some(Ok(SseEvent::default()
                .event(envelope.event.event_type())
                .data(body)))
        }
    })
}
