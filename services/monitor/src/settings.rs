//! How a deployment is monitored (`PUT /api/v1/monitoring/{deployment}`): what its reference
//! is — the training dataset (default), a chosen dataset version, or a baseline window of its
//! own production traffic —, the drifted share that makes the dataset drift, and per-column
//! methods and thresholds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flywheel_drift::Method;
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use serde::{Deserialize, Serialize};

use crate::schema::Settings;
use crate::{AppState, MonitorError, Result};

/// Where a deployment's reference distribution comes from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReferenceChoice {
    /// The serving version's training dataset (from its lineage).
    #[default]
    Training,
    /// One registered dataset version.
    Dataset {
        /// Dataset name.
        dataset: String,
        /// Its version id.
        version: String,
    },
    /// The first `rows` predictions each version serves (a profile is built from them).
    Baseline {
        /// Predictions in the baseline.
        rows: u64,
    },
}

/// A column's method and threshold instead of the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnChoice {
    /// `psi`, `jensenshannon`, `hellinger` or `chisquare` (the methods a window's counts allow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Threshold for the verdict (the method's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

/// A deployment's monitoring settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringSettings {
    /// The reference.
    #[serde(default)]
    pub reference: ReferenceChoice,
    /// Share of drifted features that makes the dataset drifted (`service.drift_share` when
    /// absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_share: Option<f64>,
    /// Per column.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, ColumnChoice>,
}

/// Largest production baseline, so a window's memory stays bounded.
pub const MAX_BASELINE_ROWS: u64 = 100_000;

impl ColumnChoice {
    /// The method, checked to be one a streaming window can compute.
    pub fn method(&self) -> Result<Option<Method>> {
        let Some(name) = &self.method else {
            return Ok(None);
        };
        let method = Method::parse(name).ok_or_else(|| {
            MonitorError::Invalid(format!(
                "unknown method {name:?}: psi, jensenshannon, hellinger or chisquare"
            ))
        })?;
        if matches!(method, Method::Ks | Method::Wasserstein | Method::Z) {
            return Err(MonitorError::Invalid(format!(
                "{name} needs the raw values, and a streaming window keeps counts: use psi, \
                 jensenshannon, hellinger or chisquare (POST /api/v1/drift compares two samples \
                 with any method)"
            )));
        }
        Ok(Some(method))
    }
}

impl MonitoringSettings {
    /// Checks what the API cannot express in types.
    pub fn validate(&self) -> Result<()> {
        if let Some(share) = self.drift_share
            && !(0.0..=1.0).contains(&share)
        {
            return Err(MonitorError::Invalid(
                "drift_share: a share from 0 to 1".into(),
            ));
        }
        match &self.reference {
            ReferenceChoice::Baseline { rows } if !(1..=MAX_BASELINE_ROWS).contains(rows) => {
                return Err(MonitorError::Invalid(format!(
                    "reference.rows: from 1 to {MAX_BASELINE_ROWS}"
                )));
            }
            ReferenceChoice::Dataset { dataset, version }
                if dataset.is_empty() || version.is_empty() =>
            {
                return Err(MonitorError::Invalid(
                    "reference: a dataset and a version".into(),
                ));
            }
            _ => {}
        }
        for (column, choice) in &self.columns {
            let method = choice
                .method()
                .map_err(|e| MonitorError::Invalid(format!("columns.{column}: {e}")))?;
            if let Some(threshold) = choice.threshold {
                let p_value = method.is_some_and(Method::is_p_value);
                if !threshold.is_finite() || threshold <= 0.0 || (p_value && threshold >= 1.0) {
                    return Err(MonitorError::Invalid(format!(
                        "columns.{column}.threshold: a positive number{}",
                        if p_value { " below 1 (a p-value)" } else { "" }
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Bumped whenever settings change, so the reader reloads what depends on them.
#[derive(Debug, Default, Clone)]
pub struct Generation(Arc<AtomicU64>);

impl Generation {
    /// The current generation.
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// Stores a deployment's settings.
pub(crate) async fn put(
    state: &AppState,
    deployment: &str,
    settings: &MonitoringSettings,
) -> Result<()> {
    settings.validate()?;
    let body = serde_json::to_string(settings).map_err(|e| MonitorError::Invalid(e.to_string()))?;
    let mut upsert = Query::insert();
    upsert
        .into_table(Settings::Table)
        .columns([Settings::Deployment, Settings::Body])
        .values([deployment.into(), body.into()])
        .map_err(|e| MonitorError::Invalid(e.to_string()))?
        .on_conflict(
            OnConflict::column(Settings::Deployment)
                .update_column(Settings::Body)
                .to_owned(),
        );
    state.db.execute(&upsert).await?;
    state.generation.bump();
    Ok(())
}

/// A deployment's settings (the defaults when none were set).
pub(crate) async fn get<C: ConnectionTrait>(
    db: &C,
    deployment: &str,
) -> Result<MonitoringSettings> {
    let row = db
        .query_one(
            &Query::select()
                .column(Settings::Body)
                .from(Settings::Table)
                .and_where(Expr::col(Settings::Deployment).eq(deployment))
                .to_owned(),
        )
        .await?;
    match row {
        Some(row) => serde_json::from_str(&row.try_get::<String>("", "body")?)
            .map_err(|e| MonitorError::Invalid(format!("stored settings of {deployment}: {e}"))),
        None => Ok(MonitoringSettings::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<MonitoringSettings> {
        let settings: MonitoringSettings =
            serde_json::from_str(json).map_err(|e| MonitorError::Invalid(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    #[test]
    fn methods_that_need_raw_values_are_refused_with_the_alternatives() {
        let error = parse(r#"{"columns": {"age": {"method": "ks"}}}"#).expect_err("refused");
        assert!(
            error
                .to_string()
                .contains("columns.age: ks needs the raw values"),
            "{error}"
        );
        let error = parse(r#"{"columns": {"age": {"method": "chisquare", "threshold": 5}}}"#)
            .expect_err("refused");
        assert!(error.to_string().contains("below 1"), "{error}");
        assert!(parse(r#"{"reference": {"kind": "baseline", "rows": 0}}"#).is_err());
        assert!(parse(r#"{"drift_share": 1.5}"#).is_err());
        let ok = parse(
            r#"{"reference": {"kind": "dataset", "dataset": "d", "version": "v"},
                "columns": {"age": {"method": "hellinger", "threshold": 0.2}}}"#,
        )
        .expect("valid");
        assert_eq!(
            ok.columns["age"].method().expect("valid"),
            Some(Method::Hellinger)
        );
    }
}
