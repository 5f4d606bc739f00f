//! The consumer runner: durable pull consumers with explicit acks, one policy for every service.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{AckKind, Message};
use flywheel_events::{CONTENT_TYPE_HEADER, ContentType, Envelope};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{Bus, BusError, Result, StreamKind, trace};

/// What a handler decided about one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; never deliver again.
    Ack,
    /// A transient failure: deliver again after the delay (until `max_deliver`, then DLQ).
    Retry {
        /// How long to wait before redelivery.
        after: Duration,
        /// What went wrong, kept for the DLQ if retries run out.
        reason: String,
    },
    /// A permanent failure: copy to the DLQ with the reason, then never deliver again.
    Poison(String),
}

impl Outcome {
    /// A retry after `after` with a reason.
    pub fn retry(after: Duration, reason: impl Into<String>) -> Self {
        Outcome::Retry {
            after,
            reason: reason.into(),
        }
    }

    /// A poison verdict with a reason.
    pub fn poison(reason: impl Into<String>) -> Self {
        Outcome::Poison(reason.into())
    }
}

/// One delivered, decoded event.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The decoded envelope.
    pub envelope: Envelope,
    /// The subject it was published on.
    pub subject: String,
    /// How many times it has been delivered, 1 for the first time.
    pub delivered: u64,
    /// Its sequence in the stream.
    pub stream_sequence: u64,
    /// The codec it arrived in.
    pub content_type: ContentType,
}

/// Handles deliveries; must be idempotent, since redeliveries happen.
pub trait Handler: Send + Sync + 'static {
    /// Handles one delivery and says what to do with it.
    fn handle(&self, delivery: Delivery) -> impl Future<Output = Outcome> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    fn handle(&self, delivery: Delivery) -> impl Future<Output = Outcome> + Send {
        self(delivery)
    }
}

/// A durable pull consumer and how it is run.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// The stream to read.
    pub stream: StreamKind,
    /// Durable name, shared by every replica of the consuming service.
    pub durable: String,
    /// One subject filter (NATS 2.9 ignores lists of filters).
    pub filter_subject: String,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Deliveries before a retried message goes to the DLQ.
    pub max_deliver: i64,
    /// Unacknowledged messages in flight across all replicas.
    pub max_ack_pending: i64,
    /// Handlers running at once in this process.
    pub concurrency: usize,
    /// Messages pulled per request; 0 means twice the concurrency. Workers whose handlers run
    /// long set it to their concurrency, so they hold no message they cannot start.
    pub batch: usize,
    /// Where a new consumer starts.
    pub deliver_new_only: bool,
}

impl ConsumerSpec {
    /// A spec with production defaults: 30 s ack wait, 10 deliveries, 16 handlers at once.
    pub fn new(
        stream: StreamKind,
        durable: impl Into<String>,
        filter_subject: impl Into<String>,
    ) -> Self {
        Self {
            stream,
            durable: durable.into(),
            filter_subject: filter_subject.into(),
            ack_wait: Duration::from_secs(30),
            max_deliver: 10,
            max_ack_pending: 1024,
            concurrency: 16,
            batch: 0,
            deliver_new_only: false,
        }
    }

    fn pull_config(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.durable.clone()),
            description: Some(format!("flywheel consumer {}", self.durable)),
            filter_subject: self.filter_subject.clone(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            max_ack_pending: self.max_ack_pending,
            deliver_policy: if self.deliver_new_only {
                DeliverPolicy::New
            } else {
                DeliverPolicy::All
            },
            ..Default::default()
        }
    }
}

/// Runs a consumer until `shutdown` is cancelled, surviving NATS restarts.
///
/// Decode failures go to the DLQ without reaching the handler. Handlers run concurrently up to
/// `spec.concurrency`; while one runs, progress acks keep the message from being redelivered.
/// On shutdown, pulling stops and running handlers finish (buffered messages are redelivered
/// to another replica after `ack_wait`).
pub async fn run_consumer<H: Handler>(
    bus: Bus,
    spec: ConsumerSpec,
    handler: H,
    shutdown: CancellationToken,
) -> Result<()> {
    let bus = Arc::new(bus);
    let spec = Arc::new(spec);
    let handler = Arc::new(handler);
    let permits = Arc::new(Semaphore::new(spec.concurrency.max(1)));
    let mut running = JoinSet::new();
    let mut consumer = ensure_consumer(&bus, &spec).await?;
    tracing::info!(durable = %spec.durable, filter = %spec.filter_subject, "consumer started");

    'outer: while !shutdown.is_cancelled() {
        let batch = if spec.batch == 0 {
            spec.concurrency * 2
        } else {
            spec.batch
        }
        .clamp(1, 512);
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
        {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(durable = %spec.durable, error = %e, "cannot pull; retrying");
                if pause(&shutdown, Duration::from_secs(1)).await {
                    break;
                }
                // The consumer may be gone (e.g. a server that lost its store): recreate it.
                match ensure_consumer(&bus, &spec).await {
                    Ok(fresh) => consumer = fresh,
                    Err(e) => {
                        tracing::warn!(durable = %spec.durable, error = %e, "cannot recreate consumer")
                    }
                }
                continue;
            }
        };
        let mut consecutive_errors = 0u32;
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break 'outer,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break 'outer,
                },
            };
            let next = tokio::select! {
                _ = shutdown.cancelled() => break 'outer,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    consecutive_errors = 0;
                    let (bus, spec, handler) = (bus.clone(), spec.clone(), handler.clone());
                    running.spawn(async move {
                        process(&bus, &spec, handler.as_ref(), message).await;
                        drop(permit);
                    });
                    // Reap finished tasks so the set does not grow without bound.
                    while running.try_join_next().is_some() {}
                }
                Some(Err(e)) => {
                    consecutive_errors += 1;
                    tracing::warn!(durable = %spec.durable, error = %e, "pull stream error; continuing");
                    // A missed heartbeat means the pull went nowhere (on a cluster: the consumer's
                    // leader died with its server): pull afresh at once instead of waiting for
                    // more errors, each a heartbeat interval long.
                    let stalled = matches!(
                        e.kind(),
                        async_nats::jetstream::consumer::pull::MessagesErrorKind::MissingHeartbeat
                            | async_nats::jetstream::consumer::pull::MessagesErrorKind::ConsumerDeleted
                    );
                    if stalled || consecutive_errors >= 20 {
                        break;
                    }
                }
                None => break,
            }
        }
        if pause(&shutdown, Duration::from_millis(200)).await {
            break;
        }
        if let Ok(fresh) = ensure_consumer(&bus, &spec).await {
            consumer = fresh;
        }
    }
    while running.join_next().await.is_some() {}
    tracing::info!(durable = %spec.durable, "consumer stopped");
    Ok(())
}

/// Sleeps unless shutdown comes first; true when shutting down.
async fn pause(shutdown: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(duration) => false,
    }
}

async fn ensure_consumer(bus: &Bus, spec: &ConsumerSpec) -> Result<PullConsumer> {
    let stream_name = bus.subjects().stream(spec.stream);
    let stream = bus
        .jetstream()
        .get_stream(&stream_name)
        .await
        .map_err(|e| BusError::Jetstream(format!("stream {stream_name}: {e}")))?;
    let wanted = spec.pull_config();
    let mut consumer: PullConsumer = stream
        .get_or_create_consumer(&spec.durable, wanted.clone())
        .await
        .map_err(|e| BusError::Jetstream(format!("consumer {}: {e}", spec.durable)))?;
    let info = consumer
        .info()
        .await
        .map_err(|e| BusError::Jetstream(format!("consumer {}: {e}", spec.durable)))?;
    if info.config.filter_subject != wanted.filter_subject {
        return Err(BusError::Incompatible {
            what: "consumer",
            name: spec.durable.clone(),
            detail: format!(
                "filter is `{}`, want `{}`",
                info.config.filter_subject, wanted.filter_subject
            ),
        });
    }
    Ok(consumer)
}

async fn process<H: Handler>(bus: &Bus, spec: &ConsumerSpec, handler: &H, message: Message) {
    let started = Instant::now();
    let (delivered, stream_sequence) = message
        .info()
        .map(|i| (u64::try_from(i.delivered).unwrap_or(1), i.stream_sequence))
        .unwrap_or((1, 0));
    let content_type_header = message
        .headers
        .as_ref()
        .and_then(|h| h.get(CONTENT_TYPE_HEADER))
        .map(|v| v.as_str());
    let decoded = ContentType::from_header(content_type_header, &message.payload).and_then(|ct| {
        flywheel_events::decode(&message.payload, ct).map(|envelope| (envelope, ct))
    });
    let (envelope, content_type) = match decoded {
        Ok(decoded) => decoded,
        Err(e) => {
            tracing::warn!(durable = %spec.durable, subject = %message.subject, error = %e, "undecodable message");
            settle(
                bus,
                spec,
                &message,
                Outcome::Poison(format!("decode: {e}")),
                delivered,
                "undecodable",
            )
            .await;
            return;
        }
    };
    let span = tracing::info_span!(
        "consume",
        otel.kind = "consumer",
        consumer = %spec.durable,
        event_type = envelope.event_type(),
        event_id = %envelope.id,
        delivered,
    );
    trace::adopt_parent(&span, message.headers.as_ref());
    let event_type = envelope.event_type();
    let delivery = Delivery {
        envelope,
        subject: message.subject.to_string(),
        delivered,
        stream_sequence,
        content_type,
    };
    let outcome = async {
        let work = handler.handle(delivery);
        tokio::pin!(work);
        // Progress acks keep long handlers from being redelivered mid-work.
        let mut ticker = tokio::time::interval((spec.ack_wait / 3).max(Duration::from_millis(100)));
        ticker.tick().await;
        loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                _ = ticker.tick() => {
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        tracing::debug!(error = %e, "progress ack failed");
                    }
                }
            }
        }
    }
    .instrument(span.clone())
    .await;
    let label = match &outcome {
        Outcome::Ack => "ack",
        Outcome::Retry { .. } => "retry",
        Outcome::Poison(_) => "poison",
    };
    metrics::histogram!("flywheel_bus_handler_seconds", "consumer" => spec.durable.clone(), "event_type" => event_type)
        .record(started.elapsed().as_secs_f64());
    settle(bus, spec, &message, outcome, delivered, label)
        .instrument(span)
        .await;
}

/// Turns an outcome into the right ack, copying to the DLQ where needed.
async fn settle(
    bus: &Bus,
    spec: &ConsumerSpec,
    message: &Message,
    outcome: Outcome,
    delivered: u64,
    label: &'static str,
) {
    metrics::counter!("flywheel_bus_consumed_total", "consumer" => spec.durable.clone(), "outcome" => label).increment(1);
    let result = match outcome {
        Outcome::Ack => message.double_ack().await,
        Outcome::Retry { after, reason } => {
            let exhausted = spec.max_deliver > 0
                && delivered >= u64::try_from(spec.max_deliver).unwrap_or(u64::MAX);
            if exhausted {
                let reason = format!("gave up after {delivered} deliveries: {reason}");
                return dead_letter_then_term(bus, spec, message, &reason).await;
            }
            tracing::debug!(%reason, ?after, delivered, "retrying later");
            message.ack_with(AckKind::Nak(Some(after))).await
        }
        Outcome::Poison(reason) => return dead_letter_then_term(bus, spec, message, &reason).await,
    };
    if let Err(e) = result {
        // The server will redeliver; handlers are idempotent.
        tracing::warn!(durable = %spec.durable, error = %e, "ack failed; message will be redelivered");
    }
}

async fn dead_letter_then_term(bus: &Bus, spec: &ConsumerSpec, message: &Message, reason: &str) {
    tracing::warn!(durable = %spec.durable, subject = %message.subject, %reason, "dead-lettering message");
    match bus
        .dead_letter(message, spec.stream, &spec.durable, reason)
        .await
    {
        Ok(()) => {
            if let Err(e) = message.double_ack_with(AckKind::Term).await {
                tracing::warn!(error = %e, "term failed after dead-lettering; the copy is de-duplicated");
            }
        }
        Err(e) => {
            // Never drop a message we could not park: try again later.
            tracing::error!(error = %e, "cannot write to DLQ; will retry");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await;
        }
    }
}
