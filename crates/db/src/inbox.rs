//! The idempotency inbox: a handler records each event id it applied in the same transaction as
//! the effect, so a redelivered event is recognised and skipped.

use sea_orm::sea_query::{Alias, ColumnDef, Expr, OnConflict, Query, Table};
use sea_orm::{ConnectionTrait, DbErr};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager, async_trait};

/// A migration creating a service's inbox table, `<service>_inbox`.
#[derive(Debug, Clone)]
pub struct CreateInbox {
    table: String,
    name: String,
}

impl CreateInbox {
    /// The inbox migration for `service`.
    pub fn new(service: &str) -> Self {
        Self {
            table: table_name(service),
            name: format!("m0001_{service}_create_inbox"),
        }
    }
}

/// The inbox table of a service.
pub fn table_name(service: &str) -> String {
    format!("{}_inbox", service.replace('-', "_"))
}

impl MigrationName for CreateInbox {
    fn name(&self) -> &str {
        &self.name
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateInbox {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new(&self.table))
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Alias::new("consumer"))
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("event_id"))
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("processed_at"))
                            .timestamp_with_time_zone()
                            .not_null()
                            .default(Expr::current_timestamp()),
                    )
                    .primary_key(
                        sea_orm::sea_query::Index::create()
                            .col(Alias::new("consumer"))
                            .col(Alias::new("event_id")),
                    )
                    .to_owned(),
            )
            .await
    }
}

/// Records that `consumer` applied `event_id`; false when it already had (skip the effect).
///
/// Call inside the transaction that applies the effect, so both commit or neither does.
pub async fn claim<C: ConnectionTrait>(
    conn: &C,
    service: &str,
    consumer: &str,
    event_id: uuid::Uuid,
) -> Result<bool, DbErr> {
    let insert = Query::insert()
        .into_table(Alias::new(table_name(service)))
        .columns([Alias::new("consumer"), Alias::new("event_id")])
        .values([consumer.into(), event_id.to_string().into()])
        .map_err(|e| DbErr::Custom(e.to_string()))?
        .on_conflict(
            OnConflict::columns([Alias::new("consumer"), Alias::new("event_id")])
                .do_nothing()
                .to_owned(),
        )
        .to_owned();
    let result = conn.execute(&insert).await?;
    Ok(result.rows_affected() == 1)
}
