//! Rollouts: how a new version replaces the serving one. `canary` shifts a share of requests
//! in steps, `shadow` mirrors all traffic to the new version without using its answers,
//! `blue_green` switches at once after the new version has loaded beside the old. During a
//! canary or shadow step the new version's server errors and p99 latency are judged against
//! the deployment's SLO; a breach rolls it back (`deployment.rolled_back` with the reason),
//! otherwise it is promoted (`deployment.rolled_out`). A newer version or a restart ends a
//! rollout in progress (the restart serves the last promoted version, then starts again).

use std::time::Duration;

use flywheel_events::Event;
use flywheel_events::payloads::{
    DeploymentRolledBack, DeploymentRolledOut, DeploymentRolloutStarted, DeploymentTrafficShifted,
    RolloutStrategy, TrafficSplit,
};
use tokio_util::sync::CancellationToken;

use crate::deployments::{self, Deployment, Slo};
use crate::serving::{Loaded, Stats};
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
    if !(0.0..=1.0).contains(&slo.max_error_rate) {
        return Err(DeployerError::Invalid("slo.max_error_rate: 0 to 1".into()));
    }
    if slo
        .max_p99_latency_ms
        .is_some_and(|v| !(v.is_finite() && v >= 0.0))
    {
        return Err(DeployerError::Invalid(
            "slo.max_p99_latency_ms: a number >= 0".into(),
        ));
    }
    Ok(())
}

/// Ends the rollout in progress of a deployment, if any, dropping its candidate.
pub(crate) fn cancel(state: &AppState, name: &str) {
    let token = state.rollouts.lock().ok().and_then(|mut r| r.remove(name));
    if let Some(token) = token {
        token.cancel();
        state.serving.end_candidate(name, false);
    }
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

/// Why the candidate breaks the SLO, if it does.
fn breach(stats: &Stats, slo: &Slo) -> Option<String> {
    let (requests, error_rate, p99) = stats.summary();
    if requests < slo.min_requests {
        return None;
    }
    if error_rate > slo.max_error_rate {
        return Some(format!(
            "error rate {error_rate:.4} above {} over {requests} requests",
            slo.max_error_rate
        ));
    }
    match slo.max_p99_latency_ms {
        Some(limit) if p99 > limit => Some(format!(
            "p99 latency {p99:.3} ms above {limit} ms over {requests} requests"
        )),
        _ => None,
    }
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
                candidate.stats.reset();
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
                if let Some(reason) = breach(&candidate.stats, &deployment.slo) {
                    verdict = Some(reason);
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
            breach(&candidate.stats, &deployment.slo)
        }
        RolloutStrategy::BlueGreen | RolloutStrategy::Direct => None,
    };
    if token.is_cancelled() {
        return Ok(());
    }
    match verdict {
        Some(reason) => {
            state.serving.end_candidate(name, false);
            tracing::warn!(deployment = name, from, to, %reason, "rolled back");
            let event = Event::DeploymentRolledBack(DeploymentRolledBack {
                deployment: name.to_owned(),
                rollout_id,
                to_version: Some(from),
                reason: reason.clone(),
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
            state.serving.end_candidate(name, true);
            deployments::served(state, name, i32::try_from(to).unwrap_or(i32::MAX)).await?;
            tracing::info!(deployment = name, from, to, "rolled out");
            let event = Event::DeploymentRolledOut(DeploymentRolledOut {
                deployment: name.to_owned(),
                rollout_id,
                model: deployment.model.clone(),
                version: to,
            });
            deployments::announce(state, deployment, "serving", "", event).await
        }
    }
}
