//! The deployer's tables (prefixed `deployer_`).

use sea_orm::DeriveIden;

/// Model versions the deployer has heard of (from `model.version.registered`).
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Versions {
    #[sea_orm(iden = "deployer_versions")]
    Table,
    Model,
    Version,
    PackageUri,
    Flavor,
}

/// Deployments: a serving name following a model's alias or pinned to a version.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Deployments {
    #[sea_orm(iden = "deployer_deployments")]
    Table,
    Name,
    Project,
    Model,
    Alias,
    Version,
    ServingVersion,
    Strategy,
    Slo,
    Status,
    Detail,
    UpdatedAt,
    RolledBackVersion,
    PublicInference,
    CandidateVersion,
    CandidatePercent,
    CandidateShadow,
    RouteGeneration,
}

/// Each replica's numbers for the rollout step in progress, merged by the rollout leader.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum RolloutStats {
    #[sea_orm(iden = "deployer_rollout_stats")]
    Table,
    Deployment,
    Replica,
    Generation,
    Numbers,
    UpdatedAt,
}

/// Where each model's aliases point (from `model.version.alias_changed`).
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Aliases {
    #[sea_orm(iden = "deployer_aliases")]
    Table,
    Model,
    Alias,
    Version,
}
