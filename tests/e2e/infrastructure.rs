//! The infrastructure fails mid-workload: the NATS server is killed and restarted, S3 refuses
//! every connection for a while and then answers slowly, PostgreSQL crashes for a few seconds.
//! Training requests and an outside system's prediction logs keep coming; afterwards every
//! request has exactly one version and the monitor has counted every prediction exactly once.

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
    nats_url: String,
    subject: String,
    count: usize,
) -> anyhow::Result<usize> {
    let connect = async || -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(
            async_nats::connect(&nats_url).await?,
        ))
    };
    let mut jetstream = connect().await?;
    let mut retries = 0;
    // 200 logs every 150 ms (≈1 300/s), so the faults happen while logs arrive.
    for chunk in (0..count).collect::<Vec<_>>().chunks(200) {
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
                // The send itself can hang across a server kill: bounded too.
                let sent = tokio::time::timeout(
                    Duration::from_secs(10),
                    jetstream.publish_with_headers(subject.clone(), headers, body.clone()),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(async_nats::jetstream::context::PublishError::new(
                        async_nats::jetstream::context::PublishErrorKind::TimedOut,
                    ))
                });
                acks.push(sent);
            }
            // All of a round's acks awaited together, so lost acks cost one timeout, not 200.
            let outcomes = futures::future::join_all(acks.into_iter().map(|ack| async move {
                match ack {
                    Ok(ack) => match tokio::time::timeout(Duration::from_secs(10), ack).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("no ack within 10 s".to_owned()),
                    },
                    Err(e) => Err(e.to_string()),
                }
            }))
            .await;
            let mut failed = Vec::new();
            let mut reason = String::new();
            for ((id, body), outcome) in pending.into_iter().zip(outcomes) {
                if let Err(e) = outcome {
                    reason = e;
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
                // Acks lost across a server kill: a fresh connection is what an outside system
                // would use, and the message ids keep the re-sends single.
                if let Ok(fresh) = connect().await {
                    jetstream = fresh;
                }
            }
            pending = failed;
        }
    }
    Ok(retries)
}

/// Submits `REQUESTS` training requests of `model` over HTTP; their ids.
async fn submit_trainings(
    cluster: &Cluster,
    model: &str,
    dataset: &str,
) -> anyhow::Result<BTreeSet<String>> {
    let version = cluster.push_training_data(dataset).await?;
    let http = crate::cluster::http();
    let mut accepted = BTreeSet::new();
    for i in 0..REQUESTS {
        let id = format!("{model}-{i:03}");
        http.post(format!("{}/api/v1/jobs", cluster.url("scheduler")))
            .json(&json!({
                "request_id": id, "model": model, "reason": "manual",
                "dataset": {"name": dataset, "version": version},
                "trainer": {"kind": "builtin", "name": "logistic_regression", "params": {"target": "label"}},
                "resources": {"cpu": 1.0, "memory_mb": 128},
            }))
            .send()
            .await?
            .error_for_status()?;
        accepted.insert(id);
    }
    Ok(accepted)
}

/// Waits until every job of `model` succeeded and each request has exactly one version; the
/// jobs by status.
async fn assert_trained_once(
    cluster: &Cluster,
    model: &str,
    accepted: &BTreeSet<String>,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let http = crate::cluster::http();
    let scheduler = cluster.url("scheduler");
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    flywheel_testkit::wait_for(
        "every job to finish",
        Duration::from_secs(240),
        async || {
            let jobs: Vec<Value> = http
                .get(format!("{scheduler}/api/v1/jobs?model={model}&limit=1000"))
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
            Ok(by_status.get("succeeded") == Some(&accepted.len()) && jobs.len() == accepted.len())
        },
    )
    .await
    .with_context(|| {
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
            per_request = cluster.versions_per_request(model).await?;
            Ok(per_request.len() >= accepted.len())
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await; // a duplicate would land by now
    let per_request = cluster.versions_per_request(model).await?;
    assert!(
        per_request.values().all(|n| *n == 1),
        "registered twice: {per_request:?}"
    );
    assert_eq!(
        &per_request.keys().cloned().collect::<BTreeSet<_>>(),
        accepted
    );
    Ok(by_status)
}

/// Waits until the monitor has counted `logs` predictions of `deployment`, then checks it
/// counted no more, in full windows; the total and the windows.
async fn assert_counted_once(
    cluster: &Cluster,
    deployment: &str,
    logs: usize,
) -> anyhow::Result<(u64, usize)> {
    let mut counted = (0u64, 0usize);
    flywheel_testkit::wait_for(
        "every window reported",
        Duration::from_secs(120),
        async || {
            counted = cluster.monitored(deployment).await?;
            Ok(counted.0 >= logs as u64)
        },
    )
    .await
    .with_context(|| format!("counted {counted:?}"))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (total, windows) = cluster.monitored(deployment).await?;
    assert_eq!(total, logs as u64, "each prediction counted exactly once");
    assert_eq!(windows, logs / WINDOW, "full windows, none twice");
    Ok((total, windows))
}

/// The monitor options that make windows close by count only.
const OPTIONS: [(&str, &str, &str); 3] = [
    ("trainer-runner", "slots", "2"),
    ("monitor", "window_size", "1000"),
    ("monitor", "window_seconds", "3600"),
];

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
            ..Infra::default()
        },
        &OPTIONS,
    )
    .await?;
    // Prediction logs from an outside system, all through the faults.
    let publisher = tokio::spawn(publish_predictions(
        cluster.bus_config.url.clone(),
        cluster.bus.subjects().predictions("outside")?,
        PREDICTIONS,
    ));
    let accepted = submit_trainings(&cluster, "faults", "faults-data").await?;
    eprintln!("submitted");

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
    eprintln!("faults over; waiting for the publisher");
    let retried = publisher.await??;
    eprintln!("published; waiting for the jobs");

    let by_status = assert_trained_once(&cluster, "faults", &accepted).await?;
    eprintln!("trained; waiting for the monitor");
    let (total, windows) = assert_counted_once(&cluster, "outside", PREDICTIONS).await?;
    println!(
        "infrastructure faults (NATS killed 3 s, S3 down 5 s then slow 5 s): {REQUESTS} requests \
         → {by_status:?}, one version each; {PREDICTIONS} outside prediction logs ({retried} \
         publishes retried) → {total} counted in {windows} windows; settled {:.1} s after the \
         first fault",
        started.elapsed().as_secs_f64()
    );
    cluster.stop().await?;
    drop(nats);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stopped_mid_workload_loses_nothing_and_counts_nothing_twice() -> anyhow::Result<()>
{
    let postgres = flywheel_testkit::PostgresServer::start()?;
    let cluster = Cluster::start_on(
        &Infra {
            postgres_url: Some(postgres.url()),
            ..Infra::default()
        },
        &OPTIONS,
    )
    .await?;
    let logs = 10_000;
    let publisher = tokio::spawn(publish_predictions(
        cluster.bus_config.url.clone(),
        cluster.bus.subjects().predictions("outside")?,
        logs,
    ));
    let accepted = submit_trainings(&cluster, "pgdown", "pgdown-data").await?;

    // The database crashes (immediate stop) under all five services for five seconds.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    postgres.stop()?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    postgres.start_again()?;
    let retried = publisher.await??;

    let by_status = assert_trained_once(&cluster, "pgdown", &accepted).await?;
    let (total, windows) = assert_counted_once(&cluster, "outside", logs).await?;
    println!(
        "postgres crashed for 5 s: {REQUESTS} requests → {by_status:?}, one version each; {logs} \
         prediction logs ({retried} publishes retried) → {total} counted in {windows} windows; \
         settled {:.1} s after the crash",
        started.elapsed().as_secs_f64()
    );
    cluster.stop().await
}
