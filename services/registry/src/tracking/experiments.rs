//! Experiments group runs; id 0 is `Default`.

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Order, Query};
use sea_orm::{ConnectionTrait, QueryResult, TransactionSession, TransactionTrait};

use super::{KeyValue, check_key, now_millis};
use crate::schema::{ExperimentTags, Experiments};
use crate::{RegistryError, Result};

/// An experiment with its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Experiment {
    /// Id (MLflow shows it as a string).
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Where its runs' artifacts go.
    pub artifact_location: String,
    /// `active` or `deleted`.
    pub lifecycle_stage: String,
    /// Creation time, ms.
    pub creation_time: i64,
    /// Last update, ms.
    pub last_update_time: i64,
    /// Tags.
    pub tags: Vec<KeyValue>,
}

/// Which lifecycle stages a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ViewType {
    /// Active only (the default).
    #[default]
    ActiveOnly,
    /// Deleted only.
    DeletedOnly,
    /// Both.
    All,
}

impl ViewType {
    /// Parses MLflow's `ACTIVE_ONLY` / `DELETED_ONLY` / `ALL`.
    pub fn parse(s: Option<&str>) -> Result<Self> {
        match s.unwrap_or("ACTIVE_ONLY").to_ascii_uppercase().as_str() {
            "" | "ACTIVE_ONLY" | "1" => Ok(ViewType::ActiveOnly),
            "DELETED_ONLY" | "2" => Ok(ViewType::DeletedOnly),
            "ALL" | "3" => Ok(ViewType::All),
            other => Err(RegistryError::InvalidParameter(format!(
                "invalid view type `{other}`"
            ))),
        }
    }

    pub(crate) fn stages(self) -> &'static [&'static str] {
        match self {
            ViewType::ActiveOnly => &["active"],
            ViewType::DeletedOnly => &["deleted"],
            ViewType::All => &["active", "deleted"],
        }
    }
}

fn from_row(row: &QueryResult) -> Result<Experiment> {
    Ok(Experiment {
        id: row.try_get("", "experiment_id")?,
        name: row.try_get("", "name")?,
        artifact_location: row.try_get("", "artifact_location")?,
        lifecycle_stage: row.try_get("", "lifecycle_stage")?,
        creation_time: row.try_get("", "creation_time")?,
        last_update_time: row.try_get("", "last_update_time")?,
        tags: Vec::new(),
    })
}

fn select() -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .columns([
            Experiments::ExperimentId,
            Experiments::Name,
            Experiments::ArtifactLocation,
            Experiments::LifecycleStage,
            Experiments::CreationTime,
            Experiments::LastUpdateTime,
        ])
        .from(Experiments::Table)
        .apply(|select| crate::projects::confine(select, Experiments::Project))
        .to_owned()
}

async fn with_tags<C: ConnectionTrait>(db: &C, mut experiment: Experiment) -> Result<Experiment> {
    let rows = db
        .query_all(
            &Query::select()
                .columns([ExperimentTags::Key, ExperimentTags::Value])
                .from(ExperimentTags::Table)
                .and_where(Expr::col(ExperimentTags::ExperimentId).eq(experiment.id))
                .order_by(ExperimentTags::Key, Order::Asc)
                .to_owned(),
        )
        .await?;
    experiment.tags = rows
        .iter()
        .map(|r| {
            Ok(KeyValue {
                key: r.try_get("", "key")?,
                value: r.try_get("", "value")?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(experiment)
}

/// Creates an experiment; a taken name (active or deleted) is `AlreadyExists`.
pub async fn create<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    name: &str,
    artifact_location: Option<&str>,
    tags: &[KeyValue],
) -> Result<i64> {
    let name = name.trim();
    if name.is_empty() || name.len() > 500 {
        return Err(RegistryError::InvalidParameter(
            "experiment name must have 1 to 500 characters".into(),
        ));
    }
    for tag in tags {
        check_key("tag", &tag.key)?;
    }
    let txn = db.begin().await?;
    let now = now_millis();
    let insert = Query::insert()
        .into_table(Experiments::Table)
        .columns([
            Experiments::Name,
            Experiments::ArtifactLocation,
            Experiments::LifecycleStage,
            Experiments::CreationTime,
            Experiments::LastUpdateTime,
            Experiments::Project,
        ])
        .values([
            name.into(),
            artifact_location.unwrap_or("").into(),
            "active".into(),
            now.into(),
            now.into(),
            crate::projects::home().into(),
        ])
        .map_err(|e| RegistryError::InvalidParameter(e.to_string()))?
        .returning_col(Experiments::ExperimentId)
        .to_owned();
    let row = match txn.query_one(&insert).await {
        Ok(row) => row,
        Err(e) if RegistryError::is_unique_violation(&e) => {
            return Err(RegistryError::AlreadyExists(format!(
                "Experiment(name={name}) already exists."
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let id: i64 = row
        .ok_or_else(|| RegistryError::InvalidParameter("insert returned no id".into()))?
        .try_get("", "experiment_id")?;
    if artifact_location.is_none_or(str::is_empty) {
        txn.execute(
            &Query::update()
                .table(Experiments::Table)
                .value(
                    Experiments::ArtifactLocation,
                    format!("mlflow-artifacts:/{id}"),
                )
                .and_where(Expr::col(Experiments::ExperimentId).eq(id))
                .to_owned(),
        )
        .await?;
    }
    for tag in tags {
        set_tag_in(&txn, id, tag).await?;
    }
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    Ok(id)
}

async fn set_tag_in<C: ConnectionTrait>(db: &C, id: i64, tag: &KeyValue) -> Result<()> {
    db.execute(
        &Query::insert()
            .into_table(ExperimentTags::Table)
            .columns([
                ExperimentTags::ExperimentId,
                ExperimentTags::Key,
                ExperimentTags::Value,
            ])
            .values([id.into(), tag.key.clone().into(), tag.value.clone().into()])
            .map_err(|e| RegistryError::InvalidParameter(e.to_string()))?
            .on_conflict(
                OnConflict::columns([ExperimentTags::ExperimentId, ExperimentTags::Key])
                    .update_column(ExperimentTags::Value)
                    .to_owned(),
            )
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// Sets an experiment tag.
pub async fn set_tag<C: ConnectionTrait>(db: &C, id: i64, tag: &KeyValue) -> Result<()> {
    check_key("tag", &tag.key)?;
    get(db, id).await?;
    set_tag_in(db, id, tag).await
}

/// Reads an experiment (deleted ones too).
pub async fn get<C: ConnectionTrait>(db: &C, id: i64) -> Result<Experiment> {
    let row = db
        .query_one(
            &select()
                .and_where(Expr::col(Experiments::ExperimentId).eq(id))
                .to_owned(),
        )
        .await?;
    let row =
        row.ok_or_else(|| RegistryError::NotFound(format!("No Experiment with id={id} exists")))?;
    with_tags(db, from_row(&row)?).await
}

/// Reads an experiment by name (deleted ones too).
pub async fn get_by_name<C: ConnectionTrait>(db: &C, name: &str) -> Result<Experiment> {
    let row = db
        .query_one(
            &select()
                .and_where(Expr::col(Experiments::Name).eq(name))
                .to_owned(),
        )
        .await?;
    let row = row.ok_or_else(|| {
        RegistryError::NotFound(format!("Could not find experiment with name '{name}'"))
    })?;
    with_tags(db, from_row(&row)?).await
}

/// Lists experiments by name, a page at a time.
pub async fn search<C: ConnectionTrait>(
    db: &C,
    view: ViewType,
    max_results: u64,
    page_token: Option<&str>,
) -> Result<(Vec<Experiment>, Option<String>)> {
    let offset = super::parse_page_token(page_token)?;
    let limit = max_results.clamp(1, 50_000);
    let rows = db
        .query_all(
            &select()
                .and_where(
                    Expr::col(Experiments::LifecycleStage).is_in(view.stages().iter().copied()),
                )
                .order_by(Experiments::ExperimentId, Order::Asc)
                .limit(limit + 1)
                .offset(offset)
                .to_owned(),
        )
        .await?;
    let more = rows.len() as u64 > limit;
    let mut experiments = Vec::new();
    for row in rows.iter().take(limit as usize) {
        experiments.push(with_tags(db, from_row(row)?).await?);
    }
    Ok((experiments, more.then(|| (offset + limit).to_string())))
}

/// Marks an experiment deleted (or active again).
pub async fn set_lifecycle<C: ConnectionTrait>(db: &C, id: i64, stage: &str) -> Result<()> {
    if id == 0 && stage == "deleted" {
        return Err(RegistryError::InvalidParameter(
            "the Default experiment cannot be deleted".into(),
        ));
    }
    get(db, id).await?;
    db.execute(
        &Query::update()
            .table(Experiments::Table)
            .value(Experiments::LifecycleStage, stage)
            .value(Experiments::LastUpdateTime, now_millis())
            .and_where(Expr::col(Experiments::ExperimentId).eq(id))
            .to_owned(),
    )
    .await?;
    Ok(())
}
