//! A drift retraining's data: the deployment's latest labelled production rows (from the join
//! store), pushed to the registry as a version of `<training dataset>-production` — inputs and
//! the ground truth under the training target's name — so the retrained model learns what
//! production looks like now. Too few labelled rows, or no known target, and the retraining
//! uses the training dataset.

use flywheel_events::payloads::DatasetRef;
use sea_orm::DatabaseTransaction;

use crate::catalog::TrainingData;
use crate::windows::Span;
use crate::{AppState, MonitorError, Result};

/// Exports the labelled rows and returns the dataset version, or `None` when there are too few
/// (or the target is unknown).
pub(crate) async fn production_rows(
    txn: &DatabaseTransaction,
    state: &AppState,
    span: &Span,
    training: &TrainingData,
) -> Result<Option<DatasetRef>> {
    let Some(target) = &training.target else {
        return Ok(None);
    };
    let rows = crate::joins::labelled_rows(txn, &span.deployment, state.export.rows).await?;
    if (rows.len() as u64) < state.export.min_rows {
        tracing::info!(
            deployment = span.deployment,
            labelled = rows.len(),
            needed = state.export.min_rows,
            "too few labelled production rows to export; retraining on the training dataset"
        );
        return Ok(None);
    }
    let name = format!("{}-production", training.dataset);
    let csv = crate::joins::to_csv(&rows, target);
    let url = format!(
        "{}/api/v1/datasets/{name}/versions?format=csv",
        state.export.registry_url.trim_end_matches('/')
    );
    let response = state
        .http
        .post(&url)
        .header("content-type", "text/csv")
        .header("x-flywheel-actor", "monitor")
        .headers(state.export.credentials.clone())
        // The exported rows are the deployment's project's data.
        .header(
            flywheel_runtime::scope::PROJECT_HEADER,
            state.projects.of(&span.deployment),
        )
        .body(csv)
        .send()
        .await
        .map_err(|e| MonitorError::Delivery(format!("registry at {url}: {e}")))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|e| MonitorError::Delivery(format!("registry at {url}: {e}")))?;
    if !status.is_success() {
        return Err(MonitorError::Delivery(format!(
            "registry refused the export ({status}): {}",
            body["message"].as_str().unwrap_or_default()
        )));
    }
    let version = body["version"]
        .as_str()
        .ok_or_else(|| MonitorError::Delivery("registry answered without a version".into()))?;
    tracing::info!(
        dataset = name,
        version,
        rows = rows.len(),
        "production rows exported for retraining"
    );
    metrics::counter!("flywheel_monitor_rows_exported_total").increment(rows.len() as u64);
    Ok(Some(DatasetRef {
        name,
        version: version.to_owned(),
    }))
}
