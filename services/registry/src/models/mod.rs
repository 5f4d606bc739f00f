//! Registered models and their immutable versions: tags, aliases, stages, the audit log, and
//! the events that announce them (written to the outbox in the same transaction).

mod audit;
pub mod governance;
mod search;

use std::collections::{BTreeMap, HashMap};

use flywheel_events::payloads::{
    DatasetValidationCompleted, DatasetVersionCreated, Lineage, ModelVersionAliasChanged,
    ModelVersionRegistered, Signature,
};
use flywheel_events::{Envelope, Event};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Order, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction, QueryResult, TransactionTrait};
use serde_json::json;

pub use audit::{AuditEntry, for_model as audit_log};
pub use search::{SearchModels, search_models, search_versions};

use crate::schema::{Aliases, Datasets, ModelTags, Models, VersionTags, Versions};
use crate::tracking::{KeyValue, now_millis};
use crate::{AppState, RegistryError, Result};

/// A registered model.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredModel {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Who created it.
    pub created_by: String,
    /// Created, ms.
    pub created_at: i64,
    /// Last changed, ms.
    pub updated_at: i64,
    /// Tags.
    pub tags: Vec<KeyValue>,
    /// Aliases and the versions they point to.
    pub aliases: Vec<(String, i64)>,
    /// The newest version per stage.
    pub latest_versions: Vec<ModelVersion>,
}

/// One immutable model version.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersion {
    /// Model name.
    pub name: String,
    /// Version number, from 1.
    pub version: i64,
    /// Where the model package is.
    pub source: String,
    /// The run that produced it.
    pub run_id: Option<String>,
    /// `READY`.
    pub status: String,
    /// `None`, `Staging`, `Production` or `Archived`.
    pub current_stage: String,
    /// Free text.
    pub description: String,
    /// Who registered it.
    pub created_by: String,
    /// Created, ms.
    pub created_at: i64,
    /// Last changed (tags, stage), ms.
    pub updated_at: i64,
    /// Package flavor.
    pub flavor: String,
    /// Evaluation metrics (copied from the run at registration).
    pub metrics: BTreeMap<String, f64>,
    /// Input/output signature.
    pub signature: Signature,
    /// Data, run, job and code it came from.
    pub lineage: Lineage,
    /// Tags.
    pub tags: Vec<KeyValue>,
    /// Aliases pointing at it.
    pub aliases: Vec<String>,
}

/// What a new version is made from.
#[derive(Debug, Clone, Default)]
pub struct NewVersion {
    /// Model package location.
    pub source: String,
    /// The producing run, if any.
    pub run_id: Option<String>,
    /// Free text.
    pub description: String,
    /// Tags.
    pub tags: Vec<KeyValue>,
    /// Package flavor (`mlflow` for versions registered through the MLflow API).
    pub flavor: String,
    /// Metrics; when empty and a run is given, the run's latest metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Signature.
    pub signature: Signature,
    /// Lineage; the run id is filled in from `run_id`.
    pub lineage: Lineage,
    /// The training job this version comes from: registration claims the job in the same
    /// transaction, so concurrent or repeated completions of one job register one version.
    pub claim_job: Option<String>,
}

fn invalid(message: impl Into<String>) -> RegistryError {
    RegistryError::InvalidParameter(message.into())
}

/// Model names: printable, no path separators, at most 250 characters.
pub(crate) fn check_model_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 250 || name.trim() != name {
        return Err(invalid(format!(
            "invalid model name `{name}`: 1 to 250 characters without surrounding spaces"
        )));
    }
    if name.contains('/') || name.contains("..") || name.chars().any(char::is_control) {
        return Err(invalid(format!(
            "invalid model name `{name}`: no `/`, `..` or control characters"
        )));
    }
    Ok(())
}

/// Aliases: a letter or `_`, then letters, digits, `_` or `-`; not `latest` or `v<number>`.
pub(crate) fn check_alias(alias: &str) -> Result<()> {
    let mut chars = alias.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = alias
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let reserved = alias.eq_ignore_ascii_case("latest")
        || (alias.len() > 1
            && alias.starts_with(['v', 'V'])
            && alias[1..].chars().all(|c| c.is_ascii_digit()));
    if !first_ok || !rest_ok || alias.len() > 250 || reserved {
        return Err(invalid(format!("invalid alias `{alias}`")));
    }
    Ok(())
}

/// Stages, canonicalised as MLflow does.
pub fn canonical_stage(stage: &str) -> Result<&'static str> {
    Ok(match stage.to_ascii_lowercase().as_str() {
        "none" | "" => "None",
        "staging" => "Staging",
        "production" => "Production",
        "archived" => "Archived",
        other => {
            return Err(invalid(format!(
                "invalid stage `{other}`: expected None, Staging, Production or Archived"
            )));
        }
    })
}

fn bad(e: impl std::fmt::Display) -> RegistryError {
    invalid(e.to_string())
}

async fn touch_model<C: ConnectionTrait>(db: &C, name: &str) -> Result<()> {
    db.execute(
        &Query::update()
            .table(Models::Table)
            .value(Models::UpdatedAt, now_millis())
            .and_where(Expr::col(Models::Name).eq(name))
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// Creates a registered model; a taken name is `AlreadyExists`.
pub async fn create_model(
    state: &AppState,
    name: &str,
    description: &str,
    tags: &[KeyValue],
    actor: &str,
) -> Result<RegisteredModel> {
    check_model_name(name)?;
    for tag in tags {
        crate::tracking::check_key("tag", &tag.key)?;
    }
    let txn = state.db.begin().await?;
    let now = now_millis();
    let insert = Query::insert()
        .into_table(Models::Table)
        .columns([
            Models::Name,
            Models::Description,
            Models::CreatedBy,
            Models::CreatedAt,
            Models::UpdatedAt,
            Models::Project,
        ])
        .values([
            name.into(),
            description.into(),
            actor.into(),
            now.into(),
            now.into(),
            crate::projects::home().into(),
        ])
        .map_err(bad)?
        .to_owned();
    match txn.execute(&insert).await {
        Ok(_) => {}
        Err(e) if RegistryError::is_unique_violation(&e) => {
            return Err(RegistryError::AlreadyExists(format!(
                "Registered Model (name={name}) already exists."
            )));
        }
        Err(e) => return Err(e.into()),
    }
    for tag in tags {
        upsert_model_tag(&txn, name, tag).await?;
    }
    audit::record(
        &txn,
        name,
        "model.created",
        actor,
        None,
        Some(json!({"description": description, "tags": tags})),
    )
    .await?;
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    get_model(&state.db, name).await
}

async fn upsert_model_tag<C: ConnectionTrait>(db: &C, name: &str, tag: &KeyValue) -> Result<()> {
    db.execute(
        &Query::insert()
            .into_table(ModelTags::Table)
            .columns([ModelTags::Name, ModelTags::Key, ModelTags::Value])
            .values([
                name.into(),
                tag.key.clone().into(),
                tag.value.clone().into(),
            ])
            .map_err(bad)?
            .on_conflict(
                OnConflict::columns([ModelTags::Name, ModelTags::Key])
                    .update_column(ModelTags::Value)
                    .to_owned(),
            )
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// Sets a registered model tag.
pub async fn set_model_tag(
    state: &AppState,
    name: &str,
    tag: &KeyValue,
    actor: &str,
) -> Result<()> {
    crate::tracking::check_key("tag", &tag.key)?;
    let txn = state.db.begin().await?;
    model_exists(&txn, name).await?;
    upsert_model_tag(&txn, name, tag).await?;
    touch_model(&txn, name).await?;
    audit::record(
        &txn,
        name,
        "model.tag_set",
        actor,
        None,
        Some(json!({"key": tag.key, "value": tag.value})),
    )
    .await?;
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    Ok(())
}

/// Fails with `NotFound` unless the model exists in a visible project; returns that project.
async fn model_exists<C: ConnectionTrait>(db: &C, name: &str) -> Result<String> {
    let mut select = Query::select()
        .column(Models::Project)
        .from(Models::Table)
        .and_where(Expr::col(Models::Name).eq(name))
        .to_owned();
    crate::projects::confine(&mut select, Models::Project);
    let row = db.query_one(&select).await?;
    match row {
        Some(row) => Ok(row.try_get("", "project")?),
        None => Err(RegistryError::NotFound(format!(
            "Registered Model with name={name} not found"
        ))),
    }
}

/// Reads a registered model with tags, aliases and latest versions per stage.
pub async fn get_model<C: ConnectionTrait>(db: &C, name: &str) -> Result<RegisteredModel> {
    let mut models = load_models(db, &[name.to_owned()]).await?;
    models.pop().ok_or_else(|| {
        RegistryError::NotFound(format!("Registered Model with name={name} not found"))
    })
}

pub(crate) async fn load_models<C: ConnectionTrait>(
    db: &C,
    names: &[String],
) -> Result<Vec<RegisteredModel>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let rows = db
        .query_all(
            &Query::select()
                .columns([
                    Models::Name,
                    Models::Description,
                    Models::CreatedBy,
                    Models::CreatedAt,
                    Models::UpdatedAt,
                ])
                .from(Models::Table)
                .and_where(Expr::col(Models::Name).is_in(names.iter().map(String::as_str)))
                .apply(|select| crate::projects::confine(select, Models::Project))
                .to_owned(),
        )
        .await?;
    let mut by_name = HashMap::new();
    for row in rows {
        let model = RegisteredModel {
            name: row.try_get("", "name")?,
            description: row.try_get("", "description")?,
            created_by: row.try_get("", "created_by")?,
            created_at: row.try_get("", "created_at")?,
            updated_at: row.try_get("", "updated_at")?,
            tags: Vec::new(),
            aliases: Vec::new(),
            latest_versions: Vec::new(),
        };
        by_name.insert(model.name.clone(), model);
    }
    let tags = db
        .query_all(
            &Query::select()
                .columns([ModelTags::Name, ModelTags::Key, ModelTags::Value])
                .from(ModelTags::Table)
                .and_where(Expr::col(ModelTags::Name).is_in(names.iter().map(String::as_str)))
                .order_by(ModelTags::Key, Order::Asc)
                .to_owned(),
        )
        .await?;
    for row in tags {
        let name: String = row.try_get("", "name")?;
        if let Some(model) = by_name.get_mut(&name) {
            model.tags.push(KeyValue {
                key: row.try_get("", "key")?,
                value: row.try_get("", "value")?,
            });
        }
    }
    let aliases = db
        .query_all(
            &Query::select()
                .columns([Aliases::Name, Aliases::Alias, Aliases::Version])
                .from(Aliases::Table)
                .and_where(Expr::col(Aliases::Name).is_in(names.iter().map(String::as_str)))
                .order_by(Aliases::Alias, Order::Asc)
                .to_owned(),
        )
        .await?;
    for row in aliases {
        let name: String = row.try_get("", "name")?;
        if let Some(model) = by_name.get_mut(&name) {
            model
                .aliases
                .push((row.try_get("", "alias")?, row.try_get("", "version")?));
        }
    }
    let mut models = Vec::new();
    for name in names {
        if let Some(mut model) = by_name.remove(name) {
            model.latest_versions = latest_versions(db, name, &[]).await?;
            models.push(model);
        }
    }
    Ok(models)
}

/// Deletes a model with its versions, tags and aliases.
pub async fn delete_model(state: &AppState, name: &str, actor: &str) -> Result<()> {
    let txn = state.db.begin().await?;
    model_exists(&txn, name).await?;
    txn.execute(
        &Query::delete()
            .from_table(Aliases::Table)
            .and_where(Expr::col(Aliases::Name).eq(name))
            .to_owned(),
    )
    .await?;
    txn.execute(
        &Query::delete()
            .from_table(VersionTags::Table)
            .and_where(Expr::col(VersionTags::Name).eq(name))
            .to_owned(),
    )
    .await?;
    txn.execute(
        &Query::delete()
            .from_table(Versions::Table)
            .and_where(Expr::col(Versions::Name).eq(name))
            .to_owned(),
    )
    .await?;
    txn.execute(
        &Query::delete()
            .from_table(ModelTags::Table)
            .and_where(Expr::col(ModelTags::Name).eq(name))
            .to_owned(),
    )
    .await?;
    txn.execute(
        &Query::delete()
            .from_table(Models::Table)
            .and_where(Expr::col(Models::Name).eq(name))
            .to_owned(),
    )
    .await?;
    audit::record(&txn, name, "model.deleted", actor, None, None).await?;
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    Ok(())
}

fn version_select() -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .columns([
            (Versions::Table, Versions::Name),
            (Versions::Table, Versions::Version),
            (Versions::Table, Versions::Source),
            (Versions::Table, Versions::RunId),
            (Versions::Table, Versions::Status),
            (Versions::Table, Versions::CurrentStage),
            (Versions::Table, Versions::Description),
            (Versions::Table, Versions::CreatedBy),
            (Versions::Table, Versions::CreatedAt),
            (Versions::Table, Versions::UpdatedAt),
            (Versions::Table, Versions::Flavor),
            (Versions::Table, Versions::Metrics),
            (Versions::Table, Versions::Signature),
            (Versions::Table, Versions::Lineage),
        ])
        .from(Versions::Table)
        .apply(|select| {
            crate::projects::confine_to_models(select, (Versions::Table, Versions::Name))
        })
        .to_owned()
}

fn version_from_row(row: &QueryResult) -> Result<ModelVersion> {
    let json_col = |col: &str| -> Result<String> { Ok(row.try_get::<String>("", col)?) };
    Ok(ModelVersion {
        name: row.try_get("", "name")?,
        version: row.try_get("", "version")?,
        source: row.try_get("", "source")?,
        run_id: row.try_get("", "run_id")?,
        status: row.try_get("", "status")?,
        current_stage: row.try_get("", "current_stage")?,
        description: row.try_get("", "description")?,
        created_by: row.try_get("", "created_by")?,
        created_at: row.try_get("", "created_at")?,
        updated_at: row.try_get("", "updated_at")?,
        flavor: row.try_get("", "flavor")?,
        metrics: serde_json::from_str(&json_col("metrics")?).unwrap_or_default(),
        signature: serde_json::from_str(&json_col("signature")?).unwrap_or_default(),
        lineage: serde_json::from_str(&json_col("lineage")?).unwrap_or_default(),
        tags: Vec::new(),
        aliases: Vec::new(),
    })
}

/// Fills tags and aliases of versions.
pub(crate) async fn attach_version_data<C: ConnectionTrait>(
    db: &C,
    mut versions: Vec<ModelVersion>,
) -> Result<Vec<ModelVersion>> {
    let names: Vec<&str> = {
        let mut names: Vec<&str> = versions.iter().map(|v| v.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    };
    if names.is_empty() {
        return Ok(versions);
    }
    let tags = db
        .query_all(
            &Query::select()
                .columns([
                    VersionTags::Name,
                    VersionTags::Version,
                    VersionTags::Key,
                    VersionTags::Value,
                ])
                .from(VersionTags::Table)
                .and_where(Expr::col(VersionTags::Name).is_in(names.clone()))
                .order_by(VersionTags::Key, Order::Asc)
                .to_owned(),
        )
        .await?;
    let aliases = db
        .query_all(
            &Query::select()
                .columns([Aliases::Name, Aliases::Alias, Aliases::Version])
                .from(Aliases::Table)
                .and_where(Expr::col(Aliases::Name).is_in(names))
                .order_by(Aliases::Alias, Order::Asc)
                .to_owned(),
        )
        .await?;
    let mut tag_map: HashMap<(String, i64), Vec<KeyValue>> = HashMap::new();
    for row in tags {
        tag_map
            .entry((row.try_get("", "name")?, row.try_get("", "version")?))
            .or_default()
            .push(KeyValue {
                key: row.try_get("", "key")?,
                value: row.try_get("", "value")?,
            });
    }
    let mut alias_map: HashMap<(String, i64), Vec<String>> = HashMap::new();
    for row in aliases {
        alias_map
            .entry((row.try_get("", "name")?, row.try_get("", "version")?))
            .or_default()
            .push(row.try_get("", "alias")?);
    }
    for version in &mut versions {
        let key = (version.name.clone(), version.version);
        version.tags = tag_map.remove(&key).unwrap_or_default();
        version.aliases = alias_map.remove(&key).unwrap_or_default();
    }
    Ok(versions)
}

/// Reads one version.
pub async fn get_version<C: ConnectionTrait>(
    db: &C,
    name: &str,
    version: i64,
) -> Result<ModelVersion> {
    let row = db
        .query_one(
            &version_select()
                .and_where(Expr::col((Versions::Table, Versions::Name)).eq(name))
                .and_where(Expr::col((Versions::Table, Versions::Version)).eq(version))
                .to_owned(),
        )
        .await?;
    let row = row.ok_or_else(|| {
        RegistryError::NotFound(format!(
            "Model Version (name={name}, version={version}) not found"
        ))
    })?;
    let mut versions = attach_version_data(db, vec![version_from_row(&row)?]).await?;
    versions.pop().ok_or_else(|| {
        RegistryError::NotFound(format!(
            "Model Version (name={name}, version={version}) not found"
        ))
    })
}

/// Registers the next version of a model and announces it (`model.version.registered`).
pub async fn create_version(
    state: &AppState,
    name: &str,
    new: NewVersion,
    actor: &str,
) -> Result<ModelVersion> {
    if new.source.trim().is_empty() {
        return Err(invalid("a model version needs a source"));
    }
    for tag in &new.tags {
        crate::tracking::check_key("tag", &tag.key)?;
    }
    let mut metrics = new.metrics.clone();
    let mut lineage = new.lineage.clone();
    if let Some(run_id) = new.run_id.as_deref().filter(|r| !r.is_empty()) {
        let run = crate::tracking::runs::get(&state.db, run_id).await?;
        if metrics.is_empty() {
            metrics = run
                .metrics
                .iter()
                .filter(|m| m.value.is_finite())
                .map(|m| (m.key.clone(), m.value))
                .collect();
        }
        lineage.run_id = Some(run_id.to_owned());
        if lineage.code_ref.is_none() {
            lineage.code_ref = run
                .tags
                .iter()
                .find(|t| t.key == "mlflow.source.git.commit")
                .map(|t| t.value.clone());
        }
        let tag = |key: &str| {
            run.tags
                .iter()
                .find(|t| t.key == key)
                .map(|t| t.value.clone())
        };
        if lineage.parent_run_id.is_none() {
            lineage.parent_run_id = tag("mlflow.parentRunId");
        }
        // Runs name their training data with the `flywheel.dataset` tag, `<name>@<version>`.
        if lineage.dataset.is_none()
            && let Some((name, version)) = tag("flywheel.dataset")
                .as_deref()
                .and_then(|d| d.split_once('@'))
        {
            lineage.dataset = Some(flywheel_events::payloads::DatasetRef {
                name: name.to_owned(),
                version: version.to_owned(),
            });
        }
        if lineage.params.is_empty() {
            lineage.params = run
                .params
                .iter()
                .map(|p| (p.key.clone(), json!(p.value)))
                .collect();
        }
    }
    // Registrations of one model queue on its row (the update locks it until commit, so the
    // next one reads the number this one took); should two still race for a number, the
    // primary key decides and the loser tries again.
    for _ in 0..5 {
        let txn = state.db.begin().await?;
        model_exists(&txn, name).await?;
        touch_model(&txn, name).await?;
        let next = next_version(&txn, name).await?;
        let now = now_millis();
        let flavor = if new.flavor.is_empty() {
            "mlflow".to_owned()
        } else {
            new.flavor.clone()
        };
        let insert = Query::insert()
            .into_table(Versions::Table)
            .columns([
                Versions::Name,
                Versions::Version,
                Versions::Source,
                Versions::RunId,
                Versions::Status,
                Versions::CurrentStage,
                Versions::Description,
                Versions::CreatedBy,
                Versions::CreatedAt,
                Versions::UpdatedAt,
                Versions::Flavor,
                Versions::Metrics,
                Versions::Signature,
                Versions::Lineage,
            ])
            .values([
                name.into(),
                next.into(),
                new.source.clone().into(),
                new.run_id.clone().filter(|r| !r.is_empty()).into(),
                "READY".into(),
                "None".into(),
                new.description.clone().into(),
                actor.into(),
                now.into(),
                now.into(),
                flavor.clone().into(),
                serde_json::to_string(&metrics).map_err(bad)?.into(),
                serde_json::to_string(&new.signature).map_err(bad)?.into(),
                serde_json::to_string(&lineage).map_err(bad)?.into(),
            ])
            .map_err(bad)?
            .to_owned();
        match txn.execute(&insert).await {
            Ok(_) => {}
            Err(e) if RegistryError::is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
        if let Some(job_id) = &new.claim_job
            && !crate::jobs::claim_registration(&txn, job_id, next).await?
        {
            return Err(RegistryError::AlreadyExists(format!(
                "job {job_id} already registered a version"
            )));
        }
        for tag in &new.tags {
            upsert_version_tag(&txn, name, next, tag).await?;
        }
        let event = Event::ModelVersionRegistered(ModelVersionRegistered {
            model: name.to_owned(),
            version: u32::try_from(next).unwrap_or(u32::MAX),
            package_uri: new.source.clone(),
            flavor,
            metrics: metrics.clone(),
            signature: new.signature.clone(),
            lineage: lineage.clone(),
        });
        announce(state, &txn, event).await?;
        audit::record(
            &txn,
            name,
            "version.registered",
            actor,
            None,
            Some(json!({"version": next, "source": new.source, "run_id": new.run_id})),
        )
        .await?;
        let registered = get_version(&txn, name, next).await?;
        governance::on_registered(state, &txn, &registered, actor).await?;
        txn.commit().await?;
        flywheel_runtime::outbox::wake();
        return get_version(&state.db, name, next).await;
    }
    Err(RegistryError::AlreadyExists(format!(
        "could not allocate a version number for {name}; try again"
    )))
}

async fn next_version(txn: &DatabaseTransaction, name: &str) -> Result<i64> {
    let row = txn
        .query_one(
            &Query::select()
                .expr_as(
                    Expr::col(Versions::Version).max(),
                    sea_orm::sea_query::Alias::new("max_version"),
                )
                .from(Versions::Table)
                .and_where(Expr::col(Versions::Name).eq(name))
                .to_owned(),
        )
        .await?;
    let max: Option<i64> = match row {
        Some(row) => row.try_get("", "max_version")?,
        None => None,
    };
    Ok(max.unwrap_or(0) + 1)
}

tokio::task_local! {
    /// The event being handled, so everything announced while handling it continues its
    /// causal chain (same correlation id, causation = that event).
    static CAUSE: Envelope;
}

/// Runs `work` with `cause` as the cause of every event it announces, creating what it
/// creates in the cause's project.
pub async fn caused_by<F: std::future::Future>(cause: Envelope, work: F) -> F::Output {
    let scope = flywheel_runtime::scope::Scope::creating_in(cause.project.clone());
    CAUSE
        .scope(cause, flywheel_runtime::scope::within(scope, work))
        .await
}

/// Announces `training.requested` (audited on the model when it exists); returns the request id.
pub async fn request_training(
    state: &AppState,
    request: flywheel_events::payloads::TrainingRequested,
    actor: &str,
) -> Result<String> {
    let request_id = request.request_id.clone();
    let model = request.model.clone();
    let txn = state.db.begin().await?;
    // A model of a project the caller cannot see is not the caller's to retrain.
    if let Some(row) = txn
        .query_one(
            &Query::select()
                .column(Models::Project)
                .from(Models::Table)
                .and_where(Expr::col(Models::Name).eq(model.as_str()))
                .to_owned(),
        )
        .await?
        && !crate::projects::sees(&row.try_get::<String>("", "project")?)
    {
        return Err(RegistryError::AlreadyExists(format!(
            "model name {model} is taken by another project"
        )));
    }
    let details = json!({"request_id": request_id, "dataset": request.dataset, "trainer": request.trainer.name});
    announce(state, &txn, Event::TrainingRequested(request)).await?;
    if model_exists(&txn, &model).await.is_ok() {
        audit::record(
            &txn,
            &model,
            "training.requested",
            actor,
            None,
            Some(details),
        )
        .await?;
    }
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    Ok(request_id)
}

/// Writes an event to the outbox inside `txn` (for other registry modules).
pub(crate) async fn announce_event(
    state: &AppState,
    txn: &DatabaseTransaction,
    event: Event,
) -> Result<()> {
    announce(state, txn, event).await
}

/// Writes an event to the outbox inside `txn`, in the project of the model or dataset it is
/// about.
async fn announce(state: &AppState, txn: &DatabaseTransaction, event: Event) -> Result<()> {
    let project = project_of(txn, &event).await?;
    let mut envelope = CAUSE
        .try_with(|cause| Envelope::caused_by(cause, crate::SERVICE, event.clone()))
        .unwrap_or_else(|_| Envelope::new(crate::SERVICE, project.clone(), event));
    envelope.project = project;
    flywheel_runtime::outbox::enqueue(txn, crate::SERVICE, &state.bus, &envelope).await?;
    Ok(())
}

/// The project of the model or dataset an event is about (the running work's home project
/// for anything else, or a model not registered yet).
async fn project_of(txn: &DatabaseTransaction, event: &Event) -> Result<String> {
    let model = match event {
        Event::ModelVersionRegistered(e) => Some(&e.model),
        Event::ModelVersionAliasChanged(e) => Some(&e.model),
        Event::TrainingRequested(e) => Some(&e.model),
        Event::ModelVersionGatesEvaluated(e) => Some(&e.model),
        Event::ModelVersionApprovalRequested(e) => Some(&e.model),
        Event::ModelVersionApproved(e) | Event::ModelVersionRejected(e) => Some(&e.model),
        _ => None,
    };
    let select = if let Some(model) = model {
        Query::select()
            .column(Models::Project)
            .from(Models::Table)
            .and_where(Expr::col(Models::Name).eq(model.as_str()))
            .to_owned()
    } else if let Event::DatasetVersionCreated(DatasetVersionCreated { dataset, .. })
    | Event::DatasetValidationCompleted(DatasetValidationCompleted {
        dataset, ..
    }) = event
    {
        Query::select()
            .column(Datasets::Project)
            .from(Datasets::Table)
            .and_where(Expr::col(Datasets::Name).eq(dataset.as_str()))
            .to_owned()
    } else {
        return Ok(crate::projects::home());
    };
    if let Some(row) = txn.query_one(&select).await? {
        return Ok(row.try_get("", "project")?);
    }
    Ok(crate::projects::home())
}

async fn upsert_version_tag<C: ConnectionTrait>(
    db: &C,
    name: &str,
    version: i64,
    tag: &KeyValue,
) -> Result<()> {
    db.execute(
        &Query::insert()
            .into_table(VersionTags::Table)
            .columns([
                VersionTags::Name,
                VersionTags::Version,
                VersionTags::Key,
                VersionTags::Value,
            ])
            .values([
                name.into(),
                version.into(),
                tag.key.clone().into(),
                tag.value.clone().into(),
            ])
            .map_err(bad)?
            .on_conflict(
                OnConflict::columns([VersionTags::Name, VersionTags::Version, VersionTags::Key])
                    .update_column(VersionTags::Value)
                    .to_owned(),
            )
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// Sets a version tag.
pub async fn set_version_tag(
    state: &AppState,
    name: &str,
    version: i64,
    tag: &KeyValue,
    actor: &str,
) -> Result<()> {
    crate::tracking::check_key("tag", &tag.key)?;
    let txn = state.db.begin().await?;
    get_version(&txn, name, version).await?;
    upsert_version_tag(&txn, name, version, tag).await?;
    audit::record(
        &txn,
        name,
        "version.tag_set",
        actor,
        None,
        Some(json!({"version": version, "key": tag.key, "value": tag.value})),
    )
    .await?;
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    Ok(())
}

/// Points an alias at a version (moving it if it exists) and announces the change. Aliases
/// that the model's policy protects move only through approved promotions.
pub async fn set_alias(
    state: &AppState,
    name: &str,
    alias: &str,
    version: i64,
    actor: &str,
) -> Result<()> {
    check_alias(alias)?;
    let txn = state.db.begin().await?;
    let target = get_version(&txn, name, version).await?;
    governance::check_direct_alias_move(&txn, name, alias, &target).await?;
    apply_alias(state, &txn, name, alias, version, actor).await?;
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    Ok(())
}

/// Moves an alias inside `txn`: row, event, audit entry (a no-op when it already points there).
pub(crate) async fn apply_alias(
    state: &AppState,
    txn: &DatabaseTransaction,
    name: &str,
    alias: &str,
    version: i64,
    actor: &str,
) -> Result<()> {
    let previous = alias_target(txn, name, alias).await?;
    if previous == Some(version) {
        return Ok(());
    }
    txn.execute(
        &Query::insert()
            .into_table(Aliases::Table)
            .columns([Aliases::Name, Aliases::Alias, Aliases::Version])
            .values([name.into(), alias.into(), version.into()])
            .map_err(bad)?
            .on_conflict(
                OnConflict::columns([Aliases::Name, Aliases::Alias])
                    .update_column(Aliases::Version)
                    .to_owned(),
            )
            .to_owned(),
    )
    .await?;
    touch_model(txn, name).await?;
    announce_alias(state, txn, name, alias, Some(version), previous, actor).await?;
    audit::record(
        txn,
        name,
        "alias.set",
        actor,
        previous.map(|v| json!({"alias": alias, "version": v})),
        Some(json!({"alias": alias, "version": version})),
    )
    .await?;
    Ok(())
}

async fn alias_target<C: ConnectionTrait>(db: &C, name: &str, alias: &str) -> Result<Option<i64>> {
    let row = db
        .query_one(
            &Query::select()
                .column(Aliases::Version)
                .from(Aliases::Table)
                .and_where(Expr::col(Aliases::Name).eq(name))
                .and_where(Expr::col(Aliases::Alias).eq(alias))
                .to_owned(),
        )
        .await?;
    Ok(match row {
        Some(row) => Some(row.try_get("", "version")?),
        None => None,
    })
}

async fn announce_alias(
    state: &AppState,
    txn: &DatabaseTransaction,
    name: &str,
    alias: &str,
    version: Option<i64>,
    previous: Option<i64>,
    actor: &str,
) -> Result<()> {
    let to_u32 = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
    let event = Event::ModelVersionAliasChanged(ModelVersionAliasChanged {
        model: name.to_owned(),
        alias: alias.to_owned(),
        version: version.map(to_u32),
        previous_version: previous.map(to_u32),
        changed_by: actor.to_owned(),
    });
    announce(state, txn, event).await
}

/// Removes an alias and announces it.
pub async fn delete_alias(state: &AppState, name: &str, alias: &str, actor: &str) -> Result<()> {
    let txn = state.db.begin().await?;
    model_exists(&txn, name).await?;
    let Some(previous) = alias_target(&txn, name, alias).await? else {
        return Err(RegistryError::InvalidParameter(format!(
            "Registered model alias {alias} not found."
        )));
    };
    txn.execute(
        &Query::delete()
            .from_table(Aliases::Table)
            .and_where(Expr::col(Aliases::Name).eq(name))
            .and_where(Expr::col(Aliases::Alias).eq(alias))
            .to_owned(),
    )
    .await?;
    announce_alias(state, &txn, name, alias, None, Some(previous), actor).await?;
    audit::record(
        &txn,
        name,
        "alias.deleted",
        actor,
        Some(json!({"alias": alias, "version": previous})),
        None,
    )
    .await?;
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    Ok(())
}

/// The version an alias points to.
pub async fn get_by_alias<C: ConnectionTrait>(
    db: &C,
    name: &str,
    alias: &str,
) -> Result<ModelVersion> {
    model_exists(db, name).await?;
    let version = alias_target(db, name, alias).await?.ok_or_else(|| {
        RegistryError::InvalidParameter(format!("Registered model alias {alias} not found."))
    })?;
    get_version(db, name, version).await
}

/// Moves a version to a stage; optionally archives the others in that stage.
pub async fn transition_stage(
    state: &AppState,
    name: &str,
    version: i64,
    stage: &str,
    archive_existing: bool,
    actor: &str,
) -> Result<ModelVersion> {
    let stage = canonical_stage(stage)?;
    let txn = state.db.begin().await?;
    let before = get_version(&txn, name, version).await?;
    let now = now_millis();
    if archive_existing && matches!(stage, "Staging" | "Production") {
        txn.execute(
            &Query::update()
                .table(Versions::Table)
                .value(Versions::CurrentStage, "Archived")
                .value(Versions::UpdatedAt, now)
                .and_where(Expr::col(Versions::Name).eq(name))
                .and_where(Expr::col(Versions::CurrentStage).eq(stage))
                .and_where(Expr::col(Versions::Version).ne(version))
                .to_owned(),
        )
        .await?;
    }
    txn.execute(
        &Query::update()
            .table(Versions::Table)
            .value(Versions::CurrentStage, stage)
            .value(Versions::UpdatedAt, now)
            .and_where(Expr::col(Versions::Name).eq(name))
            .and_where(Expr::col(Versions::Version).eq(version))
            .to_owned(),
    )
    .await?;
    audit::record(
        &txn,
        name,
        "version.stage_changed",
        actor,
        Some(json!({"version": version, "stage": before.current_stage})),
        Some(json!({"version": version, "stage": stage, "archive_existing": archive_existing})),
    )
    .await?;
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    get_version(&state.db, name, version).await
}

/// The newest version per stage (only the given stages, or all).
pub async fn latest_versions<C: ConnectionTrait>(
    db: &C,
    name: &str,
    stages: &[String],
) -> Result<Vec<ModelVersion>> {
    let rows = db
        .query_all(
            &version_select()
                .and_where(Expr::col((Versions::Table, Versions::Name)).eq(name))
                .order_by(Versions::Version, Order::Desc)
                .to_owned(),
        )
        .await?;
    let wanted: Vec<&str> = stages
        .iter()
        .map(|s| canonical_stage(s))
        .collect::<Result<_>>()?;
    let mut seen = std::collections::HashSet::new();
    let mut latest = Vec::new();
    for row in rows {
        let version = version_from_row(&row)?;
        if (wanted.is_empty() || wanted.contains(&version.current_stage.as_str()))
            && seen.insert(version.current_stage.clone())
        {
            latest.push(version);
        }
    }
    latest.sort_by_key(|v| v.version);
    attach_version_data(db, latest).await
}
