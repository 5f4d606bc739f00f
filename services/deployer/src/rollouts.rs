//! Rollouts: how a new version replaces the serving one. `canary` shifts a share of requests
//! in steps, `shadow` mirrors all traffic to the new version without using its answers,
//! `blue_green` switches at once after the new version has loaded beside the old. During a
//! canary or shadow step the new version's server errors and p99 latency are judged against
//! the deployment's SLO; a breach rolls it back (`deployment.rolled_back` with the reason),
//! otherwise it is promoted (`deployment.rolled_out`). A newer version or a restart ends a
//! rollout in progress (the restart serves the last promoted version, then starts again).
//! Rollouts run on the rollout leader (`crate::leadership`); each step is written as the
//! deployment's route, which every replica applies, and judged on every replica's numbers.

use std::time::Duration;

use flywheel_events::Event;
use flywheel_events::payloads::{
    DeploymentRolledBack, DeploymentRolledOut, DeploymentRolloutStarted, DeploymentTrafficShifted,
    RolloutStrategy, TrafficSplit, VersionMeasurement,
};
use tokio_util::sync::CancellationToken;

use crate::deployments::{self, Deployment, Slo};
use crate::routes;
use crate::serving::{Candidate, Loaded, StepNumbers};
use crate::{AppState, DeployerError, Result};

/// Checks a strategy and SLO before they are stored.
pub(crate) fn validate(strategy: &RolloutStrategy, slo: &Slo) -> Result<()> {
    if let RolloutStrategy::Canary {
        steps,
        step_seconds,
    } = strategy
    {
        if steps.is_empty() || steps.iter().any(|p| *p == 0 || *p > 100) {
            return Err(DeployerError::Invalid(
                "canary steps: percentages from 1 to 100".into(),
            ));
        }
        if steps.windows(2).any(|w| w[1] <= w[0]) || steps.last() != Some(&100) {
            return Err(DeployerError::Invalid(
                "canary steps must rise and end at 100".into(),
            ));
        }
        if *step_seconds == 0 {
            return Err(DeployerError::Invalid(
                "canary step_seconds: at least 1".into(),
            ));
        }
    }
    let share = |v: f64| (0.0..=1.0).contains(&v);
    let non_negative = |v: f64| v.is_finite() && v >= 0.0;
    let checks = [
        (
            "slo.error_rate_margin: 0 to 1",
            share(slo.error_rate_margin),
        ),
        (
            "slo.max_error_rate: 0 to 1",
            slo.max_error_rate.is_none_or(share),
        ),
        (
            "slo.max_disagreement_rate: 0 to 1",
            slo.max_disagreement_rate.is_none_or(share),
        ),
        (
            "slo.latency_margin: a number >= 0",
            non_negative(slo.latency_margin),
        ),
        (
            "slo.latency_slack_ms: a number >= 0",
            non_negative(slo.latency_slack_ms),
        ),
        (
            "slo.max_p99_latency_ms: a number >= 0",
            slo.max_p99_latency_ms.is_none_or(non_negative),
        ),
    ];
    match checks.iter().find(|(_, ok)| !ok) {
        Some((message, _)) => Err(DeployerError::Invalid((*message).into())),
        None => Ok(()),
    }
}

/// Ends the rollout in progress of a deployment, if any, dropping its candidate.
pub(crate) fn cancel(state: &AppState, name: &str) {
    let token = state.rollouts.lock().ok().and_then(|mut r| r.remove(name));
    if let Some(token) = token {
        token.cancel();
        state.serving.end_candidate(name, false);
    }
}

/// Ends every rollout this replica drives (it stopped leading, or shuts down).
pub(crate) fn cancel_all(state: &AppState) {
    let names: Vec<String> = state
        .rollouts
        .lock()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default();
    for name in names {
        cancel(state, &name);
    }
}

/// Whether this replica drives a rollout of `name`.
pub(crate) fn running(state: &AppState, name: &str) -> bool {
    state
        .rollouts
        .lock()
        .is_ok_and(|r| r.get(name).is_some_and(|t| !t.is_cancelled()))
}

/// Starts rolling `loaded` out over the version `from` by the deployment's strategy.
pub(crate) fn start(state: &AppState, deployment: Deployment, from: u32, loaded: Loaded) {
    cancel(state, &deployment.name);
    let token = state.shutdown.child_token();
    if let Ok(mut rollouts) = state.rollouts.lock() {
        rollouts.insert(deployment.name.clone(), token.clone());
    }
    let state = state.clone();
    tokio::spawn(async move {
        let name = deployment.name.clone();
        if let Err(e) = drive(&state, &deployment, from, loaded, &token).await {
            tracing::warn!(deployment = %name, error = %e, "rollout failed");
        }
        if let Ok(mut rollouts) = state.rollouts.lock()
            && rollouts
                .get(&name)
                .is_some_and(|t| t.is_cancelled() || t == &token)
        {
            rollouts.remove(&name);
        }
    });
}

/// One version's numbers over the step.
fn measure(
    version: u32,
    numbers: &StepNumbers,
    disagreement_rate: Option<f64>,
) -> VersionMeasurement {
    let (requests, error_rate, p99_latency_ms) = numbers.summary();
    VersionMeasurement {
        version,
        requests,
        error_rate,
        p99_latency_ms,
        disagreement_rate,
    }
}

/// Why the candidate breaks the SLO, if it does: against the serving version's numbers (by
/// the margins), then against the absolute ceilings.
fn breach(
    candidate: &VersionMeasurement,
    stable: &VersionMeasurement,
    slo: &Slo,
) -> Option<String> {
    let n = candidate.requests;
    if n < slo.min_requests {
        return None;
    }
    let judged_against_stable = stable.requests >= slo.min_requests;
    if judged_against_stable && candidate.error_rate > stable.error_rate + slo.error_rate_margin {
        return Some(format!(
            "error rate {:.4} above the serving version's {:.4} + {} over {n} requests",
            candidate.error_rate, stable.error_rate, slo.error_rate_margin
        ));
    }
    if let Some(limit) = slo.max_error_rate
        && candidate.error_rate > limit
    {
        return Some(format!(
            "error rate {:.4} above {limit} over {n} requests",
            candidate.error_rate
        ));
    }
    let allowed = stable.p99_latency_ms * (1.0 + slo.latency_margin) + slo.latency_slack_ms;
    if judged_against_stable && candidate.p99_latency_ms > allowed {
        return Some(format!(
            "p99 latency {:.3} ms above the serving version's {:.3} ms × {} + {} ms over {n} requests",
            candidate.p99_latency_ms,
            stable.p99_latency_ms,
            1.0 + slo.latency_margin,
            slo.latency_slack_ms
        ));
    }
    if let Some(limit) = slo.max_p99_latency_ms
        && candidate.p99_latency_ms > limit
    {
        return Some(format!(
            "p99 latency {:.3} ms above {limit} ms over {n} requests",
            candidate.p99_latency_ms
        ));
    }
    if let (Some(limit), Some(rate)) = (slo.max_disagreement_rate, candidate.disagreement_rate)
        && rate > limit
    {
        return Some(format!(
            "{:.2}% of mirrored answers differ from the serving version's (limit {:.2}%)",
            rate * 100.0,
            limit * 100.0
        ));
    }
    None
}

type Judged = (VersionMeasurement, VersionMeasurement, Option<String>);

/// The candidate's and the stable version's numbers over every replica in this step
/// (`generation` of the route), and the breach if any.
async fn judge(
    state: &AppState,
    name: &str,
    generation: i64,
    candidate: &Candidate,
    from: u32,
    slo: &Slo,
) -> Result<Judged> {
    let numbers = routes::merged(state, name, generation, candidate).await?;
    let measured = measure(
        candidate.loaded.version,
        &numbers.candidate,
        numbers.disagreement_rate(),
    );
    let stable = measure(from, &numbers.stable, None);
    let verdict = breach(&measured, &stable, slo);
    Ok((measured, stable, verdict))
}

async fn drive(
    state: &AppState,
    deployment: &Deployment,
    from: u32,
    loaded: Loaded,
    token: &CancellationToken,
) -> Result<()> {
    let name = deployment.name.as_str();
    let to = loaded.version;
    let rollout_id = format!(
        "{name}-v{from}-v{to}-{}",
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    );
    let (first, shadow) = match &deployment.strategy {
        RolloutStrategy::Canary { steps, .. } => (steps.first().copied().unwrap_or(100), false),
        RolloutStrategy::Shadow { .. } => (0, true),
        RolloutStrategy::BlueGreen | RolloutStrategy::Direct => (0, false),
    };
    let Some(candidate) = state.serving.start_candidate(loaded, first, shadow) else {
        return Err(DeployerError::NotReady(format!(
            "{name} serves nothing to roll out over"
        )));
    };
    // A canary's steps write their own routes (one generation per step, so every replica
    // counts each step afresh).
    let mut generation = match &deployment.strategy {
        RolloutStrategy::Canary { .. } => 0,
        _ => routes::set_candidate(state, name, Some((to, first, shadow))).await?,
    };
    let started = Event::DeploymentRolloutStarted(DeploymentRolloutStarted {
        deployment: name.to_owned(),
        rollout_id: rollout_id.clone(),
        model: deployment.model.clone(),
        from_version: Some(from),
        to_version: to,
        strategy: deployment.strategy.clone(),
    });
    deployments::announce(
        state,
        deployment,
        "rolling_out",
        &format!("v{from} → v{to}"),
        started,
    )
    .await?;
    let verdict = match &deployment.strategy {
        RolloutStrategy::Canary {
            steps,
            step_seconds,
        } => {
            let mut verdict = None;
            for percent in steps {
                candidate
                    .percent
                    .store(*percent, std::sync::atomic::Ordering::Relaxed);
                candidate.reset();
                generation =
                    routes::set_candidate(state, name, Some((to, *percent, false))).await?;
                let shifted = Event::DeploymentTrafficShifted(DeploymentTrafficShifted {
                    deployment: name.to_owned(),
                    rollout_id: rollout_id.clone(),
                    splits: vec![
                        TrafficSplit {
                            version: from,
                            percent: 100 - percent,
                            shadow: false,
                        },
                        TrafficSplit {
                            version: to,
                            percent: *percent,
                            shadow: false,
                        },
                    ],
                });
                let detail = format!("v{to} takes {percent}% of requests");
                deployments::announce(state, deployment, "rolling_out", &detail, shifted).await?;
                if *percent == 100 {
                    break;
                }
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs(*step_seconds)) => {}
                }
                let judged =
                    judge(state, name, generation, &candidate, from, &deployment.slo).await?;
                if judged.2.is_some() {
                    verdict = Some(judged);
                    break;
                }
            }
            verdict
        }
        RolloutStrategy::Shadow { duration_seconds } => {
            tokio::select! {
                () = token.cancelled() => return Ok(()),
                () = tokio::time::sleep(Duration::from_secs(*duration_seconds)) => {}
            }
            let judged = judge(state, name, generation, &candidate, from, &deployment.slo).await?;
            tracing::info!(deployment = name, from, to, disagreement_rate = ?judged.0.disagreement_rate, "shadow run ended");
            judged.2.is_some().then_some(judged)
        }
        RolloutStrategy::BlueGreen | RolloutStrategy::Direct => None,
    };
    if token.is_cancelled() {
        return Ok(());
    }
    match verdict {
        Some((measured, stable, reason)) => {
            let reason = reason.unwrap_or_default();
            routes::set_candidate(state, name, None).await?;
            state.serving.end_candidate(name, false);
            deployments::set_rolled_back(state, name, i32::try_from(to).ok()).await?;
            tracing::warn!(deployment = name, from, to, %reason, "rolled back");
            let event = Event::DeploymentRolledBack(DeploymentRolledBack {
                deployment: name.to_owned(),
                rollout_id,
                to_version: Some(from),
                reason: reason.clone(),
                candidate: Some(measured),
                stable: Some(stable),
            });
            deployments::announce(
                state,
                deployment,
                "serving",
                &format!("rolled back v{to}: {reason}"),
                event,
            )
            .await
        }
        None => {
            let numbers = routes::merged(state, name, generation, &candidate).await?;
            let detail = match (shadow, numbers.disagreement_rate()) {
                (true, Some(rate)) => format!(
                    "promoted after shadow: {:.1}% of {} mirrored answers differed",
                    rate * 100.0,
                    numbers.compared
                ),
                _ => String::new(),
            };
            routes::promote(state, name, i32::try_from(to).unwrap_or(i32::MAX)).await?;
            state.serving.end_candidate(name, true);
            tracing::info!(deployment = name, from, to, "rolled out");
            let event = Event::DeploymentRolledOut(DeploymentRolledOut {
                deployment: name.to_owned(),
                rollout_id,
                model: deployment.model.clone(),
                version: to,
            });
            deployments::announce(state, deployment, "serving", &detail, event).await
        }
    }
}
