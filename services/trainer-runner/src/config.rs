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
    /// `backend`: where attempts run, `process` (default) or `kubernetes`.
    pub backend: Backend,
}

/// Where a runner's attempts run.
#[derive(Debug, Clone)]
pub enum Backend {
    /// In the runner's process (built-in trainers) or its child processes (external ones).
    Process,
    /// Each attempt as a Kubernetes `Job` running `flywheel-trainer-runner attempt`.
    Kubernetes(Box<KubernetesOptions>),
}

impl Backend {
    /// `process` or `kubernetes`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Kubernetes(_) => "kubernetes",
        }
    }
}

/// The `k8s_*` options of the Kubernetes backend.
#[derive(Debug, Clone)]
pub struct KubernetesOptions {
    /// `k8s_api_url`: the API server; unset means in-cluster (service account) or kubeconfig.
    pub api_url: Option<String>,
    /// `k8s_namespace`: where Jobs are created (default: the client's default namespace).
    pub namespace: Option<String>,
    /// `k8s_image`: the Flywheel image training pods run (required).
    pub image: String,
    /// `k8s_image_pull_policy`: `Always`, `IfNotPresent` or `Never` (default: the cluster's).
    pub image_pull_policy: Option<String>,
    /// `k8s_service_account`: the pods' service account (default: the namespace's default).
    pub service_account: Option<String>,
    /// `k8s_env_from`: `configmap/<name>` and `secret/<name>` whose keys become the pods'
    /// variables (default `configmap/flywheel`).
    pub env_from: Vec<EnvSource>,
    /// `k8s_secret_env`: `VAR=<secret>/<key>` variables read from Secrets, so no secret value
    /// is written into a Job (default: the S3 keys and service token of the `flywheel` Secret).
    pub secret_env: Vec<SecretVariable>,
    /// `k8s_gpu_resource`: the extended resource GPUs are requested as (`nvidia.com/gpu`).
    pub gpu_resource: String,
    /// `k8s_poll_ms`: how often a Job's status is read.
    pub poll: Duration,
    /// `k8s_stuck_after_secs`: how long a pod may wait on something only a person can fix
    /// (image pull, missing Secret key) before the attempt fails and its Job is deleted.
    pub stuck_after: Duration,
    /// `k8s_keep_finished_secs`: how long finished Jobs (and their logs) stay
    /// (`ttlSecondsAfterFinished`).
    pub keep_finished_secs: i32,
    /// The registry as the pods reach it (`k8s_registry_url`, default `registry_url`).
    pub registry_url: String,
    /// `k8s_runner_pod` and `k8s_runner_pod_uid`: the runner's own pod (downward API). Its Jobs
    /// are labelled with it and owned by it, so they go when the pod goes, and a restarted
    /// runner deletes the unfinished Jobs its previous process left (their attempts are retried).
    pub runner_pod: Option<(String, Option<String>)>,
}

/// One `envFrom` source of the training pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvSource {
    /// Every key of a ConfigMap.
    ConfigMap(String),
    /// Every key of a Secret.
    Secret(String),
}

/// One variable of the training pods read from a Secret's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretVariable {
    /// The variable's name.
    pub name: String,
    /// The Secret.
    pub secret: String,
    /// The key in it.
    pub key: String,
}

const DEFAULT_SECRET_ENV: &str = "FLYWHEEL__ARTIFACTS__S3__ACCESS_KEY_ID=flywheel/s3-access-key-id,\
FLYWHEEL__ARTIFACTS__S3__SECRET_ACCESS_KEY=flywheel/s3-secret-access-key,\
FLYWHEEL__AUTH__SERVICE_TOKEN=flywheel/admin-token";

fn list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn env_sources(raw: &str) -> Result<Vec<EnvSource>, ServiceError> {
    list(raw)
        .map(|item| match item.split_once('/') {
            Some(("configmap", name)) if !name.is_empty() => Ok(EnvSource::ConfigMap(name.into())),
            Some(("secret", name)) if !name.is_empty() => Ok(EnvSource::Secret(name.into())),
            _ => Err(ServiceError::Config(format!(
                "service.k8s_env_from: `{item}` is neither configmap/<name> nor secret/<name>"
            ))),
        })
        .collect()
}

fn secret_variables(raw: &str) -> Result<Vec<SecretVariable>, ServiceError> {
    list(raw)
        .map(|item| {
            let parsed = item.split_once('=').and_then(|(name, source)| {
                let (secret, key) = source.split_once('/')?;
                (!name.is_empty() && !secret.is_empty() && !key.is_empty()).then(|| {
                    SecretVariable {
                        name: name.into(),
                        secret: secret.into(),
                        key: key.into(),
                    }
                })
            });
            parsed.ok_or_else(|| {
                ServiceError::Config(format!(
                    "service.k8s_secret_env: `{item}` is not VARIABLE=<secret>/<key>"
                ))
            })
        })
        .collect()
}

fn kubernetes_options(
    settings: &ServiceSettings,
    registry_url: &str,
) -> Result<KubernetesOptions, ServiceError> {
    let optional = |key: &str| -> Result<Option<String>, ServiceError> {
        let value: String = settings.option(key, String::new())?;
        Ok((!value.trim().is_empty()).then(|| value.trim().to_owned()))
    };
    let image = optional("k8s_image")?.ok_or_else(|| {
        ServiceError::Config(
            "service.k8s_image: the backend `kubernetes` needs the Flywheel image its training \
             pods run (the image this runner runs)"
                .into(),
        )
    })?;
    let image_pull_policy = optional("k8s_image_pull_policy")?;
    if let Some(policy) = &image_pull_policy
        && !["Always", "IfNotPresent", "Never"].contains(&policy.as_str())
    {
        return Err(ServiceError::Config(format!(
            "service.k8s_image_pull_policy: expected Always, IfNotPresent or Never, got `{policy}`"
        )));
    }
    let poll = Duration::from_millis(settings.option("k8s_poll_ms", 1_000)?);
    if poll.is_zero() {
        return Err(ServiceError::Config(
            "service.k8s_poll_ms: expected at least 1".into(),
        ));
    }
    Ok(KubernetesOptions {
        api_url: optional("k8s_api_url")?,
        namespace: optional("k8s_namespace")?,
        image,
        image_pull_policy,
        service_account: optional("k8s_service_account")?,
        env_from: env_sources(&settings.option("k8s_env_from", "configmap/flywheel".to_owned())?)?,
        secret_env: secret_variables(
            &settings.option("k8s_secret_env", DEFAULT_SECRET_ENV.to_owned())?,
        )?,
        gpu_resource: settings.option("k8s_gpu_resource", "nvidia.com/gpu".to_owned())?,
        poll,
        stuck_after: Duration::from_secs(settings.option("k8s_stuck_after_secs", 300)?),
        keep_finished_secs: settings.option("k8s_keep_finished_secs", 3_600)?,
        registry_url: optional("k8s_registry_url")?.unwrap_or_else(|| registry_url.to_owned()),
        runner_pod: optional("k8s_runner_pod")?
            .map(|pod| (pod, optional("k8s_runner_pod_uid").ok().flatten())),
    })
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
        let mut config = Self {
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
            backend: Backend::Process,
        };
        config.backend = match settings.option("backend", "process".to_owned())?.as_str() {
            "process" => Backend::Process,
            "kubernetes" => Backend::Kubernetes(Box::new(kubernetes_options(
                settings,
                &config.registry_url,
            )?)),
            other => {
                return Err(ServiceError::Config(format!(
                    "service.backend: expected `process` or `kubernetes`, got `{other}`"
                )));
            }
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
