//! Starts the registry in-process on a free port against real NATS, a fresh database and a
//! fresh artifact prefix.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flywheel_db::DbConfig;
use flywheel_runtime::{CancellationToken, ServiceResult, ServiceSettings};
use serde_json::Value;

/// A running registry.
pub(crate) struct Registry {
    pub(crate) base: String,
    pub(crate) prefix: String,
    pub(crate) artifacts: flywheel_artifacts::ArtifactsConfig,
    pub(crate) http: reqwest::Client,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<ServiceResult>,
    _dir: tempfile::TempDir,
}

pub(crate) enum Backend {
    Postgres,
    Sqlite,
}

impl Registry {
    pub(crate) async fn start(backend: Backend) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let db: DbConfig = match backend {
            Backend::Postgres => flywheel_testkit::fresh_postgres().await?,
            Backend::Sqlite => flywheel_testkit::fresh_sqlite(dir.path()),
        };
        let mut settings = ServiceSettings::defaults_for("registry", 0);
        let prefix = flywheel_testkit::unique_name();
        settings.bus = flywheel_testkit::bus_config(&prefix);
        settings.db = db;
        settings.artifacts = flywheel_testkit::s3_config(&flywheel_testkit::unique_name())?;
        let artifacts = settings.artifacts.clone();
        settings.http.shutdown_grace_secs = 3;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(flywheel_registry::run(settings, listener, shutdown.clone()));
        let registry = Self {
            base,
            prefix,
            artifacts,
            http: reqwest::Client::new(),
            shutdown,
            task,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = registry
                .http
                .get(format!("{}/readyz", registry.base))
                .send()
                .await
                && r.status() == 200
            {
                return Ok(registry);
            }
            if Instant::now() > deadline {
                bail!("registry not ready within 30s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON to an MLflow endpoint; returns status and body.
    pub(crate) async fn post(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .post(self.url(&format!("/api/2.0/mlflow/{path}")))
            .json(&body)
            .send()
            .await?;
        Ok((
            response.status().as_u16(),
            response.json().await.context("JSON body")?,
        ))
    }

    /// GETs an MLflow endpoint with query parameters.
    pub(crate) async fn get(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .get(self.url(&format!("/api/2.0/mlflow/{path}")))
            .query(query)
            .send()
            .await?;
        Ok((
            response.status().as_u16(),
            response.json().await.context("JSON body")?,
        ))
    }

    /// POSTs and insists on 200.
    pub(crate) async fn ok(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let (status, reply) = self.post(path, body).await?;
        if status != 200 {
            bail!("{path}: {status} {reply}");
        }
        Ok(reply)
    }

    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await??
            .map_err(Into::into)
    }
}
