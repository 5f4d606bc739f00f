//! Scheduler benchmark: N queued trivial jobs, R runners. Prints the dispatcher's raw rate
//! (jobs moved from queued to dispatched per second, runners advertising room for all), the
//! end-to-end throughput with real runners, and request→running latency p50/p99.
//!
//! Needs NATS and PostgreSQL as the tests do:
//!   cargo run --release -p flywheel-trainer-runner --example dispatch_bench -- 10000 4

use std::time::{Duration, Instant};

use flywheel_events::control::{RunnerHeartbeat, encode_control};
use flywheel_events::payloads::Resources;
use flywheel_runtime::ServiceSettings;
use flywheel_testkit::service::InProcess;
use serde_json::{Value, json};

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index]
}

async fn submit_all(
    http: &reqwest::Client,
    scheduler: &str,
    tag: &str,
    n: usize,
    version: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    for i in 0..n {
        let body = json!({
            "request_id": format!("{tag}-{i}"),
            "model": format!("bench-{tag}"),
            "dataset": {"name": "tiny", "version": version},
            "trainer": {"kind": "external", "name": "echo 1 > \"$FLYWHEEL_OUTPUT_DIR/m\""},
            "resources": {"cpu": 0.25, "memory_mb": 64},
            "reason": "ci",
        });
        let request = http
            .post(format!("{scheduler}/api/v1/jobs"))
            .json(&body)
            .send();
        pending.push(request);
        if pending.len() >= 32 {
            pending.next().await.transpose()?;
        }
    }
    while let Some(r) = pending.next().await {
        r?;
    }
    println!(
        "submitted {n} jobs in {:.1} s ({:.0}/s)",
        started.elapsed().as_secs_f64(),
        n as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn count(http: &reqwest::Client, scheduler: &str, status: &str) -> anyhow::Result<usize> {
    let jobs: Value = http
        .get(format!(
            "{scheduler}/api/v1/jobs?status={status}&limit=10000"
        ))
        .send()
        .await?
        .json()
        .await?;
    Ok(jobs.as_array().map_or(0, Vec::len))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let runners: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);
    let dir = tempfile::tempdir()?;
    let prefix = flywheel_testkit::unique_name();
    let artifacts = flywheel_artifacts::ArtifactsConfig {
        url: format!("file://{}", dir.path().join("artifacts").display()),
        ..Default::default()
    };
    let mut registry = ServiceSettings::defaults_for("registry", 0);
    registry.bus = flywheel_testkit::bus_config(&prefix);
    registry.db = flywheel_testkit::fresh_sqlite(dir.path());
    registry.artifacts = artifacts.clone();
    let registry = InProcess::start(registry, flywheel_registry::run).await?;
    let mut scheduler = ServiceSettings::defaults_for("scheduler", 0);
    scheduler.bus = flywheel_testkit::bus_config(&prefix);
    scheduler.db = flywheel_testkit::fresh_postgres().await?;
    scheduler.artifacts.url = "memory://".into();
    scheduler.service.insert("tick_ms".into(), "50".into());
    let scheduler = InProcess::start(scheduler, flywheel_scheduler::run).await?;
    let http = reqwest::Client::new();
    let pushed: Value = http
        .post(registry.url("/api/v1/datasets/tiny/versions"))
        .header("Content-Type", "text/csv")
        .body("a,b\n1,2\n")
        .send()
        .await?
        .json()
        .await?;
    let version = pushed["version"].as_str().unwrap_or_default().to_owned();

    // 1. The dispatcher alone: a heartbeat-only runner advertises room for every job.
    let bus = flywheel_bus::Bus::connect(&flywheel_testkit::bus_config(&prefix), "bench").await?;
    let beat = encode_control(&RunnerHeartbeat {
        runner: "bench-ghost".into(),
        pool: "ghost".into(),
        capacity: Resources {
            cpu: 1e6,
            memory_mb: u64::MAX / 4,
            gpu: 0,
        },
        slots: u32::try_from(n).unwrap_or(u32::MAX),
        running: Vec::new(),
        finished: Vec::new(),
    })?;
    submit_all(&http, &scheduler.base, "raw", n, &version).await?;
    let started = Instant::now();
    bus.client()
        .request(bus.subjects().runner_heartbeats(), beat.clone().into())
        .await?;
    loop {
        let queued = count(&http, &scheduler.base, "queued").await?;
        if queued == 0 {
            break;
        }
        let _ = bus
            .client()
            .request(bus.subjects().runner_heartbeats(), beat.clone().into())
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let raw = started.elapsed().as_secs_f64();
    println!(
        "dispatcher: {n} jobs queued→dispatched in {raw:.2} s = {:.0} jobs/s",
        n as f64 / raw
    );
    // Let the ghost die so its jobs do not count as capacity.
    let jobs: Value = http
        .get(format!(
            "{}/api/v1/jobs?status=dispatched&limit=10000",
            scheduler.base
        ))
        .send()
        .await?
        .json()
        .await?;
    for job in jobs.as_array().into_iter().flatten() {
        if let Some(id) = job["job_id"].as_str() {
            http.post(format!("{}/api/v1/jobs/{id}/cancel", scheduler.base))
                .send()
                .await?;
        }
    }

    // 2. Real runners on the same number of queued jobs.
    submit_all(&http, &scheduler.base, "e2e", n, &version).await?;
    let mut started_runners = Vec::new();
    let started = Instant::now();
    for i in 0..runners {
        let mut settings = ServiceSettings::defaults_for("trainer-runner", 0);
        settings.bus = flywheel_testkit::bus_config(&prefix);
        settings.artifacts = artifacts.clone();
        for (key, value) in [
            ("pool", "default".to_owned()),
            ("slots", "4".into()),
            ("runner_id", format!("bench-{i}")),
            ("registry_url", registry.base.clone()),
            (
                "work_dir",
                dir.path().join(format!("work-{i}")).display().to_string(),
            ),
        ] {
            settings.service.insert(key.into(), value);
        }
        started_runners.push(InProcess::start(settings, flywheel_trainer_runner::run).await?);
    }
    loop {
        let done = count(&http, &scheduler.base, "succeeded").await?;
        if done >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "end to end: {n} trivial jobs on {runners} runners (4 slots each) in {elapsed:.1} s = {:.0} jobs/s",
        n as f64 / elapsed
    );
    let jobs: Value = http
        .get(format!(
            "{}/api/v1/jobs?status=succeeded&limit=10000",
            scheduler.base
        ))
        .send()
        .await?
        .json()
        .await?;
    let mut latency: Vec<f64> = jobs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| {
            Some((j["started_at"].as_i64()? - j["created_at"].as_i64()?) as f64 / 1000.0)
        })
        .collect();
    latency.sort_by(f64::total_cmp);
    println!(
        "request→running with the backlog: p50 {:.2} s, p99 {:.2} s",
        percentile(&latency, 0.5),
        percentile(&latency, 0.99)
    );
    // 3. Idle system: one request at a time.
    let mut idle = Vec::new();
    for i in 0..50 {
        let t = Instant::now();
        let body = json!({
            "request_id": format!("idle-{i}"), "model": "bench-idle",
            "dataset": {"name": "tiny", "version": version},
            "trainer": {"kind": "external", "name": "echo 1 > \"$FLYWHEEL_OUTPUT_DIR/m\""},
            "resources": {"cpu": 0.25, "memory_mb": 64}, "reason": "ci",
        });
        let job: Value = http
            .post(format!("{}/api/v1/jobs", scheduler.base))
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        let id = job["job_id"].as_str().unwrap_or_default().to_owned();
        loop {
            let job: Value = http
                .get(format!("{}/api/v1/jobs/{id}", scheduler.base))
                .send()
                .await?
                .json()
                .await?;
            if job["status"] != "queued" && job["status"] != "dispatched" {
                idle.push(t.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    idle.sort_by(f64::total_cmp);
    println!(
        "request→running on an idle system: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&idle, 0.5),
        percentile(&idle, 0.99)
    );
    for r in started_runners {
        r.stop().await?;
    }
    scheduler.stop().await?;
    flywheel_testkit::cleanup_bus(&bus).await;
    registry.stop().await
}
