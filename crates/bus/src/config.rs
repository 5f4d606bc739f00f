use serde::{Deserialize, Serialize};

/// Where NATS is and how the streams are shaped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// NATS server URL(s), comma-separated, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Subject and stream prefix, so installations and tests can share a server.
    pub prefix: String,
    /// Stream replicas (1 on a single server, 3 on a cluster).
    pub replicas: usize,
    /// How long domain events are kept, in seconds (0 = forever).
    pub events_max_age_secs: u64,
    /// How long prediction logs and feedback are kept, in seconds.
    pub predictions_max_age_secs: u64,
    /// How long dead letters are kept, in seconds.
    pub dlq_max_age_secs: u64,
    /// How long an undispatched job message may wait, in seconds.
    pub jobs_max_age_secs: u64,
    /// Window within which a repeated `Nats-Msg-Id` is dropped, in seconds.
    pub duplicate_window_secs: u64,
    /// How long to keep trying the first connection, in seconds.
    pub connect_timeout_secs: u64,
    /// How long to wait for a JetStream API answer or publish ack, in seconds.
    pub request_timeout_secs: u64,
    /// How many times a publish is retried on a transient failure (dedup makes this safe).
    pub publish_retries: u32,
    /// NATS user, when the server requires one (each service has its own: see
    /// `deploy/nats/nats.conf`).
    pub user: Option<String>,
    /// Its password (never printed).
    pub password: Option<Password>,
}

/// A password: serialised as itself (settings travel to child processes as variables),
/// printed as `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            prefix: "flywheel".into(),
            replicas: 1,
            events_max_age_secs: 30 * 24 * 3600,
            predictions_max_age_secs: 7 * 24 * 3600,
            dlq_max_age_secs: 30 * 24 * 3600,
            jobs_max_age_secs: 7 * 24 * 3600,
            duplicate_window_secs: 120,
            connect_timeout_secs: 30,
            request_timeout_secs: 10,
            publish_retries: 5,
            user: None,
            password: None,
        }
    }
}

impl BusConfig {
    /// Checks values that NATS would otherwise refuse later; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        for url in self.url.split(',') {
            let url = url.trim();
            let ok = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
                && url.len() > "nats://".len();
            if !ok {
                return Err(format!(
                    "bus.url: expected nats://host:port (comma-separated for several), got `{url}`"
                ));
            }
        }
        flywheel_events::Subjects::new(self.prefix.clone()).map_err(|_| {
            format!(
                "bus.prefix: expected letters, digits, `_` or `-`, got `{}`",
                self.prefix
            )
        })?;
        if !(1..=5).contains(&self.replicas) {
            return Err(format!(
                "bus.replicas: expected 1 to 5, got {}",
                self.replicas
            ));
        }
        if self.duplicate_window_secs == 0 {
            return Err("bus.duplicate_window_secs: expected at least 1".into());
        }
        Ok(())
    }
}
