//! The event log as the dashboard reads it: every domain event, stored once by its stream
//! sequence (a redelivery inserts nothing), indexed by model and deployment. Rollout history,
//! drift over windows, traffic and latency charts and the delivery metrics are computed from it.

use flywheel_bus::{ConsumerSpec, Delivery, Outcome, StreamKind};
use flywheel_events::{ContentType, Envelope};
use sea_orm::sea_query::{ColumnDef, Expr, ExprTrait, Index, OnConflict, Order, Query, Table};
use sea_orm::{ConnectionTrait, DbErr, DeriveIden};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager, async_trait};

use crate::{AppState, RegistryError, Result};

/// The stored event log.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Timeline {
    #[sea_orm(iden = "registry_timeline")]
    Table,
    Seq,
    EventType,
    Time,
    Model,
    Deployment,
    Body,
    /// The event's project.
    Project,
}

/// Creates `registry_timeline`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateTimeline;

impl MigrationName for CreateTimeline {
    fn name(&self) -> &str {
        "m0009_registry_create_timeline"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateTimeline {
    async fn up(&self, manager: &SchemaManager) -> std::result::Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Timeline::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Timeline::Seq)
                            .big_integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Timeline::EventType)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Timeline::Time).big_integer().not_null())
                    .col(ColumnDef::new(Timeline::Model).string_len(250).not_null())
                    .col(
                        ColumnDef::new(Timeline::Deployment)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Timeline::Body).text().not_null())
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("registry_timeline_model", Timeline::Model),
            ("registry_timeline_deployment", Timeline::Deployment),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Timeline::Table)
                        .col(column)
                        .col(Timeline::Seq)
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// The consumer of every domain event.
pub(crate) fn consumer_spec(state: &AppState) -> ConsumerSpec {
    let prefix = state.bus.subjects().prefix();
    ConsumerSpec::new(
        StreamKind::Events,
        "registry-timeline",
        format!("{prefix}.events.>"),
    )
}

/// Stores one event (once).
pub(crate) async fn handle(state: AppState, delivery: Delivery) -> Outcome {
    match store(&state, &delivery).await {
        Ok(()) => Outcome::Ack,
        Err(RegistryError::Db(e)) => {
            Outcome::retry(std::time::Duration::from_secs(2), format!("database: {e}"))
        }
        Err(other) => Outcome::poison(other.to_string()),
    }
}

async fn store(state: &AppState, delivery: &Delivery) -> Result<()> {
    let envelope = &delivery.envelope;
    let body = flywheel_events::encode(envelope, ContentType::Json)
        .map_err(|e| RegistryError::InvalidParameter(e.to_string()))?;
    let body =
        String::from_utf8(body).map_err(|e| RegistryError::InvalidParameter(e.to_string()))?;
    let (model, deployment) = subjects_of(&body);
    let seq = i64::try_from(delivery.stream_sequence).unwrap_or(i64::MAX);
    let row = Row {
        seq,
        event_type: envelope.event.event_type(),
        time: envelope.time.timestamp_millis(),
        model: &model,
        deployment: &deployment,
        body: &body,
        project: &envelope.project,
    };
    insert(&state.db, &row).await
}

/// One event as the log stores it.
struct Row<'a> {
    seq: i64,
    event_type: &'a str,
    time: i64,
    model: &'a str,
    deployment: &'a str,
    body: &'a str,
    project: &'a str,
}

/// Stores a row unless its sequence is there already.
async fn insert<C: ConnectionTrait>(db: &C, row: &Row<'_>) -> Result<()> {
    db.execute(
        &Query::insert()
            .into_table(Timeline::Table)
            .columns([
                Timeline::Seq,
                Timeline::EventType,
                Timeline::Time,
                Timeline::Model,
                Timeline::Deployment,
                Timeline::Body,
                Timeline::Project,
            ])
            .values_panic([
                row.seq.into(),
                row.event_type.into(),
                row.time.into(),
                row.model.into(),
                row.deployment.into(),
                row.body.into(),
                row.project.into(),
            ])
            .on_conflict(OnConflict::column(Timeline::Seq).do_nothing().to_owned())
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// The model and deployment an event (as JSON) is about; empty when it names none.
fn subjects_of(body: &str) -> (String, String) {
    let envelope: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let field = |name: &str| {
        envelope["payload"]
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    (field("model"), field("deployment"))
}

/// Which events to read.
#[derive(Debug, Default, Clone)]
pub(crate) struct Filter<'a> {
    /// About this model.
    pub model: Option<&'a str>,
    /// About this deployment.
    pub deployment: Option<&'a str>,
    /// Of these types (all when empty).
    pub types: &'a [&'a str],
    /// At most this many, newest kept.
    pub limit: u64,
}

/// Forgets events older than `cutoff_ms` (the EVENTS stream has dropped them too); how many.
pub(crate) async fn prune<C: ConnectionTrait>(db: &C, cutoff_ms: i64) -> Result<u64> {
    Ok(db
        .execute(
            &Query::delete()
                .from_table(Timeline::Table)
                .and_where(Expr::col(Timeline::Time).lt(cutoff_ms))
                .to_owned(),
        )
        .await?
        .rows_affected())
}

/// Prunes what the EVENTS stream no longer keeps (`bus.events_max_age_secs`; 0 keeps all),
/// at start and every ten minutes, until shutdown.
pub(crate) async fn keep_pruned(
    db: sea_orm::DatabaseConnection,
    max_age_secs: u64,
    shutdown: flywheel_runtime::CancellationToken,
) -> flywheel_runtime::ServiceResult {
    if max_age_secs == 0 {
        return Ok(());
    }
    let max_age_ms = i64::try_from(max_age_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    loop {
        let cutoff = chrono::Utc::now()
            .timestamp_millis()
            .saturating_sub(max_age_ms);
        match prune(&db, cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                pruned = n,
                "event log: forgot events past the stream's max age"
            ),
            Err(e) => tracing::warn!(error = %e, "event log: pruning failed; will retry"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(std::time::Duration::from_secs(600)) => {}
        }
    }
}

/// Events as their JSON envelopes, for API answers.
pub(crate) fn as_json(events: &[Envelope]) -> Vec<serde_json::Value> {
    events
        .iter()
        .filter_map(|e| {
            let bytes = flywheel_events::encode(e, ContentType::Json).ok()?;
            serde_json::from_slice(&bytes).ok()
        })
        .collect()
}

/// Events in stream order (the newest `limit` of them).
pub(crate) async fn read<C: ConnectionTrait>(db: &C, filter: &Filter<'_>) -> Result<Vec<Envelope>> {
    let mut select = Query::select();
    select
        .column(Timeline::Body)
        .from(Timeline::Table)
        .order_by(Timeline::Seq, Order::Desc)
        .limit(filter.limit.clamp(1, 100_000));
    crate::projects::confine(&mut select, Timeline::Project);
    if let Some(model) = filter.model {
        select.and_where(Expr::col(Timeline::Model).eq(model));
    }
    if let Some(deployment) = filter.deployment {
        select.and_where(Expr::col(Timeline::Deployment).eq(deployment));
    }
    if !filter.types.is_empty() {
        select.and_where(Expr::col(Timeline::EventType).is_in(filter.types.iter().copied()));
    }
    let mut events: Vec<Envelope> = db
        .query_all(&select)
        .await?
        .iter()
        .filter_map(|row| {
            let body: String = row.try_get("", "body").ok()?;
            flywheel_events::decode(body.as_bytes(), ContentType::Json).ok()
        })
        .collect();
    events.reverse();
    Ok(events)
}

#[cfg(test)]
mod tests {
    use sea_orm::sea_query::Query;
    use sea_orm::{ConnectionTrait, sea_query::Expr};

    use super::*;

    #[tokio::test]
    async fn pruning_forgets_only_events_older_than_the_cutoff() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = flywheel_db::connect(&flywheel_testkit::fresh_sqlite(dir.path())).await?;
        flywheel_db::migrate::<crate::Migrator>(&db, crate::SERVICE).await?;
        for (seq, time) in [(1i64, 1_000i64), (2, 2_000), (3, 3_000)] {
            let row = Row {
                seq,
                event_type: "x",
                time,
                model: "",
                deployment: "",
                body: "{}",
                project: "default",
            };
            insert(&db, &row).await?;
        }
        assert_eq!(prune(&db, 2_500).await?, 2);
        let left = db
            .query_all(
                &Query::select()
                    .column(Timeline::Seq)
                    .from(Timeline::Table)
                    .and_where(Expr::col(Timeline::Seq).gt(0))
                    .to_owned(),
            )
            .await?;
        let seqs: Vec<i64> = left
            .iter()
            .map(|r| r.try_get::<i64>("", "seq"))
            .collect::<std::result::Result<_, _>>()?;
        assert_eq!(seqs, [3]);
        assert_eq!(prune(&db, 2_500).await?, 0);
        Ok(())
    }
}
