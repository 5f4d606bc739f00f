//! The scheduler's tables (prefixed `scheduler_`).

use sea_orm::DeriveIden;

/// Training jobs.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Jobs {
    #[sea_orm(iden = "scheduler_jobs")]
    Table,
    JobId,
    RequestId,
    Project,
    Model,
    Request,
    Priority,
    Status,
    Attempts,
    CreatedAt,
    UpdatedAt,
}
