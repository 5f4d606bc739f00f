//! Built-in trainers (crates/train) on the dataset's rows.

use bytes::Bytes;
use flywheel_artifacts::package::PackageLineage;
use flywheel_events::payloads::TrainingRequested;
use flywheel_train::TrainError;

use crate::TrainFailure;
use crate::work::{Output, Progress};

/// Trains `request.trainer.name` on the dataset bytes.
pub(crate) async fn train(
    request: &TrainingRequested,
    bytes: Bytes,
    format: &str,
    progress: &Progress,
) -> Result<Output, TrainFailure> {
    let format = flywheel_data::Format::detect(Some(format), &bytes)
        .map_err(|e| TrainFailure::invalid(format!("dataset: {e}")))?;
    let table = flywheel_data::read(bytes, format)
        .map_err(|e| TrainFailure::invalid(format!("dataset: {e}")))?;
    let algorithm = request.trainer.name.clone();
    let params = request.trainer.params.clone();
    let reporter = progress.clone();
    let trained = tokio::task::spawn_blocking(move || {
        flywheel_train::train(&table, &algorithm, &params, &mut |fraction, stage| {
            reporter.report(fraction, stage, false);
        })
    })
    .await
    .map_err(|e| TrainFailure::retryable(format!("the trainer panicked: {e}")))?
    .map_err(|e| match e {
        TrainError::Fit(_) => TrainFailure::retryable(e.to_string()),
        _ => TrainFailure::invalid(e.to_string()),
    })?;
    progress.report_metrics(1.0, "packaging", trained.metrics.clone(), true);
    let seed = trained
        .params
        .get("seed")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    Ok(Output {
        flavor: "flywheel".into(),
        model_file: "model.json".into(),
        files: vec![("model.json".into(), Bytes::from(trained.model_bytes()))],
        metrics: trained.metrics.clone(),
        signature: trained.signature.clone(),
        lineage: PackageLineage {
            dataset: Some(request.dataset.clone()),
            trainer: format!("builtin:{}", request.trainer.name),
            params: trained.params,
            seed,
            code_ref: Some(format!("flywheel-train {}", env!("CARGO_PKG_VERSION"))),
        },
    })
}
