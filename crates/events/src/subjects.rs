//! Subject and stream names, all under one configurable prefix.
//!
//! The prefix lets many installations (and many parallel tests) share one NATS server.

use crate::catalogue::{Channel, Event};

/// Why a name cannot be used in a subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The prefix must be a non-empty run of `[A-Za-z0-9_-]`.
    #[error("invalid subject prefix `{0}`: expected letters, digits, `_` or `-`")]
    InvalidPrefix(String),
    /// A token (deployment, pool name) would break the subject hierarchy.
    #[error("`{0}` cannot be a subject token: expected letters, digits, `_` or `-`")]
    InvalidToken(String),
}

/// The streams of an installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// Domain events, limits retention.
    Events,
    /// Training job dispatch, work-queue retention.
    Jobs,
    /// Prediction logs and feedback, limits retention.
    Predictions,
    /// Messages consumers could not handle.
    Dlq,
    /// API tokens (hashed), the last record per token id: a key-value store every service reads.
    Tokens,
}

impl StreamKind {
    /// All stream kinds.
    pub const ALL: [StreamKind; 5] = [
        StreamKind::Events,
        StreamKind::Jobs,
        StreamKind::Predictions,
        StreamKind::Dlq,
        StreamKind::Tokens,
    ];

    /// The stream name without prefix.
    pub fn suffix(self) -> &'static str {
        match self {
            StreamKind::Events => "EVENTS",
            StreamKind::Jobs => "JOBS",
            StreamKind::Predictions => "PREDICTIONS",
            StreamKind::Dlq => "DLQ",
            StreamKind::Tokens => "TOKENS",
        }
    }
}

/// Names subjects and streams under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

/// Checks that `token` is usable as one subject token.
pub fn check_token(token: &str) -> Result<&str, SubjectError> {
    if is_token(token) {
        Ok(token)
    } else {
        Err(SubjectError::InvalidToken(token.to_owned()))
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Subjects {
    /// Subjects under `prefix`, e.g. `flywheel`.
    pub fn new(prefix: impl Into<String>) -> Result<Self, SubjectError> {
        let prefix = prefix.into();
        if !is_token(&prefix) {
            return Err(SubjectError::InvalidPrefix(prefix));
        }
        Ok(Self { prefix })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The stream name, e.g. `FLYWHEEL_EVENTS`.
    pub fn stream(&self, kind: StreamKind) -> String {
        format!(
            "{}_{}",
            self.prefix.to_ascii_uppercase().replace('-', "_"),
            kind.suffix()
        )
    }

    /// The subjects a stream captures.
    pub fn stream_subjects(&self, kind: StreamKind) -> Vec<String> {
        let p = &self.prefix;
        match kind {
            StreamKind::Events => vec![format!("{p}.events.>")],
            StreamKind::Jobs => vec![format!("{p}.jobs.>")],
            StreamKind::Predictions => {
                vec![format!("{p}.predictions.>"), format!("{p}.feedback.>")]
            }
            StreamKind::Dlq => vec![format!("{p}.dlq.>")],
            StreamKind::Tokens => vec![format!("{p}.tokens.>")],
        }
    }

    /// `<prefix>.events.<type>`.
    pub fn event(&self, event_type: &str) -> String {
        format!("{}.events.{event_type}", self.prefix)
    }

    /// `<prefix>.tokens.<id>`: the current record of one API token.
    pub fn token(&self, id: &str) -> Result<String, SubjectError> {
        Ok(format!("{}.tokens.{}", self.prefix, check_token(id)?))
    }

    /// `<prefix>.jobs.<pool>`: the work queue of one runner pool. Pool names starting with `_`
    /// are reserved.
    pub fn jobs(&self, pool: &str) -> Result<String, SubjectError> {
        if pool.starts_with('_') {
            return Err(SubjectError::InvalidToken(pool.to_owned()));
        }
        Ok(format!("{}.jobs.{}", self.prefix, check_token(pool)?))
    }

    /// `<prefix>.jobs._reports`: what runners report about attempts (started, progress,
    /// completed, failed), read by the scheduler, which fences and forwards them as events.
    pub fn job_reports(&self) -> String {
        format!("{}.jobs._reports", self.prefix)
    }

    /// `<prefix>.scheduler.heartbeats`: runner heartbeats (request/reply, core NATS).
    pub fn runner_heartbeats(&self) -> String {
        format!("{}.scheduler.heartbeats", self.prefix)
    }

    /// `<prefix>.scheduler.claims`: a runner asks to start an attempt (request/reply).
    pub fn attempt_claims(&self) -> String {
        format!("{}.scheduler.claims", self.prefix)
    }

    /// `<prefix>.predictions.<deployment>`.
    pub fn predictions(&self, deployment: &str) -> Result<String, SubjectError> {
        Ok(format!(
            "{}.predictions.{}",
            self.prefix,
            check_token(deployment)?
        ))
    }

    /// `<prefix>.feedback.<deployment>`.
    pub fn feedback(&self, deployment: &str) -> Result<String, SubjectError> {
        Ok(format!(
            "{}.feedback.{}",
            self.prefix,
            check_token(deployment)?
        ))
    }

    /// `<prefix>.dlq.<stream>.<consumer>`: where a consumer's poison messages go.
    pub fn dlq(&self, kind: StreamKind, consumer: &str) -> Result<String, SubjectError> {
        Ok(format!(
            "{}.dlq.{}.{}",
            self.prefix,
            kind.suffix().to_ascii_lowercase(),
            check_token(consumer)?
        ))
    }

    /// The subject an event is published on, from its catalogue channel.
    pub fn for_event(&self, event: &Event) -> Result<String, SubjectError> {
        let deployment = event.deployment().unwrap_or_default();
        match event.channel() {
            Channel::Events => Ok(self.event(event.event_type())),
            Channel::Predictions => self.predictions(deployment),
            Channel::Feedback => self.feedback(deployment),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let s = Subjects::new("t-42").expect("prefix");
        assert_eq!(s.stream(StreamKind::Events), "T_42_EVENTS");
        assert_eq!(
            s.event("model.version.registered"),
            "t-42.events.model.version.registered"
        );
        assert_eq!(s.jobs("gpu").expect("pool"), "t-42.jobs.gpu");
        assert_eq!(
            s.dlq(StreamKind::Events, "registry").expect("dlq"),
            "t-42.dlq.events.registry"
        );
        assert_eq!(
            s.stream_subjects(StreamKind::Predictions),
            ["t-42.predictions.>", "t-42.feedback.>"]
        );
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in ["", "a.b", "a b", "*", ">", "a\nb"] {
            assert!(Subjects::new(bad).is_err(), "{bad:?}");
            assert!(
                Subjects::new("ok")
                    .expect("prefix")
                    .predictions(bad)
                    .is_err(),
                "{bad:?}"
            );
        }
    }
}
