//! Dead letters: the original message, its headers, and why it could not be handled.

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::Message;

use crate::{Bus, Result, StreamKind};

/// Header: the error that sent the message here.
pub const DLQ_ERROR: &str = "Flywheel-Dlq-Error";
/// Header: the stream the message came from.
pub const DLQ_STREAM: &str = "Flywheel-Dlq-Stream";
/// Header: the consumer that gave up.
pub const DLQ_CONSUMER: &str = "Flywheel-Dlq-Consumer";
/// Header: the original subject.
pub const DLQ_SUBJECT: &str = "Flywheel-Dlq-Subject";
/// Header: the original stream sequence.
pub const DLQ_SEQUENCE: &str = "Flywheel-Dlq-Sequence";
/// Header: how many times it was delivered.
pub const DLQ_DELIVERIES: &str = "Flywheel-Dlq-Deliveries";

/// Header: the original `Nats-Msg-Id`, replaced by the DLQ copy's own.
pub const DLQ_ORIGINAL_ID: &str = "Flywheel-Dlq-Original-Id";

/// NATS header values cannot hold line breaks and should stay small.
fn header_safe(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    flat.chars().take(1024).collect()
}

impl Bus {
    /// Copies `message` to the DLQ with the reason; returns once the DLQ stored it.
    pub async fn dead_letter(
        &self,
        message: &Message,
        stream: StreamKind,
        consumer: &str,
        reason: &str,
    ) -> Result<()> {
        let (sequence, delivered) = message
            .info()
            .map(|i| (i.stream_sequence, i.delivered))
            .unwrap_or((0, 0));
        let mut headers = message.headers.clone().unwrap_or_default();
        if let Some(original) = headers.get(NATS_MESSAGE_ID).map(|v| v.as_str().to_owned()) {
            headers.insert(DLQ_ORIGINAL_ID, original.as_str());
        }
        // One DLQ entry per original message, even if this copy is retried after a crash.
        let dlq_id = format!("dlq-{}-{consumer}-{sequence}", stream.suffix());
        headers.insert(NATS_MESSAGE_ID, dlq_id.as_str());
        headers.insert(DLQ_ERROR, header_safe(reason).as_str());
        headers.insert(DLQ_STREAM, self.subjects.stream(stream).as_str());
        headers.insert(DLQ_CONSUMER, consumer);
        headers.insert(DLQ_SUBJECT, message.subject.as_str());
        headers.insert(DLQ_SEQUENCE, sequence.to_string().as_str());
        headers.insert(DLQ_DELIVERIES, delivered.to_string().as_str());
        let subject = self.subjects.dlq(stream, consumer)?;
        self.publish_raw(subject, headers, message.payload.clone())
            .await?;
        metrics::counter!("flywheel_bus_dead_letters_total", "consumer" => consumer.to_owned())
            .increment(1);
        Ok(())
    }
}
