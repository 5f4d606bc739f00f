//! The scheduler's migrations, recorded in `scheduler_migrations`.

use sea_orm::DbErr;
use sea_orm::sea_query::{ColumnDef, Index, Table};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager, async_trait};

use crate::schema::{Attempts, Jobs, Quotas, Runners, Triggers};

flywheel_db::migrator!(
    Migrator,
    "scheduler",
    [
        flywheel_db::inbox::CreateInbox::new("scheduler"),
        flywheel_runtime::outbox::CreateOutbox::new("scheduler"),
        CreateJobs,
    ]
);

/// Jobs, attempts, runners, quotas and triggers.
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
                    .col(ColumnDef::new(Jobs::Cpu).double().not_null())
                    .col(ColumnDef::new(Jobs::MemoryMb).big_integer().not_null())
                    .col(ColumnDef::new(Jobs::Gpu).integer().not_null())
                    .col(
                        ColumnDef::new(Jobs::TimeoutSeconds)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Jobs::Pool).string_len(128).null())
                    .col(ColumnDef::new(Jobs::Runner).string_len(128).null())
                    .col(ColumnDef::new(Jobs::NotBefore).big_integer().not_null())
                    .col(ColumnDef::new(Jobs::StartedAt).big_integer().null())
                    .col(ColumnDef::new(Jobs::FinishedAt).big_integer().null())
                    .col(ColumnDef::new(Jobs::Detail).text().not_null())
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
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Attempts::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Attempts::JobId).string_len(36).not_null())
                    .col(ColumnDef::new(Attempts::Attempt).integer().not_null())
                    .col(ColumnDef::new(Attempts::Pool).string_len(128).not_null())
                    .col(ColumnDef::new(Attempts::Runner).string_len(128).null())
                    .col(ColumnDef::new(Attempts::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Attempts::Error).text().not_null())
                    .col(
                        ColumnDef::new(Attempts::DispatchedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Attempts::StartedAt).big_integer().null())
                    .col(ColumnDef::new(Attempts::FinishedAt).big_integer().null())
                    .col(ColumnDef::new(Attempts::CpuSeconds).double().not_null())
                    .col(
                        ColumnDef::new(Attempts::MemoryMbSeconds)
                            .double()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Attempts::GpuSeconds).double().not_null())
                    .primary_key(Index::create().col(Attempts::JobId).col(Attempts::Attempt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Runners::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Runners::RunnerId)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Runners::Pool).string_len(128).not_null())
                    .col(ColumnDef::new(Runners::Cpu).double().not_null())
                    .col(ColumnDef::new(Runners::MemoryMb).big_integer().not_null())
                    .col(ColumnDef::new(Runners::Gpu).integer().not_null())
                    .col(ColumnDef::new(Runners::Slots).integer().not_null())
                    .col(ColumnDef::new(Runners::Running).text().not_null())
                    .col(ColumnDef::new(Runners::FirstSeen).big_integer().not_null())
                    .col(ColumnDef::new(Runners::LastSeen).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Quotas::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Quotas::Project)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Quotas::MaxJobs).integer().not_null())
                    .col(ColumnDef::new(Quotas::Cpu).double().not_null())
                    .col(ColumnDef::new(Quotas::MemoryMb).big_integer().not_null())
                    .col(ColumnDef::new(Quotas::Gpu).integer().not_null())
                    .col(ColumnDef::new(Quotas::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Triggers::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Triggers::Name)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Triggers::Project).string_len(128).not_null())
                    .col(ColumnDef::new(Triggers::Kind).string_len(16).not_null())
                    .col(ColumnDef::new(Triggers::Cron).string_len(128).null())
                    .col(ColumnDef::new(Triggers::Dataset).string_len(250).null())
                    .col(ColumnDef::new(Triggers::Template).text().not_null())
                    .col(ColumnDef::new(Triggers::NextRunAt).big_integer().null())
                    .col(ColumnDef::new(Triggers::LastFiredAt).big_integer().null())
                    .col(ColumnDef::new(Triggers::Enabled).boolean().not_null())
                    .col(ColumnDef::new(Triggers::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }
}
