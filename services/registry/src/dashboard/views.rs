//! What the dashboard's pages read beyond the plain APIs: a model with everything about it, a
//! run, a deployment's history (rollouts and monitored windows from the event log), the
//! delivery metrics — and the SVG charts drawn from them.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::header;
use axum::response::IntoResponse;
use flywheel_events::payloads::MonitorReportCreated;
use flywheel_events::{Envelope, Event};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, Order, Query};
use serde::Deserialize;
use serde_json::{Value, json};

use super::charts::{self, Axis, Node, Series};
use super::delivery;
use super::timeline::{self, Filter};
use crate::models::{self, governance};
use crate::schema::Promotions;
use crate::{AppState, Result};

/// An SVG response.
fn svg(body: String) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
}

/// A model's versions, newest or oldest first.
async fn versions_of(
    state: &AppState,
    name: &str,
    limit: u64,
    newest_first: bool,
) -> Result<Vec<models::ModelVersion>> {
    let order = if newest_first { "DESC" } else { "ASC" };
    let (versions, _) = models::search_versions(
        &state.db,
        &models::SearchModels {
            filter: format!("name = '{}'", name.replace('\'', "''")),
            max_results: limit,
            order_by: vec![format!("version_number {order}")],
            page_token: None,
        },
    )
    .await?;
    Ok(versions)
}

/// A model with its versions (gates, lineage, aliases), promotions, audit log and deployments.
pub(crate) async fn model(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>> {
    let found = models::get_model(&state.db, &name).await?;
    let policy = governance::get_policy(&state.db, &name).await?;
    let versions = versions_of(&state, &name, 200, true).await?;
    let mut listed = Vec::new();
    for version in &versions {
        let (passed, gates) = governance::evaluate(&state.db, &policy, version).await?;
        listed.push(json!({
            "version": version.version,
            "created_at": version.created_at,
            "created_by": version.created_by,
            "stage": version.current_stage,
            "aliases": version.aliases,
            "flavor": version.flavor,
            "metrics": version.metrics,
            "run_id": version.run_id.clone().or_else(|| version.lineage.run_id.clone()),
            "job_id": version.lineage.job_id,
            "dataset": version.lineage.dataset,
            "gates_passed": passed,
            "gates": gates,
        }));
    }
    let promotions: Vec<Value> = state
        .db
        .query_all(
            &Query::select()
                .columns([
                    Promotions::Id,
                    Promotions::Version,
                    Promotions::Alias,
                    Promotions::RequestedBy,
                    Promotions::Status,
                    Promotions::CreatedAt,
                ])
                .from(Promotions::Table)
                .and_where(Expr::col(Promotions::Model).eq(name.as_str()))
                .order_by(Promotions::Id, Order::Desc)
                .limit(50)
                .to_owned(),
        )
        .await?
        .iter()
        .map(|r| {
            Ok(json!({
                "id": r.try_get::<i64>("", "id")?,
                "version": r.try_get::<i64>("", "version")?,
                "alias": r.try_get::<String>("", "alias")?,
                "requested_by": r.try_get::<String>("", "requested_by")?,
                "status": r.try_get::<String>("", "status")?,
                "created_at": r.try_get::<i64>("", "created_at")?,
            }))
        })
        .collect::<Result<_>>()?;
    let mut audit = models::audit_log(&state.db, &name).await?;
    audit.reverse();
    audit.truncate(100);
    let deployments = crate::readmodels::deployments(&state.db, Some(&name)).await?;
    // What retraining repeats: the model's latest training request.
    let last_training = timeline::read(
        &state.db,
        &Filter {
            model: Some(&name),
            types: &["training.requested"],
            limit: 1,
            ..Filter::default()
        },
    )
    .await?
    .into_iter()
    .find_map(|e| match e.event {
        Event::TrainingRequested(r) => Some(json!({
            "dataset": r.dataset,
            "trainer": r.trainer,
            "resources": r.resources,
        })),
        _ => None,
    });
    Ok(axum::Json(json!({
        "last_training": last_training,
        "name": found.name,
        "description": found.description,
        "aliases": found.aliases.iter().map(|(a, v)| (a.clone(), *v)).collect::<BTreeMap<_, _>>(),
        "policy": policy,
        "versions": listed,
        "promotions": promotions,
        "audit": audit,
        "deployments": deployments,
    })))
}

/// The lineage graph of a model: datasets → runs → versions → deployments.
pub(crate) async fn lineage_chart(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse> {
    let versions = versions_of(&state, &name, 12, true).await?;
    let mut nodes: Vec<Node> = Vec::new();
    let mut edges = Vec::new();
    let add = |node: Node, nodes: &mut Vec<Node>| {
        if !nodes.iter().any(|n| n.id == node.id) {
            nodes.push(node);
        }
    };
    for version in versions.iter().rev() {
        let version_id = format!("v{}", version.version);
        add(
            Node {
                id: version_id.clone(),
                kind: "version",
                label: format!("{name} v{}", version.version),
            },
            &mut nodes,
        );
        let run = version
            .run_id
            .clone()
            .or_else(|| version.lineage.run_id.clone());
        if let Some(run) = &run {
            add(
                Node {
                    id: format!("run:{run}"),
                    kind: "run",
                    label: format!("run {}", &run[..run.len().min(8)]),
                },
                &mut nodes,
            );
            edges.push((format!("run:{run}"), version_id.clone()));
        }
        if let Some(dataset) = &version.lineage.dataset {
            let id = format!("dataset:{}@{}", dataset.name, dataset.version);
            add(
                Node {
                    id: id.clone(),
                    kind: "dataset",
                    label: format!(
                        "{}@{}",
                        dataset.name,
                        &dataset.version[..dataset.version.len().min(8)]
                    ),
                },
                &mut nodes,
            );
            let to = run.map_or_else(|| version_id.clone(), |run| format!("run:{run}"));
            edges.push((id, to));
        }
    }
    for deployment in crate::readmodels::deployments(&state.db, Some(&name)).await? {
        let id = format!("deployment:{}", deployment.deployment);
        nodes.push(Node {
            id: id.clone(),
            kind: "deployment",
            label: format!("{} ({})", deployment.deployment, deployment.status),
        });
        if let Some(version) = deployment.version {
            edges.push((format!("v{version}"), id));
        }
    }
    Ok(svg(charts::lineage_graph(
        &format!("lineage of {name}"),
        &nodes,
        &edges,
    )))
}

/// A run with its parameters, tags and latest metrics.
pub(crate) async fn run(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<axum::Json<Value>> {
    let run = crate::tracking::runs::get(&state.db, &run_id).await?;
    let pairs = |values: &[crate::tracking::KeyValue]| {
        values
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    Ok(axum::Json(json!({
        "run_id": run.info.run_id,
        "name": run.info.run_name,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "params": pairs(&run.params),
        "tags": pairs(&run.tags),
        "metrics": run.metrics.iter().map(|m| (m.key.clone(), m.value)).collect::<BTreeMap<_, _>>(),
    })))
}

/// A run's metric over its steps.
pub(crate) async fn metric_chart(
    State(state): State<AppState>,
    Path((run_id, key)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    let (history, _) =
        crate::tracking::runs::metric_history(&state.db, &run_id, &key, 25_000, None).await?;
    let mut points: Vec<(f64, f64)> = history.iter().map(|m| (m.step as f64, m.value)).collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(svg(charts::line_chart(
        &format!("{key} by step"),
        &[Series {
            name: key.clone(),
            points,
        }],
        Axis::Number,
        None,
    )))
}

/// A deployment's rollouts and monitored windows, from the event log.
pub(crate) async fn deployment_history(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>> {
    let events = deployment_events(&state, &name).await?;
    let mut rollouts = Vec::new();
    let mut windows = Vec::new();
    for envelope in events.iter() {
        let time = envelope.time.timestamp_millis();
        let (kind, detail) = match &envelope.event {
            Event::DeploymentRequested(r) => ("requested", format!("{} v{}", r.model, r.version)),
            Event::DeploymentRolloutStarted(r) => (
                "rollout started",
                format!(
                    "v{} → v{}",
                    r.from_version.map_or_else(|| "–".into(), |v| v.to_string()),
                    r.to_version
                ),
            ),
            Event::DeploymentTrafficShifted(t) => (
                "traffic shifted",
                t.splits
                    .iter()
                    .map(|s| {
                        format!(
                            "v{} {}%{}",
                            s.version,
                            s.percent,
                            if s.shadow { " (shadow)" } else { "" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Event::DeploymentRolledOut(r) => ("rolled out", format!("v{} serves", r.version)),
            Event::DeploymentRolledBack(b) => ("rolled back", b.reason.clone()),
            Event::DeploymentFailed(f) => ("failed", f.error.clone()),
            Event::MonitorAlertRaised(a) => ("alert raised", a.message.clone()),
            Event::MonitorAlertResolved(a) => ("alert resolved", a.rule.clone()),
            Event::MonitorReportCreated(r) => {
                windows.push(json!({
                    "report_id": r.report_id,
                    "version": r.version,
                    "window_start": r.window_start.timestamp_millis(),
                    "window_end": r.window_end.timestamp_millis(),
                    "count": r.count,
                    "drift_share": r.drift_share,
                    "dataset_drift": r.dataset_drift,
                    "metrics": r.metrics,
                    "columns": r.columns,
                    "features": r.histograms.iter().map(|h| h.column.clone()).collect::<Vec<_>>(),
                }));
                continue;
            }
            _ => continue,
        };
        rollouts.push(json!({"time": time, "event": kind, "detail": detail}));
    }
    rollouts.reverse();
    Ok(axum::Json(json!({
        "deployment": name,
        "history": rollouts,
        "windows": windows,
    })))
}

/// A deployment's recent events, read once for the page's four charts and its history, which
/// the page asks for together: an answer younger than a second is shared.
#[derive(Debug, Clone, Default)]
pub struct RecentEvents(Arc<std::sync::Mutex<std::collections::HashMap<String, Read>>>);

/// When a deployment's events were read, and what they were.
type Read = (std::time::Instant, Arc<Vec<Envelope>>);

async fn deployment_events(state: &AppState, name: &str) -> Result<Arc<Vec<Envelope>>> {
    let fresh = std::time::Duration::from_secs(1);
    if let Ok(recent) = state.recent_events.0.lock()
        && let Some((at, events)) = recent.get(name)
        && at.elapsed() < fresh
    {
        return Ok(events.clone());
    }
    let events = Arc::new(
        timeline::read(
            &state.db,
            &Filter {
                deployment: Some(name),
                limit: 5000,
                ..Filter::default()
            },
        )
        .await?,
    );
    if let Ok(mut recent) = state.recent_events.0.lock() {
        recent.retain(|_, (at, _)| at.elapsed() < fresh);
        recent.insert(name.to_owned(), (std::time::Instant::now(), events.clone()));
    }
    Ok(events)
}

/// Which feature a histogram shows, and from which window (the latest by default).
#[derive(Debug, Deserialize)]
pub(crate) struct HistogramQuery {
    feature: Option<String>,
    report: Option<String>,
}

/// A deployment chart: `requests`, `latency`, `errors`, `drift`, `traffic` or `histogram`.
pub(crate) async fn deployment_chart(
    State(state): State<AppState>,
    Path((name, kind)): Path<(String, String)>,
    UrlQuery(query): UrlQuery<HistogramQuery>,
) -> Result<impl IntoResponse> {
    let events = deployment_events(&state, &name).await?;
    let reports: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::MonitorReportCreated(r) => Some(r),
            _ => None,
        })
        .collect();
    let at = |r: &MonitorReportCreated| r.window_end.timestamp_millis() as f64;
    // One line per version (windows of versions served side by side interleave in time).
    let per_version = |label: &str, value: &dyn Fn(&MonitorReportCreated) -> Option<f64>| {
        let mut lines: BTreeMap<u32, Series> = BTreeMap::new();
        for report in &reports {
            if let Some(y) = value(report) {
                lines
                    .entry(report.version)
                    .or_insert_with(|| Series {
                        name: format!("v{} {label}", report.version).trim().to_owned(),
                        points: Vec::new(),
                    })
                    .points
                    .push((at(report), y));
            }
        }
        lines
            .into_values()
            .map(|mut s| {
                s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
                s
            })
            .collect::<Vec<_>>()
    };
    let metric = |key: &'static str, scale: f64| {
        move |r: &MonitorReportCreated| r.metrics.get(key).map(|v| v * scale)
    };
    let body = match kind.as_str() {
        "requests" => charts::line_chart(
            "requests per second (monitored windows)",
            &per_version("", &|r| {
                let seconds =
                    ((r.window_end - r.window_start).num_milliseconds() as f64 / 1000.0).max(1.0);
                Some(r.count as f64 / seconds)
            }),
            Axis::Time,
            None,
        ),
        "latency" => charts::line_chart(
            "latency, ms",
            &[
                per_version("p50", &metric("latency_us_p50", 1e-3)),
                per_version("p99", &metric("latency_us_p99", 1e-3)),
            ]
            .concat(),
            Axis::Time,
            None,
        ),
        "errors" => charts::line_chart(
            "server error rate, %",
            &per_version("", &metric("error_rate", 100.0)),
            Axis::Time,
            None,
        ),
        "drift" => {
            let mut by_feature: BTreeMap<&str, Series> = BTreeMap::new();
            let mut threshold = None;
            for report in &reports {
                for column in &report.columns {
                    threshold.get_or_insert(column.threshold);
                    by_feature
                        .entry(&column.column)
                        .or_insert_with(|| Series {
                            name: column.column.clone(),
                            points: Vec::new(),
                        })
                        .points
                        .push((at(report), column.statistic));
                }
            }
            let series: Vec<Series> = by_feature
                .into_values()
                .map(|mut s| {
                    s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    s
                })
                .collect();
            charts::line_chart(
                "drift score per feature (window by window)",
                &series,
                Axis::Time,
                threshold,
            )
        }
        "traffic" => {
            let mut by_version: BTreeMap<u32, Series> = BTreeMap::new();
            for envelope in events.iter() {
                let splits: Vec<(u32, u8)> = match &envelope.event {
                    Event::DeploymentTrafficShifted(t) => t
                        .splits
                        .iter()
                        .filter(|s| !s.shadow)
                        .map(|s| (s.version, s.percent))
                        .collect(),
                    Event::DeploymentRolledOut(r) => vec![(r.version, 100)],
                    _ => continue,
                };
                let time = envelope.time.timestamp_millis() as f64;
                for series in by_version.values_mut() {
                    if !splits.iter().any(|(v, _)| series.name == format!("v{v}")) {
                        series.points.push((time, 0.0));
                    }
                }
                for (version, percent) in splits {
                    by_version
                        .entry(version)
                        .or_insert_with(|| Series {
                            name: format!("v{version}"),
                            points: Vec::new(),
                        })
                        .points
                        .push((time, f64::from(percent)));
                }
            }
            let series: Vec<Series> = by_version.into_values().collect();
            charts::line_chart("traffic split, %", &series, Axis::Time, None)
        }
        "histogram" => {
            let report = match &query.report {
                Some(id) => reports.iter().rev().find(|r| &r.report_id == id),
                None => reports.last(),
            };
            let histogram = report.and_then(|r| {
                r.histograms
                    .iter()
                    .find(|h| query.feature.as_deref().is_none_or(|f| h.column == f))
            });
            match histogram {
                Some(h) => {
                    let share = |counts: &[f64]| {
                        let total: f64 = counts.iter().sum::<f64>().max(1.0);
                        counts.iter().map(|c| 100.0 * c / total).collect::<Vec<_>>()
                    };
                    charts::bar_chart(
                        &format!("{}: reference vs current window, % of rows", h.column),
                        &h.labels,
                        &[
                            ("reference".into(), share(&h.reference)),
                            ("current".into(), share(&h.current)),
                        ],
                    )
                }
                None => charts::bar_chart("no monitored window yet", &[], &[]),
            }
        }
        other => {
            return Err(crate::RegistryError::NotFound(format!(
                "no chart `{other}`: requests, latency, errors, drift, traffic or histogram"
            )));
        }
    };
    Ok(svg(body))
}

async fn delivery_of(state: &AppState) -> Result<delivery::Delivery> {
    let events = timeline::read(
        &state.db,
        &Filter {
            types: delivery::TYPES,
            limit: 100_000,
            ..Filter::default()
        },
    )
    .await?;
    Ok(delivery::compute(&events))
}

/// The delivery metrics.
pub(crate) async fn delivery(State(state): State<AppState>) -> Result<impl IntoResponse> {
    Ok(axum::Json(delivery_of(&state).await?))
}

/// Rollouts and rollbacks per day.
pub(crate) async fn delivery_chart(State(state): State<AppState>) -> Result<impl IntoResponse> {
    let report = delivery_of(&state).await?;
    let labels: Vec<String> = report.days.iter().map(|d| d.day.clone()).collect();
    Ok(svg(charts::bar_chart(
        "rollouts per day",
        &labels,
        &[
            (
                "rolled out".into(),
                report
                    .days
                    .iter()
                    .map(|d| f64::from(d.deployments))
                    .collect(),
            ),
            (
                "rolled back".into(),
                report.days.iter().map(|d| f64::from(d.rollbacks)).collect(),
            ),
        ],
    )))
}

/// The recent event log, optionally of one model or deployment.
#[derive(Debug, Deserialize)]
pub(crate) struct TimelineQuery {
    model: Option<String>,
    deployment: Option<String>,
    #[serde(default = "default_limit")]
    limit: u64,
}

fn default_limit() -> u64 {
    100
}

/// Recent events as JSON envelopes.
pub(crate) async fn recent(
    State(state): State<AppState>,
    principal: Option<axum::Extension<flywheel_auth::Principal>>,
    UrlQuery(query): UrlQuery<TimelineQuery>,
) -> Result<impl IntoResponse> {
    let mut events = timeline::read(
        &state.db,
        &Filter {
            model: query.model.as_deref(),
            deployment: query.deployment.as_deref(),
            limit: Ord::min(query.limit, 1000),
            ..Filter::default()
        },
    )
    .await?;
    // Refused requests are for admins' eyes (and everyone's with authentication off).
    if principal.is_some_and(|p| !p.has(flywheel_auth::Role::Admin)) {
        events.retain(|e| !matches!(e.event, flywheel_events::Event::SecurityAccessDenied(_)));
    }
    Ok(axum::Json(timeline::as_json(&events)))
}

/// The job queue: each job's state and attempt, with its runner and latest progress from the
/// event log.
pub(crate) async fn jobs(State(state): State<AppState>) -> Result<impl IntoResponse> {
    let jobs = crate::readmodels::jobs(&state.db).await?;
    let events = timeline::read(
        &state.db,
        &Filter {
            types: &["training.job.started", "training.job.progress"],
            limit: 5000,
            ..Filter::default()
        },
    )
    .await?;
    let mut runner: BTreeMap<&str, &str> = BTreeMap::new();
    let mut progress: BTreeMap<&str, (f64, &str, &flywheel_events::payloads::Metrics)> =
        BTreeMap::new();
    for envelope in events.iter() {
        match &envelope.event {
            Event::TrainingJobStarted(s) => {
                runner.insert(&s.job_id, &s.runner);
            }
            Event::TrainingJobProgress(p) => {
                progress.insert(&p.job_id, (p.fraction, &p.message, &p.metrics));
            }
            _ => {}
        }
    }
    let listed: Vec<Value> = jobs
        .iter()
        .map(|job| {
            let (fraction, message, metrics) = progress
                .get(job.job_id.as_str())
                .map_or((None, None, None), |(f, m, x)| {
                    (Some(*f), Some(*m), Some(*x))
                });
            let fraction = if job.status == "succeeded" {
                Some(1.0)
            } else {
                fraction
            };
            json!({
                "job_id": job.job_id,
                "model": job.model,
                "status": job.status,
                "attempt": job.attempt,
                "detail": job.detail,
                "registered_version": job.registered_version,
                "runner": runner.get(job.job_id.as_str()),
                "progress": fraction,
                "progress_message": message,
                "metrics": metrics,
            })
        })
        .collect();
    Ok(axum::Json(listed))
}

/// A model's evaluation metrics version by version.
pub(crate) async fn model_metrics_chart(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse> {
    let versions = versions_of(&state, &name, 200, false).await?;
    let mut by_metric: BTreeMap<&str, Series> = BTreeMap::new();
    for version in &versions {
        for (key, value) in &version.metrics {
            by_metric
                .entry(key)
                .or_insert_with(|| Series {
                    name: key.clone(),
                    points: Vec::new(),
                })
                .points
                .push((version.version as f64, *value));
        }
    }
    let series: Vec<Series> = by_metric.into_values().take(6).collect();
    Ok(svg(charts::line_chart(
        &format!("{name}: evaluation metrics by version"),
        &series,
        Axis::Number,
        None,
    )))
}
