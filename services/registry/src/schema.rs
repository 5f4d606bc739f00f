//! Table and column names of the registry's own tables (all prefixed `registry_`, so the
//! services can share one database).

use sea_orm::DeriveIden;

/// Experiments (MLflow-compatible: id 0 is `Default`).
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Experiments {
    #[sea_orm(iden = "registry_experiments")]
    Table,
    ExperimentId,
    Name,
    ArtifactLocation,
    LifecycleStage,
    CreationTime,
    LastUpdateTime,
    /// The project (tenant) it belongs to.
    Project,
}

/// Experiment tags.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum ExperimentTags {
    #[sea_orm(iden = "registry_experiment_tags")]
    Table,
    ExperimentId,
    Key,
    Value,
}

/// Runs.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Runs {
    #[sea_orm(iden = "registry_runs")]
    Table,
    RunId,
    ExperimentId,
    RunName,
    UserId,
    Status,
    StartTime,
    EndTime,
    LifecycleStage,
    ArtifactUri,
}

/// Run parameters (immutable once logged).
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Params {
    #[sea_orm(iden = "registry_run_params")]
    Table,
    RunId,
    Key,
    Value,
}

/// Run tags (overwritable).
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum RunTags {
    #[sea_orm(iden = "registry_run_tags")]
    Table,
    RunId,
    Key,
    Value,
}

/// Every logged metric value (history).
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Metrics {
    #[sea_orm(iden = "registry_run_metrics")]
    Table,
    Id,
    RunId,
    Key,
    Value,
    IsNan,
    Timestamp,
    Step,
}

/// The latest value per run and metric key, by `(step, timestamp, value)`.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum LatestMetrics {
    #[sea_orm(iden = "registry_run_latest_metrics")]
    Table,
    RunId,
    Key,
    Value,
    IsNan,
    Timestamp,
    Step,
}

/// Registered models.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Models {
    #[sea_orm(iden = "registry_models")]
    Table,
    Name,
    Description,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
    /// The project (tenant) it belongs to.
    Project,
}

/// Registered model tags.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum ModelTags {
    #[sea_orm(iden = "registry_model_tags")]
    Table,
    Name,
    Key,
    Value,
}

/// Immutable model versions.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Versions {
    #[sea_orm(iden = "registry_model_versions")]
    Table,
    Name,
    Version,
    Source,
    RunId,
    Status,
    CurrentStage,
    Description,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
    Flavor,
    Metrics,
    Signature,
    Lineage,
}

/// Model version tags.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum VersionTags {
    #[sea_orm(iden = "registry_model_version_tags")]
    Table,
    Name,
    Version,
    Key,
    Value,
}

/// Aliases (`production`, `champion`, ...) pointing at versions.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Aliases {
    #[sea_orm(iden = "registry_model_aliases")]
    Table,
    Name,
    Alias,
    Version,
}

/// The append-only audit log.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Audit {
    #[sea_orm(iden = "registry_audit_log")]
    Table,
    Id,
    Model,
    Action,
    Actor,
    At,
    Before,
    After,
}

/// Per-model governance policies (JSON).
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Policies {
    #[sea_orm(iden = "registry_policies")]
    Table,
    Model,
    Policy,
    UpdatedBy,
    UpdatedAt,
}

/// Promotion requests of a version to an alias.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Promotions {
    #[sea_orm(iden = "registry_promotions")]
    Table,
    Id,
    Model,
    Version,
    Alias,
    RequestedBy,
    Status,
    CreatedAt,
    DecidedAt,
}

/// Approvals and rejections of promotion requests.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Approvals {
    #[sea_orm(iden = "registry_approvals")]
    Table,
    PromotionId,
    Approver,
    Decision,
    Comment,
    At,
}

/// Read-model of training jobs, from `training.job.*` events.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Jobs {
    #[sea_orm(iden = "registry_jobs")]
    Table,
    JobId,
    Model,
    Status,
    Attempt,
    RequestId,
    Detail,
    RegisteredVersion,
    UpdatedAt,
    LastSeq,
    /// The project (tenant) it belongs to.
    Project,
}

/// Datasets and their validation suites.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Datasets {
    #[sea_orm(iden = "registry_datasets")]
    Table,
    Name,
    Suite,
    CreatedAt,
    UpdatedAt,
    /// The project (tenant) it belongs to.
    Project,
}

/// Immutable, content-addressed dataset versions.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum DatasetVersions {
    #[sea_orm(iden = "registry_dataset_versions")]
    Table,
    Name,
    Version,
    Seq,
    Sha256,
    ObjectKey,
    Format,
    SizeBytes,
    RowCount,
    Columns,
    ProfileKey,
    PreviousVersion,
    ValidationPassed,
    Validation,
    CreatedBy,
    CreatedAt,
}

/// Read-model of deployments, from `deployment.*` events.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Deployments {
    #[sea_orm(iden = "registry_deployments")]
    Table,
    Deployment,
    Model,
    Version,
    Status,
    Detail,
    UpdatedAt,
    LastSeq,
    /// The project (tenant) it belongs to.
    Project,
}

/// Read-model of monitor alerts, from `monitor.alert.*` events.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Alerts {
    #[sea_orm(iden = "registry_alerts")]
    Table,
    AlertId,
    Rule,
    Deployment,
    Severity,
    Message,
    Status,
    RaisedAt,
    ResolvedAt,
    LastSeq,
    /// The project (tenant) it belongs to.
    Project,
}

/// MLflow 3 LoggedModels (what `mlflow.<flavor>.log_model` creates).
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum LoggedModels {
    #[sea_orm(iden = "registry_logged_models")]
    Table,
    ModelId,
    ExperimentId,
    Name,
    SourceRunId,
    ModelType,
    Status,
    ArtifactUri,
    CreatedAt,
    UpdatedAt,
}

/// LoggedModel tags and params (`kind` = `tag` or `param`).
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum LoggedModelValues {
    #[sea_orm(iden = "registry_logged_model_values")]
    Table,
    ModelId,
    Kind,
    Key,
    Value,
}

/// Models a run produced (`runs/outputs`).
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum RunOutputs {
    #[sea_orm(iden = "registry_run_outputs")]
    Table,
    RunId,
    ModelId,
    Step,
}
