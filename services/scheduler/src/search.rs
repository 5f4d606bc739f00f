//! Hyperparameter search: one job that fans out into trial jobs (grid or random choices from
//! the space, on top of the trainer's parameters), which queue, dispatch, retry and run on any
//! runner like other jobs, in parallel as capacity allows. Trial results do not reach the
//! registry one by one: when the last trial ends, the search job completes with the best
//! trial's model (by the named metric and goal) and every trial's parameters and metrics, which
//! the registry records as child runs.

use std::collections::{BTreeMap, HashSet};

use flywheel_events::payloads::{
    HyperparameterSearch, Params, TrainingJobCompleted, TrainingJobQueued, TrainingJobStarted,
    TrainingRequested, TrialResult,
};
use flywheel_events::{Envelope, Event};
use sea_orm::sea_query::{Expr, ExprTrait, Order, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement};

use crate::jobs::{self, Job, SEARCH_RUNNER, TERMINAL};
use crate::lifecycle;
use crate::schema::Jobs;
use crate::{AppState, Result, SchedulerError};

/// Most trials one search may run.
pub(crate) const MAX_TRIALS: u32 = 1000;

fn invalid(message: impl Into<String>) -> SchedulerError {
    SchedulerError::Invalid(message.into())
}

/// Checks a search before it is accepted.
pub(crate) fn validate(search: &HyperparameterSearch) -> Result<()> {
    if !matches!(search.strategy.as_str(), "grid" | "random") {
        return Err(invalid("search.strategy: `grid` or `random`"));
    }
    if !matches!(search.goal.as_str(), "maximize" | "minimize") {
        return Err(invalid("search.goal: `maximize` or `minimize`"));
    }
    if search.metric.trim().is_empty() {
        return Err(invalid(
            "search.metric: name the metric that picks the best trial",
        ));
    }
    if search.max_trials == 0 || search.max_trials > MAX_TRIALS {
        return Err(invalid(format!("search.max_trials: 1 to {MAX_TRIALS}")));
    }
    if search.space.is_empty() || search.space.values().any(Vec::is_empty) {
        return Err(invalid(
            "search.space: at least one parameter, each with candidate values",
        ));
    }
    let combinations = combinations(search);
    if search.strategy == "grid" && combinations > u128::from(search.max_trials) {
        return Err(invalid(format!(
            "search: the grid has {combinations} combinations, more than max_trials ({})",
            search.max_trials
        )));
    }
    Ok(())
}

fn combinations(search: &HyperparameterSearch) -> u128 {
    search
        .space
        .values()
        .map(|v| v.len() as u128)
        .fold(1u128, u128::saturating_mul)
}

/// The `index`-th combination of the space (mixed radix, last parameter fastest).
fn combination(search: &HyperparameterSearch, mut index: u128) -> Params {
    let mut chosen: Vec<(String, serde_json::Value)> = Vec::new();
    for (name, values) in search.space.iter().rev() {
        let n = values.len() as u128;
        let pick = usize::try_from(index % n).unwrap_or(0);
        index /= n;
        chosen.push((name.clone(), values[pick].clone()));
    }
    chosen.into_iter().collect()
}

/// A small deterministic generator (SplitMix64), seeded from the request id, so a search
/// draws the same trials wherever and however often it is expanded.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The parameters of every trial.
pub(crate) fn trials(request: &TrainingRequested, search: &HyperparameterSearch) -> Vec<Params> {
    let total = combinations(search);
    let wanted = u128::from(search.max_trials).min(total);
    let indices: Vec<u128> = if search.strategy == "grid" || wanted == total {
        (0..wanted).collect()
    } else {
        let mut seed = 0xcbf2_9ce4_8422_2325u64;
        for byte in request.request_id.bytes() {
            seed = (seed ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        let mut rng = SplitMix(seed);
        let mut seen = HashSet::new();
        let mut picked = Vec::new();
        while (picked.len() as u128) < wanted {
            let index = (u128::from(rng.next()) << 64 | u128::from(rng.next())) % total;
            if seen.insert(index) {
                picked.push(index);
            }
        }
        picked
    };
    indices
        .into_iter()
        .map(|i| combination(search, i))
        .collect()
}

/// Turns a queued search job into its trials; the search job runs until they end.
pub(crate) async fn expand(
    txn: &DatabaseTransaction,
    state: &AppState,
    parent: &Job,
) -> Result<bool> {
    let Some(search) = parent.request.search.clone() else {
        return Ok(false);
    };
    let now = crate::now_millis();
    let moved = txn
        .execute(
            &Query::update()
                .table(Jobs::Table)
                .value(Jobs::Status, "running")
                .value(Jobs::Attempts, 1)
                .value(Jobs::Runner, SEARCH_RUNNER)
                .value(Jobs::StartedAt, now)
                .value(Jobs::UpdatedAt, now)
                .and_where(Expr::col(Jobs::JobId).eq(parent.job_id.as_str()))
                .and_where(Expr::col(Jobs::Status).eq("queued"))
                .and_where(Expr::col(Jobs::Attempts).eq(0))
                .to_owned(),
        )
        .await?
        .rows_affected()
        == 1;
    if !moved {
        return Ok(false);
    }
    let choices = trials(&parent.request, &search);
    let count = choices.len();
    for (trial, choice) in choices.into_iter().enumerate() {
        let mut request = parent.request.clone();
        request.search = None;
        request.request_id = format!("{}#trial-{trial}", parent.request_id);
        request.trainer.params.extend(choice);
        let job_id = uuid::Uuid::now_v7().to_string();
        crate::jobs::insert(
            txn,
            crate::jobs::NewJob {
                job_id: &job_id,
                project: &parent.project,
                request: &request,
                timeout_seconds: parent.timeout_seconds,
                parent: Some((&parent.job_id, i32::try_from(trial).unwrap_or(i32::MAX))),
            },
        )
        .await?;
        let queued = Event::TrainingJobQueued(TrainingJobQueued {
            job_id,
            request_id: request.request_id.clone(),
            model: parent.model.clone(),
            priority: parent.priority,
        });
        lifecycle::announce(txn, state, parent, queued, None).await?;
    }
    let started = Event::TrainingJobStarted(TrainingJobStarted {
        job_id: parent.job_id.clone(),
        attempt: 1,
        runner: format!("{SEARCH_RUNNER}: {count} trials"),
    });
    lifecycle::announce(txn, state, parent, started, None).await?;
    Ok(true)
}

/// Records a trial's end; completes its search when it was the last one. Call inside the
/// transaction that ended the trial.
pub(crate) async fn trial_ended(
    txn: &DatabaseTransaction,
    state: &AppState,
    trial: &Job,
    completed: Option<&TrainingJobCompleted>,
) -> Result<()> {
    let Some(parent_id) = &trial.parent_job_id else {
        return Ok(());
    };
    if let Some(completed) = completed {
        let result = serde_json::to_string(completed).map_err(|e| invalid(e.to_string()))?;
        txn.execute(
            &Query::update()
                .table(Jobs::Table)
                .value(Jobs::Result, result)
                .and_where(Expr::col(Jobs::JobId).eq(trial.job_id.as_str()))
                .to_owned(),
        )
        .await?;
    }
    finish_if_done(txn, state, parent_id).await
}

/// Completes (or fails) a running search whose trials have all ended.
pub(crate) async fn finish_if_done(
    txn: &DatabaseTransaction,
    state: &AppState,
    parent_id: &str,
) -> Result<()> {
    // Trials ending at once in different transactions: the parent's row lock orders them, and
    // the last to get it sees every other trial ended.
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT job_id FROM scheduler_jobs WHERE job_id = $1 FOR UPDATE",
            [parent_id.into()],
        ))
        .await?;
    }
    let parent = jobs::get(txn, parent_id).await?;
    if parent.status != "running" {
        return Ok(());
    }
    let rows = txn
        .query_all(
            &jobs::select()
                .column(Jobs::Result)
                .and_where(Expr::col(Jobs::ParentJobId).eq(parent_id))
                .order_by(Jobs::Trial, Order::Asc)
                .to_owned(),
        )
        .await?;
    let mut trials = Vec::with_capacity(rows.len());
    for row in &rows {
        let job = jobs::from_row(row)?;
        if !TERMINAL.contains(&job.status.as_str()) {
            return Ok(());
        }
        let result: Option<String> = row.try_get("", "result")?;
        let completed: Option<TrainingJobCompleted> =
            result.and_then(|r| serde_json::from_str(&r).ok());
        trials.push((job, completed));
    }
    let Some(search) = parent.request.search.clone() else {
        return Ok(());
    };
    let maximize = search.goal == "maximize";
    let best = trials
        .iter()
        .enumerate()
        .filter_map(|(i, (job, completed))| {
            let completed = completed.as_ref().filter(|_| job.status == "succeeded")?;
            let value = *completed.metrics.get(&search.metric)?;
            value.is_finite().then_some((i, value))
        })
        .fold(None::<(usize, f64)>, |best, (i, value)| match best {
            Some((_, b)) if (maximize && value <= b) || (!maximize && value >= b) => best,
            _ => Some((i, value)),
        })
        .map(|(i, _)| i);
    let space_keys: Vec<&String> = search.space.keys().collect();
    let results: Vec<TrialResult> = trials
        .iter()
        .enumerate()
        .map(|(i, (job, completed))| TrialResult {
            trial: u32::try_from(job.trial.unwrap_or(0)).unwrap_or(0),
            job_id: job.job_id.clone(),
            params: job
                .request
                .trainer
                .params
                .iter()
                .filter(|(k, _)| space_keys.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            status: job.status.clone(),
            metrics: completed
                .as_ref()
                .map(|c| c.metrics.clone())
                .unwrap_or_default(),
            package_uri: completed.as_ref().map(|c| c.package_uri.clone()),
            best: Some(i) == best,
        })
        .collect();
    let ending = match best {
        Some(_) => lifecycle::Ending::Succeeded,
        None => lifecycle::Ending::Failed {
            kind: "error".into(),
            error: format!(
                "no trial of {} produced the metric `{}`",
                trials.len(),
                search.metric
            ),
            retryable: false,
        },
    };
    let Some(done) = lifecycle::end_attempt(txn, state, &parent, &["running"], &ending).await?
    else {
        return Ok(());
    };
    let event = match best.and_then(|i| trials[i].1.clone()) {
        Some(winner) => {
            let mut lineage = winner.lineage.clone();
            lineage.job_id = Some(parent.job_id.clone());
            let mut metrics: BTreeMap<String, f64> = winner.metrics.clone();
            metrics.retain(|k, _| !k.is_empty());
            Event::TrainingJobCompleted(TrainingJobCompleted {
                job_id: parent.job_id.clone(),
                attempt: 1,
                request_id: parent.request_id.clone(),
                model: parent.model.clone(),
                package_uri: winner.package_uri.clone(),
                metrics,
                gates_passed: winner.gates_passed,
                signature: winner.signature,
                lineage,
                cpu_seconds: trials
                    .iter()
                    .filter_map(|(_, c)| c.as_ref().map(|c| c.cpu_seconds))
                    .sum(),
                trials: results,
            })
        }
        None => lifecycle::failed_event(
            &parent,
            "error",
            &format!("no trial produced the metric `{}`", search.metric),
            done.will_retry,
        ),
    };
    let envelope = Envelope::new(crate::SERVICE, &parent.project, event);
    flywheel_runtime::outbox::enqueue(txn, crate::SERVICE, &state.bus, &envelope).await?;
    Ok(())
}

/// Running searches whose trials have all ended (a safety net for the reaper).
pub(crate) async fn stalled_searches(state: &AppState) -> Result<Vec<String>> {
    let rows = state
        .db
        .query_all(
            &Query::select()
                .column(Jobs::JobId)
                .from(Jobs::Table)
                .and_where(Expr::col(Jobs::Status).eq("running"))
                .and_where(Expr::col(Jobs::Runner).eq(SEARCH_RUNNER))
                .to_owned(),
        )
        .await?;
    let mut stalled = Vec::new();
    for row in rows {
        let id: String = row.try_get("", "job_id")?;
        let open = state
            .db
            .query_one(
                &Query::select()
                    .expr_as(
                        Expr::col(Jobs::JobId).count(),
                        sea_orm::sea_query::Alias::new("n"),
                    )
                    .from(Jobs::Table)
                    .and_where(Expr::col(Jobs::ParentJobId).eq(id.as_str()))
                    .and_where(Expr::col(Jobs::Status).is_not_in(TERMINAL))
                    .to_owned(),
            )
            .await?
            .map(|r| r.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0);
        if open == 0 {
            stalled.push(id);
        }
    }
    Ok(stalled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn space(strategy: &str, max_trials: u32) -> HyperparameterSearch {
        HyperparameterSearch {
            strategy: strategy.into(),
            space: BTreeMap::from([
                (
                    "alpha".to_owned(),
                    vec![json!(0.1), json!(1.0), json!(10.0)],
                ),
                ("max_depth".to_owned(), vec![json!(2), json!(4)]),
            ]),
            max_trials,
            metric: "accuracy".into(),
            goal: "maximize".into(),
        }
    }

    #[test]
    fn grids_cover_the_space_and_random_draws_are_distinct_and_stable() {
        let grid = space("grid", 6);
        assert!(validate(&grid).is_ok());
        let request: TrainingRequested = serde_json::from_value(json!({
            "request_id": "r", "model": "m", "dataset": {"name": "d", "version": "v"},
            "trainer": {"kind": "builtin", "name": "ridge"}, "resources": {"cpu": 1, "memory_mb": 1},
            "reason": "manual"
        }))
        .expect("request");
        let all = trials(&request, &grid);
        assert_eq!(all.len(), 6);
        let distinct: HashSet<String> = all
            .iter()
            .map(|p| serde_json::to_string(p).unwrap_or_default())
            .collect();
        assert_eq!(distinct.len(), 6, "every combination once");
        assert!(
            validate(&space("grid", 5)).is_err(),
            "a grid larger than max_trials is refused"
        );
        let random = space("random", 4);
        let a = trials(&request, &random);
        assert_eq!(a.len(), 4);
        assert_eq!(a, trials(&request, &random), "same request, same draws");
        let distinct: HashSet<String> = a
            .iter()
            .map(|p| serde_json::to_string(p).unwrap_or_default())
            .collect();
        assert_eq!(distinct.len(), 4);
        let mut bad = space("random", 4);
        bad.goal = "best".into();
        assert!(validate(&bad).is_err());
    }
}
