//! Read-models the dashboard uses: where each model version is deployed (`deployment.*`) and
//! which alerts are open (`monitor.alert.*`). Each consumer applies an event once (inbox).

use std::time::Duration;

use flywheel_bus::{ConsumerSpec, Delivery, Outcome, StreamKind};
use flywheel_events::Event;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Order, Query};
use sea_orm::{ConnectionTrait, TransactionTrait};
use serde::Serialize;

use crate::schema::{Alerts, Deployments, Jobs};
use crate::tracking::now_millis;
use crate::{AppState, RegistryError, Result};

/// The deployment and monitor consumers (one filter subject each, as NATS 2.9 requires).
pub(crate) fn consumer_specs(state: &AppState) -> [ConsumerSpec; 2] {
    let prefix = state.bus.subjects().prefix().to_owned();
    [
        ConsumerSpec::new(
            StreamKind::Events,
            "registry-deployments",
            format!("{prefix}.events.deployment.>"),
        ),
        ConsumerSpec::new(
            StreamKind::Events,
            "registry-monitor",
            format!("{prefix}.events.monitor.>"),
        ),
    ]
}

/// Applies one deployment or monitor event.
pub(crate) async fn handle(state: AppState, delivery: Delivery) -> Outcome {
    match apply(&state, &delivery).await {
        Ok(()) => Outcome::Ack,
        Err(RegistryError::Db(e)) => {
            Outcome::retry(Duration::from_secs(2), format!("database: {e}"))
        }
        Err(other) => Outcome::poison(other.to_string()),
    }
}

fn bad(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::InvalidParameter(e.to_string())
}

/// An upsert that only moves a row forward in stream order: handlers run concurrently (and
/// across replicas), so an older event must not overwrite a newer one.
fn upsert<T: sea_orm::sea_query::Iden + Copy + 'static>(
    table: T,
    table_name: &str,
    key: T,
    values: Vec<(T, sea_orm::Value)>,
    update: &[T],
) -> Result<sea_orm::sea_query::InsertStatement> {
    let (columns, values): (Vec<T>, Vec<sea_orm::Value>) = values.into_iter().unzip();
    Ok(Query::insert()
        .into_table(table)
        .columns(columns)
        .values(values.into_iter().map(Into::into))
        .map_err(bad)?
        .on_conflict(
            OnConflict::column(key)
                .update_columns(update.iter().copied())
                .action_and_where(Expr::cust(format!(
                    "excluded.last_seq > {table_name}.last_seq"
                )))
                .to_owned(),
        )
        .to_owned())
}

async fn apply(state: &AppState, delivery: &Delivery) -> Result<()> {
    let envelope = &delivery.envelope;
    let txn = state.db.begin().await?;
    let consumer = if envelope.event_type().starts_with("deployment.") {
        "deployments"
    } else {
        "monitor"
    };
    if !flywheel_db::inbox::claim(&txn, crate::SERVICE, consumer, envelope.id).await? {
        return Ok(());
    }
    let now = now_millis();
    let seq = i64::try_from(delivery.stream_sequence).unwrap_or(i64::MAX);
    let deployment =
        |name: &str, model: &str, version: Option<u32>, status: &str, detail: String| {
            let mut update = vec![
                Deployments::Status,
                Deployments::Detail,
                Deployments::UpdatedAt,
                Deployments::LastSeq,
            ];
            if !model.is_empty() {
                update.push(Deployments::Model);
            }
            if version.is_some() {
                update.push(Deployments::Version);
            }
            upsert(
                Deployments::Table,
                "registry_deployments",
                Deployments::Deployment,
                vec![
                    (Deployments::Deployment, name.into()),
                    (Deployments::Model, model.into()),
                    (Deployments::Version, version.map(i64::from).into()),
                    (Deployments::Status, status.into()),
                    (Deployments::Detail, detail.into()),
                    (Deployments::UpdatedAt, now.into()),
                    (Deployments::LastSeq, seq.into()),
                    (Deployments::Project, envelope.project.clone().into()),
                ],
                &update,
            )
        };
    // Alerts belong to their deployment's project (the monitor does not know projects).
    let alert_project = match &envelope.event {
        Event::MonitorAlertRaised(e) => deployment_project(&txn, &e.deployment).await?,
        Event::MonitorAlertResolved(e) => deployment_project(&txn, &e.deployment).await?,
        _ => None,
    }
    .unwrap_or_else(|| envelope.project.clone());
    let alert =
        |id: &str, rule: &str, deployment: &str, severity: &str, message: &str, status: &str| {
            let (stamp, update) = if status == "open" {
                (
                    Alerts::RaisedAt,
                    vec![
                        Alerts::Severity,
                        Alerts::Message,
                        Alerts::Status,
                        Alerts::RaisedAt,
                        Alerts::LastSeq,
                    ],
                )
            } else {
                (
                    Alerts::ResolvedAt,
                    vec![Alerts::Status, Alerts::ResolvedAt, Alerts::LastSeq],
                )
            };
            upsert(
                Alerts::Table,
                "registry_alerts",
                Alerts::AlertId,
                vec![
                    (Alerts::AlertId, id.into()),
                    (Alerts::Rule, rule.into()),
                    (Alerts::Deployment, deployment.into()),
                    (Alerts::Severity, severity.into()),
                    (Alerts::Message, message.into()),
                    (Alerts::Status, status.into()),
                    (stamp, now.into()),
                    (Alerts::LastSeq, seq.into()),
                    (Alerts::Project, alert_project.clone().into()),
                ],
                &update,
            )
        };
    let statement = match &envelope.event {
        Event::DeploymentRequested(e) => Some(deployment(
            &e.deployment,
            &e.model,
            None,
            "requested",
            format!("v{} requested by {}", e.version, e.requested_by),
        )?),
        Event::DeploymentRolloutStarted(e) => Some(deployment(
            &e.deployment,
            &e.model,
            None,
            "rolling_out",
            format!("v{} rolling out", e.to_version),
        )?),
        Event::DeploymentTrafficShifted(e) => {
            let splits: Vec<String> = e
                .splits
                .iter()
                .map(|s| format!("v{} {}%", s.version, s.percent))
                .collect();
            Some(deployment(
                &e.deployment,
                "",
                None,
                "rolling_out",
                splits.join(", "),
            )?)
        }
        Event::DeploymentRolledOut(e) => Some(deployment(
            &e.deployment,
            &e.model,
            Some(e.version),
            "serving",
            String::new(),
        )?),
        Event::DeploymentRolledBack(e) => Some(deployment(
            &e.deployment,
            "",
            e.to_version,
            "rolled_back",
            e.reason.clone(),
        )?),
        Event::DeploymentFailed(e) => Some(deployment(
            &e.deployment,
            "",
            None,
            "failed",
            e.error.clone(),
        )?),
        Event::MonitorAlertRaised(e) => Some(alert(
            &e.alert_id,
            &e.rule,
            &e.deployment,
            &e.severity,
            &e.message,
            "open",
        )?),
        Event::MonitorAlertResolved(e) => Some(alert(
            &e.alert_id,
            &e.rule,
            &e.deployment,
            "info",
            "",
            "resolved",
        )?),
        // Reports are the monitor's; the registry only tracks alerts.
        Event::MonitorReportCreated(_) => None,
        other => {
            return Err(RegistryError::InvalidParameter(format!(
                "unexpected {} on the {consumer} consumer",
                other.event_type()
            )));
        }
    };
    if let Some(statement) = statement {
        txn.execute(&statement).await?;
    }
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    Ok(())
}

/// The project of a deployment the registry has heard of.
async fn deployment_project<C: ConnectionTrait>(
    db: &C,
    deployment: &str,
) -> Result<Option<String>> {
    let row = db
        .query_one(
            &Query::select()
                .column(Deployments::Project)
                .from(Deployments::Table)
                .and_where(Expr::col(Deployments::Deployment).eq(deployment))
                .to_owned(),
        )
        .await?;
    Ok(row.map(|r| r.try_get("", "project")).transpose()?)
}

/// A deployment as the registry last heard of it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DeploymentView {
    /// Deployment name.
    pub deployment: String,
    /// Model name.
    pub model: String,
    /// Version serving all traffic, once rolled out.
    pub version: Option<i64>,
    /// `requested`, `rolling_out`, `serving`, `rolled_back` or `failed`.
    pub status: String,
    /// The latest detail (traffic split, error, reason).
    pub detail: String,
    /// When it last changed, ms.
    pub updated_at: i64,
}

/// Every deployment, optionally of one model.
pub async fn deployments<C: ConnectionTrait>(
    db: &C,
    model: Option<&str>,
) -> Result<Vec<DeploymentView>> {
    let mut select = Query::select();
    select
        .columns([
            Deployments::Deployment,
            Deployments::Model,
            Deployments::Version,
            Deployments::Status,
            Deployments::Detail,
            Deployments::UpdatedAt,
        ])
        .from(Deployments::Table)
        .order_by(Deployments::Deployment, Order::Asc);
    crate::projects::confine(&mut select, Deployments::Project);
    if let Some(model) = model {
        select.and_where(Expr::col(Deployments::Model).eq(model));
    }
    db.query_all(&select)
        .await?
        .iter()
        .map(|r| {
            Ok(DeploymentView {
                deployment: r.try_get("", "deployment")?,
                model: r.try_get("", "model")?,
                version: r.try_get("", "version")?,
                status: r.try_get("", "status")?,
                detail: r.try_get("", "detail")?,
                updated_at: r.try_get("", "updated_at")?,
            })
        })
        .collect()
}

/// An alert as the registry last heard of it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AlertView {
    /// Alert id.
    pub alert_id: String,
    /// Rule name.
    pub rule: String,
    /// Deployment.
    pub deployment: String,
    /// Severity.
    pub severity: String,
    /// What happened.
    pub message: String,
    /// `open` or `resolved`.
    pub status: String,
}

/// Alerts, open ones only when `open_only`.
pub async fn alerts<C: ConnectionTrait>(db: &C, open_only: bool) -> Result<Vec<AlertView>> {
    let mut select = Query::select();
    select
        .columns([
            Alerts::AlertId,
            Alerts::Rule,
            Alerts::Deployment,
            Alerts::Severity,
            Alerts::Message,
            Alerts::Status,
        ])
        .from(Alerts::Table)
        .order_by(Alerts::AlertId, Order::Asc);
    crate::projects::confine(&mut select, Alerts::Project);
    if open_only {
        select.and_where(Expr::col(Alerts::Status).eq("open"));
    }
    db.query_all(&select)
        .await?
        .iter()
        .map(|r| {
            Ok(AlertView {
                alert_id: r.try_get("", "alert_id")?,
                rule: r.try_get("", "rule")?,
                deployment: r.try_get("", "deployment")?,
                severity: r.try_get("", "severity")?,
                message: r.try_get("", "message")?,
                status: r.try_get("", "status")?,
            })
        })
        .collect()
}

/// A training job as the registry last heard of it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct JobView {
    /// Job id.
    pub job_id: String,
    /// Model.
    pub model: String,
    /// Status.
    pub status: String,
    /// Attempt.
    pub attempt: i64,
    /// Latest detail (pool, progress, error).
    pub detail: String,
    /// The version it registered, if any.
    pub registered_version: Option<i64>,
}

/// Training jobs, newest change first.
pub async fn jobs<C: ConnectionTrait>(db: &C) -> Result<Vec<JobView>> {
    db.query_all(
        &Query::select()
            .columns([
                Jobs::JobId,
                Jobs::Model,
                Jobs::Status,
                Jobs::Attempt,
                Jobs::Detail,
                Jobs::RegisteredVersion,
            ])
            .from(Jobs::Table)
            .apply(|select| crate::projects::confine(select, Jobs::Project))
            .order_by(Jobs::UpdatedAt, Order::Desc)
            .limit(1000)
            .to_owned(),
    )
    .await?
    .iter()
    .map(|r| {
        Ok(JobView {
            job_id: r.try_get("", "job_id")?,
            model: r.try_get("", "model")?,
            status: r.try_get("", "status")?,
            attempt: r.try_get("", "attempt")?,
            detail: r.try_get("", "detail")?,
            registered_version: r.try_get("", "registered_version")?,
        })
    })
    .collect()
}
