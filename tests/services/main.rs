//! Every service starts in-process against real NATS, PostgreSQL and S3, answers `/healthz`,
//! `/readyz` and `/metrics`, provisions the streams, and stops cleanly when told to.

mod access;
mod nats_cluster;
mod nats_permissions;
mod projects;

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flywheel_runtime::{CancellationToken, ServiceResult, ServiceSettings};
use serde_json::Value;
use tokio::net::TcpListener;

/// A service started in-process on a free port.
struct Running {
    base: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<ServiceResult>,
}

async fn start<F, Fut>(run: F, settings: ServiceSettings) -> anyhow::Result<Running>
where
    F: FnOnce(ServiceSettings, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = ServiceResult> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(settings, listener, shutdown.clone()));
    Ok(Running {
        base,
        shutdown,
        task,
    })
}

async fn settings(service: &str, with_db: bool) -> anyhow::Result<ServiceSettings> {
    let mut settings = ServiceSettings::defaults_for(service, 0);
    settings.bus = flywheel_testkit::bus_config(&flywheel_testkit::unique_name());
    if with_db {
        settings.db = flywheel_testkit::fresh_postgres().await?;
    }
    settings.artifacts = flywheel_testkit::s3_config(&flywheel_testkit::unique_name())?;
    settings.http.shutdown_grace_secs = 5;
    Ok(settings)
}

async fn get(url: &str) -> anyhow::Result<(u16, Value)> {
    let response = reqwest::get(url).await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

async fn wait_ready(base: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, body)) = get(&format!("{base}/readyz")).await {
            return Ok(body);
        }
        if Instant::now() > deadline {
            bail!(
                "{base} not ready within 30s: {:?}",
                get(&format!("{base}/readyz")).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn starts_answers_and_stops<F, Fut>(
    service: &str,
    run: F,
    with_db: bool,
) -> anyhow::Result<()>
where
    F: FnOnce(ServiceSettings, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = ServiceResult> + Send + 'static,
{
    let settings = settings(service, with_db).await?;
    let prefix = settings.bus.prefix.clone();
    let app = start(run, settings).await?;

    let ready = wait_ready(&app.base).await?;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["nats"], "ok");
    assert_eq!(
        ready["checks"].get("database").is_some(),
        with_db,
        "{ready}"
    );
    assert_eq!(
        get(&format!("{}/healthz", app.base)).await?,
        (200, serde_json::json!({"status": "alive"}))
    );

    let (status, body) = get(&format!("{}/no/such/route", app.base)).await?;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "not_found");

    let response = reqwest::get(format!("{}/healthz", app.base)).await?;
    assert!(
        response.headers().contains_key("x-request-id"),
        "request ids are set and returned"
    );
    let metrics = reqwest::get(format!("{}/metrics", app.base))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains(&format!(
            "flywheel_http_requests_total{{service=\"{service}\""
        )),
        "requests are counted per service:\n{metrics}"
    );

    // The service provisioned the streams under its prefix.
    let jetstream =
        flywheel_bus::Bus::connect(&flywheel_testkit::bus_config(&prefix), "probe").await?;
    for kind in flywheel_bus::StreamKind::ALL {
        let name = jetstream.subjects().stream(kind);
        jetstream
            .jetstream()
            .get_stream(&name)
            .await
            .with_context(|| format!("{name} missing"))?;
    }

    app.shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), app.task)
        .await
        .context("did not stop within 10s")??;
    stopped?;
    assert!(
        reqwest::get(format!("{}/healthz", app.base)).await.is_err(),
        "still serving after shutdown"
    );
    flywheel_testkit::cleanup_bus(&jetstream).await;
    Ok(())
}

#[tokio::test]
async fn registry_starts_answers_and_stops() -> anyhow::Result<()> {
    starts_answers_and_stops("registry", flywheel_registry::run, true).await
}

#[tokio::test]
async fn scheduler_starts_answers_and_stops() -> anyhow::Result<()> {
    starts_answers_and_stops("scheduler", flywheel_scheduler::run, true).await
}

#[tokio::test]
async fn trainer_runner_starts_answers_and_stops() -> anyhow::Result<()> {
    starts_answers_and_stops("trainer-runner", flywheel_trainer_runner::run, false).await
}

#[tokio::test]
async fn monitor_starts_answers_and_stops() -> anyhow::Result<()> {
    starts_answers_and_stops("monitor", flywheel_monitor::run, true).await
}

#[tokio::test]
async fn deployer_starts_answers_and_stops() -> anyhow::Result<()> {
    starts_answers_and_stops("deployer", flywheel_deployer::run, true).await
}

/// While NATS is unreachable a service is alive but not ready, and it still stops on request.
#[tokio::test]
async fn without_nats_a_service_is_alive_but_not_ready() -> anyhow::Result<()> {
    let mut settings = settings("monitor", false).await?;
    let dead_port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
    settings.bus.url = format!("nats://127.0.0.1:{dead_port}");
    settings.bus.connect_timeout_secs = 60;
    settings.db = flywheel_testkit::fresh_sqlite(&std::env::temp_dir());
    let app = start(flywheel_monitor::run, settings).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&format!("{}/healthz", app.base))
        .await
        .map(|r| r.0)
        .unwrap_or(0)
        != 200
    {
        assert!(Instant::now() < deadline, "healthz never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = get(&format!("{}/readyz", app.base)).await?;
    assert_eq!(status, 503);
    assert_eq!(body["checks"]["nats"], "connecting", "{body}");
    let (status, body) = get(&format!("{}/v1/anything", app.base)).await?;
    assert_eq!(status, 503, "service routes wait for start-up: {body}");
    assert_eq!(body["code"], "unavailable");

    app.shutdown.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(10), app.task)
        .await
        .context("did not stop")??;
    assert!(outcome.is_err(), "stopping before connecting is reported");
    Ok(())
}
