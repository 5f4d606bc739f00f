//! The scheduler's own options (`[service]` in the config file, `FLYWHEEL__SERVICE__<KEY>`).

use std::time::Duration;

use flywheel_runtime::{ServiceError, ServiceSettings};

/// How the scheduler queues, dispatches and retries.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// `runner_timeout_ms`: a runner unheard of this long is dead; its attempts are lost.
    pub runner_timeout: Duration,
    /// `listing_grace_ms`: how long after a grant a runner may still not list the attempt in
    /// its heartbeats (one composed before the grant arrived) before the attempt is lost.
    pub listing_grace: Duration,
    /// `max_attempts`: attempts per job before a retryable failure becomes final.
    pub max_attempts: u32,
    /// `retry_backoff_ms`: the first retry's delay; doubled per attempt.
    pub retry_backoff: Duration,
    /// `retry_backoff_max_ms`: the longest retry delay.
    pub retry_backoff_max: Duration,
    /// `default_timeout_secs`: an attempt's wall-clock limit when the request names none.
    pub default_timeout_secs: u64,
    /// `unschedulable_after_secs`: a job no live runner could ever fit fails after waiting
    /// this long (runners may join meanwhile).
    pub unschedulable_after: Duration,
    /// `tick_ms`: how often dispatch, timeouts and liveness are checked.
    pub tick: Duration,
    /// `dispatch_batch`: jobs considered per dispatch transaction.
    pub dispatch_batch: u64,
    /// `quota_max_jobs`, `quota_cpu`, `quota_memory_mb`, `quota_gpu`: the quota of projects
    /// without their own (0 = unlimited).
    pub default_quota: crate::quotas::Quota,
}

impl SchedulerConfig {
    /// Reads the options, with defaults for what is unset.
    pub fn from_settings(settings: &ServiceSettings) -> Result<Self, ServiceError> {
        let ms = |key: &str, default: u64| -> Result<Duration, ServiceError> {
            Ok(Duration::from_millis(settings.option(key, default)?))
        };
        let config = Self {
            runner_timeout: ms("runner_timeout_ms", 10_000)?,
            listing_grace: ms("listing_grace_ms", 15_000)?,
            max_attempts: settings.option("max_attempts", 3)?,
            retry_backoff: ms("retry_backoff_ms", 2_000)?,
            retry_backoff_max: ms("retry_backoff_max_ms", 300_000)?,
            default_timeout_secs: settings.option("default_timeout_secs", 3_600)?,
            tick: ms("tick_ms", 250)?,
            unschedulable_after: Duration::from_secs(
                settings.option("unschedulable_after_secs", 300)?,
            ),
            dispatch_batch: settings.option("dispatch_batch", 256)?,
            default_quota: crate::quotas::Quota {
                max_jobs: settings.option("quota_max_jobs", 0)?,
                cpu: settings.option("quota_cpu", 0.0)?,
                memory_mb: settings.option("quota_memory_mb", 0)?,
                gpu: settings.option("quota_gpu", 0)?,
            },
        };
        if config.max_attempts == 0 {
            return Err(ServiceError::Config(
                "service.max_attempts: expected at least 1".into(),
            ));
        }
        if config.tick.is_zero() || config.dispatch_batch == 0 {
            return Err(ServiceError::Config(
                "service.tick_ms and service.dispatch_batch: expected at least 1".into(),
            ));
        }
        Ok(config)
    }

    /// The delay before attempt `attempt + 1` after attempt `attempt` failed.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.retry_backoff
            .saturating_mul(factor)
            .min(self.retry_backoff_max)
    }
}
