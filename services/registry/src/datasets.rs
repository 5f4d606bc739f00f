//! Datasets: content-addressed versions (same bytes, same version), a profile per version (the
//! monitor's reference), and a declarative validation suite run on every new version. New
//! versions are announced with `dataset.version.created` and `dataset.validation.completed`.

use bytes::Bytes;
use flywheel_data::{ColumnSchema, Expectation, ExpectationOutcome, Format, Profile};
use flywheel_events::Event;
use flywheel_events::payloads::{
    Column, DatasetValidationCompleted, DatasetVersionCreated, ExpectationResult,
};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Order, Query};
use sea_orm::{ConnectionTrait, QueryResult, TransactionTrait};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::schema::{DatasetVersions, Datasets};
use crate::tracking::now_millis;
use crate::{AppState, RegistryError, Result};

/// A stored dataset version.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DatasetVersion {
    /// Dataset name.
    pub dataset: String,
    /// Version id (sha256 prefix).
    pub version: String,
    /// Position in the dataset's history, from 1.
    pub seq: i64,
    /// sha256 of the bytes.
    pub sha256: String,
    /// Artifact URI of the bytes.
    pub uri: String,
    /// `csv` or `parquet`.
    pub format: String,
    /// Size in bytes.
    pub size_bytes: i64,
    /// Rows.
    pub row_count: i64,
    /// Logical schema.
    pub columns: Vec<ColumnSchema>,
    /// The version before this one.
    pub previous_version: Option<String>,
    /// Whether every expectation held.
    pub validation_passed: bool,
    /// Each expectation's outcome.
    pub validation: Vec<ExpectationOutcome>,
    /// Who pushed it.
    pub created_by: String,
    /// When, ms.
    pub created_at: i64,
}

/// Dataset names: letters, digits, `_`, `-`, `.`; no `..`; at most 128 characters.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.contains("..")
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidParameter(format!(
            "invalid dataset name `{name}`: letters, digits, `_`, `-`, `.` (1 to 128)"
        )))
    }
}

fn bad(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::InvalidParameter(e.to_string())
}

/// Refuses a change to a dataset of a project the running work cannot see (its name is
/// taken); a dataset that does not exist yet is free.
async fn check_owner<C: ConnectionTrait>(db: &C, name: &str) -> Result<()> {
    let row = db
        .query_one(
            &Query::select()
                .column(Datasets::Project)
                .from(Datasets::Table)
                .and_where(Expr::col(Datasets::Name).eq(name))
                .to_owned(),
        )
        .await?;
    match row {
        Some(row) if !crate::projects::sees(&row.try_get::<String>("", "project")?) => {
            Err(RegistryError::AlreadyExists(format!(
                "dataset name {name} is taken by another project"
            )))
        }
        _ => Ok(()),
    }
}

/// Sets a dataset's validation suite (creating the dataset if needed).
pub async fn set_suite(state: &AppState, name: &str, suite: &[Expectation]) -> Result<()> {
    check_name(name)?;
    check_owner(&state.db, name).await?;
    let now = now_millis();
    let text = serde_json::to_string(suite).map_err(bad)?;
    state
        .db
        .execute(
            &Query::insert()
                .into_table(Datasets::Table)
                .columns([
                    Datasets::Name,
                    Datasets::Suite,
                    Datasets::CreatedAt,
                    Datasets::UpdatedAt,
                    Datasets::Project,
                ])
                .values([
                    name.into(),
                    text.into(),
                    now.into(),
                    now.into(),
                    crate::projects::home().into(),
                ])
                .map_err(bad)?
                .on_conflict(
                    OnConflict::column(Datasets::Name)
                        .update_columns([Datasets::Suite, Datasets::UpdatedAt])
                        .to_owned(),
                )
                .to_owned(),
        )
        .await?;
    Ok(())
}

/// A dataset's validation suite (empty when none was set).
pub async fn suite<C: ConnectionTrait>(db: &C, name: &str) -> Result<Vec<Expectation>> {
    let row = db
        .query_one(
            &Query::select()
                .column(Datasets::Suite)
                .from(Datasets::Table)
                .and_where(Expr::col(Datasets::Name).eq(name))
                .apply(|select| crate::projects::confine(select, Datasets::Project))
                .to_owned(),
        )
        .await?;
    match row {
        Some(row) => serde_json::from_str(&row.try_get::<String>("", "suite")?).map_err(bad),
        None => Ok(Vec::new()),
    }
}

fn select() -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .columns([
            DatasetVersions::Name,
            DatasetVersions::Version,
            DatasetVersions::Seq,
            DatasetVersions::Sha256,
            DatasetVersions::ObjectKey,
            DatasetVersions::Format,
            DatasetVersions::SizeBytes,
            DatasetVersions::RowCount,
            DatasetVersions::Columns,
            DatasetVersions::PreviousVersion,
            DatasetVersions::ValidationPassed,
            DatasetVersions::Validation,
            DatasetVersions::CreatedBy,
            DatasetVersions::CreatedAt,
        ])
        .from(DatasetVersions::Table)
        .apply(|select| crate::projects::confine_to_datasets(select, DatasetVersions::Name))
        .to_owned()
}

fn from_row(state: &AppState, row: &QueryResult) -> Result<DatasetVersion> {
    let key: String = row.try_get("", "object_key")?;
    Ok(DatasetVersion {
        dataset: row.try_get("", "name")?,
        version: row.try_get("", "version")?,
        seq: row.try_get("", "seq")?,
        sha256: row.try_get("", "sha256")?,
        uri: state.artifacts.uri(&key),
        format: row.try_get("", "format")?,
        size_bytes: row.try_get("", "size_bytes")?,
        row_count: row.try_get("", "row_count")?,
        columns: serde_json::from_str(&row.try_get::<String>("", "columns")?).map_err(bad)?,
        previous_version: row.try_get("", "previous_version")?,
        validation_passed: row.try_get("", "validation_passed")?,
        validation: serde_json::from_str(&row.try_get::<String>("", "validation")?).map_err(bad)?,
        created_by: row.try_get("", "created_by")?,
        created_at: row.try_get("", "created_at")?,
    })
}

/// One version.
pub async fn get_version(state: &AppState, name: &str, version: &str) -> Result<DatasetVersion> {
    let row = state
        .db
        .query_one(
            &select()
                .and_where(Expr::col(DatasetVersions::Name).eq(name))
                .and_where(Expr::col(DatasetVersions::Version).eq(version))
                .to_owned(),
        )
        .await?
        .ok_or_else(|| {
            RegistryError::NotFound(format!("dataset {name} has no version {version}"))
        })?;
    from_row(state, &row)
}

/// Every version of a dataset, newest first.
pub async fn list_versions(state: &AppState, name: &str) -> Result<Vec<DatasetVersion>> {
    let rows = state
        .db
        .query_all(
            &select()
                .and_where(Expr::col(DatasetVersions::Name).eq(name))
                .order_by(DatasetVersions::Seq, Order::Desc)
                .to_owned(),
        )
        .await?;
    rows.iter().map(|row| from_row(state, row)).collect()
}

/// A version's stored profile.
pub async fn get_profile(state: &AppState, name: &str, version: &str) -> Result<Profile> {
    let stored = get_version(state, name, version).await?;
    let bytes = state
        .artifacts
        .get(&profile_key(name, &stored.sha256))
        .await?;
    serde_json::from_slice(&bytes).map_err(bad)
}

fn profile_key(name: &str, sha256: &str) -> String {
    format!("datasets/{name}/profiles/{sha256}.json")
}

/// Pushes bytes as a dataset version: returns the version and whether it is new.
/// Malformed files are refused before anything is stored.
pub async fn push(
    state: &AppState,
    name: &str,
    bytes: Bytes,
    format_hint: Option<&str>,
    actor: &str,
) -> Result<(DatasetVersion, bool)> {
    check_name(name)?;
    check_owner(&state.db, name).await?;
    if bytes.is_empty() {
        return Err(RegistryError::InvalidParameter(
            "the upload is empty".into(),
        ));
    }
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let version = sha256[..16].to_owned();
    if let Ok(existing) = get_version(state, name, &version).await {
        return Ok((existing, false));
    }
    let format = Format::detect(format_hint, &bytes).map_err(bad)?;
    // Parsing and profiling are CPU work: keep them off the async workers.
    let parsed = {
        let bytes = bytes.clone();
        tokio::task::spawn_blocking(move || -> flywheel_data::Result<_> {
            let table = flywheel_data::read(bytes, format)?;
            let profile = flywheel_data::profile(&table);
            Ok((table, profile))
        })
        .await
        .map_err(|e| RegistryError::InvalidParameter(format!("profiling failed: {e}")))?
        .map_err(bad)?
    };
    let (table, profile) = parsed;
    let suite = suite(&state.db, name).await?;
    let previous = list_versions(state, name).await?.into_iter().next();
    let validation = {
        let previous_columns = previous.as_ref().map(|p| p.columns.clone());
        let suite = suite.clone();
        let profile = profile.clone();
        tokio::task::spawn_blocking(move || {
            flywheel_data::validate(&table, &profile, &suite, previous_columns.as_deref())
        })
        .await
        .map_err(|e| RegistryError::InvalidParameter(format!("validation failed: {e}")))?
    };
    let columns: Vec<ColumnSchema> = profile
        .columns
        .iter()
        .map(|c| ColumnSchema {
            name: c.name.clone(),
            data_type: c.data_type.clone(),
            nullable: c.nulls > 0,
        })
        .collect();

    // Bytes and profile first (content-addressed, so a retry rewrites nothing), then the row and
    // its events in one transaction.
    let stored = state
        .artifacts
        .put_content(&format!("datasets/{name}"), bytes.clone())
        .await?;
    state
        .artifacts
        .put(
            &profile_key(name, &sha256),
            Bytes::from(serde_json::to_vec(&profile).map_err(bad)?),
        )
        .await?;
    let passed = validation.iter().all(|o| o.passed);
    let now = now_millis();
    let txn = state.db.begin().await?;
    txn.execute(
        &Query::insert()
            .into_table(Datasets::Table)
            .columns([
                Datasets::Name,
                Datasets::Suite,
                Datasets::CreatedAt,
                Datasets::UpdatedAt,
                Datasets::Project,
            ])
            .values([
                name.into(),
                "[]".into(),
                now.into(),
                now.into(),
                crate::projects::home().into(),
            ])
            .map_err(bad)?
            .on_conflict(OnConflict::column(Datasets::Name).do_nothing().to_owned())
            .to_owned(),
    )
    .await?;
    let seq = previous.as_ref().map_or(1, |p| p.seq + 1);
    let insert = Query::insert()
        .into_table(DatasetVersions::Table)
        .columns([
            DatasetVersions::Name,
            DatasetVersions::Version,
            DatasetVersions::Seq,
            DatasetVersions::Sha256,
            DatasetVersions::ObjectKey,
            DatasetVersions::Format,
            DatasetVersions::SizeBytes,
            DatasetVersions::RowCount,
            DatasetVersions::Columns,
            DatasetVersions::ProfileKey,
            DatasetVersions::PreviousVersion,
            DatasetVersions::ValidationPassed,
            DatasetVersions::Validation,
            DatasetVersions::CreatedBy,
            DatasetVersions::CreatedAt,
        ])
        .values([
            name.into(),
            version.clone().into(),
            seq.into(),
            sha256.clone().into(),
            stored.key.clone().into(),
            format.as_str().into(),
            (stored.size as i64).into(),
            (profile.row_count as i64).into(),
            serde_json::to_string(&columns).map_err(bad)?.into(),
            profile_key(name, &sha256).into(),
            previous.as_ref().map(|p| p.version.clone()).into(),
            passed.into(),
            serde_json::to_string(&validation).map_err(bad)?.into(),
            actor.into(),
            now.into(),
        ])
        .map_err(bad)?
        .to_owned();
    match txn.execute(&insert).await {
        Ok(_) => {}
        // A concurrent push of the same bytes (or of another version taking this seq) won.
        Err(e) if RegistryError::is_unique_violation(&e) => {
            drop(txn);
            return match get_version(state, name, &version).await {
                Ok(existing) => Ok((existing, false)),
                Err(_) => Err(RegistryError::AlreadyExists(format!(
                    "dataset {name} changed concurrently; push again"
                ))),
            };
        }
        Err(e) => return Err(e.into()),
    }
    let created = Event::DatasetVersionCreated(DatasetVersionCreated {
        dataset: name.to_owned(),
        version: version.clone(),
        sha256: sha256.clone(),
        uri: state.artifacts.uri(&stored.key),
        format: format.as_str().to_owned(),
        size_bytes: stored.size,
        row_count: profile.row_count,
        columns: columns
            .iter()
            .map(|c| Column {
                name: c.name.clone(),
                data_type: c.data_type.clone(),
                nullable: c.nullable,
            })
            .collect(),
        profile_uri: Some(state.artifacts.uri(&profile_key(name, &sha256))),
        previous_version: previous.as_ref().map(|p| p.version.clone()),
    });
    let validated = Event::DatasetValidationCompleted(DatasetValidationCompleted {
        dataset: name.to_owned(),
        version: version.clone(),
        passed,
        results: validation
            .iter()
            .map(|o| ExpectationResult {
                expectation: o.expectation.clone(),
                column: o.column.clone(),
                passed: o.passed,
                message: o.message.clone(),
            })
            .collect(),
    });
    crate::models::announce_event(state, &txn, created).await?;
    crate::models::announce_event(state, &txn, validated).await?;
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    Ok((get_version(state, name, &version).await?, true))
}

/// Pushes an object already in the artifact store (a key relative to its root).
pub async fn push_reference(
    state: &AppState,
    name: &str,
    key: &str,
    format_hint: Option<&str>,
    actor: &str,
) -> Result<(DatasetVersion, bool)> {
    // Objects of the store are not partitioned by project, except under `projects/<name>/`:
    // work confined to one project may only reference its own part.
    if let Some(project) = flywheel_runtime::scope::current().only() {
        let own = format!("projects/{project}/");
        if !key.starts_with(&own) || key.contains("..") {
            return Err(RegistryError::InvalidParameter(format!(
                "a token of project {project} may only push objects under {own}"
            )));
        }
    }
    let bytes = state.artifacts.get(key).await?;
    push(state, name, bytes, format_hint.or(Some(key)), actor).await
}

/// A dataset with its number of versions and its latest one.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct DatasetSummary {
    /// Name.
    pub name: String,
    /// How many versions it has.
    pub versions: i64,
    /// The latest version's id.
    pub latest_version: Option<String>,
    /// The latest version's rows.
    pub latest_rows: Option<i64>,
}

/// Every dataset, by name.
pub async fn list<C: ConnectionTrait>(db: &C) -> Result<Vec<DatasetSummary>> {
    use sea_orm::sea_query::{Alias, Expr, Func, Order, Query};
    let rows = db
        .query_all(
            &Query::select()
                .column(DatasetVersions::Name)
                .expr_as(
                    Func::count(Expr::col(DatasetVersions::Version)),
                    Alias::new("n"),
                )
                .expr_as(
                    Func::max(Expr::col(DatasetVersions::Seq)),
                    Alias::new("last_seq"),
                )
                .from(DatasetVersions::Table)
                .apply(|select| crate::projects::confine_to_datasets(select, DatasetVersions::Name))
                .group_by_col(DatasetVersions::Name)
                .order_by(DatasetVersions::Name, Order::Asc)
                .to_owned(),
        )
        .await?;
    let mut summaries = Vec::new();
    for row in rows {
        let name: String = row.try_get("", "name")?;
        let last_seq: Option<i64> = row.try_get("", "last_seq")?;
        let latest = match last_seq {
            Some(seq) => {
                db.query_one(
                    &Query::select()
                        .columns([DatasetVersions::Version, DatasetVersions::RowCount])
                        .from(DatasetVersions::Table)
                        .and_where(Expr::col(DatasetVersions::Name).eq(name.as_str()))
                        .and_where(Expr::col(DatasetVersions::Seq).eq(seq))
                        .to_owned(),
                )
                .await?
            }
            None => None,
        };
        summaries.push(DatasetSummary {
            versions: row.try_get("", "n")?,
            latest_version: latest
                .as_ref()
                .map(|r| r.try_get("", "version"))
                .transpose()?,
            latest_rows: latest
                .as_ref()
                .map(|r| r.try_get("", "row_count"))
                .transpose()?,
            name,
        });
    }
    Ok(summaries)
}
