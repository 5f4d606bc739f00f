//! The scheduler's tables (prefixed `scheduler_`).

use sea_orm::DeriveIden;

/// Training jobs: one row per request id, the current attempt's state inline.
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
    Cpu,
    MemoryMb,
    Gpu,
    TimeoutSeconds,
    Pool,
    Runner,
    NotBefore,
    StartedAt,
    FinishedAt,
    Detail,
    ParentJobId,
    Trial,
    Result,
    CreatedAt,
    UpdatedAt,
}

/// Every attempt of every job, with what it used.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Attempts {
    #[sea_orm(iden = "scheduler_attempts")]
    Table,
    JobId,
    Attempt,
    Pool,
    Runner,
    Status,
    Error,
    DispatchedAt,
    StartedAt,
    FinishedAt,
    CpuSeconds,
    MemoryMbSeconds,
    GpuSeconds,
}

/// Runners as last heard from.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Runners {
    #[sea_orm(iden = "scheduler_runners")]
    Table,
    RunnerId,
    Pool,
    Cpu,
    MemoryMb,
    Gpu,
    Slots,
    Running,
    FirstSeen,
    LastSeen,
}

/// Per-project limits on jobs dispatched or running at once (0 = unlimited).
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Quotas {
    #[sea_orm(iden = "scheduler_quotas")]
    Table,
    Project,
    MaxJobs,
    Cpu,
    MemoryMb,
    Gpu,
    UpdatedAt,
}

/// Triggers that submit training requests: cron schedules and dataset subscriptions.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Triggers {
    #[sea_orm(iden = "scheduler_triggers")]
    Table,
    Name,
    Project,
    Kind,
    Cron,
    Dataset,
    Template,
    NextRunAt,
    LastFiredAt,
    Enabled,
    CreatedAt,
}
