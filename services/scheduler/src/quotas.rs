//! Per-project quotas on what may be dispatched or running at once.

use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use serde::{Deserialize, Serialize};

use crate::schema::{Jobs, Quotas};
use crate::{Result, SchedulerError};

/// Limits of one project; 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Quota {
    /// Jobs dispatched or running at once.
    #[serde(default)]
    pub max_jobs: u32,
    /// CPU cores in use at once.
    #[serde(default)]
    pub cpu: f64,
    /// Memory in MiB in use at once.
    #[serde(default)]
    pub memory_mb: u64,
    /// GPUs in use at once.
    #[serde(default)]
    pub gpu: u32,
}

/// What a project has dispatched or running.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Usage {
    /// Jobs.
    pub jobs: u32,
    /// CPU cores.
    pub cpu: f64,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// GPUs.
    pub gpu: u32,
}

impl Quota {
    /// Whether `usage` plus one more job asking for `cpu`/`memory_mb`/`gpu` stays within.
    pub fn admits(&self, usage: &Usage, cpu: f64, memory_mb: u64, gpu: u32) -> bool {
        (self.max_jobs == 0 || usage.jobs < self.max_jobs)
            && (self.cpu == 0.0 || usage.cpu + cpu <= self.cpu + 1e-9)
            && (self.memory_mb == 0 || usage.memory_mb + memory_mb <= self.memory_mb)
            && (self.gpu == 0 || usage.gpu + gpu <= self.gpu)
    }

    fn validate(&self) -> Result<()> {
        if !(self.cpu.is_finite() && self.cpu >= 0.0) {
            return Err(SchedulerError::Invalid(
                "quota cpu must be a finite number >= 0".into(),
            ));
        }
        Ok(())
    }
}

/// The project's quota, or `default` when it has none of its own.
pub(crate) async fn get<C: ConnectionTrait>(
    db: &C,
    project: &str,
    default: Quota,
) -> Result<Quota> {
    let row = db
        .query_one(
            &Query::select()
                .columns([Quotas::MaxJobs, Quotas::Cpu, Quotas::MemoryMb, Quotas::Gpu])
                .from(Quotas::Table)
                .and_where(Expr::col(Quotas::Project).eq(project))
                .to_owned(),
        )
        .await?;
    let Some(row) = row else {
        return Ok(default);
    };
    Ok(Quota {
        max_jobs: u32::try_from(row.try_get::<i32>("", "max_jobs")?).unwrap_or(0),
        cpu: row.try_get("", "cpu")?,
        memory_mb: u64::try_from(row.try_get::<i64>("", "memory_mb")?).unwrap_or(0),
        gpu: u32::try_from(row.try_get::<i32>("", "gpu")?).unwrap_or(0),
    })
}

/// Sets a project's quota.
pub(crate) async fn put<C: ConnectionTrait>(db: &C, project: &str, quota: Quota) -> Result<()> {
    quota.validate()?;
    flywheel_events::subjects::check_token(project)
        .map_err(|e| SchedulerError::Invalid(e.to_string()))?;
    db.execute(
        &Query::insert()
            .into_table(Quotas::Table)
            .columns([
                Quotas::Project,
                Quotas::MaxJobs,
                Quotas::Cpu,
                Quotas::MemoryMb,
                Quotas::Gpu,
                Quotas::UpdatedAt,
            ])
            .values([
                project.into(),
                i32::try_from(quota.max_jobs).unwrap_or(i32::MAX).into(),
                quota.cpu.into(),
                i64::try_from(quota.memory_mb).unwrap_or(i64::MAX).into(),
                i32::try_from(quota.gpu).unwrap_or(i32::MAX).into(),
                crate::now_millis().into(),
            ])
            .map_err(|e| SchedulerError::Invalid(e.to_string()))?
            .on_conflict(
                OnConflict::column(Quotas::Project)
                    .update_columns([
                        Quotas::MaxJobs,
                        Quotas::Cpu,
                        Quotas::MemoryMb,
                        Quotas::Gpu,
                        Quotas::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// What `project` has dispatched or running now.
pub(crate) async fn usage<C: ConnectionTrait>(db: &C, project: &str) -> Result<Usage> {
    let rows = db
        .query_all(
            &Query::select()
                .columns([Jobs::Cpu, Jobs::MemoryMb, Jobs::Gpu])
                .from(Jobs::Table)
                .and_where(Expr::col(Jobs::Project).eq(project))
                .and_where(Expr::col(Jobs::Status).is_in(["dispatched", "running"]))
                .to_owned(),
        )
        .await?;
    let mut usage = Usage::default();
    for row in rows {
        usage.jobs += 1;
        usage.cpu += row.try_get::<f64>("", "cpu")?;
        usage.memory_mb += u64::try_from(row.try_get::<i64>("", "memory_mb")?).unwrap_or(0);
        usage.gpu += u32::try_from(row.try_get::<i32>("", "gpu")?).unwrap_or(0);
    }
    Ok(usage)
}
