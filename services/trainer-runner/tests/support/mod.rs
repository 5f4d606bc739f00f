//! A training stack for tests: registry, scheduler and runners on real NATS, PostgreSQL (or
//! SQLite) and S3, each test under its own prefixes.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flywheel_bus::Bus;
use flywheel_runtime::ServiceSettings;
use flywheel_testkit::service::{InProcess, Isolated, settings_env};
use serde_json::{Value, json};

pub(crate) const TERMINAL: [&str; 4] = ["succeeded", "failed", "cancelled", "timed_out"];

pub(crate) struct Stack {
    pub(crate) prefix: String,
    pub(crate) registry: InProcess,
    pub(crate) scheduler: Option<Isolated>,
    pub(crate) scheduler_settings: ServiceSettings,
    pub(crate) runner_settings: ServiceSettings,
    pub(crate) runners: Vec<InProcess>,
    pub(crate) http: reqwest::Client,
    pub(crate) bus: Bus,
    pub(crate) dir: tempfile::TempDir,
}

impl Stack {
    /// Registry (SQLite) and scheduler (PostgreSQL or SQLite); runners are started by tests.
    pub(crate) async fn start(
        postgres: bool,
        scheduler_options: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let prefix = flywheel_testkit::unique_name();
        let artifacts = flywheel_testkit::s3_config(&flywheel_testkit::unique_name())?;
        let mut registry_settings = ServiceSettings::defaults_for("registry", 0);
        registry_settings.bus = flywheel_testkit::bus_config(&prefix);
        registry_settings.db = flywheel_testkit::fresh_sqlite(dir.path());
        registry_settings.artifacts = artifacts.clone();
        registry_settings.http.shutdown_grace_secs = 2;
        let registry = InProcess::start(registry_settings, flywheel_registry::run).await?;

        let mut scheduler_settings = ServiceSettings::defaults_for("scheduler", 0);
        scheduler_settings.bus = flywheel_testkit::bus_config(&prefix);
        scheduler_settings.db = if postgres {
            flywheel_testkit::fresh_postgres().await?
        } else {
            flywheel_testkit::fresh_sqlite(dir.path())
        };
        scheduler_settings.artifacts.url = "memory://".into();
        scheduler_settings.http.shutdown_grace_secs = 2;
        for (key, value) in [
            ("runner_timeout_ms", "2500"),
            ("tick_ms", "50"),
            ("retry_backoff_ms", "200"),
            ("unschedulable_after_secs", "2"),
        ]
        .into_iter()
        .chain(scheduler_options.iter().copied())
        {
            scheduler_settings.service.insert(key.into(), value.into());
        }
        let scheduler =
            Isolated::start(scheduler_settings.clone(), flywheel_scheduler::run).await?;

        let mut runner_settings = ServiceSettings::defaults_for("trainer-runner", 0);
        runner_settings.bus = flywheel_testkit::bus_config(&prefix);
        runner_settings.artifacts = artifacts;
        runner_settings.http.shutdown_grace_secs = 2;
        for (key, value) in [
            ("heartbeat_ms", "300".to_owned()),
            ("registry_url", registry.base.clone()),
            ("work_dir", dir.path().join("work").display().to_string()),
            ("cpu", "4".into()),
            ("memory_mb", "8192".into()),
        ] {
            runner_settings.service.insert(key.into(), value);
        }
        let bus = Bus::connect(&flywheel_testkit::bus_config(&prefix), "test").await?;
        Ok(Self {
            prefix,
            registry,
            scheduler: Some(scheduler),
            scheduler_settings,
            runner_settings,
            runners: Vec::new(),
            http: reqwest::Client::new(),
            bus,
            dir,
        })
    }

    /// Settings of a runner with these options on top of the defaults.
    pub(crate) fn runner(&self, options: &[(&str, &str)]) -> ServiceSettings {
        let mut settings = self.runner_settings.clone();
        for (key, value) in options {
            settings.service.insert((*key).into(), (*value).into());
        }
        settings
    }

    pub(crate) async fn start_runner(&mut self, options: &[(&str, &str)]) -> anyhow::Result<()> {
        let settings = self.runner(options);
        self.runners
            .push(InProcess::start(settings, flywheel_trainer_runner::run).await?);
        Ok(())
    }

    /// A runner as its own OS process (so it can be killed with SIGKILL).
    pub(crate) fn spawn_runner_process(
        &self,
        options: &[(&str, &str)],
    ) -> anyhow::Result<std::process::Child> {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flywheel-trainer-runner"));
        command.envs(settings_env(&self.runner(options))?);
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        Ok(command.spawn()?)
    }

    pub(crate) fn scheduler_url(&self, path: &str) -> String {
        self.scheduler
            .as_ref()
            .map(|s| s.url(path))
            .unwrap_or_default()
    }

    /// Pushes CSV bytes as a dataset version; returns the version id.
    pub(crate) async fn push_dataset(&self, name: &str, csv: &[u8]) -> anyhow::Result<String> {
        let response = self
            .http
            .post(
                self.registry
                    .url(&format!("/api/v1/datasets/{name}/versions")),
            )
            .header("Content-Type", "text/csv")
            .body(csv.to_vec())
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("push failed: {status} {body}");
        }
        Ok(body["version"].as_str().context("version")?.to_owned())
    }

    /// Submits a request to the scheduler's API; returns the job.
    pub(crate) async fn submit(&self, request: Value, project: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(self.scheduler_url(&format!("/api/v1/jobs?project={project}")))
            .json(&request)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("submit failed: {status} {body}");
        }
        Ok(body)
    }

    pub(crate) async fn job(&self, id: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(self.scheduler_url(&format!("/api/v1/jobs/{id}")))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Waits until the job reaches `status` (or any terminal state when `None`).
    pub(crate) async fn wait_job(
        &self,
        id: &str,
        status: Option<&str>,
        within: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let job = self.job(id).await?;
            let now = job["status"].as_str().unwrap_or_default().to_owned();
            let done = match status {
                Some(s) => now == s,
                None => TERMINAL.contains(&now.as_str()),
            };
            if done {
                return Ok(job);
            }
            if Instant::now() > deadline {
                bail!("job {id} is {now}, not {status:?}, after {within:?}: {job}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Model versions the registry holds for `model`.
    pub(crate) async fn versions(&self, model: &str) -> anyhow::Result<Vec<Value>> {
        let found: Value = self
            .http
            .get(self.registry.url("/api/2.0/mlflow/model-versions/search"))
            .query_pairs(&[
                ("filter", format!("name='{model}'")),
                ("max_results", "1000".into()),
            ])
            .send()
            .await?
            .json()
            .await?;
        Ok(found["model_versions"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Waits until the registry holds `count` versions of `model`.
    pub(crate) async fn wait_versions(
        &self,
        model: &str,
        count: usize,
        within: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + within;
        loop {
            let versions = self.versions(model).await?;
            if versions.len() >= count || Instant::now() > deadline {
                return Ok(versions);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        for runner in self.runners.drain(..) {
            runner.stop().await?;
        }
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.stop().await?;
        }
        flywheel_testkit::cleanup_bus(&self.bus).await;
        self.registry.stop().await
    }
}

/// Query strings without reqwest's `query` feature.
pub(crate) trait QueryPairs {
    fn query_pairs(self, pairs: &[(&str, String)]) -> Self;
}

impl QueryPairs for reqwest::RequestBuilder {
    fn query_pairs(self, pairs: &[(&str, String)]) -> Self {
        let (client, request) = self.build_split();
        let Ok(mut request) = request else {
            return client.get("http://invalid.invalid/");
        };
        request
            .url_mut()
            .query_pairs_mut()
            .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())));
        reqwest::RequestBuilder::from_parts(client, request)
    }
}

/// A training request.
pub(crate) fn request(
    request_id: &str,
    model: &str,
    dataset: (&str, &str),
    trainer: Value,
) -> Value {
    json!({
        "request_id": request_id,
        "model": model,
        "dataset": {"name": dataset.0, "version": dataset.1},
        "trainer": trainer,
        "resources": {"cpu": 1.0, "memory_mb": 256},
        "reason": "manual",
    })
}

/// An external trainer that sleeps, then writes a model and a metric.
pub(crate) fn sleepy_trainer(seconds: f64) -> Value {
    json!({
        "kind": "external",
        "name": format!("sleep {seconds}; echo weights > \"$FLYWHEEL_OUTPUT_DIR/model.bin\"; echo FLYWHEEL_METRIC accuracy 0.9"),
    })
}

/// The binary classification fixture of crates/train.
pub(crate) fn binary_csv() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crates/train/tests/reference/binary_train.csv"
    ))
    .expect("fixture")
}

pub(crate) fn counts<'a>(values: impl Iterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for v in values {
        *counts.entry(v.to_owned()).or_default() += 1;
    }
    counts
}
