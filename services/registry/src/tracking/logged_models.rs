//! MLflow 3 LoggedModels: what `mlflow.<flavor>.log_model` creates before uploading the model
//! files, and what `model-versions/create` with `models:/<model_id>` registers.

use std::collections::HashMap;

use sea_orm::sea_query::{Cond, Expr, ExprTrait, OnConflict, Order, Query};
use sea_orm::{ConnectionTrait, QueryResult};

use super::search::{Literal, Op, compare, parse_raw};
use super::{KeyValue, check_key, now_millis};
use crate::schema::{LoggedModelValues, LoggedModels, RunOutputs};
use crate::{RegistryError, Result};

/// A logged model.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedModel {
    /// `m-<32 hex>`.
    pub model_id: String,
    /// Experiment.
    pub experiment_id: i64,
    /// Name within the run (e.g. `model`).
    pub name: String,
    /// The run that logged it.
    pub source_run_id: Option<String>,
    /// Free-form type.
    pub model_type: Option<String>,
    /// `LOGGED_MODEL_PENDING`, `LOGGED_MODEL_READY` or `LOGGED_MODEL_UPLOAD_FAILED`.
    pub status: String,
    /// Where its files are.
    pub artifact_uri: String,
    /// Created, ms.
    pub created_at: i64,
    /// Last changed, ms.
    pub updated_at: i64,
    /// Tags.
    pub tags: Vec<KeyValue>,
    /// Params.
    pub params: Vec<KeyValue>,
}

fn bad(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::InvalidParameter(e.to_string())
}

fn from_row(row: &QueryResult) -> Result<LoggedModel> {
    Ok(LoggedModel {
        model_id: row.try_get("", "model_id")?,
        experiment_id: row.try_get("", "experiment_id")?,
        name: row.try_get("", "name")?,
        source_run_id: row.try_get("", "source_run_id")?,
        model_type: row.try_get("", "model_type")?,
        status: row.try_get("", "status")?,
        artifact_uri: row.try_get("", "artifact_uri")?,
        created_at: row.try_get("", "created_at")?,
        updated_at: row.try_get("", "updated_at")?,
        tags: Vec::new(),
        params: Vec::new(),
    })
}

fn select() -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .columns([
            LoggedModels::ModelId,
            LoggedModels::ExperimentId,
            LoggedModels::Name,
            LoggedModels::SourceRunId,
            LoggedModels::ModelType,
            LoggedModels::Status,
            LoggedModels::ArtifactUri,
            LoggedModels::CreatedAt,
            LoggedModels::UpdatedAt,
        ])
        .from(LoggedModels::Table)
        .apply(|select| {
            crate::projects::confine_to_experiments(select, LoggedModels::ExperimentId);
        })
        .to_owned()
}

async fn attach<C: ConnectionTrait>(
    db: &C,
    mut models: Vec<LoggedModel>,
) -> Result<Vec<LoggedModel>> {
    if models.is_empty() {
        return Ok(models);
    }
    let ids: Vec<&str> = models.iter().map(|m| m.model_id.as_str()).collect();
    let rows = db
        .query_all(
            &Query::select()
                .columns([
                    LoggedModelValues::ModelId,
                    LoggedModelValues::Kind,
                    LoggedModelValues::Key,
                    LoggedModelValues::Value,
                ])
                .from(LoggedModelValues::Table)
                .and_where(Expr::col(LoggedModelValues::ModelId).is_in(ids))
                .order_by(LoggedModelValues::Key, Order::Asc)
                .to_owned(),
        )
        .await?;
    let mut values: HashMap<(String, String), Vec<KeyValue>> = HashMap::new();
    for row in rows {
        values
            .entry((row.try_get("", "model_id")?, row.try_get("", "kind")?))
            .or_default()
            .push(KeyValue {
                key: row.try_get("", "key")?,
                value: row.try_get("", "value")?,
            });
    }
    for model in &mut models {
        model.tags = values
            .remove(&(model.model_id.clone(), "tag".into()))
            .unwrap_or_default();
        model.params = values
            .remove(&(model.model_id.clone(), "param".into()))
            .unwrap_or_default();
    }
    Ok(models)
}

async fn put_values<C: ConnectionTrait>(
    db: &C,
    model_id: &str,
    kind: &str,
    values: &[KeyValue],
) -> Result<()> {
    for kv in values {
        check_key(kind, &kv.key)?;
        db.execute(
            &Query::insert()
                .into_table(LoggedModelValues::Table)
                .columns([
                    LoggedModelValues::ModelId,
                    LoggedModelValues::Kind,
                    LoggedModelValues::Key,
                    LoggedModelValues::Value,
                ])
                .values([
                    model_id.into(),
                    kind.into(),
                    kv.key.clone().into(),
                    kv.value.clone().into(),
                ])
                .map_err(bad)?
                .on_conflict(
                    OnConflict::columns([
                        LoggedModelValues::ModelId,
                        LoggedModelValues::Kind,
                        LoggedModelValues::Key,
                    ])
                    .update_column(LoggedModelValues::Value)
                    .to_owned(),
                )
                .to_owned(),
        )
        .await?;
    }
    Ok(())
}

/// Creates a pending logged model under an experiment.
pub async fn create<C: ConnectionTrait>(
    db: &C,
    experiment_id: i64,
    name: &str,
    source_run_id: Option<&str>,
    model_type: Option<&str>,
    params: &[KeyValue],
    tags: &[KeyValue],
) -> Result<LoggedModel> {
    let experiment = super::experiments::get(db, experiment_id).await?;
    check_key("model name", name)?;
    if let Some(run_id) = source_run_id {
        super::runs::get(db, run_id).await?;
    }
    let model_id = format!("m-{}", uuid::Uuid::now_v7().simple());
    let artifact_uri = format!(
        "{}/models/{model_id}/artifacts",
        experiment.artifact_location.trim_end_matches('/')
    );
    let now = now_millis();
    db.execute(
        &Query::insert()
            .into_table(LoggedModels::Table)
            .columns([
                LoggedModels::ModelId,
                LoggedModels::ExperimentId,
                LoggedModels::Name,
                LoggedModels::SourceRunId,
                LoggedModels::ModelType,
                LoggedModels::Status,
                LoggedModels::ArtifactUri,
                LoggedModels::CreatedAt,
                LoggedModels::UpdatedAt,
            ])
            .values([
                model_id.clone().into(),
                experiment_id.into(),
                name.into(),
                source_run_id.into(),
                model_type.into(),
                "LOGGED_MODEL_PENDING".into(),
                artifact_uri.into(),
                now.into(),
                now.into(),
            ])
            .map_err(bad)?
            .to_owned(),
    )
    .await?;
    put_values(db, &model_id, "param", params).await?;
    put_values(db, &model_id, "tag", tags).await?;
    get(db, &model_id).await
}

/// Reads a logged model.
pub async fn get<C: ConnectionTrait>(db: &C, model_id: &str) -> Result<LoggedModel> {
    let row = db
        .query_one(
            &select()
                .and_where(Expr::col(LoggedModels::ModelId).eq(model_id))
                .to_owned(),
        )
        .await?
        .ok_or_else(|| {
            RegistryError::NotFound(format!("Logged model with ID '{model_id}' not found"))
        })?;
    let mut models = attach(db, vec![from_row(&row)?]).await?;
    models.pop().ok_or_else(|| {
        RegistryError::NotFound(format!("Logged model with ID '{model_id}' not found"))
    })
}

/// Sets the status (finalize).
pub async fn set_status<C: ConnectionTrait>(
    db: &C,
    model_id: &str,
    status: &str,
) -> Result<LoggedModel> {
    if !matches!(
        status,
        "LOGGED_MODEL_PENDING" | "LOGGED_MODEL_READY" | "LOGGED_MODEL_UPLOAD_FAILED"
    ) {
        return Err(bad(format!("invalid logged model status `{status}`")));
    }
    get(db, model_id).await?;
    db.execute(
        &Query::update()
            .table(LoggedModels::Table)
            .value(LoggedModels::Status, status)
            .value(LoggedModels::UpdatedAt, now_millis())
            .and_where(Expr::col(LoggedModels::ModelId).eq(model_id))
            .to_owned(),
    )
    .await?;
    get(db, model_id).await
}

/// Sets tags.
pub async fn set_tags<C: ConnectionTrait>(db: &C, model_id: &str, tags: &[KeyValue]) -> Result<()> {
    get(db, model_id).await?;
    put_values(db, model_id, "tag", tags).await
}

/// Adds params.
pub async fn log_params<C: ConnectionTrait>(
    db: &C,
    model_id: &str,
    params: &[KeyValue],
) -> Result<()> {
    get(db, model_id).await?;
    put_values(db, model_id, "param", params).await
}

/// Removes a tag.
pub async fn delete_tag<C: ConnectionTrait>(db: &C, model_id: &str, key: &str) -> Result<()> {
    get(db, model_id).await?;
    db.execute(
        &Query::delete()
            .from_table(LoggedModelValues::Table)
            .and_where(Expr::col(LoggedModelValues::ModelId).eq(model_id))
            .and_where(Expr::col(LoggedModelValues::Kind).eq("tag"))
            .and_where(Expr::col(LoggedModelValues::Key).eq(key))
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// Searches logged models of experiments by `name` (and `source_run_id`).
pub async fn search<C: ConnectionTrait>(
    db: &C,
    experiment_ids: &[i64],
    filter: &str,
    max_results: u64,
    page_token: Option<&str>,
) -> Result<(Vec<LoggedModel>, Option<String>)> {
    let mut cond = Cond::all()
        .add(Expr::col(LoggedModels::ExperimentId).is_in(experiment_ids.iter().copied()));
    for clause in parse_raw(filter)? {
        let column = match clause.ident.trim_matches('`') {
            "name" => LoggedModels::Name,
            "source_run_id" => LoggedModels::SourceRunId,
            other => {
                return Err(bad(format!(
                    "unsupported logged model filter key `{other}`"
                )));
            }
        };
        if !matches!(
            (clause.op, &clause.literal),
            (Op::Eq | Op::Ne | Op::Like | Op::ILike, Literal::Text(_))
        ) {
            return Err(bad(format!("unsupported comparison on `{}`", clause.ident)));
        }
        cond = cond.add(compare(Expr::col(column), clause.op, &clause.literal));
    }
    let offset = super::parse_page_token(page_token)?;
    let limit = max_results.clamp(1, 10_000);
    let rows = db
        .query_all(
            &select()
                .cond_where(cond)
                .order_by(LoggedModels::CreatedAt, Order::Desc)
                .limit(limit + 1)
                .offset(offset)
                .to_owned(),
        )
        .await?;
    let more = rows.len() as u64 > limit;
    let models = rows
        .iter()
        .take(limit as usize)
        .map(from_row)
        .collect::<Result<Vec<_>>>()?;
    Ok((
        attach(db, models).await?,
        more.then(|| (offset + limit).to_string()),
    ))
}

/// Records models a run produced.
pub async fn add_run_outputs<C: ConnectionTrait>(
    db: &C,
    run_id: &str,
    outputs: &[(String, i64)],
) -> Result<()> {
    super::runs::get(db, run_id).await?;
    for (model_id, step) in outputs {
        get(db, model_id).await?;
        db.execute(
            &Query::insert()
                .into_table(RunOutputs::Table)
                .columns([RunOutputs::RunId, RunOutputs::ModelId, RunOutputs::Step])
                .values([run_id.into(), model_id.clone().into(), (*step).into()])
                .map_err(bad)?
                .on_conflict(
                    OnConflict::columns([RunOutputs::RunId, RunOutputs::ModelId])
                        .update_column(RunOutputs::Step)
                        .to_owned(),
                )
                .to_owned(),
        )
        .await?;
    }
    Ok(())
}

/// The models each of these runs produced.
pub(crate) async fn run_outputs<C: ConnectionTrait>(
    db: &C,
    run_ids: &[String],
) -> Result<HashMap<String, Vec<(String, i64)>>> {
    let rows = db
        .query_all(
            &Query::select()
                .columns([RunOutputs::RunId, RunOutputs::ModelId, RunOutputs::Step])
                .from(RunOutputs::Table)
                .and_where(Expr::col(RunOutputs::RunId).is_in(run_ids.iter().map(String::as_str)))
                .to_owned(),
        )
        .await?;
    let mut outputs: HashMap<String, Vec<(String, i64)>> = HashMap::new();
    for row in rows {
        outputs
            .entry(row.try_get("", "run_id")?)
            .or_default()
            .push((row.try_get("", "model_id")?, row.try_get("", "step")?));
    }
    Ok(outputs)
}
