//! The platform's own delivery metrics, computed from the event log (the four DORA keys,
//! adapted to models): lead time from a training request to its version serving, deployment
//! frequency, change failure rate (rollouts rolled back) and the time from drift onset to a
//! recovered model (the next version rolled out on the drifted deployment).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use flywheel_events::{Envelope, Event};
use serde::Serialize;

/// The event types the metrics read.
pub(crate) const TYPES: &[&str] = &[
    "training.requested",
    "training.job.queued",
    "training.job.completed",
    "model.version.registered",
    "deployment.rollout_started",
    "deployment.traffic_shifted",
    "deployment.rolled_out",
    "deployment.rolled_back",
    "monitor.alert.raised",
];

/// One version's way from request (or queueing) to serving.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct LeadTime {
    /// Model version.
    pub version: u32,
    /// When training was requested.
    pub requested_at: DateTime<Utc>,
    /// When it first served traffic (canary or full).
    pub serving_at: DateTime<Utc>,
    /// The difference, seconds.
    pub seconds: f64,
}

/// One drift episode.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Recovery {
    /// The drifted deployment.
    pub deployment: String,
    /// When the drift alert was raised.
    pub drift_at: DateTime<Utc>,
    /// When a newer version was rolled out there, if yet.
    pub recovered_at: Option<DateTime<Utc>>,
    /// The version that recovered it.
    pub version: Option<u32>,
    /// The difference, seconds.
    pub seconds: Option<f64>,
}

/// A model's delivery metrics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct ModelDelivery {
    /// Model name.
    pub model: String,
    /// Per version that served, its lead time.
    pub lead_times: Vec<LeadTime>,
    /// Median lead time, seconds.
    pub median_lead_time_seconds: Option<f64>,
    /// Rollouts completed.
    pub deployments: u32,
    /// Rollouts rolled back.
    pub rollbacks: u32,
    /// Rolled back / (completed + rolled back).
    pub change_failure_rate: Option<f64>,
    /// Completed rollouts per day over the days the log covers (at least one).
    pub deployments_per_day: f64,
    /// Drift episodes.
    pub recoveries: Vec<Recovery>,
    /// Median time from drift to recovery, seconds.
    pub median_recovery_seconds: Option<f64>,
}

/// Completed and rolled-back rollouts of one day.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Day {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// Rollouts completed.
    pub deployments: u32,
    /// Rollouts rolled back.
    pub rollbacks: u32,
}

/// Delivery metrics per model and per day.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Delivery {
    /// Per model.
    pub models: Vec<ModelDelivery>,
    /// Per day, all models.
    pub days: Vec<Day>,
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        f64::midpoint(values[mid - 1], values[mid])
    } else {
        values[mid]
    })
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}

#[derive(Default)]
struct ModelLog {
    lead_times: Vec<LeadTime>,
    deployments: u32,
    rollbacks: u32,
    recoveries: Vec<Recovery>,
}

/// Computes the metrics from events in stream order.
pub(crate) fn compute(events: &[Envelope]) -> Delivery {
    let mut requested: HashMap<&str, DateTime<Utc>> = HashMap::new();
    let mut job_request: HashMap<&str, &str> = HashMap::new();
    // (model, version) → when its training was requested.
    let mut version_requested: HashMap<(&str, u32), DateTime<Utc>> = HashMap::new();
    let mut serving: HashMap<(&str, u32), ()> = HashMap::new();
    let mut rollout_model: HashMap<&str, &str> = HashMap::new();
    let mut deployment_model: HashMap<&str, &str> = HashMap::new();
    let mut serving_version: HashMap<&str, u32> = HashMap::new();
    let mut models: BTreeMap<&str, ModelLog> = BTreeMap::new();
    let mut days: BTreeMap<String, Day> = BTreeMap::new();
    let day_of = |time: DateTime<Utc>| time.format("%Y-%m-%d").to_string();
    let (first, last) = (
        events.first().map(|e| e.time),
        events.last().map(|e| e.time),
    );
    for envelope in events {
        let time = envelope.time;
        match &envelope.event {
            Event::TrainingRequested(r) => {
                requested.insert(&r.request_id, time);
            }
            // A job submitted straight to the scheduler has no `training.requested`: its
            // lead time starts when it was queued.
            Event::TrainingJobQueued(q) => {
                requested.entry(&q.request_id).or_insert(time);
            }
            Event::TrainingJobCompleted(c) => {
                job_request.insert(&c.job_id, &c.request_id);
            }
            Event::ModelVersionRegistered(v) => {
                let at = v
                    .lineage
                    .job_id
                    .as_deref()
                    .and_then(|job| job_request.get(job))
                    .and_then(|request| requested.get(request));
                if let Some(at) = at {
                    version_requested.insert((&v.model, v.version), *at);
                }
            }
            Event::DeploymentRolloutStarted(s) => {
                rollout_model.insert(&s.rollout_id, &s.model);
                deployment_model.insert(&s.deployment, &s.model);
            }
            Event::DeploymentTrafficShifted(t) => {
                let Some(model) = deployment_model.get(t.deployment.as_str()).copied() else {
                    continue;
                };
                for split in t.splits.iter().filter(|s| s.percent > 0 && !s.shadow) {
                    first_serving(
                        (model, split.version),
                        time,
                        &version_requested,
                        &mut serving,
                        &mut models,
                    );
                }
            }
            Event::DeploymentRolledOut(r) => {
                deployment_model.insert(&r.deployment, &r.model);
                first_serving(
                    (&r.model, r.version),
                    time,
                    &version_requested,
                    &mut serving,
                    &mut models,
                );
                let log = models.entry(&r.model).or_default();
                log.deployments += 1;
                days.entry(day_of(time))
                    .or_insert_with(|| Day {
                        day: day_of(time),
                        deployments: 0,
                        rollbacks: 0,
                    })
                    .deployments += 1;
                for episode in log
                    .recoveries
                    .iter_mut()
                    .filter(|e| e.deployment == r.deployment && e.recovered_at.is_none())
                {
                    let newer = serving_version
                        .get(r.deployment.as_str())
                        .is_none_or(|v| r.version > *v);
                    if newer {
                        episode.recovered_at = Some(time);
                        episode.version = Some(r.version);
                        episode.seconds = Some(seconds(episode.drift_at, time));
                    }
                }
                serving_version.insert(&r.deployment, r.version);
            }
            Event::DeploymentRolledBack(b) => {
                let model = rollout_model
                    .get(b.rollout_id.as_str())
                    .or_else(|| deployment_model.get(b.deployment.as_str()))
                    .copied()
                    .unwrap_or_default();
                models.entry(model).or_default().rollbacks += 1;
                days.entry(day_of(time))
                    .or_insert_with(|| Day {
                        day: day_of(time),
                        deployments: 0,
                        rollbacks: 0,
                    })
                    .rollbacks += 1;
            }
            Event::MonitorAlertRaised(a) if a.rule == "data_drift" => {
                let Some(model) = deployment_model.get(a.deployment.as_str()).copied() else {
                    continue;
                };
                let log = models.entry(model).or_default();
                let open = log
                    .recoveries
                    .iter()
                    .any(|e| e.deployment == a.deployment && e.recovered_at.is_none());
                if !open {
                    log.recoveries.push(Recovery {
                        deployment: a.deployment.clone(),
                        drift_at: time,
                        recovered_at: None,
                        version: None,
                        seconds: None,
                    });
                }
            }
            _ => {}
        }
    }
    let span_days = match (first, last) {
        (Some(first), Some(last)) => (seconds(first, last) / 86_400.0).max(1.0),
        _ => 1.0,
    };
    Delivery {
        models: models
            .into_iter()
            .filter(|(model, _)| !model.is_empty())
            .map(|(model, log)| {
                let finished = log.deployments + log.rollbacks;
                ModelDelivery {
                    model: model.to_owned(),
                    median_lead_time_seconds: median(
                        log.lead_times.iter().map(|l| l.seconds).collect(),
                    ),
                    lead_times: log.lead_times,
                    deployments: log.deployments,
                    rollbacks: log.rollbacks,
                    change_failure_rate: (finished > 0)
                        .then(|| f64::from(log.rollbacks) / f64::from(finished)),
                    deployments_per_day: f64::from(log.deployments) / span_days,
                    median_recovery_seconds: median(
                        log.recoveries.iter().filter_map(|r| r.seconds).collect(),
                    ),
                    recoveries: log.recoveries,
                }
            })
            .collect(),
        days: days.into_values().collect(),
    }
}

/// Records a version's lead time the first time it serves.
fn first_serving<'a>(
    key: (&'a str, u32),
    time: DateTime<Utc>,
    version_requested: &HashMap<(&str, u32), DateTime<Utc>>,
    serving: &mut HashMap<(&'a str, u32), ()>,
    models: &mut BTreeMap<&'a str, ModelLog>,
) {
    if serving.insert(key, ()).is_some() {
        return;
    }
    if let Some(requested_at) = version_requested.get(&key) {
        models.entry(key.0).or_default().lead_times.push(LeadTime {
            version: key.1,
            requested_at: *requested_at,
            serving_at: time,
            seconds: seconds(*requested_at, time),
        });
    }
}
