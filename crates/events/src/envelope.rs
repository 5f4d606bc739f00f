//! The envelope every event travels in.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalogue::Event;

/// An event with its metadata: what every message on the bus carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Unique id (UUIDv7), also the `Nats-Msg-Id` used for de-duplication.
    pub id: Uuid,
    /// Schema version of the payload as written.
    pub schema_version: u32,
    /// When the event happened.
    pub time: DateTime<Utc>,
    /// The publishing component, e.g. `registry` or an external system's name.
    pub source: String,
    /// The project (tenant) the event belongs to.
    pub project: String,
    /// The id shared by every event of one causal chain.
    pub correlation_id: Option<Uuid>,
    /// The id of the event that caused this one.
    pub causation_id: Option<Uuid>,
    /// The typed payload.
    pub event: Event,
}

impl Envelope {
    /// A new event that starts its own causal chain.
    pub fn new(source: impl Into<String>, project: impl Into<String>, event: Event) -> Self {
        let id = Uuid::now_v7();
        Self {
            id,
            schema_version: event.schema_version(),
            time: Utc::now(),
            source: source.into(),
            project: project.into(),
            correlation_id: Some(id),
            causation_id: None,
            event,
        }
    }

    /// A new event caused by `cause`: same project and correlation, causation set to it.
    pub fn caused_by(cause: &Envelope, source: impl Into<String>, event: Event) -> Self {
        let mut envelope = Self::new(source, cause.project.clone(), event);
        envelope.correlation_id = Some(cause.correlation_id.unwrap_or(cause.id));
        envelope.causation_id = Some(cause.id);
        envelope
    }

    /// The dotted event type.
    pub fn event_type(&self) -> &'static str {
        self.event.event_type()
    }
}

/// Envelope fields as written, borrowed (everything but the payload).
#[derive(Debug, Serialize)]
pub(crate) struct WireHead<'a> {
    pub(crate) id: Uuid,
    #[serde(rename = "type")]
    pub(crate) event_type: &'a str,
    pub(crate) schema_version: u32,
    pub(crate) time: DateTime<Utc>,
    pub(crate) source: &'a str,
    pub(crate) project: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) correlation_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) causation_id: Option<Uuid>,
}

/// Envelope fields as read (everything but the payload).
#[derive(Debug, Deserialize)]
pub(crate) struct WireHeadOwned {
    pub(crate) id: Uuid,
    pub(crate) schema_version: u32,
    pub(crate) time: DateTime<Utc>,
    pub(crate) source: String,
    pub(crate) project: String,
    #[serde(default)]
    pub(crate) correlation_id: Option<Uuid>,
    #[serde(default)]
    pub(crate) causation_id: Option<Uuid>,
}

/// The first fields a decoder needs to pick the payload type.
#[derive(Debug, Deserialize)]
pub(crate) struct Peek {
    #[serde(rename = "type")]
    pub(crate) event_type: String,
    pub(crate) schema_version: u32,
}
