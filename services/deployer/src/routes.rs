//! Routes: what every deployer replica serves for a deployment — the stable version
//! (`serving_version`), the candidate of a rollout in progress with its share or as a shadow,
//! and a generation bumped on every change. The rollout leader writes them (fenced by its
//! lease); every replica reads them twice a second and makes its own serving match, loading and
//! verifying packages itself. During a rollout each replica also writes its numbers for the
//! current step, which the leader merges to judge the candidate on all replicas' traffic.

use std::collections::HashMap;
use std::time::Duration;

use flywheel_runtime::{CancellationToken, ServiceResult};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, TransactionTrait};
use serde::{Deserialize, Serialize};

use crate::schema::{Deployments, RolloutStats};
use crate::serving::{Candidate, StepNumbers};
use crate::{AppState, DeployerError, Result};

/// A candidate beside the stable version: (version, percent, shadow).
pub(crate) type CandidateRoute = (u32, u8, bool);

/// Sets (or, with `None`, clears) a deployment's candidate; returns the new generation.
pub(crate) async fn set_candidate(
    state: &AppState,
    name: &str,
    candidate: Option<CandidateRoute>,
) -> Result<i64> {
    let (version, percent, shadow) = match candidate {
        Some((v, p, s)) => (i32::try_from(v).ok(), i32::from(p), s),
        None => (None, 0, false),
    };
    write(state, name, |update| {
        update
            .value(Deployments::CandidateVersion, version)
            .value(Deployments::CandidatePercent, percent)
            .value(Deployments::CandidateShadow, shadow);
    })
    .await
}

/// Makes `version` the stable version every replica serves, ending any candidate (what a
/// restart falls back to as well).
pub(crate) async fn promote(state: &AppState, name: &str, version: i32) -> Result<i64> {
    write(state, name, |update| {
        update
            .value(Deployments::ServingVersion, version)
            .value(Deployments::CandidateVersion, Option::<i32>::None)
            .value(Deployments::CandidatePercent, 0)
            .value(Deployments::CandidateShadow, false);
    })
    .await
}

async fn write(
    state: &AppState,
    name: &str,
    set: impl FnOnce(&mut sea_orm::sea_query::UpdateStatement),
) -> Result<i64> {
    let txn = state.db.begin().await?;
    state.leadership.fence(&txn).await?;
    let mut update = Query::update();
    update
        .table(Deployments::Table)
        .value(
            Deployments::RouteGeneration,
            Expr::col(Deployments::RouteGeneration).add(1i64),
        )
        .and_where(Expr::col(Deployments::Name).eq(name));
    set(&mut update);
    txn.execute(&update).await?;
    let generation = txn
        .query_one(
            &Query::select()
                .column(Deployments::RouteGeneration)
                .from(Deployments::Table)
                .and_where(Expr::col(Deployments::Name).eq(name))
                .to_owned(),
        )
        .await?
        .map(|row| row.try_get::<i64>("", "route_generation"))
        .transpose()?
        .unwrap_or(0);
    txn.commit().await?;
    Ok(generation)
}

/// A route as stored.
#[derive(Debug, Clone)]
struct Stored {
    name: String,
    project: String,
    model: String,
    public_inference: bool,
    stable: Option<i32>,
    candidate: Option<CandidateRoute>,
    generation: i64,
}

async fn read_all(state: &AppState) -> Result<Vec<Stored>> {
    let rows = state
        .db
        .query_all(
            &Query::select()
                .columns([
                    Deployments::Name,
                    Deployments::Project,
                    Deployments::Model,
                    Deployments::PublicInference,
                    Deployments::ServingVersion,
                    Deployments::CandidateVersion,
                    Deployments::CandidatePercent,
                    Deployments::CandidateShadow,
                    Deployments::RouteGeneration,
                ])
                .from(Deployments::Table)
                .to_owned(),
        )
        .await?;
    rows.iter()
        .map(|row| {
            let candidate: Option<i32> = row.try_get("", "candidate_version")?;
            let percent: i32 = row.try_get("", "candidate_percent")?;
            Ok(Stored {
                name: row.try_get("", "name")?,
                project: row.try_get("", "project")?,
                model: row.try_get("", "model")?,
                public_inference: row.try_get("", "public_inference")?,
                stable: row.try_get("", "serving_version")?,
                candidate: candidate.map(|v| {
                    (
                        u32::try_from(v).unwrap_or(0),
                        u8::try_from(percent.clamp(0, 100)).unwrap_or(0),
                        row.try_get("", "candidate_shadow").unwrap_or(false),
                    )
                }),
                generation: row.try_get("", "route_generation")?,
            })
        })
        .collect()
}

/// Keeps this replica's serving in line with the routes until shutdown.
pub(crate) async fn follow(
    state: AppState,
    every: Duration,
    shutdown: CancellationToken,
) -> ServiceResult {
    let mut applied: HashMap<String, i64> = HashMap::new();
    let mut leading = false;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        // A leader serves what it decided; a replica that stops leading applies the routes
        // afresh.
        if leading != state.leadership.is_leader() {
            leading = !leading;
            applied.clear();
        }
        if let Err(e) = sync(&state, leading, &mut applied).await {
            tracing::warn!(error = %e, "routes not applied; trying again");
        }
    }
}

/// Applies the routes once, at start, so a restarted replica answers with what it served.
pub(crate) async fn catch_up(state: &AppState) {
    if let Err(e) = sync(state, false, &mut HashMap::new()).await {
        tracing::warn!(error = %e, "routes not applied at start; following them");
    }
}

async fn sync(state: &AppState, leading: bool, applied: &mut HashMap<String, i64>) -> Result<()> {
    let routes = read_all(state).await?;
    for name in state.serving.names() {
        if !routes.iter().any(|r| r.name == name) {
            crate::rollouts::cancel(state, &name);
            state.serving.remove(&name);
            state.exposure.remove(&name);
            applied.remove(&name);
        }
    }
    for route in routes {
        state
            .exposure
            .set(&route.name, &route.project, route.public_inference);
        if leading {
            continue;
        }
        if applied.get(&route.name) != Some(&route.generation) {
            match apply(state, &route).await {
                Ok(()) => {
                    applied.insert(route.name.clone(), route.generation);
                }
                Err(e) => {
                    tracing::warn!(deployment = %route.name, error = %e, "route not applied yet");
                    continue;
                }
            }
        }
        if let Some(candidate) = state.serving.candidate(&route.name) {
            report(state, &route.name, route.generation, &candidate).await?;
        }
    }
    Ok(())
}

async fn load(state: &AppState, route: &Stored, version: u32) -> Result<crate::serving::Loaded> {
    let package = crate::deployments::package_of(
        &state.db,
        &route.model,
        i32::try_from(version).unwrap_or(i32::MAX),
    )
    .await?
    .ok_or_else(|| {
        DeployerError::NotReady(format!(
            "version {version} of {} is not known yet",
            route.model
        ))
    })?;
    crate::serving::load(
        &state.artifacts,
        &route.name,
        &route.model,
        version,
        &package,
    )
    .await
}

/// Makes this replica serve `route`: the stable version, then the candidate and its share.
async fn apply(state: &AppState, route: &Stored) -> Result<()> {
    let Some(stable) = route.stable.and_then(|v| u32::try_from(v).ok()) else {
        return Ok(());
    };
    let current = state.serving.get(&route.name);
    let serves_stable = current
        .as_ref()
        .is_some_and(|c| c.model_name == route.model && c.version == stable);
    if !serves_stable {
        match state.serving.candidate(&route.name) {
            // The candidate was promoted.
            Some(c) if c.loaded.version == stable && c.loaded.model_name == route.model => {
                state.serving.end_candidate(&route.name, true);
            }
            _ => state.serving.put(load(state, route, stable).await?),
        }
    }
    match (route.candidate, state.serving.candidate(&route.name)) {
        (None, Some(_)) => state.serving.end_candidate(&route.name, false),
        (Some((version, percent, shadow)), Some(c))
            if c.loaded.version == version && c.shadow == shadow =>
        {
            // A new step: its numbers start afresh, as the leader's do.
            c.percent
                .store(percent, std::sync::atomic::Ordering::Relaxed);
            c.reset();
        }
        (Some((version, percent, shadow)), _) => {
            let loaded = load(state, route, version).await?;
            state.serving.start_candidate(loaded, percent, shadow);
        }
        (None, None) => {}
    }
    tracing::info!(deployment = %route.name, stable, candidate = ?route.candidate, generation = route.generation, "route applied");
    Ok(())
}

/// One replica's numbers for a rollout step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ReplicaNumbers {
    /// The candidate's.
    pub(crate) candidate: StepNumbers,
    /// The stable version's over the same time.
    pub(crate) stable: StepNumbers,
    /// Shadow answers compared, and how many differed.
    pub(crate) compared: u64,
    /// See `compared`.
    pub(crate) differing: u64,
}

impl ReplicaNumbers {
    /// This replica's numbers for the candidate's current step.
    pub(crate) fn of(candidate: &Candidate) -> Self {
        Self {
            candidate: candidate.stats.numbers(),
            stable: candidate.baseline.numbers(),
            compared: candidate
                .compared
                .load(std::sync::atomic::Ordering::Relaxed),
            differing: candidate
                .differing
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn merge(&mut self, other: &ReplicaNumbers) {
        self.candidate.merge(&other.candidate);
        self.stable.merge(&other.stable);
        self.compared += other.compared;
        self.differing += other.differing;
    }

    /// Share of compared answers that differed (None before any comparison).
    pub(crate) fn disagreement_rate(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.differing as f64 / self.compared as f64)
    }
}

async fn report(
    state: &AppState,
    name: &str,
    generation: i64,
    candidate: &Candidate,
) -> Result<()> {
    let numbers = serde_json::to_string(&ReplicaNumbers::of(candidate))
        .map_err(|e| DeployerError::Invalid(e.to_string()))?;
    let mut upsert = Query::insert();
    upsert
        .into_table(RolloutStats::Table)
        .columns([
            RolloutStats::Deployment,
            RolloutStats::Replica,
            RolloutStats::Generation,
            RolloutStats::Numbers,
            RolloutStats::UpdatedAt,
        ])
        .values([
            name.into(),
            state.replica.as_ref().into(),
            generation.into(),
            numbers.into(),
            crate::now_millis().into(),
        ])
        .map_err(|e| DeployerError::Invalid(e.to_string()))?
        .on_conflict(
            OnConflict::columns([RolloutStats::Deployment, RolloutStats::Replica])
                .update_columns([
                    RolloutStats::Generation,
                    RolloutStats::Numbers,
                    RolloutStats::UpdatedAt,
                ])
                .to_owned(),
        );
    state.db.execute(&upsert).await?;
    Ok(())
}

/// The step's numbers over every replica: the leader's own and what the others reported for
/// the same generation.
pub(crate) async fn merged(
    state: &AppState,
    name: &str,
    generation: i64,
    own: &Candidate,
) -> Result<ReplicaNumbers> {
    let mut total = ReplicaNumbers::of(own);
    let rows = state
        .db
        .query_all(
            &Query::select()
                .column(RolloutStats::Numbers)
                .from(RolloutStats::Table)
                .and_where(Expr::col(RolloutStats::Deployment).eq(name))
                .and_where(Expr::col(RolloutStats::Generation).eq(generation))
                .and_where(Expr::col(RolloutStats::Replica).ne(state.replica.as_ref()))
                .to_owned(),
        )
        .await?;
    for row in rows {
        let body: String = row.try_get("", "numbers")?;
        match serde_json::from_str::<ReplicaNumbers>(&body) {
            Ok(numbers) => total.merge(&numbers),
            Err(e) => {
                tracing::warn!(deployment = name, error = %e, "a replica's numbers do not read")
            }
        }
    }
    Ok(total)
}
