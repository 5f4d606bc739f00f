//! The scheduler's Prometheus metrics: transitions, dispatches, queue depth and what training
//! costs per project and model (resource-seconds, from the database so restarts keep totals).

use metrics::{counter, gauge};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};

use crate::jobs::Job;
use crate::schema::{Attempts, Jobs};
use crate::{AppState, Result};

pub(crate) fn transition(status: &'static str) {
    counter!("flywheel_scheduler_transitions_total", "to" => status).increment(1);
}

pub(crate) fn dispatched(count: usize) {
    counter!("flywheel_scheduler_dispatched_total").increment(u64::try_from(count).unwrap_or(0));
}

pub(crate) fn started(job: &Job) {
    let waited = Ord::max(crate::now_millis() - job.created_at, 0);
    #[allow(clippy::cast_precision_loss)]
    metrics::histogram!("flywheel_scheduler_request_to_running_seconds")
        .record(waited as f64 / 1000.0);
}

/// Resource-seconds per project and model, summed over every attempt.
pub(crate) async fn usage_by(state: &AppState, group: &str) -> Result<Vec<crate::api::UsageRow>> {
    let column = if group == "model" {
        Jobs::Model
    } else {
        Jobs::Project
    };
    let rows = state
        .db
        .query_all(
            &Query::select()
                .expr_as(Expr::col((Jobs::Table, column)), Alias::new("key"))
                .expr_as(
                    Expr::col((Jobs::Table, Jobs::Project)).max(),
                    Alias::new("project"),
                )
                .expr_as(
                    Expr::col((Attempts::Table, Attempts::CpuSeconds)).sum(),
                    Alias::new("cpu_seconds"),
                )
                .expr_as(
                    Expr::col((Attempts::Table, Attempts::MemoryMbSeconds)).sum(),
                    Alias::new("memory_mb_seconds"),
                )
                .expr_as(
                    Expr::col((Attempts::Table, Attempts::GpuSeconds)).sum(),
                    Alias::new("gpu_seconds"),
                )
                .expr_as(
                    Expr::col((Attempts::Table, Attempts::Attempt)).count(),
                    Alias::new("attempts"),
                )
                .from(Attempts::Table)
                .inner_join(
                    Jobs::Table,
                    Expr::col((Jobs::Table, Jobs::JobId))
                        .equals((Attempts::Table, Attempts::JobId)),
                )
                .group_by_col((Jobs::Table, column))
                .to_owned(),
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(crate::api::UsageRow {
                key: row.try_get("", "key")?,
                project: row.try_get("", "project")?,
                cpu_seconds: row
                    .try_get::<Option<f64>>("", "cpu_seconds")?
                    .unwrap_or(0.0),
                memory_mb_seconds: row
                    .try_get::<Option<f64>>("", "memory_mb_seconds")?
                    .unwrap_or(0.0),
                gpu_seconds: row
                    .try_get::<Option<f64>>("", "gpu_seconds")?
                    .unwrap_or(0.0),
                attempts: row.try_get("", "attempts")?,
            })
        })
        .collect()
}

/// Re-exports queue depth by state and resource-seconds per project and model as gauges.
pub(crate) async fn refresh(state: &AppState) -> Result<()> {
    for row in usage_by(state, "model").await? {
        for (resource, value) in [
            ("cpu", row.cpu_seconds),
            ("memory_mb", row.memory_mb_seconds),
            ("gpu", row.gpu_seconds),
        ] {
            gauge!(
                "flywheel_training_resource_seconds",
                "project" => row.project.clone(),
                "model" => row.key.clone(),
                "resource" => resource
            )
            .set(value);
        }
    }
    let rows = state
        .db
        .query_all(
            &Query::select()
                .column(Jobs::Status)
                .expr_as(Expr::col(Jobs::JobId).count(), Alias::new("n"))
                .from(Jobs::Table)
                .group_by_col(Jobs::Status)
                .to_owned(),
        )
        .await?;
    for row in rows {
        let status: String = row.try_get("", "status")?;
        let n: i64 = row.try_get("", "n")?;
        #[allow(clippy::cast_precision_loss)]
        gauge!("flywheel_scheduler_jobs", "status" => status).set(n as f64);
    }
    Ok(())
}
