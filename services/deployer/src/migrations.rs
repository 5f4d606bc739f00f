//! The deployer's migrations, recorded in `deployer_migrations`.

use sea_orm::DbErr;
use sea_orm::sea_query::{ColumnDef, Index, Table};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager, async_trait};

use crate::schema::{Aliases, Deployments, RolloutStats, Versions};

flywheel_db::migrator!(
    Migrator,
    "deployer",
    [
        flywheel_db::inbox::CreateInbox::new("deployer"),
        flywheel_runtime::outbox::CreateOutbox::new("deployer"),
        CreateDeployments,
        RememberRollbacks,
        PublicInference,
        flywheel_db::leases::CreateLeases::new("deployer"),
        SharedRoutes,
    ]
);

/// What every replica serves, as the rollout leader decided it (the candidate beside the
/// stable `serving_version`, its share, and a generation bumped on every change), and each
/// replica's numbers for the rollout step in progress.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SharedRoutes;

impl MigrationName for SharedRoutes {
    fn name(&self) -> &str {
        "m0005_deployer_shared_routes"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for SharedRoutes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for column in [
            ColumnDef::new(Deployments::CandidateVersion)
                .integer()
                .null()
                .to_owned(),
            ColumnDef::new(Deployments::CandidatePercent)
                .integer()
                .not_null()
                .default(0)
                .to_owned(),
            ColumnDef::new(Deployments::CandidateShadow)
                .boolean()
                .not_null()
                .default(false)
                .to_owned(),
            ColumnDef::new(Deployments::RouteGeneration)
                .big_integer()
                .not_null()
                .default(0)
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Deployments::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(RolloutStats::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(RolloutStats::Deployment)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RolloutStats::Replica)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RolloutStats::Generation)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(RolloutStats::Numbers).text().not_null())
                    .col(
                        ColumnDef::new(RolloutStats::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(RolloutStats::Deployment)
                            .col(RolloutStats::Replica),
                    )
                    .to_owned(),
            )
            .await
    }
}

/// Whether a deployment's inference endpoints answer callers without a token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublicInference;

impl MigrationName for PublicInference {
    fn name(&self) -> &str {
        "m0004_deployer_public_inference"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for PublicInference {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Deployments::Table)
                    .add_column(
                        ColumnDef::new(Deployments::PublicInference)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await
    }
}

/// The version a deployment rolled back from, so it is not rolled out again until its alias
/// moves or the deployment is replaced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RememberRollbacks;

impl MigrationName for RememberRollbacks {
    fn name(&self) -> &str {
        "m0003_deployer_remember_rollbacks"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for RememberRollbacks {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Deployments::Table)
                    .add_column(
                        ColumnDef::new(Deployments::RolledBackVersion)
                            .integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }
}

/// Known versions and deployments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateDeployments;

impl MigrationName for CreateDeployments {
    fn name(&self) -> &str {
        "m0002_deployer_create_deployments"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateDeployments {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Versions::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Versions::Model).string_len(250).not_null())
                    .col(ColumnDef::new(Versions::Version).integer().not_null())
                    .col(ColumnDef::new(Versions::PackageUri).text().not_null())
                    .col(ColumnDef::new(Versions::Flavor).string_len(64).not_null())
                    .primary_key(Index::create().col(Versions::Model).col(Versions::Version))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Aliases::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Aliases::Model).string_len(250).not_null())
                    .col(ColumnDef::new(Aliases::Alias).string_len(128).not_null())
                    .col(ColumnDef::new(Aliases::Version).integer().not_null())
                    .primary_key(Index::create().col(Aliases::Model).col(Aliases::Alias))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Deployments::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Deployments::Name)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Deployments::Project)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Deployments::Model)
                            .string_len(250)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Deployments::Alias).string_len(128).null())
                    .col(ColumnDef::new(Deployments::Version).integer().null())
                    .col(ColumnDef::new(Deployments::ServingVersion).integer().null())
                    .col(ColumnDef::new(Deployments::Strategy).text().not_null())
                    .col(ColumnDef::new(Deployments::Slo).text().not_null())
                    .col(
                        ColumnDef::new(Deployments::Status)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Deployments::Detail).text().not_null())
                    .col(
                        ColumnDef::new(Deployments::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }
}
