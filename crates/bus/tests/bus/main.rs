//! The bus against a real NATS JetStream server: codecs, de-duplication, retry, DLQ, restarts
//! and trace propagation. Each test uses its own subject/stream prefix.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::HeaderMap;
use flywheel_bus::{Bus, ConsumerSpec, Delivery, Outcome, StreamKind, run_consumer};
use flywheel_events::payloads::TrainingJobQueued;
use flywheel_events::{ContentType, Envelope, Event};
use flywheel_testkit::{NatsServer, cleanup_bus, test_bus};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod trace;

fn queued(job: &str) -> Envelope {
    Envelope::new(
        "test",
        "acme",
        Event::TrainingJobQueued(TrainingJobQueued {
            job_id: job.into(),
            request_id: format!("req-{job}"),
            model: "churn".into(),
            priority: 1,
        }),
    )
}

fn job_of(delivery: &Delivery) -> String {
    match &delivery.envelope.event {
        Event::TrainingJobQueued(q) => q.job_id.clone(),
        other => format!("unexpected {other:?}"),
    }
}

fn events_spec(bus: &Bus, durable: &str) -> ConsumerSpec {
    ConsumerSpec::new(
        StreamKind::Events,
        durable,
        format!("{}.events.>", bus.subjects().prefix()),
    )
}

/// Starts a consumer whose handler forwards each delivery and answers with `decide`.
fn spawn_collector<F>(
    bus: &Bus,
    spec: ConsumerSpec,
    decide: F,
) -> (
    mpsc::UnboundedReceiver<(Delivery, Instant)>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
)
where
    F: Fn(&Delivery) -> Outcome + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let handler = move |delivery: Delivery| {
        let outcome = decide(&delivery);
        let _ = tx.send((delivery, Instant::now()));
        async move { outcome }
    };
    let task = tokio::spawn({
        let (bus, shutdown) = (bus.clone(), shutdown.clone());
        async move {
            if let Err(e) = run_consumer(bus, spec, handler, shutdown).await {
                panic!("consumer failed: {e}");
            }
        }
    });
    (rx, shutdown, task)
}

async fn next(
    rx: &mut mpsc::UnboundedReceiver<(Delivery, Instant)>,
) -> anyhow::Result<(Delivery, Instant)> {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .context("no delivery within 20s")?
        .context("closed")
}

/// Reads every DLQ entry of a prefix: (headers, body).
async fn dlq_entries(bus: &Bus) -> anyhow::Result<Vec<(HeaderMap, bytes::Bytes)>> {
    let mut stream = bus
        .jetstream()
        .get_stream(bus.subjects().stream(StreamKind::Dlq))
        .await?;
    let state = stream.info().await?.state.clone();
    let mut entries = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        if state.messages == 0 {
            break;
        }
        let message = stream.get_raw_message(seq).await?;
        entries.push((message.headers, message.payload));
    }
    Ok(entries)
}

async fn wait_for_dlq(bus: &Bus, count: usize) -> anyhow::Result<Vec<(HeaderMap, bytes::Bytes)>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let entries = dlq_entries(bus).await?;
        if entries.len() >= count || Instant::now() > deadline {
            return Ok(entries);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).map(|v| v.as_str()).unwrap_or_default()
}

#[tokio::test]
async fn round_trip_in_both_codecs_including_plain_json_publishers() -> anyhow::Result<()> {
    let bus = test_bus("round-trip").await?;
    let (mut rx, shutdown, task) = spawn_collector(&bus, events_spec(&bus, "rt"), |_| Outcome::Ack);

    let packed = queued("packed");
    let receipt = bus.publish(&packed).await?;
    assert!(!receipt.duplicate);

    let json = queued("json");
    let subject = bus.subjects().event("training.job.queued");
    bus.publish_to(subject.clone(), &json, ContentType::Json)
        .await?;

    // An external system with a plain NATS client and no headers at all.
    let external = queued("external");
    let body = flywheel_events::encode(&external, ContentType::Json)?;
    bus.client().publish(subject, body.into()).await?;
    bus.client().flush().await?;

    let mut seen = Vec::new();
    for _ in 0..3 {
        let (delivery, _) = next(&mut rx).await?;
        seen.push(delivery);
    }
    seen.sort_by_key(job_of);
    assert_eq!(seen[0].envelope, external);
    assert_eq!(seen[0].content_type, ContentType::Json);
    assert_eq!(seen[1].envelope, json);
    assert_eq!(seen[1].content_type, ContentType::Json);
    assert_eq!(seen[2].envelope, packed);
    assert_eq!(seen[2].content_type, ContentType::MsgPack);
    assert!(seen.iter().all(|d| d.delivered == 1));

    shutdown.cancel();
    task.await?;
    cleanup_bus(&bus).await;
    Ok(())
}

#[tokio::test]
async fn duplicate_message_id_is_stored_once() -> anyhow::Result<()> {
    let bus = test_bus("dedup").await?;
    let envelope = queued("once");
    let first = bus.publish(&envelope).await?;
    let second = bus.publish(&envelope).await?;
    assert!(!first.duplicate);
    assert!(
        second.duplicate,
        "the second publish of one id must be recognised"
    );
    assert_eq!(first.sequence, second.sequence);
    let other = bus.publish(&queued("other")).await?;
    assert!(!other.duplicate);
    let mut stream = bus
        .jetstream()
        .get_stream(bus.subjects().stream(StreamKind::Events))
        .await?;
    assert_eq!(stream.info().await?.state.messages, 2);
    cleanup_bus(&bus).await;
    Ok(())
}

#[tokio::test]
async fn retry_is_redelivered_after_its_backoff() -> anyhow::Result<()> {
    let bus = test_bus("retry").await?;
    let backoff = Duration::from_millis(1500);
    let (mut rx, shutdown, task) = spawn_collector(&bus, events_spec(&bus, "retry"), move |d| {
        if d.delivered == 1 {
            Outcome::retry(backoff, "database busy")
        } else {
            Outcome::Ack
        }
    });
    bus.publish(&queued("flaky")).await?;
    let (first, first_at) = next(&mut rx).await?;
    let (second, second_at) = next(&mut rx).await?;
    assert_eq!(first.delivered, 1);
    assert_eq!(second.delivered, 2);
    assert_eq!(first.envelope.id, second.envelope.id);
    let waited = second_at - first_at;
    assert!(
        waited >= backoff,
        "redelivered after {waited:?}, before the {backoff:?} backoff"
    );
    // Acked on the second delivery: nothing more arrives.
    assert!(
        tokio::time::timeout(Duration::from_secs(3), rx.recv())
            .await
            .is_err(),
        "acked message came back"
    );
    shutdown.cancel();
    task.await?;
    cleanup_bus(&bus).await;
    Ok(())
}

#[tokio::test]
async fn poison_and_garbage_land_in_the_dlq_and_the_consumer_keeps_going() -> anyhow::Result<()> {
    let bus = test_bus("poison").await?;
    let (mut rx, shutdown, task) = spawn_collector(&bus, events_spec(&bus, "poison"), |d| {
        if job_of(d) == "bad" {
            Outcome::poison("model `churn` does not exist")
        } else {
            Outcome::Ack
        }
    });
    let subject = bus.subjects().event("training.job.queued");
    bus.publish(&queued("good-1")).await?;
    bus.publish(&queued("bad")).await?;
    // Garbage, truncated MessagePack, wrong shape, unknown type, newer schema, unknown codec.
    let packed = flywheel_events::encode(&queued("cut"), ContentType::MsgPack)?;
    let mut hostile: Vec<(Option<&str>, Vec<u8>)> = vec![
        (None, vec![0xc1, 0xff, 0x00, 0x13]),
        (
            Some("application/msgpack"),
            packed[..packed.len() / 2].to_vec(),
        ),
        (
            Some("application/json"),
            br#"{"id": 42, "payload": []}"#.to_vec(),
        ),
        (Some("application/xml"), b"<event/>".to_vec()),
    ];
    let mut unknown = serde_json::to_value(serde_json::from_slice::<serde_json::Value>(
        &flywheel_events::encode(&queued("unknown"), ContentType::Json)?,
    )?)?;
    unknown["type"] = "training.job.exploded".into();
    hostile.push((Some("application/json"), serde_json::to_vec(&unknown)?));
    let mut newer = unknown.clone();
    newer["type"] = "training.job.queued".into();
    newer["schema_version"] = 99.into();
    hostile.push((Some("application/json"), serde_json::to_vec(&newer)?));
    for (content_type, body) in &hostile {
        let mut headers = HeaderMap::new();
        if let Some(ct) = content_type {
            headers.insert("Content-Type", *ct);
        }
        headers.insert("X-Origin", "hostile-test");
        bus.jetstream()
            .publish_with_headers(subject.clone(), headers, body.clone().into())
            .await?
            .await?;
    }
    bus.publish(&queued("good-2")).await?;

    let mut handled = Vec::new();
    for _ in 0..3 {
        handled.push(job_of(&next(&mut rx).await?.0));
    }
    handled.sort();
    assert_eq!(
        handled,
        ["bad", "good-1", "good-2"],
        "the consumer kept processing after poison"
    );

    let entries = wait_for_dlq(&bus, 1 + hostile.len()).await?;
    assert_eq!(entries.len(), 1 + hostile.len());
    let errors: Vec<&str> = entries
        .iter()
        .map(|(h, _)| header(h, flywheel_bus::DLQ_ERROR))
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("model `churn` does not exist")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("unknown event type `training.job.exploded`")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("schema_version 99")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("unsupported content type")),
        "{errors:?}"
    );
    assert_eq!(
        errors
            .iter()
            .filter(|e| e.starts_with("decode: malformed"))
            .count(),
        3,
        "{errors:?}"
    );
    for (headers, body) in &entries {
        assert_eq!(header(headers, flywheel_bus::DLQ_CONSUMER), "poison");
        assert!(
            header(headers, flywheel_bus::DLQ_SUBJECT).ends_with(".events.training.job.queued")
        );
        assert!(!body.is_empty(), "the original body is kept");
    }
    let originals = entries
        .iter()
        .filter(|(h, _)| header(h, "X-Origin") == "hostile-test")
        .count();
    assert_eq!(originals, hostile.len(), "original headers are kept");

    // Nothing is redelivered: poison was terminated, not left to time out.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .is_err()
    );
    shutdown.cancel();
    task.await?;
    cleanup_bus(&bus).await;
    Ok(())
}

#[tokio::test]
async fn exhausted_retries_go_to_the_dlq() -> anyhow::Result<()> {
    let bus = test_bus("exhaust").await?;
    let mut spec = events_spec(&bus, "exhaust");
    spec.max_deliver = 3;
    let (mut rx, shutdown, task) = spawn_collector(&bus, spec, |_| {
        Outcome::retry(Duration::from_millis(100), "downstream unavailable")
    });
    bus.publish(&queued("doomed")).await?;
    for expected in 1..=3 {
        assert_eq!(next(&mut rx).await?.0.delivered, expected);
    }
    let entries = wait_for_dlq(&bus, 1).await?;
    assert_eq!(entries.len(), 1);
    let error = header(&entries[0].0, flywheel_bus::DLQ_ERROR);
    assert!(
        error.contains("gave up after 3 deliveries: downstream unavailable"),
        "{error}"
    );
    assert_eq!(header(&entries[0].0, flywheel_bus::DLQ_DELIVERIES), "3");
    shutdown.cancel();
    task.await?;
    cleanup_bus(&bus).await;
    Ok(())
}

#[tokio::test]
async fn long_handlers_are_kept_alive_by_progress_acks() -> anyhow::Result<()> {
    let bus = test_bus("progress").await?;
    let mut spec = events_spec(&bus, "progress");
    spec.ack_wait = Duration::from_secs(1);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let handler = move |delivery: Delivery| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(delivery.delivered);
            // Three ack_waits long: without progress acks the server would redeliver meanwhile.
            tokio::time::sleep(Duration::from_secs(3)).await;
            Outcome::Ack
        }
    };
    let task = tokio::spawn(run_consumer(bus.clone(), spec, handler, shutdown.clone()));
    bus.publish(&queued("slow")).await?;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await?,
        Some(1)
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .is_err(),
        "a long handler's message was redelivered"
    );
    shutdown.cancel();
    task.await??;
    cleanup_bus(&bus).await;
    Ok(())
}

#[tokio::test]
async fn concurrency_is_bounded() -> anyhow::Result<()> {
    let bus = test_bus("bounded").await?;
    let mut spec = events_spec(&bus, "bounded");
    spec.concurrency = 3;
    let running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handler = {
        let (running, peak, done) = (running.clone(), peak.clone(), done.clone());
        move |_delivery: Delivery| {
            let (running, peak, done) = (running.clone(), peak.clone(), done.clone());
            async move {
                use std::sync::atomic::Ordering::SeqCst;
                let now = running.fetch_add(1, SeqCst) + 1;
                peak.fetch_max(now, SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                running.fetch_sub(1, SeqCst);
                done.fetch_add(1, SeqCst);
                Outcome::Ack
            }
        }
    };
    for i in 0..20 {
        bus.publish(&queued(&format!("job-{i}"))).await?;
    }
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_consumer(bus.clone(), spec, handler, shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while done.load(std::sync::atomic::Ordering::SeqCst) < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 20);
    let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=3).contains(&peak), "peak concurrency {peak}, limit 3");
    shutdown.cancel();
    task.await??;
    cleanup_bus(&bus).await;
    Ok(())
}

#[tokio::test]
async fn consumer_resumes_after_the_nats_server_restarts() -> anyhow::Result<()> {
    let mut server = NatsServer::start().await?;
    let mut config = flywheel_testkit::bus_config("restart");
    config.url = server.url();
    let bus = Bus::connect(&config, "restart-test").await?;
    bus.provision().await?;
    let (mut rx, shutdown, task) =
        spawn_collector(&bus, events_spec(&bus, "restart"), |_| Outcome::Ack);
    bus.publish(&queued("before")).await?;
    assert_eq!(job_of(&next(&mut rx).await?.0), "before");

    server.kill().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart().await?;

    // Publishing retries while the client reconnects; the consumer picks up by itself.
    let receipt = bus.publish(&queued("after")).await?;
    assert!(!receipt.duplicate);
    // At least once: if the kill beat the ack of "before", it comes again first; nothing else may.
    let mut delivery = next(&mut rx).await?.0;
    if job_of(&delivery) == "before" {
        delivery = next(&mut rx).await?.0;
    }
    assert_eq!(job_of(&delivery), "after");
    shutdown.cancel();
    task.await?;
    Ok(())
}

#[tokio::test]
async fn provisioning_is_idempotent_and_applies_new_limits() -> anyhow::Result<()> {
    let bus = test_bus("provision").await?;
    bus.publish(&queued("kept")).await?;
    bus.provision().await?;
    let mut config = bus.config().clone();
    config.events_max_age_secs = 7200;
    let changed = Bus::connect(&config, "provision-test").await?;
    changed.provision().await?;
    let mut stream = bus
        .jetstream()
        .get_stream(bus.subjects().stream(StreamKind::Events))
        .await?;
    let info = stream.info().await?;
    assert_eq!(info.config.max_age, Duration::from_secs(7200));
    assert_eq!(info.state.messages, 1, "re-provisioning keeps messages");
    let jobs = bus
        .jetstream()
        .get_stream(bus.subjects().stream(StreamKind::Jobs))
        .await?;
    assert_eq!(
        jobs.cached_info().config.retention,
        async_nats::jetstream::stream::RetentionPolicy::WorkQueue
    );
    cleanup_bus(&bus).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn services_starting_together_all_provision_the_streams() -> anyhow::Result<()> {
    // `flywheel up` starts five services at once on a fresh server: they race to create
    // the same streams, and every one of them must come up.
    let config = flywheel_testkit::bus_config(&flywheel_testkit::unique_name());
    let mut buses = Vec::new();
    for i in 0..6 {
        buses.push(Bus::connect(&config, &format!("racer-{i}")).await?);
    }
    let go = std::sync::Arc::new(tokio::sync::Barrier::new(buses.len()));
    let mut starting = tokio::task::JoinSet::new();
    for bus in buses.clone() {
        let go = go.clone();
        starting.spawn(async move {
            go.wait().await;
            bus.provision().await
        });
    }
    while let Some(provisioned) = starting.join_next().await {
        provisioned??;
    }
    let bus = &buses[0];
    for kind in StreamKind::ALL {
        let stream = bus
            .jetstream()
            .get_stream(bus.subjects().stream(kind))
            .await?;
        assert_eq!(
            stream.cached_info().config.subjects,
            bus.subjects().stream_subjects(kind)
        );
    }
    cleanup_bus(bus).await;
    Ok(())
}

#[tokio::test]
async fn oversized_messages_are_refused_before_sending() -> anyhow::Result<()> {
    let bus = test_bus("huge").await?;
    let mut envelope = queued("huge");
    if let Event::TrainingJobQueued(q) = &mut envelope.event {
        q.model = "x".repeat(2 * 1024 * 1024);
    }
    let err = bus.publish(&envelope).await.expect_err("must be refused");
    assert!(
        matches!(err, flywheel_bus::BusError::TooLarge { .. }),
        "{err}"
    );
    cleanup_bus(&bus).await;
    Ok(())
}
