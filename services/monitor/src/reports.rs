//! What happens when a window closes, in the same transaction as the reader's checkpoint: the
//! report is stored and published (`monitor.report.created`); the drift alert rule raises or
//! resolves (`monitor.alert.raised` / `resolved`); a raised drift alert asks for a retraining
//! (`training.requested`, reason `drift`) when the model's policy allows — never twice within
//! its cooldown, never more than its daily budget.

use chrono::{TimeZone, Utc};
use flywheel_events::payloads::{
    DatasetRef, MonitorAlertRaised, MonitorAlertResolved, MonitorReportCreated, Resources,
    TrainerSpec, TrainingReason, TrainingRequested,
};
use flywheel_events::{Envelope, Event};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Order, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction};
use serde::{Deserialize, Serialize};

use crate::performance::PerformanceWindow;
use crate::schema::{Alerts, Baselines, Policies, Reports, Retrainings};
use crate::windows::{Evaluation, Span, Window};
use crate::{AppState, MonitorError, Result};

/// The alert rule for data drift.
pub(crate) const DRIFT_RULE: &str = "data_drift";

/// A model's retraining policy (`PUT /api/v1/policies/{model}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetrainingPolicy {
    /// The trainer to run.
    pub trainer: TrainerSpec,
    /// Resources for it.
    #[serde(default = "default_resources")]
    pub resources: Resources,
    /// No second retraining within this many seconds of the last.
    #[serde(default = "default_cooldown")]
    pub cooldown_seconds: u64,
    /// At most this many retrainings per UTC day.
    #[serde(default = "default_budget")]
    pub daily_budget: u32,
    /// Consecutive drifted windows before the alert is raised.
    #[serde(default = "one")]
    pub windows: u32,
}

fn default_resources() -> Resources {
    Resources {
        cpu: 1.0,
        memory_mb: 1024,
        gpu: 0,
    }
}

fn default_cooldown() -> u64 {
    3600
}

fn default_budget() -> u32 {
    3
}

fn one() -> u32 {
    1
}

/// Announces `event` about `deployment`, in the deployment's project.
async fn enqueue(
    txn: &DatabaseTransaction,
    state: &AppState,
    deployment: &str,
    event: Event,
) -> Result<()> {
    let envelope = Envelope::new(crate::SERVICE, state.projects.of(deployment), event);
    flywheel_runtime::outbox::enqueue(txn, crate::SERVICE, &state.bus, &envelope).await?;
    Ok(())
}

fn millis_to_time(ms: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// `monitor.report.created` for a window, without drift results.
fn report_created(
    span: &Span,
    report_id: &str,
    count: u64,
    metrics: flywheel_events::payloads::Metrics,
) -> MonitorReportCreated {
    MonitorReportCreated {
        report_id: report_id.to_owned(),
        deployment: span.deployment.clone(),
        model: span.model.clone(),
        version: span.version,
        window_start: millis_to_time(span.started_at),
        window_end: millis_to_time(span.last_at),
        count,
        drift_share: 0.0,
        dataset_drift: false,
        columns: Vec::new(),
        metrics,
        histograms: Vec::new(),
    }
}

/// Stores a report once (a window rebuilt after a crash writes the same id); whether it was new.
async fn insert_report(
    txn: &DatabaseTransaction,
    span: &Span,
    report_id: &str,
    (count, dataset_drift): (u64, bool),
    body: &serde_json::Value,
    now: i64,
) -> Result<bool> {
    let mut insert = Query::insert();
    insert
        .into_table(Reports::Table)
        .columns([
            Reports::ReportId,
            Reports::Deployment,
            Reports::Model,
            Reports::Version,
            Reports::WindowStart,
            Reports::WindowEnd,
            Reports::Count,
            Reports::DatasetDrift,
            Reports::Body,
            Reports::CreatedAt,
        ])
        .values([
            report_id.into(),
            span.deployment.clone().into(),
            span.model.clone().into(),
            i32::try_from(span.version).unwrap_or(i32::MAX).into(),
            span.started_at.into(),
            span.last_at.into(),
            i64::try_from(count).unwrap_or(i64::MAX).into(),
            dataset_drift.into(),
            body.to_string().into(),
            now.into(),
        ])
        .map_err(|e| MonitorError::Invalid(e.to_string()))?
        .on_conflict(
            OnConflict::column(Reports::ReportId)
                .do_nothing()
                .to_owned(),
        );
    Ok(txn.execute(&insert).await?.rows_affected() > 0)
}

/// Stores and announces the report of a closed window, then applies the alert rule.
pub(crate) async fn close(
    txn: &DatabaseTransaction,
    state: &AppState,
    window: &Window,
    evaluation: &Evaluation,
    now: i64,
) -> Result<()> {
    // The window's first stream sequence makes the id: a window rebuilt after a crash before its
    // checkpoint writes the same report once.
    let report_id = format!(
        "{}-v{}-{}",
        window.span.deployment, window.span.version, window.span.first_sequence
    );
    let body = serde_json::json!({
        "report_id": report_id,
        "deployment": window.span.deployment,
        "model": window.span.model,
        "version": window.span.version,
        "window_start": window.span.started_at,
        "window_end": window.span.last_at,
        "count": window.count,
        "drift_share": evaluation.drift_share,
        "dataset_drift": evaluation.dataset_drift,
        "columns": evaluation.columns,
        "prediction_drift": evaluation.prediction,
        "findings": evaluation.findings,
        "latency_us_mean": window.latency_us_sum.checked_div(window.count).unwrap_or(0),
        "latency_us_max": window.latency_us_max,
        "latency_us_p50": window.latency.quantile(0.5),
        "latency_us_p95": window.latency.quantile(0.95),
        "latency_us_p99": window.latency.quantile(0.99),
        "errors": window.errors,
        "error_rate": error_rate(window),
        "quantiles": evaluation.quantiles,
    });
    let fresh = insert_report(
        txn,
        &window.span,
        &report_id,
        (window.count, evaluation.dataset_drift),
        &body,
        now,
    )
    .await?;
    if !fresh {
        return Ok(());
    }
    let mut metrics = flywheel_events::payloads::Metrics::default();
    metrics.insert(
        "latency_us_mean".into(),
        window.latency_us_sum.checked_div(window.count).unwrap_or(0) as f64,
    );
    for (name, q) in [
        ("latency_us_p50", 0.5),
        ("latency_us_p95", 0.95),
        ("latency_us_p99", 0.99),
    ] {
        if let Some(value) = window.latency.quantile(q) {
            metrics.insert(name.into(), value);
        }
    }
    metrics.insert("error_rate".into(), error_rate(window));
    if let Some(prediction) = &evaluation.prediction {
        metrics.insert("prediction_drift_score".into(), prediction.statistic);
        metrics.insert(
            "prediction_drifted".into(),
            f64::from(u8::from(prediction.drifted)),
        );
    }
    enqueue(
        txn,
        state,
        &window.span.deployment,
        Event::MonitorReportCreated(MonitorReportCreated {
            drift_share: evaluation.drift_share,
            dataset_drift: evaluation.dataset_drift,
            columns: evaluation.columns.clone(),
            histograms: evaluation.histograms.clone(),
            ..report_created(&window.span, &report_id, window.count, metrics)
        }),
    )
    .await?;
    metrics::counter!("flywheel_monitor_reports_total", "deployment" => window.span.deployment.clone())
        .increment(1);
    apply_drift_rule(txn, state, window, evaluation, &report_id, now).await?;
    apply_anomaly_rules(txn, state, window, &report_id, now).await?;
    crate::rules::check(
        txn,
        state,
        (&window.span.deployment, &window.span.model),
        &report_id,
        now,
    )
    .await
}

/// The alert rule for latency anomalies.
pub(crate) const LATENCY_RULE: &str = "latency";

/// The alert rule for error-rate anomalies.
pub(crate) const ERROR_RATE_RULE: &str = "error_rate";

/// A window's mean latency over this many times the learned baseline (and at least 1 ms over
/// it) is an anomaly.
const LATENCY_FACTOR: f64 = 3.0;

/// A window's error rate this far over the learned one (and at least twice it) is an anomaly.
const ERROR_RATE_MARGIN: f64 = 0.05;

/// Windows the baseline learns from before it judges.
const BASELINE_WINDOWS: i64 = 3;

/// Weight of the newest window in the baseline.
const EWMA_ALPHA: f64 = 0.3;

/// Share of a window's requests that failed on the server's side.
fn error_rate(window: &Window) -> f64 {
    if window.count == 0 {
        0.0
    } else {
        window.errors as f64 / window.count as f64
    }
}

/// What a version's windows were like (exponentially weighted means of normal windows).
struct Learned {
    latency_us: f64,
    error_rate: f64,
    windows: i64,
}

/// Judges a window's mean latency and error rate against the version's learned baselines:
/// raises `latency` / `error_rate` on an anomaly, resolves them and learns otherwise (an
/// anomalous value is not learnt from).
async fn apply_anomaly_rules(
    txn: &DatabaseTransaction,
    state: &AppState,
    window: &Window,
    report_id: &str,
    now: i64,
) -> Result<()> {
    if window.count == 0 {
        return Ok(());
    }
    let mean = window.latency_us_sum as f64 / window.count as f64;
    let errors = error_rate(window);
    let version = i32::try_from(window.span.version).unwrap_or(i32::MAX);
    let baseline = txn
        .query_one(
            &Query::select()
                .columns([
                    Baselines::LatencyUs,
                    Baselines::ErrorRate,
                    Baselines::Windows,
                ])
                .from(Baselines::Table)
                .and_where(Expr::col(Baselines::Deployment).eq(window.span.deployment.as_str()))
                .and_where(Expr::col(Baselines::Version).eq(version))
                .to_owned(),
        )
        .await?
        .map(|r| -> Result<Learned> {
            Ok(Learned {
                latency_us: r.try_get("", "latency_us")?,
                error_rate: r.try_get("", "error_rate")?,
                windows: r.try_get("", "windows")?,
            })
        })
        .transpose()?;
    let who = (window.span.deployment.as_str(), window.span.model.as_str());
    let judged = baseline.as_ref().filter(|b| b.windows >= BASELINE_WINDOWS);
    let slow = judged
        .is_some_and(|b| mean > b.latency_us * LATENCY_FACTOR && mean - b.latency_us >= 1000.0);
    let failing = judged.is_some_and(|b| {
        errors >= b.error_rate + ERROR_RATE_MARGIN && errors >= 2.0 * b.error_rate
    });
    if let (true, Some(b)) = (slow, judged) {
        let message = format!(
            "mean latency {mean:.0} µs in {} version {} is {:.1}× its learned baseline of {:.0} µs",
            window.span.deployment,
            window.span.version,
            mean / b.latency_us,
            b.latency_us
        );
        raise(
            txn,
            state,
            (LATENCY_RULE, "warning"),
            who,
            message,
            report_id,
            now,
        )
        .await?;
    } else {
        resolve(txn, state, LATENCY_RULE, &window.span.deployment, now).await?;
    }
    if let (true, Some(b)) = (failing, judged) {
        let message = format!(
            "{:.1} % of requests to {} version {} failed ({} of {}); its learned error rate is {:.1} %",
            errors * 100.0,
            window.span.deployment,
            window.span.version,
            window.errors,
            window.count,
            b.error_rate * 100.0
        );
        raise(
            txn,
            state,
            (ERROR_RATE_RULE, "critical"),
            who,
            message,
            report_id,
            now,
        )
        .await?;
    } else {
        resolve(txn, state, ERROR_RATE_RULE, &window.span.deployment, now).await?;
    }
    let learned = match baseline {
        Some(b) => Learned {
            latency_us: if slow {
                b.latency_us
            } else {
                EWMA_ALPHA * mean + (1.0 - EWMA_ALPHA) * b.latency_us
            },
            error_rate: if failing {
                b.error_rate
            } else {
                EWMA_ALPHA * errors + (1.0 - EWMA_ALPHA) * b.error_rate
            },
            windows: b.windows + 1,
        },
        None => Learned {
            latency_us: mean,
            error_rate: errors,
            windows: 1,
        },
    };
    let mut upsert = Query::insert();
    upsert
        .into_table(Baselines::Table)
        .columns([
            Baselines::Deployment,
            Baselines::Version,
            Baselines::LatencyUs,
            Baselines::ErrorRate,
            Baselines::Windows,
        ])
        .values([
            window.span.deployment.clone().into(),
            version.into(),
            learned.latency_us.into(),
            learned.error_rate.into(),
            learned.windows.into(),
        ])
        .map_err(|e| MonitorError::Invalid(e.to_string()))?
        .on_conflict(
            OnConflict::columns([Baselines::Deployment, Baselines::Version])
                .update_columns([
                    Baselines::LatencyUs,
                    Baselines::ErrorRate,
                    Baselines::Windows,
                ])
                .to_owned(),
        );
    txn.execute(&upsert).await?;
    Ok(())
}

async fn policy(txn: &DatabaseTransaction, model: &str) -> Result<Option<RetrainingPolicy>> {
    let row = txn
        .query_one(
            &Query::select()
                .column(Policies::Body)
                .from(Policies::Table)
                .and_where(Expr::col(Policies::Model).eq(model))
                .to_owned(),
        )
        .await?;
    Ok(row
        .map(|r| r.try_get::<String>("", "body"))
        .transpose()?
        .and_then(|b| serde_json::from_str(&b).ok()))
}

/// The open alert of a rule for a deployment, if any.
async fn open_alert(
    txn: &DatabaseTransaction,
    rule: &str,
    deployment: &str,
) -> Result<Option<String>> {
    txn.query_one(
        &Query::select()
            .column(Alerts::AlertId)
            .from(Alerts::Table)
            .and_where(Expr::col(Alerts::Deployment).eq(deployment))
            .and_where(Expr::col(Alerts::Rule).eq(rule))
            .and_where(Expr::col(Alerts::Status).eq("raised"))
            .to_owned(),
    )
    .await?
    .map(|r| r.try_get::<String>("", "alert_id"))
    .transpose()
    .map_err(Into::into)
}

/// Resolves a rule's open alert for the window's deployment (`monitor.alert.resolved`).
pub(crate) async fn resolve(
    txn: &DatabaseTransaction,
    state: &AppState,
    rule: &str,
    deployment: &str,
    now: i64,
) -> Result<()> {
    let Some(alert_id) = open_alert(txn, rule, deployment).await? else {
        return Ok(());
    };
    txn.execute(
        &Query::update()
            .table(Alerts::Table)
            .value(Alerts::Status, "resolved")
            .value(Alerts::ResolvedAt, now)
            .and_where(Expr::col(Alerts::AlertId).eq(alert_id.as_str()))
            .to_owned(),
    )
    .await?;
    enqueue(
        txn,
        state,
        deployment,
        Event::MonitorAlertResolved(MonitorAlertResolved {
            alert_id,
            rule: rule.into(),
            deployment: deployment.to_owned(),
        }),
    )
    .await
}

/// Raises a rule's alert for a deployment of `model` unless one is open; returns its id when it
/// raised one.
pub(crate) async fn raise(
    txn: &DatabaseTransaction,
    state: &AppState,
    (rule, severity): (&str, &str),
    (deployment, model): (&str, &str),
    message: String,
    report_id: &str,
    now: i64,
) -> Result<Option<String>> {
    if open_alert(txn, rule, deployment).await?.is_some() {
        return Ok(None);
    }
    let alert_id = format!("{rule}-{report_id}");
    let mut insert = Query::insert();
    insert
        .into_table(Alerts::Table)
        .columns(crate::schema::ALERT_COLUMNS)
        .values([
            alert_id.clone().into(),
            rule.into(),
            deployment.into(),
            model.into(),
            severity.into(),
            "raised".into(),
            message.clone().into(),
            report_id.into(),
            now.into(),
        ])
        .map_err(|e| MonitorError::Invalid(e.to_string()))?;
    txn.execute(&insert).await?;
    tracing::warn!(deployment, rule, %message, "alert raised");
    enqueue(
        txn,
        state,
        deployment,
        Event::MonitorAlertRaised(MonitorAlertRaised {
            alert_id: alert_id.clone(),
            rule: rule.into(),
            deployment: deployment.to_owned(),
            severity: severity.into(),
            message,
            report_id: Some(report_id.to_owned()),
        }),
    )
    .await?;
    Ok(Some(alert_id))
}

/// Raises the drift alert after `windows` drifted reports in a row (then asks for a retraining
/// per the model's policy); resolves it on a clean one.
async fn apply_drift_rule(
    txn: &DatabaseTransaction,
    state: &AppState,
    window: &Window,
    evaluation: &Evaluation,
    report_id: &str,
    now: i64,
) -> Result<()> {
    if !evaluation.dataset_drift {
        return resolve(txn, state, DRIFT_RULE, &window.span.deployment, now).await;
    }
    if open_alert(txn, DRIFT_RULE, &window.span.deployment)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let policy = policy(txn, &window.span.model).await?;
    let needed: u32 = policy.as_ref().map_or(1, |p| Ord::max(p.windows, 1));
    let recent = txn
        .query_all(
            &Query::select()
                .column(Reports::DatasetDrift)
                .from(Reports::Table)
                .and_where(Expr::col(Reports::Deployment).eq(window.span.deployment.as_str()))
                .order_by(Reports::CreatedAt, Order::Desc)
                .order_by(Reports::WindowStart, Order::Desc)
                .limit(u64::from(needed))
                .to_owned(),
        )
        .await?;
    let drifted_in_a_row = recent
        .iter()
        .filter_map(|r| r.try_get::<bool>("", "dataset_drift").ok())
        .take_while(|d| *d)
        .count();
    if drifted_in_a_row < needed as usize {
        return Ok(());
    }
    let drifted: Vec<&str> = evaluation
        .columns
        .iter()
        .filter(|c| c.drifted)
        .map(|c| c.column.as_str())
        .collect();
    let message = format!(
        "data drift in {} of {} features of {} version {}: {}",
        drifted.len(),
        evaluation.columns.len(),
        window.span.model,
        window.span.version,
        drifted.join(", ")
    );
    let raised = raise(
        txn,
        state,
        (DRIFT_RULE, "warning"),
        (&window.span.deployment, &window.span.model),
        message,
        report_id,
        now,
    )
    .await?;
    if let (Some(alert_id), Some(policy)) = (raised, policy) {
        retrain(txn, state, window, &policy, &alert_id, now).await?;
    }
    Ok(())
}

/// Asks for a retraining on the serving version's training data, within the policy's cooldown
/// and daily budget.
async fn retrain(
    txn: &DatabaseTransaction,
    state: &AppState,
    window: &Window,
    policy: &RetrainingPolicy,
    alert_id: &str,
    now: i64,
) -> Result<()> {
    let model = window.span.model.as_str();
    let last = txn
        .query_one(
            &Query::select()
                .expr(Expr::col(Retrainings::RequestedAt).max())
                .from(Retrainings::Table)
                .and_where(Expr::col(Retrainings::Model).eq(model))
                .to_owned(),
        )
        .await?
        .and_then(|r| r.try_get_by_index::<Option<i64>>(0).ok().flatten());
    let cooldown_ms =
        i64::try_from(policy.cooldown_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
    if let Some(last) = last
        && now - last < cooldown_ms
    {
        tracing::info!(model, "drift retraining skipped: in cooldown");
        return Ok(());
    }
    let day_start = now - now.rem_euclid(86_400_000);
    let today = txn
        .query_all(
            &Query::select()
                .column(Retrainings::RequestId)
                .from(Retrainings::Table)
                .and_where(Expr::col(Retrainings::Model).eq(model))
                .and_where(Expr::col(Retrainings::RequestedAt).gte(day_start))
                .to_owned(),
        )
        .await?
        .len();
    if today >= policy.daily_budget as usize {
        tracing::info!(model, "drift retraining skipped: daily budget spent");
        return Ok(());
    }
    let Some(training) = crate::catalog::training_data_in(txn, model, window.span.version).await?
    else {
        tracing::warn!(
            model,
            version = window.span.version,
            "drift retraining skipped: training data unknown"
        );
        return Ok(());
    };
    let dataset = match crate::export::production_rows(txn, state, &window.span, &training).await {
        Ok(Some(exported)) => exported,
        Ok(None) => DatasetRef {
            name: training.dataset,
            version: training.version,
        },
        Err(e) => {
            tracing::warn!(model, error = %e, "production rows not exported; retraining on the training dataset");
            DatasetRef {
                name: training.dataset,
                version: training.version,
            }
        }
    };
    let request_id = format!("drift-{alert_id}");
    let mut insert = Query::insert();
    insert
        .into_table(Retrainings::Table)
        .columns([
            Retrainings::RequestId,
            Retrainings::Model,
            Retrainings::AlertId,
            Retrainings::RequestedAt,
        ])
        .values([
            request_id.clone().into(),
            model.into(),
            alert_id.into(),
            now.into(),
        ])
        .map_err(|e| MonitorError::Invalid(e.to_string()))?;
    txn.execute(&insert).await?;
    enqueue(
        txn,
        state,
        &window.span.deployment,
        Event::TrainingRequested(TrainingRequested {
            request_id,
            model: model.to_owned(),
            dataset,
            trainer: policy.trainer.clone(),
            resources: policy.resources.clone(),
            priority: 0,
            reason: TrainingReason::Drift,
            search: None,
            gates: Vec::new(),
            timeout_seconds: None,
        }),
    )
    .await?;
    metrics::counter!("flywheel_monitor_retrainings_requested_total", "model" => model.to_owned())
        .increment(1);
    Ok(())
}

/// The alert rule for production performance.
pub(crate) const PERFORMANCE_RULE: &str = "performance";

/// Stores and announces a window of labelled outcomes, and judges it against the version's
/// evaluation at training (`performance` alert).
pub(crate) async fn close_performance(
    txn: &DatabaseTransaction,
    state: &AppState,
    window: &PerformanceWindow,
    margin: f64,
    now: i64,
) -> Result<()> {
    let report_id = format!(
        "{}-v{}-performance-{}",
        window.span.deployment, window.span.version, window.span.first_sequence
    );
    let production = window.metrics();
    let training = crate::catalog::training_data_in(txn, &window.span.model, window.span.version)
        .await?
        .map(|t| t.metrics)
        .unwrap_or_default();
    let body = serde_json::json!({
        "report_id": report_id,
        "kind": "performance",
        "deployment": window.span.deployment,
        "model": window.span.model,
        "version": window.span.version,
        "window_start": window.span.started_at,
        "window_end": window.span.last_at,
        "count": window.labelled,
        "performance": production,
        "training": training,
    });
    let fresh = insert_report(
        txn,
        &window.span,
        &report_id,
        (window.labelled, false),
        &body,
        now,
    )
    .await?;
    if !fresh {
        return Ok(());
    }
    let mut metrics = flywheel_events::payloads::Metrics::default();
    metrics.extend(production.iter().map(|(k, v)| (k.clone(), *v)));
    enqueue(
        txn,
        state,
        &window.span.deployment,
        Event::MonitorReportCreated(report_created(
            &window.span,
            &report_id,
            window.labelled,
            metrics,
        )),
    )
    .await?;
    match crate::performance::shortfall(&production, &training, margin) {
        Some(words) => {
            let message = format!(
                "{} version {} performs worse than at training: {words} over {} labelled predictions",
                window.span.model, window.span.version, window.labelled
            );
            raise(
                txn,
                state,
                (PERFORMANCE_RULE, "critical"),
                (&window.span.deployment, &window.span.model),
                message,
                &report_id,
                now,
            )
            .await?;
        }
        None => resolve(txn, state, PERFORMANCE_RULE, &window.span.deployment, now).await?,
    }
    crate::rules::check(
        txn,
        state,
        (&window.span.deployment, &window.span.model),
        &report_id,
        now,
    )
    .await
}
