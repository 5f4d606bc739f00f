//! The transactional outbox: a service writes the event it announces in the same database
//! transaction as the change itself, and a publisher task moves committed events to JetStream.
//! So a change and its event never diverge: a rolled-back change publishes nothing, and a
//! crash after commit publishes later (the event id is the `Nats-Msg-Id`, so a publish repeated
//! after a crash is dropped by JetStream's de-duplication).

use std::time::Duration;

use flywheel_bus::Bus;
use flywheel_events::{ContentType, Envelope};
use sea_orm::sea_query::{Alias, ColumnDef, Expr, ExprTrait, Index, Order, Query, Table};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager, async_trait};
use tokio_util::sync::CancellationToken;

use crate::ServiceError;

fn table(service: &str) -> Alias {
    Alias::new(format!("{}_outbox", service.replace('-', "_")))
}

/// The migration creating `<service>_outbox`.
#[derive(Debug, Clone)]
pub struct CreateOutbox {
    service: String,
    name: String,
}

impl CreateOutbox {
    /// The outbox migration of `service`.
    pub fn new(service: &str) -> Self {
        Self {
            service: service.to_owned(),
            name: format!("m0100_{}_create_outbox", service.replace('-', "_")),
        }
    }
}

impl MigrationName for CreateOutbox {
    fn name(&self) -> &str {
        &self.name
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateOutbox {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let table = table(&self.service);
        manager
            .create_table(
                Table::create()
                    .table(table.clone())
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Alias::new("seq"))
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("event_id"))
                            .string_len(36)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Alias::new("subject")).text().not_null())
                    .col(ColumnDef::new(Alias::new("body")).blob().not_null())
                    .col(ColumnDef::new(Alias::new("traceparent")).text().null())
                    .col(
                        ColumnDef::new(Alias::new("published"))
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(format!("{}_outbox_pending", self.service.replace('-', "_")))
                    .table(table)
                    .col(Alias::new("published"))
                    .col(Alias::new("seq"))
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}

/// Records `envelope` for publication; call inside the transaction that makes the change.
/// Recording the same envelope twice records it once.
pub async fn enqueue<C: ConnectionTrait>(
    conn: &C,
    service: &str,
    bus: &Bus,
    envelope: &Envelope,
) -> Result<(), DbErr> {
    let subject = bus
        .subjects()
        .for_event(&envelope.event)
        .map_err(|e| DbErr::Custom(e.to_string()))?;
    enqueue_to(conn, service, subject, envelope).await
}

/// [`enqueue`] on an explicit subject, e.g. a work queue rather than the event's channel.
pub async fn enqueue_to<C: ConnectionTrait>(
    conn: &C,
    service: &str,
    subject: String,
    envelope: &Envelope,
) -> Result<(), DbErr> {
    let body = flywheel_events::encode(envelope, ContentType::MsgPack)
        .map_err(|e| DbErr::Custom(e.to_string()))?;
    let traceparent = current_traceparent();
    let insert = Query::insert()
        .into_table(table(service))
        .columns([
            Alias::new("event_id"),
            Alias::new("subject"),
            Alias::new("body"),
            Alias::new("traceparent"),
        ])
        .values([
            envelope.id.to_string().into(),
            subject.into(),
            body.into(),
            traceparent.into(),
        ])
        .map_err(|e| DbErr::Custom(e.to_string()))?
        .on_conflict(
            sea_orm::sea_query::OnConflict::column(Alias::new("event_id"))
                .do_nothing()
                .to_owned(),
        )
        .to_owned();
    conn.execute(&insert).await?;
    Ok(())
}

fn current_traceparent() -> Option<String> {
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut carrier = std::collections::HashMap::new();
    opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Wakes the publishers of this process; call after committing outbox rows that should go
/// out now rather than at the next interval.
pub fn wake() {
    WAKE.notify_waiters();
}

static WAKE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Publishes committed outbox rows in order until `shutdown`; wakes every `interval` and on
/// [`wake`].
pub async fn run_publisher(
    bus: Bus,
    db: DatabaseConnection,
    service: String,
    interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    loop {
        match publish_pending(&bus, &db, &service).await {
            Ok(0) => {}
            Ok(count) => {
                tracing::debug!(service, count, "outbox published");
                continue;
            }
            Err(e) => tracing::warn!(service, error = %e, "outbox publish failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
            _ = WAKE.notified() => {}
        }
    }
    // One last pass so events committed just before shutdown go out now.
    let _ = publish_pending(&bus, &db, &service).await;
    Ok(())
}

/// Publishes up to 256 pending rows; returns how many went out.
pub async fn publish_pending(
    bus: &Bus,
    db: &DatabaseConnection,
    service: &str,
) -> Result<usize, String> {
    let rows = db
        .query_all(
            &Query::select()
                .columns([
                    Alias::new("seq"),
                    Alias::new("event_id"),
                    Alias::new("subject"),
                    Alias::new("body"),
                    Alias::new("traceparent"),
                ])
                .from(table(service))
                .and_where(Expr::col(Alias::new("published")).eq(false))
                .order_by(Alias::new("seq"), Order::Asc)
                .limit(256)
                .to_owned(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut published = 0;
    for row in rows {
        let read = |col: &str| row.try_get::<String>("", col).map_err(|e| e.to_string());
        let seq: i64 = row.try_get("", "seq").map_err(|e| e.to_string())?;
        let body: Vec<u8> = row.try_get("", "body").map_err(|e| e.to_string())?;
        let traceparent: Option<String> =
            row.try_get("", "traceparent").map_err(|e| e.to_string())?;
        let event_id = read("event_id")?;
        let mut headers = async_nats_headers(&event_id, traceparent.as_deref());
        if let Ok(envelope) = flywheel_events::decode(&body, ContentType::MsgPack) {
            headers.insert(flywheel_bus::EVENT_TYPE_HEADER, envelope.event_type());
        }
        bus.publish_raw(read("subject")?, headers, body.into())
            .await
            .map_err(|e| e.to_string())?;
        db.execute(
            &Query::update()
                .table(table(service))
                .value(Alias::new("published"), true)
                .and_where(Expr::col(Alias::new("seq")).eq(seq))
                .to_owned(),
        )
        .await
        .map_err(|e| e.to_string())?;
        published += 1;
    }
    Ok(published)
}

fn async_nats_headers(event_id: &str, traceparent: Option<&str>) -> flywheel_bus::HeaderMap {
    let mut headers = flywheel_bus::HeaderMap::new();
    headers.insert("Nats-Msg-Id", event_id);
    headers.insert(
        flywheel_events::CONTENT_TYPE_HEADER,
        ContentType::MsgPack.mime(),
    );
    if let Some(traceparent) = traceparent {
        headers.insert("traceparent", traceparent);
    }
    headers
}
