//! Idempotent provisioning of the four streams.

use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};

use crate::{Bus, BusError, Result, StreamKind};

impl Bus {
    /// The configuration Flywheel wants for a stream.
    pub fn stream_config(&self, kind: StreamKind) -> Config {
        let c = &self.config;
        let (retention, max_age, description) = match kind {
            StreamKind::Events => (
                RetentionPolicy::Limits,
                c.events_max_age_secs,
                "Flywheel domain events",
            ),
            StreamKind::Jobs => (
                RetentionPolicy::WorkQueue,
                c.jobs_max_age_secs,
                "Flywheel training job dispatch",
            ),
            StreamKind::Predictions => (
                RetentionPolicy::Limits,
                c.predictions_max_age_secs,
                "Flywheel prediction logs and feedback",
            ),
            StreamKind::Dlq => (
                RetentionPolicy::Limits,
                c.dlq_max_age_secs,
                "Flywheel dead letters",
            ),
            // Kept until revoked and replaced; never aged out.
            StreamKind::Tokens => (RetentionPolicy::Limits, 0, "Flywheel API tokens (hashed)"),
        };
        Config {
            name: self.subjects.stream(kind),
            description: Some(description.into()),
            subjects: self.subjects.stream_subjects(kind),
            retention,
            storage: StorageType::File,
            num_replicas: c.replicas,
            max_age: Duration::from_secs(max_age),
            // Old messages make room for new ones: never refuse a publish because a stream is full
            // (and avoid NATS 2.9's discard-new bug, see docs/architecture.md).
            discard: DiscardPolicy::Old,
            duplicate_window: Duration::from_secs(c.duplicate_window_secs),
            max_messages_per_subject: if kind == StreamKind::Tokens { 1 } else { 0 },
            ..Default::default()
        }
    }

    /// Creates the EVENTS, JOBS, PREDICTIONS and DLQ streams, or reconciles them when they exist.
    ///
    /// Safe to call from every service at every start: an existing stream keeps its messages;
    /// limits that changed in configuration are updated; a retention or subject clash is an error.
    pub async fn provision(&self) -> Result<()> {
        for kind in StreamKind::ALL {
            self.provision_stream(kind).await?;
        }
        Ok(())
    }

    async fn provision_stream(&self, kind: StreamKind) -> Result<()> {
        let wanted = self.stream_config(kind);
        let mut stream = match self.jetstream.get_or_create_stream(wanted.clone()).await {
            Ok(stream) => stream,
            // Services starting together race to create it; NATS 2.9 answers the loser with
            // "subjects overlap" rather than "exists". The winner's stream is the one we want.
            Err(create) => self.jetstream.get_stream(&wanted.name).await.map_err(|_| {
                BusError::Jetstream(format!("create stream {}: {create}", wanted.name))
            })?,
        };
        let info = stream
            .info()
            .await
            .map_err(|e| BusError::Jetstream(format!("stream {}: {e}", wanted.name)))?;
        let have = &info.config;
        let incompatible = |detail: String| BusError::Incompatible {
            what: "stream",
            name: wanted.name.clone(),
            detail,
        };
        if have.retention != wanted.retention {
            return Err(incompatible(format!(
                "retention is {:?}, want {:?}",
                have.retention, wanted.retention
            )));
        }
        let mut have_subjects = have.subjects.clone();
        let mut want_subjects = wanted.subjects.clone();
        have_subjects.sort();
        want_subjects.sort();
        let limits_differ = have.max_age != wanted.max_age
            || have.duplicate_window != wanted.duplicate_window
            || have.num_replicas != wanted.num_replicas
            || have.discard != wanted.discard
            || have_subjects != want_subjects;
        if limits_differ {
            tracing::info!(stream = %wanted.name, "updating stream limits to match configuration");
            let updated = self
                .jetstream
                .update_stream(wanted.clone())
                .await
                .map_err(|e| incompatible(format!("update refused: {e}")))?;
            // NATS 2.9 silently ignores fields it does not know; check what it echoes.
            if updated.config.max_age != wanted.max_age
                || updated.config.duplicate_window != wanted.duplicate_window
            {
                return Err(incompatible(
                    "server did not apply max_age/duplicate_window".into(),
                ));
            }
        }
        Ok(())
    }
}
