//! The event catalogue: every event type, its payload, schema version and channel.

use crate::payloads::*;

/// Where events of a type are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// `<prefix>.events.<type>` on the EVENTS stream.
    Events,
    /// `<prefix>.predictions.<deployment>` on the PREDICTIONS stream.
    Predictions,
    /// `<prefix>.feedback.<deployment>` on the PREDICTIONS stream.
    Feedback,
}

/// Static facts about one event type.
#[derive(Debug, Clone, Copy)]
pub struct EventKind {
    /// Dotted type name, e.g. `model.version.registered`.
    pub name: &'static str,
    /// The newest schema version this build understands and writes.
    pub schema_version: u32,
    /// Where it is published.
    pub channel: Channel,
    /// One-line description.
    pub description: &'static str,
}

macro_rules! catalogue {
    ($( $(#[doc = $doc:literal])* $variant:ident($payload:ty) = $name:literal, $version:literal, $channel:ident; )*) => {
        /// A typed event: one variant per entry of the catalogue.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Event {
            $( $(#[doc = $doc])* $variant($payload), )*
        }

        /// Every event type this build knows, in catalogue order.
        pub const CATALOGUE: &[EventKind] = &[
            $( EventKind {
                name: $name,
                schema_version: $version,
                channel: Channel::$channel,
                description: concat!($($doc),*),
            }, )*
        ];

        impl Event {
            /// The dotted type name, e.g. `training.requested`.
            pub fn event_type(&self) -> &'static str {
                match self { $( Event::$variant(_) => $name, )* }
            }

            /// Where events of this type are published.
            pub fn channel(&self) -> Channel {
                match self { $( Event::$variant(_) => Channel::$channel, )* }
            }

            /// The schema version this build writes for the event's type.
            pub fn schema_version(&self) -> u32 {
                match self { $( Event::$variant(_) => $version, )* }
            }

            pub(crate) fn encode_with(
                &self,
                head: &crate::envelope::WireHead<'_>,
                content_type: crate::codec::ContentType,
            ) -> Result<Vec<u8>, crate::codec::EncodeError> {
                match self {
                    $( Event::$variant(payload) => crate::codec::encode_wire(head, payload, content_type), )*
                }
            }

            pub(crate) fn decode_with(
                name: &str,
                bytes: &[u8],
                content_type: crate::codec::ContentType,
            ) -> Result<(crate::envelope::WireHeadOwned, Event), crate::codec::DecodeError> {
                match name {
                    $( $name => crate::codec::decode_wire::<$payload>(bytes, content_type)
                        .map(|(head, payload)| (head, Event::$variant(payload))), )*
                    other => Err(crate::codec::DecodeError::UnknownType(other.to_owned())),
                }
            }

            pub(crate) fn payload_schema(name: &str) -> Option<schemars::Schema> {
                match name {
                    $( $name => Some(schemars::SchemaGenerator::default().into_root_schema_for::<$payload>()), )*
                    _ => None,
                }
            }
        }
    };
}

/// Looks up an event type by its dotted name.
pub fn find_kind(name: &str) -> Option<&'static EventKind> {
    CATALOGUE.iter().find(|kind| kind.name == name)
}

catalogue! {
    /// A new immutable dataset version was stored and profiled.
    DatasetVersionCreated(DatasetVersionCreated) = "dataset.version.created", 1, Events;
    /// A dataset version's validation suite ran.
    DatasetValidationCompleted(DatasetValidationCompleted) = "dataset.validation.completed", 1, Events;
    /// A model should be trained.
    TrainingRequested(TrainingRequested) = "training.requested", 1, Events;
    /// The scheduler queued a job.
    TrainingJobQueued(TrainingJobQueued) = "training.job.queued", 1, Events;
    /// A job attempt was dispatched to a runner pool.
    TrainingJobDispatched(TrainingJobDispatched) = "training.job.dispatched", 1, Events;
    /// A runner started an attempt.
    TrainingJobStarted(TrainingJobStarted) = "training.job.started", 1, Events;
    /// A running attempt reported progress.
    TrainingJobProgress(TrainingJobProgress) = "training.job.progress", 1, Events;
    /// An attempt produced a model package.
    TrainingJobCompleted(TrainingJobCompleted) = "training.job.completed", 1, Events;
    /// An attempt failed or timed out.
    TrainingJobFailed(TrainingJobFailed) = "training.job.failed", 1, Events;
    /// A job was cancelled.
    TrainingJobCancelled(TrainingJobCancelled) = "training.job.cancelled", 1, Events;
    /// A model version was registered.
    ModelVersionRegistered(ModelVersionRegistered) = "model.version.registered", 1, Events;
    /// Quality gates were evaluated on a model version.
    ModelVersionGatesEvaluated(ModelVersionGatesEvaluated) = "model.version.gates_evaluated", 1, Events;
    /// A model alias moved.
    ModelVersionAliasChanged(ModelVersionAliasChanged) = "model.version.alias_changed", 1, Events;
    /// A model version awaits approval.
    ModelVersionApprovalRequested(ModelVersionApprovalRequested) = "model.version.approval_requested", 1, Events;
    /// A model version was approved.
    ModelVersionApproved(ModelVersionDecision) = "model.version.approved", 1, Events;
    /// A model version was rejected.
    ModelVersionRejected(ModelVersionDecision) = "model.version.rejected", 1, Events;
    /// A deployment was requested.
    DeploymentRequested(DeploymentRequested) = "deployment.requested", 1, Events;
    /// A rollout started.
    DeploymentRolloutStarted(DeploymentRolloutStarted) = "deployment.rollout_started", 1, Events;
    /// A deployment's traffic split changed.
    DeploymentTrafficShifted(DeploymentTrafficShifted) = "deployment.traffic_shifted", 1, Events;
    /// A rollout completed.
    DeploymentRolledOut(DeploymentRolledOut) = "deployment.rolled_out", 1, Events;
    /// A rollout was rolled back.
    DeploymentRolledBack(DeploymentRolledBack) = "deployment.rolled_back", 1, Events;
    /// A deployment failed.
    DeploymentFailed(DeploymentFailed) = "deployment.failed", 1, Events;
    /// A prediction was served and logged.
    PredictionLogged(PredictionLogged) = "prediction.logged", 1, Predictions;
    /// Ground truth arrived for a prediction.
    FeedbackReceived(FeedbackReceived) = "feedback.received", 1, Feedback;
    /// The monitor evaluated a window.
    MonitorReportCreated(MonitorReportCreated) = "monitor.report.created", 1, Events;
    /// An alert fired.
    MonitorAlertRaised(MonitorAlertRaised) = "monitor.alert.raised", 1, Events;
    /// An alert resolved.
    MonitorAlertResolved(MonitorAlertResolved) = "monitor.alert.resolved", 1, Events;
    /// A request was refused (401 or 403).
    SecurityAccessDenied(AccessDenied) = "security.access.denied", 1, Events;
}

impl Event {
    /// The deployment a prediction-stream event belongs to.
    pub fn deployment(&self) -> Option<&str> {
        match self {
            Event::PredictionLogged(p) => Some(&p.deployment),
            Event::FeedbackReceived(f) => Some(&f.deployment),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_names_are_unique_and_dotted() {
        let mut names: Vec<_> = CATALOGUE.iter().map(|k| k.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate event type names");
        for name in names {
            assert!(name.contains('.'), "{name} is not dotted");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_'),
                "{name} has characters not allowed in a subject token"
            );
        }
    }

    #[test]
    fn every_kind_has_a_payload_schema() {
        for kind in CATALOGUE {
            assert!(Event::payload_schema(kind.name).is_some(), "{}", kind.name);
        }
    }
}
