//! The runner's own options (`[service]` in the config file, `FLYWHEEL__SERVICE__<KEY>`).

use std::path::PathBuf;
use std::time::Duration;

use flywheel_events::payloads::Resources;
use flywheel_runtime::{ServiceError, ServiceSettings};

/// How this runner advertises itself and runs jobs.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// `runner_id`: unique per process (default: host name and a random suffix).
    pub runner_id: String,
    /// `pool`: the work queue this runner pulls from.
    pub pool: String,
    /// `slots`: jobs run at once.
    pub slots: u32,
    /// `cpu`, `memory_mb`, `gpu`: advertised capacity (default: this machine's cores and RAM).
    pub capacity: Resources,
    /// `heartbeat_ms`: how often the runner tells the scheduler it is alive.
    pub heartbeat: Duration,
    /// `claim_timeout_ms`: how long to wait for the scheduler to grant an attempt.
    pub claim_timeout: Duration,
    /// `registry_url`: where dataset versions and production metrics are looked up.
    pub registry_url: String,
    /// The runner's credentials for the registry (`auth.service_token`), also given to external
    /// trainers as `MLFLOW_TRACKING_TOKEN`.
    pub registry_token: Option<String>,
    /// `work_dir`: scratch space for external trainers.
    pub work_dir: PathBuf,
    /// `limit_memory`: run external trainers under an address-space limit of the requested
    /// memory (`ulimit -v`).
    pub limit_memory: bool,
}

fn machine_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(4096, |kb| kb / 1024)
}

impl RunnerConfig {
    /// Reads the options, with defaults for what is unset.
    pub fn from_settings(settings: &ServiceSettings) -> Result<Self, ServiceError> {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "runner".into());
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let default_id = format!("{host}-{}", &suffix[suffix.len() - 8..]);
        #[allow(clippy::cast_precision_loss)]
        let config = Self {
            runner_id: settings.option("runner_id", default_id)?,
            pool: settings.option("pool", "default".to_owned())?,
            slots: settings.option("slots", 2)?,
            capacity: Resources {
                cpu: settings.option("cpu", cores as f64)?,
                memory_mb: settings.option("memory_mb", machine_memory_mb())?,
                gpu: settings.option("gpu", 0)?,
            },
            heartbeat: Duration::from_millis(settings.option("heartbeat_ms", 2_000)?),
            claim_timeout: Duration::from_millis(settings.option("claim_timeout_ms", 5_000)?),
            registry_url: settings
                .option("registry_url", "http://127.0.0.1:8080".to_owned())?
                .trim_end_matches('/')
                .to_owned(),
            registry_token: settings.auth.service_token.clone(),
            work_dir: PathBuf::from(settings.option("work_dir", ".flywheel/runner".to_owned())?),
            limit_memory: settings.option("limit_memory", false)?,
        };
        flywheel_events::subjects::check_token(&config.pool)
            .map_err(|e| ServiceError::Config(format!("service.pool: {e}")))?;
        if config.pool.starts_with('_') {
            return Err(ServiceError::Config(
                "service.pool: names starting with `_` are reserved".into(),
            ));
        }
        if config.slots == 0 || config.heartbeat.is_zero() {
            return Err(ServiceError::Config(
                "service.slots and service.heartbeat_ms: expected at least 1".into(),
            ));
        }
        if config.runner_id.is_empty() || config.runner_id.len() > 128 {
            return Err(ServiceError::Config(
                "service.runner_id: 1 to 128 characters".into(),
            ));
        }
        Ok(config)
    }
}
