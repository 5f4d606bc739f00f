//! Hostile input on the bus mid-workload: garbage, unknown types, a newer schema version,
//! malformed payloads, near-limit payloads and duplicate message ids among good prediction
//! logs. The poison lands in the DLQ with a reason; the good logs are all counted, once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use flywheel_bus::StreamKind;
use flywheel_events::payloads::PredictionLogged;
use flywheel_events::{ContentType, Envelope, Event};
use serde_json::json;

use crate::cluster::Cluster;

const GOOD: usize = 10_000;

fn good_log(deployment: &str, i: usize) -> anyhow::Result<(String, Vec<u8>)> {
    let envelope = Envelope::new(
        "outside-serving",
        "default",
        Event::PredictionLogged(PredictionLogged {
            deployment: deployment.into(),
            model: "outside-model".into(),
            version: 1,
            request_id: format!("{deployment}-{i}"),
            inputs: [("x".to_owned(), json!(i as f64 % 31.0))].into(),
            outputs: [("prediction".to_owned(), json!(i % 2))].into(),
            latency_us: 120,
            shadow: false,
            error: None,
        }),
    );
    Ok((
        envelope.id.to_string(),
        flywheel_events::encode(&envelope, ContentType::Json)?,
    ))
}

/// The kinds of poison, one per message in turn.
fn poison(i: usize) -> (&'static str, Vec<u8>) {
    match i % 5 {
        0 => ("garbage", b"\x00\xff\xfe not an event at all".to_vec()),
        1 => (
            "unknown type",
            serde_json::to_vec(&json!({"id": "x", "type": "prediction.teleported", "schema_version": 1, "payload": {}}))
                .unwrap_or_default(),
        ),
        2 => (
            "newer schema",
            serde_json::to_vec(&json!({"id": "x", "type": "prediction.logged", "schema_version": 99, "payload": {}}))
                .unwrap_or_default(),
        ),
        3 => (
            "malformed payload",
            serde_json::to_vec(&json!({"id": "x", "type": "prediction.logged", "schema_version": 1, "time": "2026-01-01T00:00:00Z", "source": "s", "project": "p", "payload": {"deployment": 7}}))
                .unwrap_or_default(),
        ),
        _ => (
            "huge",
            serde_json::to_vec(&json!({"type": "prediction.logged", "schema_version": 1, "padding": "x".repeat(600_000)}))
                .unwrap_or_default(),
        ),
    }
}

async fn publish(
    jetstream: &async_nats::jetstream::Context,
    subject: &str,
    id: &str,
    body: Vec<u8>,
) -> anyhow::Result<()> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    tokio::time::timeout(Duration::from_secs(10), async {
        jetstream
            .publish_with_headers(subject.to_owned(), headers, body.into())
            .await?
            .await
    })
    .await
    .context("no ack within 10 s")??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_goes_to_the_dlq_with_reasons_and_good_logs_are_counted_once() -> anyhow::Result<()>
{
    let cluster = Cluster::start(&[
        ("monitor", "window_size", "1000"),
        ("monitor", "window_seconds", "3600"),
    ])
    .await?;
    let jetstream = cluster.bus.jetstream().clone();

    // Clean traffic first: how long the monitor takes to count 10 000 logs.
    let subject = cluster.bus.subjects().predictions("clean")?;
    let started = Instant::now();
    for i in 0..GOOD {
        let (id, body) = good_log("clean", i)?;
        publish(&jetstream, &subject, &id, body).await?;
    }
    flywheel_testkit::wait_for(
        "the clean logs counted",
        Duration::from_secs(120),
        async || Ok(cluster.monitored("clean").await?.0 >= GOOD as u64),
    )
    .await?;
    let clean = started.elapsed();

    // The same with one poison message after every ten good ones, and every hundredth good
    // log published twice under the same message id.
    let subject = cluster.bus.subjects().predictions("mixed")?;
    let mut poisoned: BTreeMap<&str, usize> = BTreeMap::new();
    let mut poison_ids = BTreeSet::new();
    let started = Instant::now();
    for i in 0..GOOD {
        let (id, body) = good_log("mixed", i)?;
        publish(&jetstream, &subject, &id, body.clone()).await?;
        if i % 100 == 0 {
            publish(&jetstream, &subject, &id, body).await?;
        }
        if i % 10 == 9 {
            let (kind, body) = poison(i / 10);
            let id = format!("poison-{i}");
            publish(&jetstream, &subject, &id, body).await?;
            *poisoned.entry(kind).or_default() += 1;
            poison_ids.insert(id);
        }
    }
    flywheel_testkit::wait_for(
        "the mixed logs counted",
        Duration::from_secs(120),
        async || Ok(cluster.monitored("mixed").await?.0 >= GOOD as u64),
    )
    .await?;
    let mixed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        cluster.monitored("mixed").await?.0,
        GOOD as u64,
        "good logs counted once"
    );
    assert_eq!(cluster.monitored("clean").await?.0, GOOD as u64);

    // Every poison message is in the DLQ once, with a reason.
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut dead = BTreeSet::new();
    flywheel_testkit::wait_for(
        "the poison in the DLQ",
        Duration::from_secs(30),
        async || {
            let mut stream = cluster
                .bus
                .jetstream()
                .get_stream(cluster.bus.subjects().stream(StreamKind::Dlq))
                .await?;
            let state = stream.info().await?.state.clone();
            reasons.clear();
            dead.clear();
            for seq in state.first_sequence..=state.last_sequence {
                let Ok(message) = stream.get_raw_message(seq).await else {
                    continue;
                };
                let header = |name: &str| {
                    message
                        .headers
                        .get(name)
                        .map(|v| v.as_str().to_owned())
                        .unwrap_or_default()
                };
                let reason = header(flywheel_bus::DLQ_ERROR);
                let short: String = reason
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .take(60)
                    .collect();
                *reasons.entry(short).or_default() += 1;
                dead.insert(header(flywheel_bus::DLQ_ORIGINAL_ID));
            }
            Ok(poison_ids.is_subset(&dead))
        },
    )
    .await
    .with_context(|| format!("DLQ reasons: {reasons:?}"))?;
    assert!(
        !reasons.contains_key(""),
        "every dead letter says why: {reasons:?}"
    );
    let rate = |d: Duration| GOOD as f64 / d.as_secs_f64();
    println!(
        "poison: {} poison messages {poisoned:?} and {} duplicate ids among {GOOD} good logs → \
         {GOOD} counted once, {} dead letters {reasons:?}; good logs counted at {:.0}/s clean vs \
         {:.0}/s with poison (publish + count, one publisher awaiting each ack)",
        poison_ids.len(),
        GOOD / 100,
        dead.len(),
        rate(clean),
        rate(mixed)
    );
    cluster.stop().await
}
