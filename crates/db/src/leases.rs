//! Leases with fencing, in the service's own database: the way replicas of one service agree
//! who does a piece of work that must be done once (the deployer's rollout decisions, each
//! monitor partition's counting). A lease is a row `(name, holder, epoch, expires_at)`; taking
//! over an expired lease bumps its epoch, and a holder proves it still holds its lease inside
//! the transaction that writes its work ([`fence`]), so a replica that paused past its lease
//! cannot write after its successor started.
//!
//! Time is each replica's clock: a lease's time to live must be well above the clock skew
//! between the machines (NTP keeps it in milliseconds; leases last seconds).

use std::time::Duration;

use sea_orm::sea_query::{Alias, ColumnDef, Expr, ExprTrait, OnConflict, Query, Table};
use sea_orm::{ConnectionTrait, DbErr};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager, async_trait};

/// A migration creating a service's lease table, `<service>_leases`.
#[derive(Debug, Clone)]
pub struct CreateLeases {
    table: String,
    name: String,
}

impl CreateLeases {
    /// The lease migration for `service`.
    pub fn new(service: &str) -> Self {
        Self {
            table: table_name(service),
            name: format!("m0100_{service}_create_leases"),
        }
    }
}

/// The lease table of a service.
pub fn table_name(service: &str) -> String {
    format!("{}_leases", service.replace('-', "_"))
}

impl MigrationName for CreateLeases {
    fn name(&self) -> &str {
        &self.name
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateLeases {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new(&self.table))
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Alias::new("name"))
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("holder"))
                            .string_len(128)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("epoch")).big_integer().not_null())
                    .col(
                        ColumnDef::new(Alias::new("expires_at"))
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }
}

/// A lease held: its name and the epoch that fences the holder's writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Lease name.
    pub name: String,
    /// Who holds it.
    pub holder: String,
    /// Bumped on every change of holder.
    pub epoch: i64,
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}

/// Takes `name` for `holder` for `ttl`, or renews it when `holder` has it; `None` while
/// another holder's lease runs.
pub async fn acquire<C: ConnectionTrait>(
    conn: &C,
    service: &str,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Option<Held>, DbErr> {
    let table = Alias::new(table_name(service));
    let now = now_millis();
    let until = now.saturating_add(ttl_millis(ttl));
    let held = |epoch| Held {
        name: name.to_owned(),
        holder: holder.to_owned(),
        epoch,
    };
    let mut insert = Query::insert();
    insert
        .into_table(table.clone())
        .columns([
            Alias::new("name"),
            Alias::new("holder"),
            Alias::new("epoch"),
            Alias::new("expires_at"),
        ])
        .values([name.into(), holder.into(), 1i64.into(), until.into()])
        .map_err(|e| DbErr::Custom(e.to_string()))?
        .on_conflict(
            OnConflict::column(Alias::new("name"))
                .do_nothing()
                .to_owned(),
        );
    let created = conn.execute(&insert).await?.rows_affected();
    if created == 1 {
        return Ok(Some(held(1)));
    }
    // Renewal: still ours (nobody took it over, even if it ran out meanwhile).
    let renewed = conn
        .execute(
            &Query::update()
                .table(table.clone())
                .value(Alias::new("expires_at"), until)
                .and_where(Expr::col(Alias::new("name")).eq(name))
                .and_where(Expr::col(Alias::new("holder")).eq(holder))
                .to_owned(),
        )
        .await?
        .rows_affected();
    if renewed == 0 {
        // Takeover of a lease that ran out: a new epoch fences the previous holder.
        let taken = conn
            .execute(
                &Query::update()
                    .table(table.clone())
                    .value(Alias::new("holder"), holder)
                    .value(
                        Alias::new("epoch"),
                        Expr::col(Alias::new("epoch")).add(1i64),
                    )
                    .value(Alias::new("expires_at"), until)
                    .and_where(Expr::col(Alias::new("name")).eq(name))
                    .and_where(Expr::col(Alias::new("expires_at")).lt(now))
                    .to_owned(),
            )
            .await?
            .rows_affected();
        if taken == 0 {
            return Ok(None);
        }
    }
    let row = conn
        .query_one(
            &Query::select()
                .column(Alias::new("epoch"))
                .from(table)
                .and_where(Expr::col(Alias::new("name")).eq(name))
                .and_where(Expr::col(Alias::new("holder")).eq(holder))
                .to_owned(),
        )
        .await?;
    row.map(|r| r.try_get::<i64>("", "epoch").map(held))
        .transpose()
}

/// Whether `held` still holds, checked inside the transaction that writes the holder's work:
/// on PostgreSQL the check locks the lease row until that transaction ends, so a takeover
/// waits for it (SQLite has one writer at a time anyway).
pub async fn fence<C: ConnectionTrait>(
    conn: &C,
    service: &str,
    held: &Held,
) -> Result<bool, DbErr> {
    let fenced = conn
        .execute(
            &Query::update()
                .table(Alias::new(table_name(service)))
                .value(Alias::new("holder"), held.holder.as_str())
                .and_where(Expr::col(Alias::new("name")).eq(held.name.as_str()))
                .and_where(Expr::col(Alias::new("holder")).eq(held.holder.as_str()))
                .and_where(Expr::col(Alias::new("epoch")).eq(held.epoch))
                .and_where(Expr::col(Alias::new("expires_at")).gte(now_millis()))
                .to_owned(),
        )
        .await?
        .rows_affected();
    Ok(fenced == 1)
}

/// Gives a lease up at once (a clean handover instead of waiting for it to run out).
pub async fn release<C: ConnectionTrait>(
    conn: &C,
    service: &str,
    held: &Held,
) -> Result<(), DbErr> {
    conn.execute(
        &Query::update()
            .table(Alias::new(table_name(service)))
            .value(Alias::new("expires_at"), 0i64)
            .and_where(Expr::col(Alias::new("name")).eq(held.name.as_str()))
            .and_where(Expr::col(Alias::new("holder")).eq(held.holder.as_str()))
            .and_where(Expr::col(Alias::new("epoch")).eq(held.epoch))
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// Holders of unexpired leases whose names start with `prefix` (e.g. replicas announcing
/// themselves under `member:`), sorted.
pub async fn live<C: ConnectionTrait>(
    conn: &C,
    service: &str,
    prefix: &str,
) -> Result<Vec<Held>, DbErr> {
    let rows = conn
        .query_all(
            &Query::select()
                .columns([
                    Alias::new("name"),
                    Alias::new("holder"),
                    Alias::new("epoch"),
                ])
                .from(Alias::new(table_name(service)))
                .and_where(Expr::col(Alias::new("name")).like(format!("{prefix}%")))
                .and_where(Expr::col(Alias::new("expires_at")).gte(now_millis()))
                .to_owned(),
        )
        .await?;
    let mut live = rows
        .iter()
        .map(|r| {
            Ok(Held {
                name: r.try_get("", "name")?,
                holder: r.try_get("", "holder")?,
                epoch: r.try_get("", "epoch")?,
            })
        })
        .collect::<Result<Vec<_>, DbErr>>()?;
    live.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(live)
}
