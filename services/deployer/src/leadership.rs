//! The rollout leader: of the deployer replicas, the holder of the `rollouts` lease
//! (`flywheel_db::leases`) takes every serving decision — which version a deployment serves,
//! when a rollout starts, each canary step, promotion or rollback — and writes it as the
//! deployment's route (`crate::routes`), which every replica applies. Its writes are fenced by
//! the lease, so a leader that paused past its lease cannot decide after its successor began.
//! A new leader ends the rollouts it finds in progress and starts them again, as a restart does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flywheel_db::leases::{self, Held};
use flywheel_runtime::{CancellationToken, ServiceResult};

use crate::{AppState, DeployerError, Result, SERVICE};

const LEASE: &str = "rollouts";

/// Whether this replica leads, and the lease that proves it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Leadership(Arc<Mutex<Option<Held>>>);

impl Leadership {
    /// Whether this replica takes the rollout decisions now.
    pub(crate) fn is_leader(&self) -> bool {
        self.0.lock().is_ok_and(|held| held.is_some())
    }

    fn held(&self) -> Option<Held> {
        self.0.lock().ok().and_then(|held| held.clone())
    }

    fn set(&self, held: Option<Held>) {
        if let Ok(mut current) = self.0.lock() {
            *current = held;
        }
    }

    /// Fails the transaction unless this replica still leads.
    pub(crate) async fn fence<C: sea_orm::ConnectionTrait>(&self, txn: &C) -> Result<()> {
        let Some(held) = self.held() else {
            return Err(DeployerError::NotLeader);
        };
        if leases::fence(txn, SERVICE, &held).await? {
            Ok(())
        } else {
            self.set(None);
            Err(DeployerError::NotLeader)
        }
    }
}

/// Takes and renews the lease until shutdown; while leading, activates every deployment each
/// round (a decision that waits — a package not registered yet, an alias not set — is taken as
/// soon as it can be).
pub(crate) async fn run(
    state: AppState,
    ttl: Duration,
    shutdown: CancellationToken,
) -> ServiceResult {
    let mut tick = tokio::time::interval(ttl / 3);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let was = state.leadership.held();
        let now = match leases::acquire(&state.db, SERVICE, LEASE, &state.replica, ttl).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "rollout lease not renewed");
                // Without the database no decision can be written anyway; keep leading until
                // the lease would have run out, when the fence refuses.
                continue;
            }
        };
        match (&was, &now) {
            (Some(old), Some(new)) if old.epoch == new.epoch => {}
            (_, Some(new)) => {
                tracing::info!(replica = %state.replica, epoch = new.epoch, "leading rollouts");
                state.leadership.set(now.clone());
                take_over(&state);
            }
            (Some(_), None) => {
                tracing::warn!(replica = %state.replica, "no longer leading rollouts");
                state.leadership.set(None);
                crate::rollouts::cancel_all(&state);
            }
            (None, None) => {}
        }
        if state.leadership.is_leader() {
            decide(&state).await;
        }
    }
    if let Some(held) = state.leadership.held() {
        state.leadership.set(None);
        crate::rollouts::cancel_all(&state);
        let _ = leases::release(&state.db, SERVICE, &held).await;
    }
    Ok(())
}

/// A candidate this replica serves without driving its rollout was its predecessor's: drop it
/// (the decision loop starts that rollout again).
fn take_over(state: &AppState) {
    for name in state.serving.names() {
        if !crate::rollouts::running(state, &name) {
            state.serving.end_candidate(&name, false);
        }
    }
}

async fn decide(state: &AppState) {
    let deployments = match crate::deployments::list(&state.db).await {
        Ok(deployments) => deployments,
        Err(e) => {
            tracing::warn!(error = %e, "deployments not read");
            return;
        }
    };
    for deployment in deployments {
        match crate::deployments::activate(state, &deployment.name).await {
            Ok(()) | Err(DeployerError::Load(_) | DeployerError::NotLeader) => {}
            Err(e) => tracing::warn!(deployment = %deployment.name, error = %e, "not activated"),
        }
    }
}
