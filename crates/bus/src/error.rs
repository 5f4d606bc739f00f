/// Bus failures.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The first connection could not be made.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The configured URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The client is not connected right now.
    #[error("not connected to NATS")]
    NotConnected,
    /// A JetStream API call failed.
    #[error("JetStream: {0}")]
    Jetstream(String),
    /// A stream or consumer exists with a configuration we cannot reconcile.
    #[error("{what} `{name}` exists with an incompatible configuration: {detail}")]
    Incompatible {
        /// `stream` or `consumer`.
        what: &'static str,
        /// Its name.
        name: String,
        /// The difference.
        detail: String,
    },
    /// A publish was not acknowledged.
    #[error("publish to `{subject}` not acknowledged: {reason}")]
    Publish {
        /// The subject.
        subject: String,
        /// Why.
        reason: String,
    },
    /// The encoded message exceeds the server's maximum payload.
    #[error("message of {size} bytes exceeds the server's max_payload of {max} bytes")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// Server limit.
        max: usize,
    },
    /// An envelope could not be encoded.
    #[error(transparent)]
    Encode(#[from] flywheel_events::EncodeError),
    /// A name cannot be used in a subject.
    #[error(transparent)]
    Subject(#[from] flywheel_events::SubjectError),
}

/// Result with [`BusError`].
pub type Result<T, E = BusError> = std::result::Result<T, E>;
