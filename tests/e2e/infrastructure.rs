//! The infrastructure fails mid-workload: the NATS server is killed and restarted, then S3
//! refuses every connection for a while, then answers slowly. Training requests and an
//! outside system's prediction logs keep coming; afterwards every request has exactly one
//! version and the monitor has counted every prediction exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use flywheel_events::payloads::PredictionLogged;
use flywheel_events::{ContentType, Envelope, Event};
use serde_json::{Value, json};

use crate::cluster::{Cluster, Infra};
use crate::faults::S3Proxy;

const REQUESTS: usize = 30;
const PREDICTIONS: usize = 20_000;
const WINDOW: usize = 1_000;

/// Publishes JSON prediction logs as an outside serving system would: each with its
/// `Nats-Msg-Id`, retried until JetStream acknowledges it (the id makes a retry of a stored
/// message a duplicate the server drops).
async fn publish_predictions(
    jetstream: async_nats::jetstream::Context,
    subject: String,
) -> anyhow::Result<usize> {
    let mut retries = 0;
    // 200 logs every 150 ms (≈1 300/s), so the faults below happen while logs arrive.
    for chunk in (0..PREDICTIONS).collect::<Vec<_>>().chunks(200) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut pending: Vec<(String, bytes::Bytes)> = chunk
            .iter()
            .map(|i| {
                let envelope = Envelope::new(
                    "outside-serving",
                    "default",
                    Event::PredictionLogged(PredictionLogged {
                        deployment: "outside".into(),
                        model: "outside-model".into(),
                        version: 1,
                        request_id: format!("p-{i}"),
                        inputs: [("x".to_owned(), json!(*i as f64 % 97.0))].into(),
                        outputs: [("prediction".to_owned(), json!(i % 2))].into(),
                        latency_us: 150,
                        shadow: false,
                        error: None,
                    }),
                );
                let body = flywheel_events::encode(&envelope, ContentType::Json)?;
                Ok((envelope.id.to_string(), body.into()))
            })
            .collect::<anyhow::Result<_>>()?;
        while !pending.is_empty() {
            let mut acks = Vec::new();
            for (id, body) in &pending {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", id.as_str());
                acks.push(
                    jetstream
                        .publish_with_headers(subject.clone(), headers, body.clone())
                        .await,
                );
            }
            let mut failed = Vec::new();
            let mut reason = String::new();
            for ((id, body), ack) in pending.into_iter().zip(acks) {
                let stored = match ack {
                    Ok(ack) => match tokio::time::timeout(Duration::from_secs(10), ack).await {
                        Ok(Ok(_)) => true,
                        Ok(Err(e)) => {
                            reason = e.to_string();
                            false
                        }
                        Err(_) => {
                            reason = "no ack within 10 s".into();
                            false
                        }
                    },
                    Err(e) => {
                        reason = e.to_string();
                        false
                    }
                };
                if !stored {
                    failed.push((id, body));
                }
            }
            if !failed.is_empty() {
                eprintln!(
                    "outside publisher: {} publishes to retry ({reason})",
                    failed.len()
                );
                retries += failed.len();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            pending = failed;
        }
    }
    Ok(retries)
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_restart_and_failing_s3_lose_nothing_and_count_nothing_twice() -> anyhow::Result<()> {
    let mut nats = flywheel_testkit::NatsServer::start().await?;
    let s3 = S3Proxy::start(
        &std::env::var("FLYWHEEL_TEST_S3_ENDPOINT")
            .context("FLYWHEEL_TEST_S3_ENDPOINT: run the tests with scripts/test.sh")?,
    )
    .await?;
    let cluster = Cluster::start_on(
        &Infra {
            nats_url: Some(nats.url()),
            s3_endpoint: Some(s3.endpoint.clone()),
        },
        &[
            ("trainer-runner", "slots", "2"),
            ("monitor", "window_size", "1000"),
            ("monitor", "window_seconds", "3600"),
        ],
    )
    .await?;
    let http = reqwest::Client::new();
    let version = cluster.push_training_data("faults-data").await?;

    // Prediction logs from an outside system, all through the faults.
    let publisher = tokio::spawn(publish_predictions(
        cluster.bus.jetstream().clone(),
        cluster.bus.subjects().predictions("outside")?,
    ));
    let mut accepted = BTreeSet::new();
    for i in 0..REQUESTS {
        let id = format!("faults-{i:03}");
        http.post(format!("{}/api/v1/jobs", cluster.url("scheduler")))
            .json(&json!({
                "request_id": id, "model": "faults", "reason": "manual",
                "dataset": {"name": "faults-data", "version": version},
                "trainer": {"kind": "builtin", "name": "logistic_regression", "params": {"target": "label"}},
                "resources": {"cpu": 1.0, "memory_mb": 128},
            }))
            .send()
            .await?
            .error_for_status()?;
        accepted.insert(id);
    }

    // NATS killed and back after three seconds; then S3 down for five, then slow for five.
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.kill().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    nats.restart().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    s3.fail();
    tokio::time::sleep(Duration::from_secs(5)).await;
    s3.slow();
    tokio::time::sleep(Duration::from_secs(5)).await;
    s3.pass();
    let retried = publisher.await??;

    // Training: one job and one version per request, nothing stuck.
    let scheduler = cluster.url("scheduler");
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let settled = flywheel_testkit::wait_for(
        "every job to finish",
        Duration::from_secs(240),
        async || {
            let jobs: Vec<Value> = http
                .get(format!("{scheduler}/api/v1/jobs?model=faults&limit=1000"))
                .send()
                .await?
                .json()
                .await?;
            by_status.clear();
            for job in &jobs {
                *by_status
                    .entry(job["status"].as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
            }
            Ok(by_status.get("succeeded") == Some(&REQUESTS) && jobs.len() == REQUESTS)
        },
    )
    .await;
    settled.with_context(|| {
        format!(
            "jobs by status: {by_status:?}; logs in {}",
            cluster.dir.path().display()
        )
    })?;
    let mut per_request = BTreeMap::new();
    flywheel_testkit::wait_for(
        "every version registered",
        Duration::from_secs(60),
        async || {
            per_request = cluster.versions_per_request("faults").await?;
            Ok(per_request.len() >= REQUESTS)
        },
    )
    .await?;
    assert!(
        per_request.values().all(|n| *n == 1),
        "registered twice: {per_request:?}"
    );
    assert_eq!(
        per_request.keys().cloned().collect::<BTreeSet<_>>(),
        accepted
    );

    // The monitor: every prediction counted once, in full windows.
    let mut counted = (0u64, 0usize);
    let windows = flywheel_testkit::wait_for(
        "every window reported",
        Duration::from_secs(120),
        async || {
            counted = cluster.monitored("outside").await?;
            Ok(counted.0 >= PREDICTIONS as u64)
        },
    )
    .await;
    windows.with_context(|| format!("counted {counted:?}"))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (total, windows) = cluster.monitored("outside").await?;
    assert_eq!(
        total, PREDICTIONS as u64,
        "each prediction counted exactly once"
    );
    assert_eq!(windows, PREDICTIONS / WINDOW, "full windows, none twice");
    println!(
        "infrastructure faults (NATS killed 3 s, S3 down 5 s then slow 5 s): {REQUESTS} requests → \
         {by_status:?}, {} versions, none twice; {PREDICTIONS} outside prediction logs ({retried} \
         publishes retried) → {total} counted in {} windows; settled {:.1} s after the first fault",
        per_request.len(),
        windows,
        started.elapsed().as_secs_f64()
    );
    cluster.stop().await?;
    drop(nats);
    Ok(())
}
