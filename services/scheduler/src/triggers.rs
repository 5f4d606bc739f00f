//! Triggers that submit training requests by themselves: cron schedules per model, and
//! retraining when a subscribed dataset gets a new version. Each firing has a deterministic
//! request id (`schedule:<trigger>:<time>`, `new_data:<trigger>:<dataset>@<version>`), so
//! replicas, restarts and redelivered events never make two jobs of one firing.

use std::str::FromStr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{TimeZone, Utc};
use flywheel_bus::{ConsumerSpec, Delivery, Outcome, StreamKind};
use flywheel_events::payloads::{DatasetRef, TrainingReason, TrainingRequested};
use flywheel_events::{Envelope, Event};
use flywheel_runtime::ApiJson;
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Order, Query};
use serde::{Deserialize, Serialize};

use crate::schema::Triggers;
use crate::{AppState, Result, SchedulerError};

/// A trigger as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Trigger {
    /// Unique name.
    pub name: String,
    /// Project the requests belong to.
    pub project: String,
    /// `schedule` or `dataset`.
    pub kind: String,
    /// Cron expression (5 fields, UTC) of a schedule.
    pub cron: Option<String>,
    /// Dataset name a `dataset` trigger follows.
    pub dataset: Option<String>,
    /// The request submitted on each firing (its `request_id` and `reason` are set per firing).
    pub request: serde_json::Value,
    /// Next firing of a schedule, ms.
    pub next_run_at: Option<i64>,
    /// Last firing, ms.
    pub last_fired_at: Option<i64>,
    /// Whether it fires.
    pub enabled: bool,
}

/// The body of `PUT /api/v1/triggers/{name}`: exactly one of `cron` and `dataset`.
#[derive(Debug, Clone, Deserialize)]
struct TriggerSpec {
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    cron: Option<String>,
    #[serde(default)]
    dataset: Option<String>,
    request: serde_json::Value,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

fn invalid(message: impl Into<String>) -> SchedulerError {
    SchedulerError::Invalid(message.into())
}

/// Parses a 5-field cron expression (minute hour day-of-month month day-of-week, UTC); 6 and
/// 7 fields (with seconds, year) are accepted as well.
fn schedule(expression: &str) -> Result<cron::Schedule> {
    let fields = expression.split_whitespace().count();
    let full = match fields {
        5 => format!("0 {expression}"),
        6 | 7 => expression.to_owned(),
        _ => {
            return Err(invalid(format!(
                "cron `{expression}`: expected 5 fields (minute hour day month weekday)"
            )));
        }
    };
    cron::Schedule::from_str(&full).map_err(|e| invalid(format!("cron `{expression}`: {e}")))
}

fn next_after(schedule: &cron::Schedule, after_ms: i64) -> Option<i64> {
    let after = Utc.timestamp_millis_opt(after_ms).single()?;
    schedule.after(&after).next().map(|t| t.timestamp_millis())
}

/// The request a firing submits.
fn request_for(
    template: &serde_json::Value,
    request_id: String,
    reason: TrainingReason,
    dataset: Option<DatasetRef>,
) -> Result<TrainingRequested> {
    let mut value = template.clone();
    let object = value
        .as_object_mut()
        .ok_or_else(|| invalid("request: expected an object"))?;
    object.insert("request_id".into(), serde_json::Value::String(request_id));
    object.insert(
        "reason".into(),
        serde_json::to_value(reason).map_err(|e| invalid(e.to_string()))?,
    );
    if let Some(dataset) = dataset {
        object.insert(
            "dataset".into(),
            serde_json::to_value(dataset).map_err(|e| invalid(e.to_string()))?,
        );
    }
    serde_json::from_value(value).map_err(|e| invalid(format!("request: {e}")))
}

fn from_row(row: &sea_orm::QueryResult) -> Result<Trigger> {
    let template: String = row.try_get("", "template")?;
    Ok(Trigger {
        name: row.try_get("", "name")?,
        project: row.try_get("", "project")?,
        kind: row.try_get("", "kind")?,
        cron: row.try_get("", "cron")?,
        dataset: row.try_get("", "dataset")?,
        request: serde_json::from_str(&template).unwrap_or_default(),
        next_run_at: row.try_get("", "next_run_at")?,
        last_fired_at: row.try_get("", "last_fired_at")?,
        enabled: row.try_get("", "enabled")?,
    })
}

/// Triggers of the projects in view (every project for the scheduler's own work).
fn select() -> sea_orm::sea_query::SelectStatement {
    let mut select = Query::select();
    flywheel_runtime::scope::confine(&mut select, Triggers::Project);
    select
        .columns([
            Triggers::Name,
            Triggers::Project,
            Triggers::Kind,
            Triggers::Cron,
            Triggers::Dataset,
            Triggers::Template,
            Triggers::NextRunAt,
            Triggers::LastFiredAt,
            Triggers::Enabled,
        ])
        .from(Triggers::Table)
        .to_owned()
}

async fn get_trigger<C: ConnectionTrait>(db: &C, name: &str) -> Result<Trigger> {
    let row = db
        .query_one(
            &select()
                .and_where(Expr::col(Triggers::Name).eq(name))
                .to_owned(),
        )
        .await?
        .ok_or_else(|| SchedulerError::NotFound(format!("trigger {name} not found")))?;
    from_row(&row)
}

/// Creates or replaces a trigger.
async fn put(state: &AppState, name: &str, spec: TriggerSpec) -> Result<Trigger> {
    flywheel_events::subjects::check_token(name)
        .map_err(|_| invalid(format!("invalid trigger name `{name}`")))?;
    let project = flywheel_runtime::scope::place(spec.project.as_deref())
        .map_err(crate::SchedulerError::Forbidden)?;
    // A name taken in a project out of view is not the caller's to replace.
    let taken = state
        .db
        .query_one(
            &Query::select()
                .column(Triggers::Project)
                .from(Triggers::Table)
                .and_where(Expr::col(Triggers::Name).eq(name))
                .to_owned(),
        )
        .await?
        .map(|row| row.try_get::<String>("", "project"))
        .transpose()?;
    if let Some(owner) = taken
        && !flywheel_runtime::scope::current().sees(&owner)
    {
        return Err(crate::SchedulerError::Conflict(format!(
            "trigger name {name} is taken by another project"
        )));
    }
    let (kind, next_run_at) = match (&spec.cron, &spec.dataset) {
        (Some(expression), None) => {
            let schedule = schedule(expression)?;
            let next = next_after(&schedule, crate::now_millis())
                .ok_or_else(|| invalid(format!("cron `{expression}` never fires")))?;
            ("schedule", Some(next))
        }
        (None, Some(dataset)) if !dataset.is_empty() => ("dataset", None),
        _ => return Err(invalid("give exactly one of `cron` and `dataset`")),
    };
    // Check the template now, so a broken one is refused here rather than at every firing.
    let probe_dataset = spec.dataset.clone().map(|name| DatasetRef {
        name,
        version: "probe".into(),
    });
    let probe = request_for(
        &spec.request,
        format!("probe:{name}"),
        TrainingReason::Schedule,
        probe_dataset,
    )?;
    crate::intake::validate(&project, &probe)?;
    let template = serde_json::to_string(&spec.request).map_err(|e| invalid(e.to_string()))?;
    state
        .db
        .execute(
            &Query::insert()
                .into_table(Triggers::Table)
                .columns([
                    Triggers::Name,
                    Triggers::Project,
                    Triggers::Kind,
                    Triggers::Cron,
                    Triggers::Dataset,
                    Triggers::Template,
                    Triggers::NextRunAt,
                    Triggers::Enabled,
                    Triggers::CreatedAt,
                ])
                .values([
                    name.into(),
                    project.into(),
                    kind.into(),
                    spec.cron.clone().into(),
                    spec.dataset.clone().into(),
                    template.into(),
                    next_run_at.into(),
                    spec.enabled.into(),
                    crate::now_millis().into(),
                ])
                .map_err(|e| invalid(e.to_string()))?
                .on_conflict(
                    OnConflict::column(Triggers::Name)
                        .update_columns([
                            Triggers::Project,
                            Triggers::Kind,
                            Triggers::Cron,
                            Triggers::Dataset,
                            Triggers::Template,
                            Triggers::NextRunAt,
                            Triggers::Enabled,
                        ])
                        .to_owned(),
                )
                .to_owned(),
        )
        .await?;
    get_trigger(&state.db, name).await
}

/// Fires due schedules; returns how many fired.
pub(crate) async fn fire_due(state: &AppState) -> Result<usize> {
    let now = crate::now_millis();
    let rows = state
        .db
        .query_all(
            &select()
                .and_where(Expr::col(Triggers::Kind).eq("schedule"))
                .and_where(Expr::col(Triggers::Enabled).eq(true))
                .and_where(Expr::col(Triggers::NextRunAt).lte(now))
                .to_owned(),
        )
        .await?;
    let mut fired = 0;
    for row in rows {
        let trigger = from_row(&row)?;
        let (Some(expression), Some(due)) = (&trigger.cron, trigger.next_run_at) else {
            continue;
        };
        let request = request_for(
            &trigger.request,
            format!("schedule:{}:{due}", trigger.name),
            TrainingReason::Schedule,
            None,
        );
        match request {
            Ok(request) => {
                crate::intake::submit(state, &trigger.project, request, None).await?;
                fired += 1;
            }
            Err(e) => tracing::warn!(trigger = %trigger.name, error = %e, "schedule cannot fire"),
        }
        let next = schedule(expression)
            .ok()
            .and_then(|s| next_after(&s, Ord::max(now, due)));
        // Compare-and-set on the due time: one replica moves the schedule on.
        state
            .db
            .execute(
                &Query::update()
                    .table(Triggers::Table)
                    .value(Triggers::NextRunAt, next)
                    .value(Triggers::LastFiredAt, now)
                    .and_where(Expr::col(Triggers::Name).eq(trigger.name.as_str()))
                    .and_where(Expr::col(Triggers::NextRunAt).eq(due))
                    .to_owned(),
            )
            .await?;
    }
    Ok(fired)
}

/// The durable consumer of `dataset.version.created`, shared by every scheduler replica.
pub(crate) fn consumer_spec(state: &AppState) -> ConsumerSpec {
    let prefix = state.bus.subjects().prefix().to_owned();
    ConsumerSpec::new(
        StreamKind::Events,
        "scheduler-dataset-versions",
        format!("{prefix}.events.dataset.version.created"),
    )
}

/// Submits a retraining for every trigger following the new version's dataset.
pub(crate) async fn handle(state: AppState, delivery: Delivery) -> Outcome {
    match on_dataset_version(&state, &delivery.envelope).await {
        Ok(()) => Outcome::Ack,
        Err(SchedulerError::Invalid(reason)) => Outcome::poison(reason),
        Err(e) => Outcome::retry(Duration::from_secs(2), e.to_string()),
    }
}

async fn on_dataset_version(state: &AppState, envelope: &Envelope) -> Result<()> {
    let Event::DatasetVersionCreated(created) = &envelope.event else {
        return Err(invalid(format!(
            "unexpected {} on the dataset versions consumer",
            envelope.event_type()
        )));
    };
    let rows = state
        .db
        .query_all(
            &select()
                .and_where(Expr::col(Triggers::Kind).eq("dataset"))
                .and_where(Expr::col(Triggers::Enabled).eq(true))
                .and_where(Expr::col(Triggers::Dataset).eq(created.dataset.as_str()))
                .and_where(Expr::col(Triggers::Project).eq(envelope.project.as_str()))
                .to_owned(),
        )
        .await?;
    for row in rows {
        let trigger = from_row(&row)?;
        let dataset = DatasetRef {
            name: created.dataset.clone(),
            version: created.version.clone(),
        };
        let request_id = format!(
            "new_data:{}:{}@{}",
            trigger.name, created.dataset, created.version
        );
        match request_for(
            &trigger.request,
            request_id,
            TrainingReason::NewData,
            Some(dataset),
        ) {
            Ok(request) => {
                crate::intake::submit(state, &trigger.project, request, Some(envelope)).await?;
            }
            Err(e) => tracing::warn!(trigger = %trigger.name, error = %e, "trigger cannot fire"),
        }
        state
            .db
            .execute(
                &Query::update()
                    .table(Triggers::Table)
                    .value(Triggers::LastFiredAt, crate::now_millis())
                    .and_where(Expr::col(Triggers::Name).eq(trigger.name.as_str()))
                    .to_owned(),
            )
            .await?;
    }
    Ok(())
}

/// `/api/v1/triggers` routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/triggers", get(list)).route(
        "/api/v1/triggers/{name}",
        get(show).put(replace).delete(remove),
    )
}

async fn list(State(state): State<AppState>) -> Result<Json<Vec<Trigger>>> {
    let rows = state
        .db
        .query_all(&select().order_by(Triggers::Name, Order::Asc).to_owned())
        .await?;
    Ok(Json(rows.iter().map(from_row).collect::<Result<_>>()?))
}

async fn show(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Trigger>> {
    Ok(Json(get_trigger(&state.db, &name).await?))
}

async fn replace(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(spec): ApiJson<TriggerSpec>,
) -> Result<Json<Trigger>> {
    Ok(Json(put(&state, &name, spec).await?))
}

async fn remove(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode> {
    let mut delete = Query::delete()
        .from_table(Triggers::Table)
        .and_where(Expr::col(Triggers::Name).eq(name.as_str()))
        .to_owned();
    if let Some(project) = flywheel_runtime::scope::current().only() {
        delete.and_where(Expr::col(Triggers::Project).eq(project));
    }
    let deleted = state.db.execute(&delete).await?.rows_affected();
    if deleted == 0 {
        return Err(SchedulerError::NotFound(format!(
            "trigger {name} not found"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}
