//! What the monitor learns from the registry's events: where every dataset version's bytes and
//! profile are (`dataset.version.created`) and which data each model version was trained on
//! (`model.version.registered`), so a comparison can name a version and a deployment's windows
//! have a reference.

use std::time::Duration;

use flywheel_bus::{ConsumerSpec, Delivery, Outcome, StreamKind};
use flywheel_events::Event;
use sea_orm::sea_query::{OnConflict, Query};
use sea_orm::{ConnectionTrait, QueryResult};

use crate::schema::{Datasets, Versions};
use crate::{AppState, MonitorError, Result};

/// The durable consumer of the events the monitor learns from, shared by every replica (one
/// filter with a wildcard: NATS 2.9 ignores lists of filters).
pub(crate) fn consumer_spec(state: &AppState) -> ConsumerSpec {
    let prefix = state.bus.subjects().prefix().to_owned();
    ConsumerSpec::new(
        StreamKind::Events,
        "monitor-catalog",
        format!("{prefix}.events.>"),
    )
}

/// Handles one event.
pub(crate) async fn handle(state: AppState, delivery: Delivery) -> Outcome {
    let statement = match &delivery.envelope.event {
        Event::DatasetVersionCreated(e) => {
            let mut insert = Query::insert();
            insert.into_table(Datasets::Table).columns([
                Datasets::Dataset,
                Datasets::Version,
                Datasets::Uri,
                Datasets::Format,
                Datasets::Sha256,
                Datasets::ProfileUri,
                Datasets::Project,
            ]);
            if let Err(err) = insert.values([
                e.dataset.clone().into(),
                e.version.clone().into(),
                e.uri.clone().into(),
                e.format.clone().into(),
                e.sha256.clone().into(),
                e.profile_uri.clone().into(),
                delivery.envelope.project.clone().into(),
            ]) {
                return Outcome::poison(err.to_string());
            }
            insert.on_conflict(
                OnConflict::columns([Datasets::Dataset, Datasets::Version])
                    .do_nothing()
                    .to_owned(),
            );
            insert
        }
        Event::ModelVersionRegistered(e) => {
            let Some(dataset) = &e.lineage.dataset else {
                return Outcome::Ack;
            };
            let mut insert = Query::insert();
            insert.into_table(Versions::Table).columns([
                Versions::Model,
                Versions::Version,
                Versions::Dataset,
                Versions::DatasetVersion,
                Versions::Target,
                Versions::Metrics,
            ]);
            // The training target (built-in trainers' `target` parameter), whose distribution
            // the predictions are compared with.
            let target = e
                .lineage
                .params
                .get("target")
                .and_then(|t| t.as_str())
                .map(str::to_owned);
            if let Err(err) = insert.values([
                e.model.clone().into(),
                i32::try_from(e.version).unwrap_or(i32::MAX).into(),
                dataset.name.clone().into(),
                dataset.version.clone().into(),
                target.into(),
                serde_json::to_string(&e.metrics).ok().into(),
            ]) {
                return Outcome::poison(err.to_string());
            }
            insert.on_conflict(
                OnConflict::columns([Versions::Model, Versions::Version])
                    .do_nothing()
                    .to_owned(),
            );
            insert
        }
        _ => return Outcome::Ack,
    };
    match state.db.execute(&statement).await {
        Ok(_) => Outcome::Ack,
        Err(e) => Outcome::retry(Duration::from_secs(2), e.to_string()),
    }
}

/// A known dataset version's stored bytes.
pub(crate) struct StoredDataset {
    pub(crate) uri: String,
    pub(crate) format: String,
    pub(crate) sha256: String,
    pub(crate) profile_uri: Option<String>,
}

/// Looks a dataset version up.
pub(crate) async fn dataset(state: &AppState, name: &str, version: &str) -> Result<StoredDataset> {
    use sea_orm::sea_query::{Expr, ExprTrait};
    let row: Option<QueryResult> = state
        .db
        .query_one(
            &Query::select()
                .columns([
                    Datasets::Uri,
                    Datasets::Format,
                    Datasets::Sha256,
                    Datasets::ProfileUri,
                ])
                .from(Datasets::Table)
                .and_where(Expr::col(Datasets::Dataset).eq(name))
                .and_where(Expr::col(Datasets::Version).eq(version))
                // A request of one project compares only that project's datasets.
                .apply(|select| flywheel_runtime::scope::confine(select, Datasets::Project))
                .to_owned(),
        )
        .await?;
    let row = row.ok_or_else(|| {
        MonitorError::NotFound(format!(
            "dataset {name} version {version} is not known to the monitor"
        ))
    })?;
    Ok(StoredDataset {
        uri: row.try_get("", "uri")?,
        format: row.try_get("", "format")?,
        sha256: row.try_get("", "sha256")?,
        profile_uri: row.try_get("", "profile_uri")?,
    })
}

/// What a model version was trained on.
pub(crate) struct TrainingData {
    /// Dataset name.
    pub(crate) dataset: String,
    /// Dataset version.
    pub(crate) version: String,
    /// The target column, when known.
    pub(crate) target: Option<String>,
    /// The version's evaluation metrics at training (what production performance is held to).
    pub(crate) metrics: std::collections::BTreeMap<String, f64>,
}

/// The dataset version a model version was trained on, if the monitor knows it.
pub(crate) async fn training_data_in<C: ConnectionTrait>(
    conn: &C,
    model: &str,
    version: u32,
) -> Result<Option<TrainingData>> {
    use sea_orm::sea_query::{Expr, ExprTrait};
    let row = conn
        .query_one(
            &Query::select()
                .columns([
                    Versions::Dataset,
                    Versions::DatasetVersion,
                    Versions::Target,
                    Versions::Metrics,
                ])
                .from(Versions::Table)
                .and_where(Expr::col(Versions::Model).eq(model))
                .and_where(
                    Expr::col(Versions::Version).eq(i32::try_from(version).unwrap_or(i32::MAX)),
                )
                .to_owned(),
        )
        .await?;
    row.map(|r| {
        Ok(TrainingData {
            dataset: r.try_get("", "dataset")?,
            version: r.try_get("", "dataset_version")?,
            target: r.try_get("", "target")?,
            metrics: r
                .try_get::<Option<String>>("", "metrics")?
                .and_then(|m| serde_json::from_str(&m).ok())
                .unwrap_or_default(),
        })
    })
    .transpose()
}
