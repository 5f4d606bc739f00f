//! What the runner asks the registry: where a dataset version is stored, and the production
//! version's metrics for no-regression gates.

use std::collections::BTreeMap;

use bytes::Bytes;
use flywheel_events::payloads::DatasetRef;
use serde::Deserialize;

use crate::{TrainFailure, Workshop};

#[derive(Deserialize)]
struct DatasetVersion {
    uri: String,
    sha256: String,
    format: String,
}

/// A dataset version's bytes (verified) and format.
pub(crate) async fn dataset(
    workshop: &Workshop,
    dataset: &DatasetRef,
) -> Result<(Bytes, String), TrainFailure> {
    let url = format!(
        "{}/api/v1/datasets/{}/versions/{}",
        workshop.config.registry_url, dataset.name, dataset.version
    );
    let response = workshop
        .http
        .get(&url)
        .send()
        .await
        .map_err(|e| TrainFailure::retryable(format!("registry unreachable at {url}: {e}")))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(TrainFailure::invalid(format!(
            "unknown dataset {}@{}",
            dataset.name, dataset.version
        )));
    }
    if !response.status().is_success() {
        return Err(TrainFailure::retryable(format!(
            "registry answered {} for {url}",
            response.status()
        )));
    }
    let version: DatasetVersion = response
        .json()
        .await
        .map_err(|e| TrainFailure::retryable(format!("registry answer unreadable: {e}")))?;
    let key = workshop.artifacts.key_of(&version.uri).ok_or_else(|| {
        TrainFailure::invalid(format!(
            "dataset stored at {} is outside this runner's artifact store {}",
            version.uri,
            workshop.artifacts.uri("")
        ))
    })?;
    let bytes = workshop
        .artifacts
        .get_verified(key, &version.sha256)
        .await
        .map_err(|e| TrainFailure::retryable(format!("reading the dataset: {e}")))?;
    Ok((bytes, version.format))
}

#[derive(Deserialize)]
struct AliasAnswer {
    model_version: AliasVersion,
}

#[derive(Deserialize)]
struct AliasVersion {
    version: String,
}

#[derive(Deserialize)]
struct Lineage {
    #[serde(default)]
    metrics: BTreeMap<String, f64>,
}

/// Metrics of the model's `production` version, if it has one.
pub(crate) async fn production_metrics(
    workshop: &Workshop,
    model: &str,
) -> Result<Option<BTreeMap<String, f64>>, TrainFailure> {
    let base = &workshop.config.registry_url;
    let url = reqwest::Url::parse_with_params(
        &format!("{base}/api/2.0/mlflow/registered-models/alias"),
        &[("name", model), ("alias", "production")],
    )
    .map_err(|e| TrainFailure::invalid(format!("registry url: {e}")))?;
    let response = workshop
        .http
        .get(url)
        .send()
        .await
        .map_err(|e| TrainFailure::retryable(format!("registry unreachable: {e}")))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !response.status().is_success() {
        return Err(TrainFailure::retryable(format!(
            "registry answered {} for the production alias",
            response.status()
        )));
    }
    let alias: AliasAnswer = response
        .json()
        .await
        .map_err(|e| TrainFailure::retryable(format!("registry answer unreadable: {e}")))?;
    let lineage: Lineage = workshop
        .http
        .get(format!(
            "{base}/api/v1/models/{model}/versions/{}/lineage",
            alias.model_version.version
        ))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| TrainFailure::retryable(format!("registry: {e}")))?
        .json()
        .await
        .map_err(|e| TrainFailure::retryable(format!("registry answer unreadable: {e}")))?;
    Ok(Some(lineage.metrics))
}
