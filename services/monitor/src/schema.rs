//! The monitor's tables (prefixed `monitor_`).

use sea_orm::DeriveIden;

/// Dataset versions the monitor has heard of (from `dataset.version.created`): where their
/// bytes and profiles are.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Datasets {
    #[sea_orm(iden = "monitor_datasets")]
    Table,
    Dataset,
    Version,
    Uri,
    Format,
    Sha256,
    ProfileUri,
    /// The dataset's project (its event's).
    Project,
}

/// Model versions and their training data (from `model.version.registered`).
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Versions {
    #[sea_orm(iden = "monitor_versions")]
    Table,
    Model,
    Version,
    Dataset,
    DatasetVersion,
    Target,
    Metrics,
}

/// Where the prediction reader is: the last stream sequence counted and the open windows.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Checkpoints {
    #[sea_orm(iden = "monitor_checkpoints")]
    Table,
    Reader,
    Sequence,
    Windows,
    UpdatedAt,
}

/// One report per closed window.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Reports {
    #[sea_orm(iden = "monitor_reports")]
    Table,
    ReportId,
    Deployment,
    Model,
    Version,
    WindowStart,
    WindowEnd,
    Count,
    DatasetDrift,
    Body,
    CreatedAt,
}

/// Alerts, open and resolved.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Alerts {
    #[sea_orm(iden = "monitor_alerts")]
    Table,
    AlertId,
    Rule,
    Deployment,
    Model,
    Severity,
    Status,
    Message,
    ReportId,
    RaisedAt,
    ResolvedAt,
}

/// Retraining policies per model.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Policies {
    #[sea_orm(iden = "monitor_policies")]
    Table,
    Model,
    Body,
    /// The project that set it.
    Project,
}

/// Retrainings the monitor asked for.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Retrainings {
    #[sea_orm(iden = "monitor_retrainings")]
    Table,
    RequestId,
    Model,
    AlertId,
    RequestedAt,
}

/// The columns an alert is written with (all but `resolved_at`).
pub(crate) const ALERT_COLUMNS: [Alerts; 9] = [
    Alerts::AlertId,
    Alerts::Rule,
    Alerts::Deployment,
    Alerts::Model,
    Alerts::Severity,
    Alerts::Status,
    Alerts::Message,
    Alerts::ReportId,
    Alerts::RaisedAt,
];

/// Webhooks alerts are delivered to.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Webhooks {
    #[sea_orm(iden = "monitor_webhooks")]
    Table,
    Name,
    Url,
}

/// Deliveries done, so a retried event reaches each webhook once.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Deliveries {
    #[sea_orm(iden = "monitor_deliveries")]
    Table,
    EventId,
    Webhook,
    DeliveredAt,
}

/// Learned latency baselines per deployment version (an exponentially weighted mean).
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Baselines {
    #[sea_orm(iden = "monitor_baselines")]
    Table,
    Deployment,
    Version,
    LatencyUs,
    Windows,
    /// Learned error rate (added by m0008).
    ErrorRate,
}

/// Alert rules on report metrics.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Rules {
    #[sea_orm(iden = "monitor_rules")]
    Table,
    Name,
    Body,
}

/// Monitoring settings per deployment (reference, drift share, per-column methods).
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Settings {
    #[sea_orm(iden = "monitor_settings")]
    Table,
    Deployment,
    Body,
}

/// Reference profiles built from a baseline window of production traffic.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum BaselineProfiles {
    #[sea_orm(iden = "monitor_baseline_profiles")]
    Table,
    Deployment,
    Version,
    Profile,
    CreatedAt,
}

/// The durable, sampled join store: predictions kept for feedback that comes late, and — once
/// labelled — the production rows a drift retraining exports.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Joinable {
    #[sea_orm(iden = "monitor_joinable")]
    Table,
    RequestId,
    Deployment,
    Model,
    Version,
    Inputs,
    Predicted,
    Score,
    LoggedAt,
    GroundTruth,
    LabelledAt,
}
