//! A baseline window of production traffic as the reference (`"reference": {"kind":
//! "baseline", "rows": N}`): the first N predictions each deployment version serves are kept
//! (in the reader's checkpoint), then profiled like a dataset — inputs and the `prediction`
//! column — and the profile is stored; later windows are judged against it.

use std::collections::BTreeMap;

use bytes::Bytes;
use flywheel_data::{Format, Profile};
use flywheel_events::payloads::PredictionLogged;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema::BaselineProfiles;
use crate::windows::PREDICTION;
use crate::{MonitorError, Result};

/// Predictions gathered for a version's baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BaselineRows {
    /// Predictions wanted.
    pub wanted: u64,
    /// Inputs and the prediction of each, as served.
    pub rows: Vec<(BTreeMap<String, Value>, Value)>,
}

impl BaselineRows {
    /// An empty baseline wanting `wanted` predictions.
    pub(crate) fn new(wanted: u64) -> Self {
        Self {
            wanted,
            rows: Vec::new(),
        }
    }

    /// Keeps an answered prediction until the baseline is full.
    pub(crate) fn add(&mut self, prediction: &PredictionLogged) {
        if self.is_full() || prediction.error.is_some() || prediction.shadow {
            return;
        }
        let predicted = prediction
            .outputs
            .get(PREDICTION)
            .cloned()
            .unwrap_or(Value::Null);
        self.rows.push((prediction.inputs.clone(), predicted));
    }

    /// Whether it has all its predictions.
    pub(crate) fn is_full(&self) -> bool {
        self.rows.len() as u64 >= self.wanted
    }

    /// The rows' profile, computed as the registry profiles a dataset.
    pub(crate) fn profile(&self) -> Result<Profile> {
        let csv = crate::joins::to_csv(&self.rows, PREDICTION);
        let table = flywheel_data::read(Bytes::from(csv.into_bytes()), Format::Csv)
            .map_err(|e| MonitorError::Invalid(format!("baseline: {e}")))?;
        Ok(flywheel_data::profile(&table))
    }
}

/// Stores a version's baseline profile.
pub(crate) async fn store(
    txn: &DatabaseTransaction,
    deployment: &str,
    version: u32,
    profile: &Profile,
    now: i64,
) -> Result<()> {
    let body = serde_json::to_string(profile).map_err(|e| MonitorError::Invalid(e.to_string()))?;
    let mut insert = Query::insert();
    insert
        .into_table(BaselineProfiles::Table)
        .columns([
            BaselineProfiles::Deployment,
            BaselineProfiles::Version,
            BaselineProfiles::Profile,
            BaselineProfiles::CreatedAt,
        ])
        .values([
            deployment.into(),
            i32::try_from(version).unwrap_or(i32::MAX).into(),
            body.into(),
            now.into(),
        ])
        .map_err(|e| MonitorError::Invalid(e.to_string()))?
        .on_conflict(
            OnConflict::columns([BaselineProfiles::Deployment, BaselineProfiles::Version])
                .do_nothing()
                .to_owned(),
        );
    txn.execute(&insert).await?;
    Ok(())
}

/// A version's stored baseline profile.
pub(crate) async fn load<C: ConnectionTrait>(
    db: &C,
    deployment: &str,
    version: u32,
) -> Result<Option<Profile>> {
    let row = db
        .query_one(
            &Query::select()
                .column(BaselineProfiles::Profile)
                .from(BaselineProfiles::Table)
                .and_where(Expr::col(BaselineProfiles::Deployment).eq(deployment))
                .and_where(
                    Expr::col(BaselineProfiles::Version).eq(i32::try_from(version).unwrap_or(0)),
                )
                .to_owned(),
        )
        .await?;
    row.map(|r| -> Result<Profile> {
        serde_json::from_str(&r.try_get::<String>("", "profile")?)
            .map_err(|e| MonitorError::Invalid(format!("stored baseline: {e}")))
    })
    .transpose()
}
