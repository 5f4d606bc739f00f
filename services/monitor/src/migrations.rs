//! The monitor's migrations, recorded in `monitor_migrations`.

use sea_orm::DbErr;
use sea_orm::sea_query::{ColumnDef, Index, IntoIden, Table};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager, async_trait};

use crate::schema::{
    Alerts, BaselineProfiles, Baselines, Checkpoints, Datasets, Deliveries, Joinable, Policies,
    Reports, Retrainings, Rules, Settings, Versions, Webhooks,
};

flywheel_db::migrator!(
    Migrator,
    "monitor",
    [
        flywheel_db::inbox::CreateInbox::new("monitor"),
        CreateDatasets,
        flywheel_runtime::outbox::CreateOutbox::new("monitor"),
        CreateMonitoring,
        CreateWebhooks,
        CreateBaselines,
        CreateRules,
        CreateSettingsAndJoins,
        crate::projects::CreateDeploymentProjects,
        flywheel_db::leases::CreateLeases::new("monitor"),
    ]
);

/// Known dataset versions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateDatasets;

impl MigrationName for CreateDatasets {
    fn name(&self) -> &str {
        "m0002_monitor_create_datasets"
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
                    .col(ColumnDef::new(Datasets::Dataset).string_len(250).not_null())
                    .col(ColumnDef::new(Datasets::Version).string_len(128).not_null())
                    .col(ColumnDef::new(Datasets::Uri).text().not_null())
                    .col(ColumnDef::new(Datasets::Format).string_len(32).not_null())
                    .col(ColumnDef::new(Datasets::Sha256).string_len(64).not_null())
                    .col(ColumnDef::new(Datasets::ProfileUri).text().null())
                    .primary_key(
                        Index::create()
                            .col(Datasets::Dataset)
                            .col(Datasets::Version),
                    )
                    .to_owned(),
            )
            .await
    }
}

fn text(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).text().not_null().to_owned()
}

fn big(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).big_integer().not_null().to_owned()
}

/// Versions, the reader's checkpoint, reports, alerts, policies and retrainings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateMonitoring;

impl MigrationName for CreateMonitoring {
    fn name(&self) -> &str {
        "m0004_monitor_create_monitoring"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateMonitoring {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Versions::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Versions::Model).string_len(250).not_null())
                    .col(ColumnDef::new(Versions::Version).integer().not_null())
                    .col(text(Versions::Dataset))
                    .col(text(Versions::DatasetVersion))
                    .col(ColumnDef::new(Versions::Target).text().null())
                    .col(ColumnDef::new(Versions::Metrics).text().null())
                    .primary_key(Index::create().col(Versions::Model).col(Versions::Version))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Checkpoints::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Checkpoints::Reader)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(big(Checkpoints::Sequence))
                    .col(text(Checkpoints::Windows))
                    .col(big(Checkpoints::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Reports::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Reports::ReportId)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Reports::Deployment)
                            .string_len(250)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Reports::Model).string_len(250).not_null())
                    .col(ColumnDef::new(Reports::Version).integer().not_null())
                    .col(big(Reports::WindowStart))
                    .col(big(Reports::WindowEnd))
                    .col(big(Reports::Count))
                    .col(ColumnDef::new(Reports::DatasetDrift).boolean().not_null())
                    .col(text(Reports::Body))
                    .col(big(Reports::CreatedAt))
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
                    .col(ColumnDef::new(Alerts::Rule).string_len(128).not_null())
                    .col(
                        ColumnDef::new(Alerts::Deployment)
                            .string_len(250)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alerts::Model).string_len(250).not_null())
                    .col(ColumnDef::new(Alerts::Severity).string_len(32).not_null())
                    .col(ColumnDef::new(Alerts::Status).string_len(32).not_null())
                    .col(text(Alerts::Message))
                    .col(ColumnDef::new(Alerts::ReportId).string_len(128).null())
                    .col(big(Alerts::RaisedAt))
                    .col(ColumnDef::new(Alerts::ResolvedAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
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
                    .col(text(Policies::Body))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Retrainings::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Retrainings::RequestId)
                            .string_len(250)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Retrainings::Model)
                            .string_len(250)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Retrainings::AlertId)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(big(Retrainings::RequestedAt))
                    .to_owned(),
            )
            .await
    }
}

/// Webhooks and their deliveries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateWebhooks;

impl MigrationName for CreateWebhooks {
    fn name(&self) -> &str {
        "m0005_monitor_create_webhooks"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateWebhooks {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Webhooks::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Webhooks::Name)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(text(Webhooks::Url))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Deliveries::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Deliveries::EventId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Deliveries::Webhook)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(big(Deliveries::DeliveredAt))
                    .primary_key(
                        Index::create()
                            .col(Deliveries::EventId)
                            .col(Deliveries::Webhook),
                    )
                    .to_owned(),
            )
            .await
    }
}

/// Latency baselines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateBaselines;

impl MigrationName for CreateBaselines {
    fn name(&self) -> &str {
        "m0006_monitor_create_baselines"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateBaselines {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Baselines::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Baselines::Deployment)
                            .string_len(250)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Baselines::Version).integer().not_null())
                    .col(ColumnDef::new(Baselines::LatencyUs).double().not_null())
                    .col(big(Baselines::Windows))
                    .primary_key(
                        Index::create()
                            .col(Baselines::Deployment)
                            .col(Baselines::Version),
                    )
                    .to_owned(),
            )
            .await
    }
}

/// Alert rules.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateRules;

impl MigrationName for CreateRules {
    fn name(&self) -> &str {
        "m0007_monitor_create_rules"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateRules {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Rules::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Rules::Name)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(text(Rules::Body))
                    .to_owned(),
            )
            .await
    }
}

/// Monitoring settings, production baselines, the join store and learned error rates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateSettingsAndJoins;

impl MigrationName for CreateSettingsAndJoins {
    fn name(&self) -> &str {
        "m0008_monitor_create_settings_and_joins"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateSettingsAndJoins {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Settings::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Settings::Deployment)
                            .string_len(250)
                            .not_null()
                            .primary_key(),
                    )
                    .col(text(Settings::Body))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BaselineProfiles::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(BaselineProfiles::Deployment)
                            .string_len(250)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(BaselineProfiles::Version)
                            .integer()
                            .not_null(),
                    )
                    .col(text(BaselineProfiles::Profile))
                    .col(big(BaselineProfiles::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(BaselineProfiles::Deployment)
                            .col(BaselineProfiles::Version),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Joinable::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Joinable::RequestId)
                            .string_len(250)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Joinable::Deployment)
                            .string_len(250)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Joinable::Model).string_len(250).not_null())
                    .col(ColumnDef::new(Joinable::Version).integer().not_null())
                    .col(text(Joinable::Inputs))
                    .col(text(Joinable::Predicted))
                    .col(ColumnDef::new(Joinable::Score).double().null())
                    .col(big(Joinable::LoggedAt))
                    .col(ColumnDef::new(Joinable::GroundTruth).text().null())
                    .col(ColumnDef::new(Joinable::LabelledAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("monitor_joinable_by_model")
                    .table(Joinable::Table)
                    .col(Joinable::Model)
                    .col(Joinable::LabelledAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("monitor_joinable_by_time")
                    .table(Joinable::Table)
                    .col(Joinable::LoggedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Baselines::Table)
                    .add_column(
                        ColumnDef::new(Baselines::ErrorRate)
                            .double()
                            .not_null()
                            .default(0.0),
                    )
                    .to_owned(),
            )
            .await
    }
}
