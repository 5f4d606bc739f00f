//! The registry's migrations, recorded in `registry_migrations`.

use sea_orm::sea_query::{ColumnDef, Index, Query, Table};
use sea_orm::{ConnectionTrait, DbErr};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager, async_trait};

use crate::schema::{
    Alerts, Aliases, Approvals, Audit, DatasetVersions, Datasets, Deployments, ExperimentTags,
    Experiments, Jobs, LatestMetrics, LoggedModelValues, LoggedModels, Metrics, ModelTags, Models,
    Params, Policies, Promotions, RunOutputs, RunTags, Runs, VersionTags, Versions,
};

flywheel_db::migrator!(
    Migrator,
    "registry",
    [
        flywheel_db::inbox::CreateInbox::new("registry"),
        CreateTracking,
        CreateModels,
        flywheel_runtime::outbox::CreateOutbox::new("registry"),
        CreateGovernance,
        CreateJobs,
        CreateDatasets,
        CreateReadModels,
        CreateLoggedModels,
        crate::dashboard::CreateTimeline,
        AddProjects,
    ]
);

/// Experiments, runs, params, tags and metrics, plus the `Default` experiment (id 0).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateTracking;

impl MigrationName for CreateTracking {
    fn name(&self) -> &str {
        "m0002_registry_create_tracking"
    }
}

fn key_value_table<T: sea_orm::sea_query::Iden + Copy + 'static>(
    table: T,
    owner: T,
    key: T,
    value: T,
    owner_is_text: bool,
) -> sea_orm::sea_query::TableCreateStatement {
    let mut owner_col = ColumnDef::new(owner);
    if owner_is_text {
        owner_col.string_len(64);
    } else {
        owner_col.big_integer();
    }
    Table::create()
        .table(table)
        .if_not_exists()
        .col(owner_col.not_null())
        .col(ColumnDef::new(key).string_len(250).not_null())
        .col(ColumnDef::new(value).text().not_null())
        .primary_key(Index::create().col(owner).col(key))
        .to_owned()
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateTracking {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Experiments::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Experiments::ExperimentId)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Experiments::Name)
                            .string_len(500)
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(Experiments::ArtifactLocation)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Experiments::LifecycleStage)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Experiments::CreationTime)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Experiments::LastUpdateTime)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(key_value_table(
                ExperimentTags::Table,
                ExperimentTags::ExperimentId,
                ExperimentTags::Key,
                ExperimentTags::Value,
                false,
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Runs::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Runs::RunId)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Runs::ExperimentId).big_integer().not_null())
                    .col(ColumnDef::new(Runs::RunName).string_len(250).not_null())
                    .col(ColumnDef::new(Runs::UserId).string_len(250).not_null())
                    .col(ColumnDef::new(Runs::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Runs::StartTime).big_integer().not_null())
                    .col(ColumnDef::new(Runs::EndTime).big_integer().null())
                    .col(
                        ColumnDef::new(Runs::LifecycleStage)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Runs::ArtifactUri).text().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("registry_runs_by_experiment")
                    .table(Runs::Table)
                    .col(Runs::ExperimentId)
                    .col(Runs::StartTime)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(key_value_table(
                Params::Table,
                Params::RunId,
                Params::Key,
                Params::Value,
                true,
            ))
            .await?;
        manager
            .create_table(key_value_table(
                RunTags::Table,
                RunTags::RunId,
                RunTags::Key,
                RunTags::Value,
                true,
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Metrics::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Metrics::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Metrics::RunId).string_len(64).not_null())
                    .col(ColumnDef::new(Metrics::Key).string_len(250).not_null())
                    .col(ColumnDef::new(Metrics::Value).double().not_null())
                    .col(ColumnDef::new(Metrics::IsNan).boolean().not_null())
                    .col(ColumnDef::new(Metrics::Timestamp).big_integer().not_null())
                    .col(ColumnDef::new(Metrics::Step).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("registry_run_metrics_history")
                    .table(Metrics::Table)
                    .col(Metrics::RunId)
                    .col(Metrics::Key)
                    .col(Metrics::Step)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LatestMetrics::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(LatestMetrics::RunId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LatestMetrics::Key)
                            .string_len(250)
                            .not_null(),
                    )
                    .col(ColumnDef::new(LatestMetrics::Value).double().not_null())
                    .col(ColumnDef::new(LatestMetrics::IsNan).boolean().not_null())
                    .col(
                        ColumnDef::new(LatestMetrics::Timestamp)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(LatestMetrics::Step).big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(LatestMetrics::RunId)
                            .col(LatestMetrics::Key),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("registry_latest_metrics_by_key")
                    .table(LatestMetrics::Table)
                    .col(LatestMetrics::Key)
                    .col(LatestMetrics::Value)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // MLflow clients start runs in experiment "0" when none is set.
        let now = chrono_millis();
        let default = Query::insert()
            .into_table(Experiments::Table)
            .columns([
                Experiments::ExperimentId,
                Experiments::Name,
                Experiments::ArtifactLocation,
                Experiments::LifecycleStage,
                Experiments::CreationTime,
                Experiments::LastUpdateTime,
            ])
            .values([
                0i64.into(),
                "Default".into(),
                "mlflow-artifacts:/0".into(),
                "active".into(),
                now.into(),
                now.into(),
            ])
            .map_err(|e| DbErr::Custom(e.to_string()))?
            .to_owned();
        manager.get_connection().execute(&default).await?;
        Ok(())
    }
}

fn chrono_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Registered models, versions, tags, aliases and the audit log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateModels;

impl MigrationName for CreateModels {
    fn name(&self) -> &str {
        "m0003_registry_create_models"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateModels {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Models::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Models::Name)
                            .string_len(250)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Models::Description).text().not_null())
                    .col(ColumnDef::new(Models::CreatedBy).string_len(250).not_null())
                    .col(ColumnDef::new(Models::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Models::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ModelTags::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(ModelTags::Name).string_len(250).not_null())
                    .col(ColumnDef::new(ModelTags::Key).string_len(250).not_null())
                    .col(ColumnDef::new(ModelTags::Value).text().not_null())
                    .primary_key(Index::create().col(ModelTags::Name).col(ModelTags::Key))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Versions::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Versions::Name).string_len(250).not_null())
                    .col(ColumnDef::new(Versions::Version).big_integer().not_null())
                    .col(ColumnDef::new(Versions::Source).text().not_null())
                    .col(ColumnDef::new(Versions::RunId).string_len(64).null())
                    .col(ColumnDef::new(Versions::Status).string_len(32).not_null())
                    .col(
                        ColumnDef::new(Versions::CurrentStage)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Versions::Description).text().not_null())
                    .col(
                        ColumnDef::new(Versions::CreatedBy)
                            .string_len(250)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Versions::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Versions::UpdatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Versions::Flavor).string_len(64).not_null())
                    .col(ColumnDef::new(Versions::Metrics).text().not_null())
                    .col(ColumnDef::new(Versions::Signature).text().not_null())
                    .col(ColumnDef::new(Versions::Lineage).text().not_null())
                    .primary_key(Index::create().col(Versions::Name).col(Versions::Version))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(VersionTags::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(VersionTags::Name).string_len(250).not_null())
                    .col(
                        ColumnDef::new(VersionTags::Version)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(VersionTags::Key).string_len(250).not_null())
                    .col(ColumnDef::new(VersionTags::Value).text().not_null())
                    .primary_key(
                        Index::create()
                            .col(VersionTags::Name)
                            .col(VersionTags::Version)
                            .col(VersionTags::Key),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Aliases::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Aliases::Name).string_len(250).not_null())
                    .col(ColumnDef::new(Aliases::Alias).string_len(250).not_null())
                    .col(ColumnDef::new(Aliases::Version).big_integer().not_null())
                    .primary_key(Index::create().col(Aliases::Name).col(Aliases::Alias))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Audit::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Audit::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Audit::Model).string_len(250).not_null())
                    .col(ColumnDef::new(Audit::Action).string_len(64).not_null())
                    .col(ColumnDef::new(Audit::Actor).string_len(250).not_null())
                    .col(ColumnDef::new(Audit::At).big_integer().not_null())
                    .col(ColumnDef::new(Audit::Before).text().null())
                    .col(ColumnDef::new(Audit::After).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("registry_audit_by_model")
                    .table(Audit::Table)
                    .col(Audit::Model)
                    .col(Audit::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}

/// Policies, promotion requests and approvals.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateGovernance;

impl MigrationName for CreateGovernance {
    fn name(&self) -> &str {
        "m0004_registry_create_governance"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateGovernance {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Policies::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Policies::Model)
                            .string_len(250)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Policies::Policy).text().not_null())
                    .col(
                        ColumnDef::new(Policies::UpdatedBy)
                            .string_len(250)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Policies::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Promotions::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Promotions::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Promotions::Model).string_len(250).not_null())
                    .col(ColumnDef::new(Promotions::Version).big_integer().not_null())
                    .col(ColumnDef::new(Promotions::Alias).string_len(250).not_null())
                    .col(
                        ColumnDef::new(Promotions::RequestedBy)
                            .string_len(250)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Promotions::Status).string_len(16).not_null())
                    .col(
                        ColumnDef::new(Promotions::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Promotions::DecidedAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Approvals::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Approvals::PromotionId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Approvals::Approver)
                            .string_len(250)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Approvals::Decision)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Approvals::Comment).text().not_null())
                    .col(ColumnDef::new(Approvals::At).big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(Approvals::PromotionId)
                            .col(Approvals::Approver),
                    )
                    .to_owned(),
            )
            .await
    }
}

/// The read-model of training jobs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateJobs;

impl MigrationName for CreateJobs {
    fn name(&self) -> &str {
        "m0005_registry_create_jobs"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateJobs {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Jobs::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Jobs::JobId)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Jobs::Model).string_len(250).not_null())
                    .col(ColumnDef::new(Jobs::Status).string_len(32).not_null())
                    .col(ColumnDef::new(Jobs::Attempt).big_integer().not_null())
                    .col(ColumnDef::new(Jobs::RequestId).string_len(250).not_null())
                    .col(ColumnDef::new(Jobs::Detail).text().not_null())
                    .col(ColumnDef::new(Jobs::RegisteredVersion).big_integer().null())
                    .col(ColumnDef::new(Jobs::UpdatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Jobs::LastSeq).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }
}

/// Datasets, suites and versions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateDatasets;

impl MigrationName for CreateDatasets {
    fn name(&self) -> &str {
        "m0006_registry_create_datasets"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateDatasets {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Datasets::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Datasets::Name)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Datasets::Suite).text().not_null())
                    .col(ColumnDef::new(Datasets::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Datasets::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(DatasetVersions::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(DatasetVersions::Name)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(DatasetVersions::Version)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(DatasetVersions::Seq)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(DatasetVersions::Sha256)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(DatasetVersions::ObjectKey).text().not_null())
                    .col(
                        ColumnDef::new(DatasetVersions::Format)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(DatasetVersions::SizeBytes)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(DatasetVersions::RowCount)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(DatasetVersions::Columns).text().not_null())
                    .col(
                        ColumnDef::new(DatasetVersions::ProfileKey)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(DatasetVersions::PreviousVersion)
                            .string_len(64)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(DatasetVersions::ValidationPassed)
                            .boolean()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(DatasetVersions::Validation)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(DatasetVersions::CreatedBy)
                            .string_len(250)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(DatasetVersions::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(DatasetVersions::Name)
                            .col(DatasetVersions::Version),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("registry_dataset_versions_seq")
                    .table(DatasetVersions::Table)
                    .col(DatasetVersions::Name)
                    .col(DatasetVersions::Seq)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}

/// Read-models of deployments and alerts for the dashboard.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateReadModels;

impl MigrationName for CreateReadModels {
    fn name(&self) -> &str {
        "m0007_registry_create_read_models"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateReadModels {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Deployments::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Deployments::Deployment)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Deployments::Model)
                            .string_len(250)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Deployments::Version).big_integer().null())
                    .col(
                        ColumnDef::new(Deployments::Status)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Deployments::Detail).text().not_null())
                    .col(
                        ColumnDef::new(Deployments::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Deployments::LastSeq)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alerts::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Alerts::AlertId)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Alerts::Rule).string_len(250).not_null())
                    .col(
                        ColumnDef::new(Alerts::Deployment)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alerts::Severity).string_len(16).not_null())
                    .col(ColumnDef::new(Alerts::Message).text().not_null())
                    .col(ColumnDef::new(Alerts::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Alerts::RaisedAt).big_integer().null())
                    .col(ColumnDef::new(Alerts::ResolvedAt).big_integer().null())
                    .col(ColumnDef::new(Alerts::LastSeq).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }
}

/// MLflow 3 LoggedModels and run outputs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateLoggedModels;

impl MigrationName for CreateLoggedModels {
    fn name(&self) -> &str {
        "m0008_registry_create_logged_models"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateLoggedModels {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LoggedModels::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(LoggedModels::ModelId)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(LoggedModels::ExperimentId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LoggedModels::Name)
                            .string_len(250)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LoggedModels::SourceRunId)
                            .string_len(64)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(LoggedModels::ModelType)
                            .string_len(250)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(LoggedModels::Status)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(LoggedModels::ArtifactUri).text().not_null())
                    .col(
                        ColumnDef::new(LoggedModels::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LoggedModels::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LoggedModelValues::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(LoggedModelValues::ModelId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LoggedModelValues::Kind)
                            .string_len(8)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LoggedModelValues::Key)
                            .string_len(250)
                            .not_null(),
                    )
                    .col(ColumnDef::new(LoggedModelValues::Value).text().not_null())
                    .primary_key(
                        Index::create()
                            .col(LoggedModelValues::ModelId)
                            .col(LoggedModelValues::Kind)
                            .col(LoggedModelValues::Key),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RunOutputs::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(RunOutputs::RunId).string_len(64).not_null())
                    .col(
                        ColumnDef::new(RunOutputs::ModelId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(RunOutputs::Step).big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(RunOutputs::RunId)
                            .col(RunOutputs::ModelId),
                    )
                    .to_owned(),
            )
            .await
    }
}

/// Every top-level resource, read-model and logged event gets its project; what existed
/// before belongs to `default`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AddProjects;

impl MigrationName for AddProjects {
    fn name(&self) -> &str {
        "m0010_registry_add_projects"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for AddProjects {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use crate::dashboard::timeline::Timeline;
        add_project(manager, Experiments::Table, Experiments::Project).await?;
        add_project(manager, Models::Table, Models::Project).await?;
        add_project(manager, Datasets::Table, Datasets::Project).await?;
        add_project(manager, Jobs::Table, Jobs::Project).await?;
        add_project(manager, Deployments::Table, Deployments::Project).await?;
        add_project(manager, Alerts::Table, Alerts::Project).await?;
        add_project(manager, Timeline::Table, Timeline::Project).await?;
        Ok(())
    }
}

/// Adds an indexed `project` column (existing rows: `default`) unless it is there.
async fn add_project<T: sea_orm::sea_query::Iden + Copy + 'static>(
    manager: &SchemaManager<'_>,
    table: T,
    column: T,
) -> Result<(), DbErr> {
    let table_name = table.to_string();
    if !manager.has_column(&table_name, &column.to_string()).await? {
        manager
            .alter_table(
                Table::alter()
                    .table(table)
                    .add_column(
                        ColumnDef::new(column)
                            .string_len(64)
                            .not_null()
                            .default(flywheel_runtime::scope::DEFAULT_PROJECT),
                    )
                    .to_owned(),
            )
            .await?;
    }
    manager
        .create_index(
            Index::create()
                .name(format!("{table_name}_project"))
                .table(table)
                .col(column)
                .if_not_exists()
                .to_owned(),
        )
        .await
}
