//! NATS JetStream for Flywheel: idempotent stream provisioning, typed publish that awaits the
//! ack and de-duplicates by envelope id, and a consumer runner for durable pull consumers with
//! retry-after, poison-to-DLQ, progress acks, bounded concurrency and W3C trace propagation.
//!
//! Services never talk to async-nats directly for events, so the delivery rules live here once.

mod config;
mod consumer;
mod dlq;
mod error;
mod permissions;
mod publish;
mod streams;
mod trace;

use std::time::Duration;

pub use async_nats::HeaderMap;
use async_nats::jetstream;
pub use config::{BusConfig, Password};
pub use consumer::{ConsumerSpec, Delivery, Handler, Outcome, run_consumer};
pub use dlq::{
    DLQ_CONSUMER, DLQ_DELIVERIES, DLQ_ERROR, DLQ_ORIGINAL_ID, DLQ_SEQUENCE, DLQ_STREAM, DLQ_SUBJECT,
};
pub use error::{BusError, Result};
pub use flywheel_events::{StreamKind, Subjects};
pub use permissions::{NATS_USERS, NatsUser, nats_config};
pub use publish::{EVENT_TYPE_HEADER, PublishReceipt};

/// A connection to NATS with JetStream, scoped to one subject prefix.
#[derive(Debug, Clone)]
pub struct Bus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    subjects: Subjects,
    config: BusConfig,
    source: String,
}

impl Bus {
    /// Connects to NATS; `source` names this component in published envelopes and client names.
    ///
    /// The client reconnects by itself after a server restart; the first connection is retried
    /// until `connect_timeout` passes.
    pub async fn connect(config: &BusConfig, source: &str) -> Result<Self> {
        let subjects = Subjects::new(config.prefix.clone())?;
        let unreachable = |reason: String| BusError::Connect {
            url: config.url.clone(),
            reason,
        };
        // A cluster is given as its servers' URLs, comma-separated; the client fails over
        // between them.
        let servers = config
            .url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| url.parse::<async_nats::ServerAddr>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| unreachable(format!("bus.url: {e}")))?;
        let mut options = async_nats::ConnectOptions::new();
        if let (Some(user), Some(password)) = (&config.user, &config.password) {
            options = options.user_and_password(user.clone(), password.0.clone());
        }
        let connect = options
            .name(format!("flywheel-{source}"))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(
                config.request_timeout_secs.max(1),
            )))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS connection lost; reconnecting")
                    }
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            })
            .connect(servers);
        let wait = Duration::from_secs(config.connect_timeout_secs.max(1));
        // With retry_on_initial_connect the client comes back at once and connects in the
        // background: wait until it really is connected, so callers see one clear failure.
        let client = tokio::time::timeout(wait, async {
            // Boxed: async-nats' connect future is large enough to trip clippy in every caller.
            let client = Box::pin(connect)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            while client.connection_state() != async_nats::connection::State::Connected {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok::<_, BusError>(client)
        })
        .await
        .map_err(|_| unreachable(format!("no answer within {}s", config.connect_timeout_secs)))??;
        let jetstream = jetstream::new(client.clone());
        Ok(Self {
            client,
            jetstream,
            subjects,
            config: config.clone(),
            source: source.to_owned(),
        })
    }

    /// Subject and stream names of this installation.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The configuration this bus was made from.
    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    /// The component name stamped on published envelopes.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The underlying NATS client, for plain request/reply needs.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// True while the client holds a live connection to the server.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Readiness: connected and JetStream answering.
    pub async fn check_ready(&self) -> Result<()> {
        if !self.is_connected() {
            return Err(BusError::NotConnected);
        }
        self.jetstream
            .get_stream(self.subjects.stream(StreamKind::Events))
            .await
            .map(|_| ())
            .map_err(|e| BusError::Jetstream(format!("EVENTS stream not reachable: {e}")))
    }

    /// Flushes pending publishes and closes the connection.
    pub async fn drain(&self) {
        if let Err(e) = self.client.drain().await {
            tracing::debug!(error = %e, "NATS drain");
        }
    }
}
