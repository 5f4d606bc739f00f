//! Serving under chaos: 100 000 predictions through the deployer, with acknowledged prediction
//! logs, while the deployer, the monitor and the registry are SIGKILLed and restarted and a new
//! version is promoted mid-way. Afterwards the monitor has counted every answered prediction
//! exactly once, the deployment serves the promoted version (and never went back to the old one
//! after the new one answered), and the audit log has no gaps.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::cluster::{Cluster, http};

const PREDICTIONS: usize = 100_000;
const IN_FLIGHT: usize = 16;
const MODEL: &str = "serve";

/// One answered request: when it was sent and answered, and by which version.
struct Answer {
    sent: Instant,
    answered: Instant,
    version: u32,
}

/// Sends requests `serve-<n>` until `PREDICTIONS` are answered; each is retried with its id
/// until it is answered (connection refused while the deployer is down, 503 while it loads).
async fn send_predictions(
    url: String,
    next: Arc<AtomicUsize>,
    retries: Arc<AtomicUsize>,
) -> anyhow::Result<Vec<Answer>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut answers = Vec::new();
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= PREDICTIONS {
            return Ok(answers);
        }
        let x = (n % 1000) as f64 / 500.0 - 1.0;
        let body = json!({"id": format!("serve-{n}"), "inputs": (0..6)
            .map(|c| json!({"name": format!("f{c}"), "shape": [1], "datatype": "FP64", "data": [x * (c as f64 + 1.0) / 3.0]}))
            .collect::<Vec<_>>()});
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let sent = Instant::now();
            let reply = client.post(&url).json(&body).send().await;
            if let Ok(reply) = reply
                && reply.status().is_success()
            {
                let answer: Value = reply.json().await?;
                answers.push(Answer {
                    sent,
                    answered: Instant::now(),
                    version: answer["model_version"]
                        .as_str()
                        .and_then(|v| v.parse().ok())
                        .context("model_version")?,
                });
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "request serve-{n} unanswered for 2 minutes"
            );
            retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sets an alias through the MLflow API.
async fn set_alias(cluster: &Cluster, alias: &str, version: u32) -> anyhow::Result<()> {
    http()
        .post(format!(
            "{}/api/2.0/mlflow/registered-models/alias",
            cluster.url("registry")
        ))
        .json(&json!({"name": MODEL, "alias": alias, "version": version.to_string()}))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn predictions_under_kills_are_each_counted_once_and_the_promoted_version_serves()
-> anyhow::Result<()> {
    let mut cluster = Cluster::start(&[
        ("deployer", "prediction_log_mode", "acked"),
        ("monitor", "window_size", "1000"),
        ("monitor", "window_seconds", "5"),
    ])
    .await?;
    let http = http();

    // Two versions of one model, version 1 in production behind a deployment following it.
    let dataset = cluster.push_training_data("serve-data").await?;
    for i in 1..=2 {
        http.post(format!("{}/api/v1/jobs", cluster.url("scheduler")))
            .json(&json!({
                "request_id": format!("serve-train-{i}"), "model": MODEL, "reason": "manual",
                "dataset": {"name": "serve-data", "version": dataset},
                "trainer": {"kind": "builtin", "name": "logistic_regression", "params": {"target": "label"}},
                "resources": {"cpu": 1.0, "memory_mb": 128},
            }))
            .send()
            .await?
            .error_for_status()?;
    }
    flywheel_testkit::wait_for("two versions", Duration::from_secs(120), async || {
        Ok(cluster.versions_per_request(MODEL).await?.len() == 2)
    })
    .await?;
    set_alias(&cluster, "production", 1).await?;
    http.put(format!(
        "{}/api/v1/deployments/{MODEL}",
        cluster.url("deployer")
    ))
    .json(&json!({"model": MODEL, "alias": "production", "strategy": {"kind": "direct"}}))
    .send()
    .await?
    .error_for_status()?;
    let ready = format!("{}/v2/models/{MODEL}/ready", cluster.url("deployer"));
    flywheel_testkit::wait_for("version 1 to serve", Duration::from_secs(60), async || {
        Ok(http.get(&ready).send().await?.status().is_success())
    })
    .await?;

    // The workload, and the chaos beside it, keyed to the workload's progress.
    let next = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            tokio::spawn(send_predictions(
                format!("{}/v2/models/{MODEL}/infer", cluster.url("deployer")),
                next.clone(),
                retries.clone(),
            ))
        })
        .collect();
    let mut chaos = Vec::new();
    let mut promoted_at = None;
    for (share, step) in [
        (10, "kill deployer"),
        (25, "kill monitor"),
        (40, "promote v2, kill registry"),
        (55, "kill deployer"),
        (70, "kill monitor"),
        (85, "kill deployer"),
    ] {
        while next.load(Ordering::Relaxed) < PREDICTIONS * share / 100 {
            anyhow::ensure!(
                workers.iter().any(|w| !w.is_finished()),
                "the workload ended early"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let service = match step {
            "promote v2, kill registry" => {
                set_alias(&cluster, "production", 2).await?;
                promoted_at = Some(Instant::now());
                "registry"
            }
            kill => kill.trim_start_matches("kill "),
        };
        let service = crate::cluster::SERVICES
            .into_iter()
            .find(|s| *s == service)
            .context("service")?;
        cluster.kill(service).await?;
        chaos.push(format!("{step}@{:.1}s", started.elapsed().as_secs_f64()));
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.restart(service).await?;
    }
    let mut answers = Vec::new();
    for worker in workers {
        answers.extend(worker.await??);
    }
    let elapsed = started.elapsed();
    assert_eq!(answers.len(), PREDICTIONS, "every request answered");

    // Counted once: every answered prediction in exactly one closed window.
    let mut counted = (0, 0);
    let settled = flywheel_testkit::wait_for(
        "the monitor to count every prediction",
        Duration::from_secs(120),
        async || {
            counted = cluster.monitored(MODEL).await?;
            Ok(counted.0 >= PREDICTIONS as u64)
        },
    )
    .await;
    settled.with_context(|| format!("counted {counted:?} (chaos {chaos:?})"))?;
    tokio::time::sleep(Duration::from_secs(6)).await; // a double count would show by now
    let (total, windows) = cluster.monitored(MODEL).await?;
    assert_eq!(
        total, PREDICTIONS as u64,
        "each answered prediction counted exactly once ({windows} windows, chaos {chaos:?})"
    );

    // The promoted version serves, and never the old one again once the new one answered.
    let mut by_version: BTreeMap<u32, usize> = BTreeMap::new();
    for answer in &answers {
        *by_version.entry(answer.version).or_default() += 1;
    }
    let first_v2 = answers
        .iter()
        .filter(|a| a.version == 2)
        .map(|a| a.answered)
        .min()
        .context("version 2 answered")?;
    let late_v1 = answers
        .iter()
        .filter(|a| a.version == 1 && a.sent > first_v2)
        .count();
    assert_eq!(late_v1, 0, "requests sent after v2 answered went to v1");
    let deployment: Value = http
        .get(format!(
            "{}/api/v1/deployments/{MODEL}",
            cluster.url("deployer")
        ))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(deployment["serving_version"], 2, "{deployment}");
    let metadata: Value = http
        .get(format!("{}/v2/models/{MODEL}", cluster.url("deployer")))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(metadata["versions"], json!(["2"]), "{metadata}");
    let promotion_to_serving = promoted_at
        .map(|p| first_v2.saturating_duration_since(p).as_secs_f64())
        .unwrap_or_default();

    let gaps = cluster.audit_gaps(MODEL).await?;
    assert!(gaps.is_empty(), "audit log: {gaps:?}");
    println!(
        "serving chaos: {PREDICTIONS} predictions answered in {:.1} s ({:.0}/s, {IN_FLIGHT} in flight, {} retries) \
         under {chaos:?}; by version {by_version:?}; promotion → first v2 answer {promotion_to_serving:.2} s; \
         monitor counted {total} in {windows} windows; audit log without gaps",
        elapsed.as_secs_f64(),
        PREDICTIONS as f64 / elapsed.as_secs_f64(),
        retries.load(Ordering::Relaxed),
    );
    cluster.stop().await
}
