//! Typed publish: encode, stamp headers, await the JetStream ack.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::NATS_MESSAGE_ID;
use flywheel_events::{CONTENT_TYPE_HEADER, ContentType, Envelope};

use crate::{Bus, BusError, Result, trace};

/// Header carrying the event type, so routers and humans can tell messages apart undecoded.
pub const EVENT_TYPE_HEADER: &str = "Flywheel-Event-Type";

/// What JetStream said about a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReceipt {
    /// The stream that stored it.
    pub stream: String,
    /// Its sequence in that stream.
    pub sequence: u64,
    /// True when the id was already stored within the duplicate window (nothing new was stored).
    pub duplicate: bool,
}

/// How long one publish attempt (send and ack) may take before it is retried.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

impl Bus {
    /// Publishes an event on its catalogue subject in MessagePack and awaits the ack.
    #[tracing::instrument(skip_all, fields(event_type = envelope.event_type(), event_id = %envelope.id), err)]
    pub async fn publish(&self, envelope: &Envelope) -> Result<PublishReceipt> {
        let subject = self.subjects.for_event(&envelope.event)?;
        self.publish_to(subject, envelope, ContentType::MsgPack)
            .await
    }

    /// Publishes an event on an explicit subject (e.g. a jobs work queue) in the given codec.
    pub async fn publish_to(
        &self,
        subject: String,
        envelope: &Envelope,
        content_type: ContentType,
    ) -> Result<PublishReceipt> {
        let body = flywheel_events::encode(envelope, content_type)?;
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, envelope.id.to_string().as_str());
        headers.insert(CONTENT_TYPE_HEADER, content_type.mime());
        headers.insert(EVENT_TYPE_HEADER, envelope.event_type());
        trace::inject_current(&mut headers);
        let receipt = self.publish_raw(subject, headers, body.into()).await?;
        metrics::counter!("flywheel_bus_published_total", "event_type" => envelope.event_type())
            .increment(1);
        Ok(receipt)
    }

    /// Publishes prepared bytes and headers, retrying transient failures (the caller's
    /// `Nats-Msg-Id` makes retries safe).
    pub async fn publish_raw(
        &self,
        subject: String,
        headers: HeaderMap,
        body: bytes::Bytes,
    ) -> Result<PublishReceipt> {
        let max = self.client.server_info().max_payload;
        if max > 0 && body.len() > max {
            return Err(BusError::TooLarge {
                size: body.len(),
                max,
            });
        }
        let mut attempt = 0;
        loop {
            // Bounded as a whole: across a server restart the send or the ack can otherwise
            // wait forever (seen in the e2e suite); a retry is safe, the message id de-duplicates.
            let outcome = tokio::time::timeout(PUBLISH_TIMEOUT, async {
                self.jetstream
                    .publish_with_headers(subject.clone(), headers.clone(), body.clone())
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|_| Err(format!("no ack within {PUBLISH_TIMEOUT:?}")));
            match outcome {
                Ok(ack) => {
                    return Ok(PublishReceipt {
                        stream: ack.stream,
                        sequence: ack.sequence,
                        duplicate: ack.duplicate,
                    });
                }
                Err(reason) if attempt < self.config.publish_retries => {
                    attempt += 1;
                    let delay = Duration::from_millis(100 * 2u64.pow(attempt.min(6)));
                    tracing::warn!(%subject, attempt, %reason, ?delay, "publish not acknowledged; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(reason) => return Err(BusError::Publish { subject, reason }),
            }
        }
    }
}
