//! Governance: per-model policies (quality gates, no-regression against `production`, required
//! approvals with optional four-eyes, auto-promotion), promotion requests and their approvals.
//! Protected aliases move only through an approved promotion; every step is audited and announced.

use flywheel_events::Event;
use flywheel_events::payloads::{
    GateResult, ModelVersionApprovalRequested, ModelVersionDecision, ModelVersionGatesEvaluated,
    QualityGate,
};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Order, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ModelVersion, alias_target, announce, apply_alias, audit, get_version, model_exists};
use crate::schema::{Approvals, Policies, Promotions};
use crate::tracking::now_millis;
use crate::{AppState, RegistryError, Result};

/// A metric that must not get worse than the `production` version's beyond a tolerance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RegressionGate {
    /// Metric name.
    pub metric: String,
    /// Whether larger values are better.
    #[serde(default = "yes")]
    pub higher_is_better: bool,
    /// Allowed worsening, in the metric's units.
    #[serde(default)]
    pub tolerance: f64,
}

fn yes() -> bool {
    true
}

fn production() -> Vec<String> {
    vec!["production".into()]
}

/// A model's governance policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Thresholds every candidate must meet.
    #[serde(default)]
    pub gates: Vec<QualityGate>,
    /// Metrics that must not regress against `production`.
    #[serde(default)]
    pub no_regression: Vec<RegressionGate>,
    /// Approvals needed to move a protected alias.
    #[serde(default)]
    pub approvals_required: u32,
    /// Aliases that need approvals (default `production`).
    #[serde(default = "production")]
    pub protected_aliases: Vec<String>,
    /// The requester may not approve their own promotion.
    #[serde(default)]
    pub four_eyes: bool,
    /// Alias to move automatically to each new version that passes the gates (unprotected, or
    /// protected with no approvals required).
    #[serde(default)]
    pub auto_promote_to: Option<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            gates: Vec::new(),
            no_regression: Vec::new(),
            approvals_required: 0,
            protected_aliases: production(),
            four_eyes: false,
            auto_promote_to: None,
        }
    }
}

impl Policy {
    fn validate(&self) -> Result<()> {
        for gate in &self.gates {
            if !matches!(gate.op.as_str(), ">=" | ">" | "<=" | "<" | "==") {
                return Err(RegistryError::InvalidParameter(format!(
                    "gate on `{}`: op must be >=, >, <=, < or ==",
                    gate.metric
                )));
            }
        }
        if self
            .no_regression
            .iter()
            .any(|g| g.tolerance < 0.0 || !g.tolerance.is_finite())
        {
            return Err(RegistryError::InvalidParameter(
                "no_regression tolerance must be a finite number >= 0".into(),
            ));
        }
        for alias in self
            .protected_aliases
            .iter()
            .chain(self.auto_promote_to.iter())
        {
            super::check_alias(alias)?;
        }
        Ok(())
    }

    fn protects(&self, alias: &str) -> bool {
        self.approvals_required > 0 && self.protected_aliases.iter().any(|a| a == alias)
    }
}

/// Reads a model's policy (the default, permissive one when none was set).
pub async fn get_policy<C: ConnectionTrait>(db: &C, model: &str) -> Result<Policy> {
    let row = db
        .query_one(
            &Query::select()
                .column(Policies::Policy)
                .from(Policies::Table)
                .and_where(Expr::col(Policies::Model).eq(model))
                .to_owned(),
        )
        .await?;
    match row {
        Some(row) => serde_json::from_str(&row.try_get::<String>("", "policy")?)
            .map_err(|e| RegistryError::InvalidParameter(format!("stored policy unreadable: {e}"))),
        None => Ok(Policy::default()),
    }
}

/// Sets a model's policy.
pub async fn set_policy(state: &AppState, model: &str, policy: &Policy, actor: &str) -> Result<()> {
    policy.validate()?;
    let txn = state.db.begin().await?;
    model_exists(&txn, model).await?;
    let before = get_policy(&txn, model).await?;
    let text = serde_json::to_string(policy)
        .map_err(|e| RegistryError::InvalidParameter(e.to_string()))?;
    txn.execute(
        &Query::insert()
            .into_table(Policies::Table)
            .columns([
                Policies::Model,
                Policies::Policy,
                Policies::UpdatedBy,
                Policies::UpdatedAt,
            ])
            .values([model.into(), text.into(), actor.into(), now_millis().into()])
            .map_err(|e| RegistryError::InvalidParameter(e.to_string()))?
            .on_conflict(
                OnConflict::column(Policies::Model)
                    .update_columns([Policies::Policy, Policies::UpdatedBy, Policies::UpdatedAt])
                    .to_owned(),
            )
            .to_owned(),
    )
    .await?;
    audit::record(
        &txn,
        model,
        "policy.set",
        actor,
        Some(json!(before)),
        Some(json!(policy)),
    )
    .await?;
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    Ok(())
}

fn holds(actual: f64, op: &str, threshold: f64) -> bool {
    match op {
        ">=" => actual >= threshold,
        ">" => actual > threshold,
        "<=" => actual <= threshold,
        "<" => actual < threshold,
        "==" => actual == threshold,
        _ => false,
    }
}

/// Evaluates a version against the policy and the current `production` version.
pub async fn evaluate<C: ConnectionTrait>(
    db: &C,
    policy: &Policy,
    version: &ModelVersion,
) -> Result<(bool, Vec<GateResult>)> {
    let mut results: Vec<GateResult> = policy
        .gates
        .iter()
        .map(|gate| {
            let actual = version.metrics.get(&gate.metric).copied();
            GateResult {
                metric: gate.metric.clone(),
                op: gate.op.clone(),
                threshold: gate.threshold,
                actual,
                passed: actual.is_some_and(|a| holds(a, &gate.op, gate.threshold)),
            }
        })
        .collect();
    if !policy.no_regression.is_empty()
        && let Some(current) = alias_target(db, &version.name, "production").await?
        && current != version.version
    {
        let production = get_version(db, &version.name, current).await?;
        for gate in &policy.no_regression {
            let Some(baseline) = production.metrics.get(&gate.metric).copied() else {
                continue;
            };
            let (op, threshold) = if gate.higher_is_better {
                (">=", baseline - gate.tolerance)
            } else {
                ("<=", baseline + gate.tolerance)
            };
            let actual = version.metrics.get(&gate.metric).copied();
            results.push(GateResult {
                metric: gate.metric.clone(),
                op: format!("{op} production v{current}"),
                threshold,
                actual,
                passed: actual.is_some_and(|a| holds(a, op, threshold)),
            });
        }
    }
    Ok((results.iter().all(|r| r.passed), results))
}

fn describe_failures(results: &[GateResult]) -> String {
    results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| match r.actual {
            Some(actual) => format!("{} = {actual} fails {} {}", r.metric, r.op, r.threshold),
            None => format!("{} is missing (needs {} {})", r.metric, r.op, r.threshold),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Evaluates and announces the gates of a freshly registered version; auto-promotes if asked.
pub(crate) async fn on_registered(
    state: &AppState,
    txn: &DatabaseTransaction,
    version: &ModelVersion,
    actor: &str,
) -> Result<()> {
    let policy = get_policy(txn, &version.name).await?;
    if policy.gates.is_empty()
        && policy.no_regression.is_empty()
        && policy.auto_promote_to.is_none()
    {
        return Ok(());
    }
    let (passed, results) = evaluate(txn, &policy, version).await?;
    let event = Event::ModelVersionGatesEvaluated(ModelVersionGatesEvaluated {
        model: version.name.clone(),
        version: u32::try_from(version.version).unwrap_or(u32::MAX),
        passed,
        results: results.clone(),
    });
    announce(state, txn, event).await?;
    audit::record(
        txn,
        &version.name,
        "version.gates_evaluated",
        actor,
        None,
        Some(json!({"version": version.version, "passed": passed, "results": results})),
    )
    .await?;
    if let Some(alias) = &policy.auto_promote_to
        && passed
        && !policy.protects(alias)
    {
        apply_alias(
            state,
            txn,
            &version.name,
            alias,
            version.version,
            "policy:auto-promote",
        )
        .await?;
    }
    Ok(())
}

/// A request to point an alias at a version.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Promotion {
    /// Id.
    pub id: i64,
    /// Model name.
    pub model: String,
    /// Version to promote.
    pub version: i64,
    /// Target alias.
    pub alias: String,
    /// Who asked.
    pub requested_by: String,
    /// `pending`, `applied` or `rejected`.
    pub status: String,
    /// Approvals and rejections so far.
    pub decisions: Vec<Decision>,
    /// Gate outcomes at request time.
    pub gates: Vec<GateResult>,
}

/// One approver's decision.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Decision {
    /// Who decided.
    pub approver: String,
    /// `approved` or `rejected`.
    pub decision: String,
    /// Why.
    pub comment: String,
    /// When, ms.
    pub at: i64,
}

/// Refuses alias moves that policy reserves for approved promotions.
pub(crate) async fn check_direct_alias_move<C: ConnectionTrait>(
    db: &C,
    model: &str,
    alias: &str,
    version: &ModelVersion,
) -> Result<()> {
    let policy = get_policy(db, model).await?;
    if policy.protects(alias) {
        return Err(RegistryError::Forbidden(format!(
            "alias `{alias}` of `{model}` is protected by policy ({} approval(s) required): request a promotion",
            policy.approvals_required
        )));
    }
    if policy.protected_aliases.iter().any(|a| a == alias) {
        let (passed, results) = evaluate(db, &policy, version).await?;
        if !passed {
            return Err(RegistryError::Refused(format!(
                "version {} fails its quality gates: {}",
                version.version,
                describe_failures(&results)
            )));
        }
    }
    Ok(())
}

/// Requests a promotion; applied at once when the alias needs no approvals.
pub async fn request_promotion(
    state: &AppState,
    model: &str,
    version: i64,
    alias: &str,
    actor: &str,
) -> Result<Promotion> {
    super::check_alias(alias)?;
    let txn = state.db.begin().await?;
    let candidate = get_version(&txn, model, version).await?;
    let policy = get_policy(&txn, model).await?;
    let (passed, gates) = evaluate(&txn, &policy, &candidate).await?;
    if !passed {
        return Err(RegistryError::Refused(format!(
            "version {version} of `{model}` fails its quality gates: {}",
            describe_failures(&gates)
        )));
    }
    let needs_approval = policy.protects(alias);
    let status = if needs_approval { "pending" } else { "applied" };
    let now = now_millis();
    let row = txn
        .query_one(
            &Query::insert()
                .into_table(Promotions::Table)
                .columns([
                    Promotions::Model,
                    Promotions::Version,
                    Promotions::Alias,
                    Promotions::RequestedBy,
                    Promotions::Status,
                    Promotions::CreatedAt,
                ])
                .values([
                    model.into(),
                    version.into(),
                    alias.into(),
                    actor.into(),
                    status.into(),
                    now.into(),
                ])
                .map_err(|e| RegistryError::InvalidParameter(e.to_string()))?
                .returning_col(Promotions::Id)
                .to_owned(),
        )
        .await?;
    let id: i64 = row
        .ok_or_else(|| RegistryError::InvalidParameter("insert returned no id".into()))?
        .try_get("", "id")?;
    audit::record(
        &txn,
        model,
        "promotion.requested",
        actor,
        None,
        Some(json!({"promotion": id, "version": version, "alias": alias, "status": status})),
    )
    .await?;
    if needs_approval {
        let event = Event::ModelVersionApprovalRequested(ModelVersionApprovalRequested {
            model: model.to_owned(),
            version: u32::try_from(version).unwrap_or(u32::MAX),
            stage: alias.to_owned(),
            requested_by: actor.to_owned(),
        });
        announce(state, &txn, event).await?;
    } else {
        apply_alias(state, &txn, model, alias, version, actor).await?;
    }
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    let mut promotion = get_promotion(&state.db, id).await?;
    promotion.gates = gates;
    Ok(promotion)
}

/// Reads a promotion with its decisions.
pub async fn get_promotion<C: ConnectionTrait>(db: &C, id: i64) -> Result<Promotion> {
    let row = db
        .query_one(
            &Query::select()
                .columns([
                    Promotions::Id,
                    Promotions::Model,
                    Promotions::Version,
                    Promotions::Alias,
                    Promotions::RequestedBy,
                    Promotions::Status,
                ])
                .from(Promotions::Table)
                .and_where(Expr::col(Promotions::Id).eq(id))
                .apply(|select| crate::projects::confine_to_models(select, Promotions::Model))
                .to_owned(),
        )
        .await?
        .ok_or_else(|| RegistryError::NotFound(format!("promotion {id} not found")))?;
    let decisions = db
        .query_all(
            &Query::select()
                .columns([
                    Approvals::Approver,
                    Approvals::Decision,
                    Approvals::Comment,
                    Approvals::At,
                ])
                .from(Approvals::Table)
                .and_where(Expr::col(Approvals::PromotionId).eq(id))
                .order_by(Approvals::At, Order::Asc)
                .to_owned(),
        )
        .await?
        .iter()
        .map(|r| {
            Ok(Decision {
                approver: r.try_get("", "approver")?,
                decision: r.try_get("", "decision")?,
                comment: r.try_get("", "comment")?,
                at: r.try_get("", "at")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Promotion {
        id: row.try_get("", "id")?,
        model: row.try_get("", "model")?,
        version: row.try_get("", "version")?,
        alias: row.try_get("", "alias")?,
        requested_by: row.try_get("", "requested_by")?,
        status: row.try_get("", "status")?,
        decisions,
        gates: Vec::new(),
    })
}

/// Approves or rejects a pending promotion; enough approvals apply it.
pub async fn decide(
    state: &AppState,
    id: i64,
    approve: bool,
    comment: &str,
    actor: &str,
) -> Result<Promotion> {
    let txn = state.db.begin().await?;
    let promotion = get_promotion(&txn, id).await?;
    if promotion.status != "pending" {
        return Err(RegistryError::AlreadyExists(format!(
            "promotion {id} is already {}",
            promotion.status
        )));
    }
    let policy = get_policy(&txn, &promotion.model).await?;
    if policy.four_eyes && actor == promotion.requested_by {
        audit::record(
            &txn,
            &promotion.model,
            "promotion.denied",
            actor,
            None,
            Some(json!({"promotion": id, "reason": "four eyes"})),
        )
        .await?;
        txn.commit().await?;
        flywheel_runtime::outbox::wake();
        return Err(RegistryError::Forbidden(format!(
            "four-eyes policy: {actor} requested promotion {id} and cannot decide it"
        )));
    }
    if promotion.decisions.iter().any(|d| d.approver == actor) {
        return Err(RegistryError::AlreadyExists(format!(
            "{actor} already decided promotion {id}"
        )));
    }
    let decision = if approve { "approved" } else { "rejected" };
    let now = now_millis();
    txn.execute(
        &Query::insert()
            .into_table(Approvals::Table)
            .columns([
                Approvals::PromotionId,
                Approvals::Approver,
                Approvals::Decision,
                Approvals::Comment,
                Approvals::At,
            ])
            .values([
                id.into(),
                actor.into(),
                decision.into(),
                comment.into(),
                now.into(),
            ])
            .map_err(|e| RegistryError::InvalidParameter(e.to_string()))?
            .to_owned(),
    )
    .await?;
    let payload = ModelVersionDecision {
        model: promotion.model.clone(),
        version: u32::try_from(promotion.version).unwrap_or(u32::MAX),
        stage: promotion.alias.clone(),
        decided_by: actor.to_owned(),
        comment: comment.to_owned(),
    };
    announce(
        state,
        &txn,
        if approve {
            Event::ModelVersionApproved(payload)
        } else {
            Event::ModelVersionRejected(payload)
        },
    )
    .await?;
    audit::record(
        &txn,
        &promotion.model,
        &format!("promotion.{decision}"),
        actor,
        None,
        Some(json!({"promotion": id, "comment": comment})),
    )
    .await?;
    let approvals = promotion
        .decisions
        .iter()
        .filter(|d| d.decision == "approved")
        .count()
        + usize::from(approve);
    let new_status = if !approve {
        Some("rejected")
    } else if approvals >= policy.approvals_required as usize {
        // Gates are checked again: production may have moved since the request.
        let candidate = get_version(&txn, &promotion.model, promotion.version).await?;
        let (passed, gates) = evaluate(&txn, &policy, &candidate).await?;
        if !passed {
            return Err(RegistryError::Refused(format!(
                "version {} no longer passes its gates: {}",
                promotion.version,
                describe_failures(&gates)
            )));
        }
        apply_alias(
            state,
            &txn,
            &promotion.model,
            &promotion.alias,
            promotion.version,
            actor,
        )
        .await?;
        Some("applied")
    } else {
        None
    };
    if let Some(status) = new_status {
        txn.execute(
            &Query::update()
                .table(Promotions::Table)
                .value(Promotions::Status, status)
                .value(Promotions::DecidedAt, now)
                .and_where(Expr::col(Promotions::Id).eq(id))
                .to_owned(),
        )
        .await?;
    }
    txn.commit().await?;
    flywheel_runtime::outbox::wake();
    get_promotion(&state.db, id).await
}
