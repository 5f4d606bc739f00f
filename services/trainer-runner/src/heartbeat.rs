//! Heartbeats: every interval the runner tells the scheduler its pool, capacity and running
//! attempts; the answer names attempts to stop (cancelled, timed out or superseded).

use std::sync::Arc;

use flywheel_events::control::{HeartbeatReply, RunnerHeartbeat, decode_control, encode_control};
use flywheel_runtime::{CancellationToken, ServiceResult};

use crate::Runner;

/// Sends one heartbeat and stops what the scheduler says to stop.
pub(crate) async fn beat(runner: &Runner) -> Result<(), String> {
    let running = runner.running_attempts();
    let message = RunnerHeartbeat {
        runner: runner.config().runner_id.clone(),
        pool: runner.config().pool.clone(),
        capacity: runner.config().capacity.clone(),
        slots: runner.config().slots,
        running,
        finished: runner.finished_attempts(),
    };
    let bytes = encode_control(&message).map_err(|e| e.to_string())?;
    let request = runner
        .bus
        .client()
        .request(runner.bus.subjects().runner_heartbeats(), bytes.into());
    // No longer than one interval: a beat that went to a scheduler which died before
    // answering must not hold back the next one (the scheduler counts beats, not replies).
    let wait = runner
        .config()
        .heartbeat
        .max(std::time::Duration::from_millis(250))
        .min(runner.config().claim_timeout);
    let reply = tokio::time::timeout(wait, request)
        .await
        .map_err(|_| "no scheduler answered the heartbeat".to_owned())?
        .map_err(|e| e.to_string())?;
    let reply: HeartbeatReply = decode_control(&reply.payload)?;
    for attempt in reply.stop {
        tracing::warn!(job = %attempt.job_id, attempt = attempt.attempt, "the scheduler says stop");
        runner.stop(&attempt);
    }
    Ok(())
}

/// Beats until shutdown.
pub(crate) async fn run(runner: Arc<Runner>, shutdown: CancellationToken) -> ServiceResult {
    loop {
        if let Err(e) = beat(&runner).await {
            tracing::warn!(error = %e, "heartbeat failed; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(runner.config().heartbeat) => {}
        }
    }
}
