//! Deployments: a serving name that follows a model's alias (e.g. `production`) or is pinned
//! to a version. Activating one resolves the version, loads its package and swaps it in;
//! `deployment.rolled_out` or `deployment.failed` says how it went.

use flywheel_events::payloads::{DeploymentFailed, DeploymentRolledOut, RolloutStrategy};
use flywheel_events::{Envelope, Event};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Order, Query};
use sea_orm::{ConnectionTrait, QueryResult, TransactionTrait};
use serde::{Deserialize, Serialize};

use crate::schema::{Aliases, Deployments, Versions};
use crate::{AppState, DeployerError, Result};

/// A deployment as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deployment {
    /// Serving name.
    pub name: String,
    /// Project.
    pub project: String,
    /// Registered model.
    pub model: String,
    /// Alias it follows, if any.
    pub alias: Option<String>,
    /// Version it should serve (pinned, or where its alias points).
    pub version: Option<i32>,
    /// Version it last served successfully (what it falls back to when a load fails).
    pub serving_version: Option<i32>,
    /// Version whose rollout was rolled back; not tried again until the alias moves or the
    /// deployment is replaced.
    pub rolled_back_version: Option<i32>,
    /// How new versions replace the serving one.
    pub strategy: RolloutStrategy,
    /// What a new version must hold to during a rollout.
    pub slo: Slo,
    /// Whether its inference endpoints answer without a token (with authentication on).
    pub public_inference: bool,
    /// `waiting`, `serving` or `failed`.
    pub status: String,
    /// Why it is in that state.
    pub detail: String,
    /// Last change, ms.
    pub updated_at: i64,
}

/// The body of `PUT /api/v1/deployments/{name}`: a model and an alias or a version.
#[derive(Debug, Clone, Deserialize)]
pub struct DeploymentSpec {
    /// Registered model name.
    pub model: String,
    /// Follow this alias.
    #[serde(default)]
    pub alias: Option<String>,
    /// Or serve this version.
    #[serde(default)]
    pub version: Option<u32>,
    /// Project (default `default`).
    #[serde(default)]
    pub project: Option<String>,
    /// How new versions replace the serving one (default: direct).
    #[serde(default = "direct")]
    pub strategy: RolloutStrategy,
    /// What a new version must hold to during a rollout.
    #[serde(default)]
    pub slo: Slo,
    /// Inference without a token (default: a token with at least the viewer role).
    #[serde(default)]
    pub public_inference: bool,
}

fn direct() -> RolloutStrategy {
    RolloutStrategy::Direct
}

/// Service levels a rolling-out version must keep, judged at the end of every canary step
/// (and of a shadow run) against the serving version's numbers over the same time; breaking
/// one rolls it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// The candidate's server-error rate may exceed the serving version's by this much.
    #[serde(default = "default_error_rate_margin")]
    pub error_rate_margin: f64,
    /// The candidate's p99 latency may exceed the serving version's by this fraction...
    #[serde(default = "default_latency_margin")]
    pub latency_margin: f64,
    /// ...plus this many milliseconds (so microsecond-level noise never fails a rollout).
    #[serde(default = "default_latency_slack_ms")]
    pub latency_slack_ms: f64,
    /// An absolute ceiling on the candidate's error rate, whatever the serving version does.
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    /// An absolute ceiling on the candidate's p99 latency, milliseconds.
    #[serde(default)]
    pub max_p99_latency_ms: Option<f64>,
    /// In shadow: the largest share of mirrored answers that may differ from the serving
    /// version's (none: differences are reported, not judged).
    #[serde(default)]
    pub max_disagreement_rate: Option<f64>,
    /// Requests a step needs before it is judged; fewer pass.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
}

fn default_error_rate_margin() -> f64 {
    0.01
}

fn default_latency_margin() -> f64 {
    0.5
}

fn default_latency_slack_ms() -> f64 {
    5.0
}

fn default_min_requests() -> u64 {
    10
}

impl Default for Slo {
    fn default() -> Self {
        Self {
            error_rate_margin: default_error_rate_margin(),
            latency_margin: default_latency_margin(),
            latency_slack_ms: default_latency_slack_ms(),
            max_error_rate: None,
            max_p99_latency_ms: None,
            max_disagreement_rate: None,
            min_requests: default_min_requests(),
        }
    }
}

fn from_row(row: &QueryResult) -> Result<Deployment> {
    Ok(Deployment {
        name: row.try_get("", "name")?,
        project: row.try_get("", "project")?,
        model: row.try_get("", "model")?,
        alias: row.try_get("", "alias")?,
        version: row.try_get("", "version")?,
        serving_version: row.try_get("", "serving_version")?,
        rolled_back_version: row.try_get("", "rolled_back_version")?,
        strategy: serde_json::from_str(&row.try_get::<String>("", "strategy")?)
            .unwrap_or(RolloutStrategy::Direct),
        slo: serde_json::from_str(&row.try_get::<String>("", "slo")?).unwrap_or_default(),
        public_inference: row.try_get("", "public_inference")?,
        status: row.try_get("", "status")?,
        detail: row.try_get("", "detail")?,
        updated_at: row.try_get("", "updated_at")?,
    })
}

fn select() -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .columns([
            Deployments::Name,
            Deployments::Project,
            Deployments::Model,
            Deployments::Alias,
            Deployments::Version,
            Deployments::ServingVersion,
            Deployments::RolledBackVersion,
            Deployments::Strategy,
            Deployments::Slo,
            Deployments::PublicInference,
            Deployments::Status,
            Deployments::Detail,
            Deployments::UpdatedAt,
        ])
        .from(Deployments::Table)
        .to_owned()
}

/// Reads a deployment.
pub(crate) async fn get<C: ConnectionTrait>(db: &C, name: &str) -> Result<Deployment> {
    let row = db
        .query_one(
            &select()
                .and_where(Expr::col(Deployments::Name).eq(name))
                .to_owned(),
        )
        .await?
        .ok_or_else(|| DeployerError::NotFound(format!("deployment {name} not found")))?;
    from_row(&row)
}

/// Every deployment of the projects in view, by name.
pub(crate) async fn list<C: ConnectionTrait>(db: &C) -> Result<Vec<Deployment>> {
    let mut select = select().order_by(Deployments::Name, Order::Asc).to_owned();
    flywheel_runtime::scope::confine(&mut select, Deployments::Project);
    db.query_all(&select).await?.iter().map(from_row).collect()
}

/// Deployments of `model`, optionally only those following `alias`.
pub(crate) async fn of_model<C: ConnectionTrait>(
    db: &C,
    model: &str,
    alias: Option<&str>,
) -> Result<Vec<Deployment>> {
    let mut select = select();
    select.and_where(Expr::col(Deployments::Model).eq(model));
    if let Some(alias) = alias {
        select.and_where(Expr::col(Deployments::Alias).eq(alias));
    }
    db.query_all(&select).await?.iter().map(from_row).collect()
}

/// Creates or replaces a deployment and activates it.
pub(crate) async fn put(state: &AppState, name: &str, spec: DeploymentSpec) -> Result<Deployment> {
    flywheel_events::subjects::check_token(name).map_err(|_| {
        DeployerError::Invalid(format!(
            "invalid deployment name `{name}`: letters, digits, `_` or `-`"
        ))
    })?;
    if spec.model.trim().is_empty() {
        return Err(DeployerError::Invalid(
            "model: a registered model name".into(),
        ));
    }
    if spec.alias.is_some() == spec.version.is_some() {
        return Err(DeployerError::Invalid(
            "give exactly one of `alias` and `version`".into(),
        ));
    }
    let version = spec.version.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    crate::rollouts::validate(&spec.strategy, &spec.slo)?;
    let project = flywheel_runtime::scope::place(spec.project.as_deref())
        .map_err(DeployerError::Forbidden)?;
    let strategy =
        serde_json::to_string(&spec.strategy).map_err(|e| DeployerError::Invalid(e.to_string()))?;
    let slo =
        serde_json::to_string(&spec.slo).map_err(|e| DeployerError::Invalid(e.to_string()))?;
    let previous_model = get(&state.db, name).await.ok().map(|d| d.model);
    state
        .db
        .execute(
            &Query::insert()
                .into_table(Deployments::Table)
                .columns([
                    Deployments::Name,
                    Deployments::Project,
                    Deployments::Model,
                    Deployments::Alias,
                    Deployments::Version,
                    Deployments::Strategy,
                    Deployments::Slo,
                    Deployments::PublicInference,
                    Deployments::Status,
                    Deployments::Detail,
                    Deployments::UpdatedAt,
                ])
                .values([
                    name.into(),
                    project.clone().into(),
                    spec.model.clone().into(),
                    spec.alias.clone().into(),
                    version.into(),
                    strategy.into(),
                    slo.into(),
                    spec.public_inference.into(),
                    "waiting".into(),
                    String::new().into(),
                    crate::now_millis().into(),
                ])
                .map_err(|e| DeployerError::Invalid(e.to_string()))?
                .on_conflict(
                    OnConflict::column(Deployments::Name)
                        .update_columns([
                            Deployments::Project,
                            Deployments::Model,
                            Deployments::Alias,
                            Deployments::Version,
                            Deployments::Strategy,
                            Deployments::Slo,
                            Deployments::PublicInference,
                            Deployments::Status,
                            Deployments::Detail,
                            Deployments::UpdatedAt,
                        ])
                        .value(Deployments::RolledBackVersion, Option::<i32>::None)
                        .to_owned(),
                )
                .to_owned(),
        )
        .await?;
    // Another model: every replica stops serving the old one now (its versions are not this
    // model's). The same model keeps serving while the new settings take effect.
    if previous_model.is_some_and(|m| m != spec.model) {
        state
            .db
            .execute(
                &Query::update()
                    .table(Deployments::Table)
                    .value(Deployments::ServingVersion, Option::<i32>::None)
                    .value(Deployments::CandidateVersion, Option::<i32>::None)
                    .value(
                        Deployments::RouteGeneration,
                        Expr::col(Deployments::RouteGeneration).add(1i64),
                    )
                    .and_where(Expr::col(Deployments::Name).eq(name))
                    .to_owned(),
            )
            .await?;
    }
    if state
        .serving
        .get(name)
        .is_some_and(|loaded| loaded.model_name != spec.model)
    {
        crate::rollouts::cancel(state, name);
        state.serving.remove(name);
    }
    state.exposure.set(name, &project, spec.public_inference);
    forget_failure(state, name);
    // The rollout leader decides; on another replica the leader takes the new deployment up
    // within a second.
    if state.leadership.is_leader() {
        activate(state, name).await?;
    }
    get(&state.db, name).await
}

/// Stops serving and forgets a deployment.
pub(crate) async fn delete(state: &AppState, name: &str) -> Result<()> {
    let gone = state
        .db
        .execute(
            &Query::delete()
                .from_table(Deployments::Table)
                .and_where(Expr::col(Deployments::Name).eq(name))
                .to_owned(),
        )
        .await?
        .rows_affected();
    if gone == 0 {
        return Err(DeployerError::NotFound(format!(
            "deployment {name} not found"
        )));
    }
    state
        .db
        .execute(
            &Query::delete()
                .from_table(crate::schema::RolloutStats::Table)
                .and_where(Expr::col(crate::schema::RolloutStats::Deployment).eq(name))
                .to_owned(),
        )
        .await?;
    crate::rollouts::cancel(state, name);
    state.serving.remove(name);
    state.exposure.remove(name);
    Ok(())
}

async fn alias_version<C: ConnectionTrait>(
    db: &C,
    model: &str,
    alias: &str,
) -> Result<Option<i32>> {
    Ok(db
        .query_one(
            &Query::select()
                .column(Aliases::Version)
                .from(Aliases::Table)
                .and_where(Expr::col(Aliases::Model).eq(model))
                .and_where(Expr::col(Aliases::Alias).eq(alias))
                .to_owned(),
        )
        .await?
        .map(|r| r.try_get::<i32>("", "version"))
        .transpose()?)
}

/// Where a registered version's package is, if the deployer has heard of it.
pub(crate) async fn package_of<C: ConnectionTrait>(
    db: &C,
    model: &str,
    version: i32,
) -> Result<Option<String>> {
    Ok(db
        .query_one(
            &Query::select()
                .column(Versions::PackageUri)
                .from(Versions::Table)
                .and_where(Expr::col(Versions::Model).eq(model))
                .and_where(Expr::col(Versions::Version).eq(version))
                .to_owned(),
        )
        .await?
        .map(|r| r.try_get::<String>("", "package_uri"))
        .transpose()?)
}

async fn set_state(
    state: &AppState,
    name: &str,
    version: Option<i32>,
    status: &str,
    detail: &str,
    event: Option<Event>,
    project: &str,
) -> Result<()> {
    let txn = state.db.begin().await?;
    state.leadership.fence(&txn).await?;
    txn.execute(
        &Query::update()
            .table(Deployments::Table)
            .value(Deployments::Status, status)
            .value(Deployments::Detail, detail)
            .value(Deployments::UpdatedAt, crate::now_millis())
            .and_where(Expr::col(Deployments::Name).eq(name))
            .to_owned(),
    )
    .await?;
    if let Some(version) = version {
        txn.execute(
            &Query::update()
                .table(Deployments::Table)
                .value(Deployments::Version, version)
                .and_where(Expr::col(Deployments::Name).eq(name))
                .and_where(Expr::col(Deployments::Alias).is_not_null())
                .to_owned(),
        )
        .await?;
    }
    if let Some(event) = event {
        let envelope = Envelope::new(crate::SERVICE, project, event);
        flywheel_runtime::outbox::enqueue(&txn, crate::SERVICE, &state.bus, &envelope).await?;
    }
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    Ok(())
}

/// Remembers (or, with `None`, forgets) the version a deployment rolled back from.
pub(crate) async fn set_rolled_back(
    state: &AppState,
    name: &str,
    version: Option<i32>,
) -> Result<()> {
    state
        .db
        .execute(
            &Query::update()
                .table(Deployments::Table)
                .value(Deployments::RolledBackVersion, version)
                .and_where(Expr::col(Deployments::Name).eq(name))
                .to_owned(),
        )
        .await?;
    Ok(())
}

/// Announces a deployment event and sets status and detail, in one transaction.
pub(crate) async fn announce(
    state: &AppState,
    deployment: &Deployment,
    status: &str,
    detail: &str,
    event: Event,
) -> Result<()> {
    set_state(
        state,
        &deployment.name,
        None,
        status,
        detail,
        Some(event),
        &deployment.project,
    )
    .await
}

/// Resolves a deployment's version and serves it, unless it already does: the first version
/// directly, later ones by the deployment's rollout strategy. After a restart the last version
/// that served is loaded first, so a failing new version never leaves the deployment empty.
pub(crate) async fn activate(state: &AppState, name: &str) -> Result<()> {
    // One decision at a time: the decision loop, events and the API may all ask at once.
    let _deciding = state.activation.lock().await;
    let deployment = get(&state.db, name).await?;
    if state
        .serving
        .get(name)
        .is_some_and(|loaded| loaded.model_name != deployment.model)
    {
        crate::rollouts::cancel(state, name);
        state.serving.remove(name);
    }
    let version = match (&deployment.alias, deployment.version) {
        (Some(alias), _) => alias_version(&state.db, &deployment.model, alias).await?,
        (None, pinned) => pinned,
    };
    let Some(version) = version else {
        let detail = format!(
            "waiting for {} to have the alias `{}`",
            deployment.model,
            deployment.alias.as_deref().unwrap_or_default()
        );
        if deployment.status == "waiting" && deployment.detail == detail {
            return Ok(());
        }
        return set_state(
            state,
            name,
            None,
            "waiting",
            &detail,
            None,
            &deployment.project,
        )
        .await;
    };
    let wanted = u32::try_from(version).unwrap_or(0);
    if state.serving.get(name).is_none()
        && let Some(good) = deployment.serving_version.filter(|v| *v != version)
        && let Some(package) = package_of(&state.db, &deployment.model, good).await?
    {
        let good_version = u32::try_from(good).unwrap_or(0);
        match crate::serving::load(
            &state.artifacts,
            name,
            &deployment.model,
            good_version,
            &package,
        )
        .await
        {
            Ok(loaded) => state.serving.put(loaded),
            Err(e) => {
                tracing::warn!(deployment = name, error = %e, "the last good version does not load")
            }
        }
    }
    if let Some(current) = state.serving.get(name)
        && current.model_name == deployment.model
    {
        if current.version == wanted {
            crate::rollouts::cancel(state, name);
            return Ok(());
        }
        // Already rolling it out, or it was rolled back: keep things as they are.
        if state.serving.version(name, wanted).is_some()
            || deployment.rolled_back_version == Some(version)
        {
            return Ok(());
        }
    }
    if failed_lately(state, name, version) {
        return Ok(());
    }
    let Some(package) = package_of(&state.db, &deployment.model, version).await? else {
        let detail = format!(
            "waiting for version {version} of {} to be registered",
            deployment.model
        );
        if deployment.status == "waiting"
            && deployment.detail == detail
            && deployment.version == Some(version)
        {
            return Ok(());
        }
        return set_state(
            state,
            name,
            Some(version),
            "waiting",
            &detail,
            None,
            &deployment.project,
        )
        .await;
    };
    let loaded = match crate::serving::load(
        &state.artifacts,
        name,
        &deployment.model,
        wanted,
        &package,
    )
    .await
    {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::warn!(deployment = name, error = %e, "cannot load; the deployment keeps what it served");
            if let Ok(mut failures) = state.load_failures.lock() {
                failures.insert(name.to_owned(), (version, crate::now_millis()));
            }
            let event = Event::DeploymentFailed(DeploymentFailed {
                deployment: name.to_owned(),
                rollout_id: None,
                error: e.to_string(),
            });
            let status = if state.serving.get(name).is_some() {
                "serving"
            } else {
                "failed"
            };
            return set_state(
                state,
                name,
                None,
                status,
                &e.to_string(),
                Some(event),
                &deployment.project,
            )
            .await;
        }
    };
    set_state(
        state,
        name,
        Some(version),
        "serving",
        "",
        None,
        &deployment.project,
    )
    .await?;
    let previous = state.serving.get(name);
    match (&deployment.strategy, previous) {
        (RolloutStrategy::Direct, _) | (_, None) => {
            crate::rollouts::cancel(state, name);
            state.serving.put(loaded);
            crate::routes::promote(state, name, version).await?;
            tracing::info!(deployment = name, model = %deployment.model, version, "serving");
            let event = Event::DeploymentRolledOut(DeploymentRolledOut {
                deployment: name.to_owned(),
                rollout_id: format!("{name}-v{version}"),
                model: deployment.model.clone(),
                version: wanted,
            });
            announce(state, &deployment, "serving", "", event).await
        }
        (_, Some(previous)) => {
            crate::rollouts::start(state, deployment, previous.version, loaded);
            Ok(())
        }
    }
}

/// How long a version that failed to load is left alone before the decision loop tries it
/// again (an event about its model or a new deployment spec tries at once).
const LOAD_RETRY_MS: i64 = 30_000;

/// Whether `version` of the deployment failed to load within the last [`LOAD_RETRY_MS`].
fn failed_lately(state: &AppState, name: &str, version: i32) -> bool {
    state.load_failures.lock().is_ok_and(|failures| {
        failures.get(name).is_some_and(|(failed, at)| {
            *failed == version && crate::now_millis() - at < LOAD_RETRY_MS
        })
    })
}

/// Lets the next activation try a version that failed to load again.
pub(crate) fn forget_failure(state: &AppState, name: &str) {
    if let Ok(mut failures) = state.load_failures.lock() {
        failures.remove(name);
    }
}
