//! What the monitor learns from the registry's events: where every dataset version's bytes and
//! profile are (`dataset.version.created`), so a comparison or a reference can name a version.

use std::time::Duration;

use flywheel_bus::{ConsumerSpec, Delivery, Outcome, StreamKind};
use flywheel_events::Event;
use sea_orm::sea_query::{OnConflict, Query};
use sea_orm::{ConnectionTrait, QueryResult};

use crate::schema::Datasets;
use crate::{AppState, MonitorError, Result};

/// The durable consumer of `dataset.version.created`, shared by every monitor replica.
pub(crate) fn consumer_spec(state: &AppState) -> ConsumerSpec {
    let prefix = state.bus.subjects().prefix().to_owned();
    ConsumerSpec::new(
        StreamKind::Events,
        "monitor-datasets",
        format!("{prefix}.events.dataset.version.created"),
    )
}

/// Handles one event.
pub(crate) async fn handle(state: AppState, delivery: Delivery) -> Outcome {
    let Event::DatasetVersionCreated(e) = &delivery.envelope.event else {
        return Outcome::Ack;
    };
    let mut insert = Query::insert();
    insert.into_table(Datasets::Table).columns([
        Datasets::Dataset,
        Datasets::Version,
        Datasets::Uri,
        Datasets::Format,
        Datasets::Sha256,
        Datasets::ProfileUri,
    ]);
    if let Err(e) = insert.values([
        e.dataset.clone().into(),
        e.version.clone().into(),
        e.uri.clone().into(),
        e.format.clone().into(),
        e.sha256.clone().into(),
        e.profile_uri.clone().into(),
    ]) {
        return Outcome::poison(e.to_string());
    }
    insert.on_conflict(
        OnConflict::columns([Datasets::Dataset, Datasets::Version])
            .do_nothing()
            .to_owned(),
    );
    match state.db.execute(&insert).await {
        Ok(_) => Outcome::Ack,
        Err(e) => Outcome::retry(Duration::from_secs(2), e.to_string()),
    }
}

/// A known dataset version's stored bytes.
pub(crate) struct StoredDataset {
    pub(crate) uri: String,
    pub(crate) format: String,
    pub(crate) sha256: String,
}

/// Looks a dataset version up.
pub(crate) async fn dataset(state: &AppState, name: &str, version: &str) -> Result<StoredDataset> {
    use sea_orm::sea_query::{Expr, ExprTrait};
    let row: Option<QueryResult> = state
        .db
        .query_one(
            &Query::select()
                .columns([Datasets::Uri, Datasets::Format, Datasets::Sha256])
                .from(Datasets::Table)
                .and_where(Expr::col(Datasets::Dataset).eq(name))
                .and_where(Expr::col(Datasets::Version).eq(version))
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
    })
}
