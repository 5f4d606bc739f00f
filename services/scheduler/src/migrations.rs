//! The scheduler's migrations, recorded in `scheduler_migrations`.

use sea_orm::DbErr;
use sea_orm::sea_query::{ColumnDef, Index, Table};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager, async_trait};

use crate::schema::Jobs;

flywheel_db::migrator!(
    Migrator,
    "scheduler",
    [
        flywheel_db::inbox::CreateInbox::new("scheduler"),
        flywheel_runtime::outbox::CreateOutbox::new("scheduler"),
        CreateJobs,
    ]
);

/// The job table: one row per training request id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateJobs;

impl MigrationName for CreateJobs {
    fn name(&self) -> &str {
        "m0002_scheduler_create_jobs"
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
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Jobs::RequestId)
                            .string_len(250)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Jobs::Project).string_len(128).not_null())
                    .col(ColumnDef::new(Jobs::Model).string_len(250).not_null())
                    .col(ColumnDef::new(Jobs::Request).text().not_null())
                    .col(ColumnDef::new(Jobs::Priority).integer().not_null())
                    .col(ColumnDef::new(Jobs::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Jobs::Attempts).integer().not_null())
                    .col(ColumnDef::new(Jobs::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Jobs::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("scheduler_jobs_queue_order")
                    .table(Jobs::Table)
                    .col(Jobs::Status)
                    .col(Jobs::Priority)
                    .col(Jobs::CreatedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}
