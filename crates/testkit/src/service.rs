//! Running a service in-process on a free port, as tests and `flywheel up` do.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::bail;
use flywheel_runtime::{CancellationToken, ServiceResult, ServiceSettings};
use tokio::net::TcpListener;

/// A service running in this process.
#[derive(Debug)]
pub struct InProcess {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<ServiceResult>,
}

impl InProcess {
    /// Starts `run` with `settings` on a free port and waits until `/readyz` answers 200.
    pub async fn start<F, Fut>(settings: ServiceSettings, run: F) -> anyhow::Result<Self>
    where
        F: FnOnce(ServiceSettings, TcpListener, CancellationToken) -> Fut,
        Fut: Future<Output = ServiceResult> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(settings, listener, shutdown.clone()));
        let service = Self {
            base,
            shutdown,
            task,
        };
        service.wait_ready(Duration::from_secs(30)).await?;
        Ok(service)
    }

    async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + within;
        loop {
            if self.task.is_finished() {
                bail!("service at {} exited while starting", self.base);
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await
                && r.status() == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("service at {} not ready within {within:?}", self.base);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Ends the service abruptly, as a crash would: no graceful shutdown.
    pub fn abort(self) {
        self.task.abort();
    }

    /// Stops the service gracefully and returns how it ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task).await???;
        Ok(())
    }
}

/// Settings as `FLYWHEEL__SECTION__KEY` variables, to start a service binary with them.
pub fn settings_env(settings: &ServiceSettings) -> anyhow::Result<Vec<(String, String)>> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    walk(
                        &format!("{prefix}__{}", key.to_ascii_uppercase()),
                        value,
                        out,
                    );
                }
            }
            serde_json::Value::Null => {}
            serde_json::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
            other => out.push((prefix.to_owned(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    walk("FLYWHEEL", &serde_json::to_value(settings)?, &mut out);
    Ok(out)
}

/// A service on its own runtime, so a test can kill it as a crash would: every task of it
/// stops at once, with no graceful shutdown, and its connections drop.
#[derive(Debug)]
pub struct Isolated {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: CancellationToken,
    done: Option<tokio::sync::oneshot::Receiver<ServiceResult>>,
}

impl Isolated {
    /// Starts `run` on a runtime of its own and waits until `/readyz` answers 200.
    pub async fn start<F, Fut>(settings: ServiceSettings, run: F) -> anyhow::Result<Self>
    where
        F: FnOnce(ServiceSettings, TcpListener, CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ServiceResult> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let base = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            let result = match TcpListener::from_std(listener) {
                Ok(listener) => run(settings, listener, token).await,
                Err(e) => Err(e.into()),
            };
            let _ = tx.send(result);
        });
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await
                && r.status() == 200
            {
                break;
            }
            if Instant::now() > deadline {
                runtime.shutdown_background();
                bail!("service at {base} not ready within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            base,
            runtime: Some(runtime),
            shutdown,
            done: Some(rx),
        })
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Kills the service: all its tasks stop where they are.
    pub fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Stops the service gracefully.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(done) = self.done.take() {
            tokio::time::timeout(Duration::from_secs(15), done).await???;
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        Ok(())
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
