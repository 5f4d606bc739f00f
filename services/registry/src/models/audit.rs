//! The append-only audit log: who changed what on a model, when, from what to what.

use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, Order, Query};
use serde_json::Value;

use crate::Result;
use crate::schema::Audit;
use crate::tracking::now_millis;

/// One audited change.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct AuditEntry {
    /// Position in the log (increasing).
    pub id: i64,
    /// Model name.
    pub model: String,
    /// What happened, e.g. `alias.set`.
    pub action: String,
    /// Who did it.
    pub actor: String,
    /// When, ms.
    pub at: i64,
    /// State before, where it applies.
    pub before: Option<Value>,
    /// State after, where it applies.
    pub after: Option<Value>,
}

/// Appends an entry; call inside the transaction that makes the change.
pub(crate) async fn record<C: ConnectionTrait>(
    db: &C,
    model: &str,
    action: &str,
    actor: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> Result<()> {
    let to_text = |v: Option<Value>| v.map(|v| v.to_string());
    db.execute(
        &Query::insert()
            .into_table(Audit::Table)
            .columns([
                Audit::Model,
                Audit::Action,
                Audit::Actor,
                Audit::At,
                Audit::Before,
                Audit::After,
            ])
            .values([
                model.into(),
                action.into(),
                actor.into(),
                now_millis().into(),
                to_text(before).into(),
                to_text(after).into(),
            ])
            .map_err(|e| crate::RegistryError::InvalidParameter(e.to_string()))?
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// A model's audit log, oldest first.
pub async fn for_model<C: ConnectionTrait>(db: &C, model: &str) -> Result<Vec<AuditEntry>> {
    let rows = db
        .query_all(
            &Query::select()
                .columns([
                    Audit::Id,
                    Audit::Model,
                    Audit::Action,
                    Audit::Actor,
                    Audit::At,
                    Audit::Before,
                    Audit::After,
                ])
                .from(Audit::Table)
                .and_where(Expr::col(Audit::Model).eq(model))
                .order_by(Audit::Id, Order::Asc)
                .to_owned(),
        )
        .await?;
    rows.iter()
        .map(|row| {
            let parse = |col: &str| -> Result<Option<Value>> {
                let text: Option<String> = row.try_get("", col)?;
                Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
            };
            Ok(AuditEntry {
                id: row.try_get("", "id")?,
                model: row.try_get("", "model")?,
                action: row.try_get("", "action")?,
                actor: row.try_get("", "actor")?,
                at: row.try_get("", "at")?,
                before: parse("before")?,
                after: parse("after")?,
            })
        })
        .collect()
}
