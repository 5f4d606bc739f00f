//! The durable, sampled join store (`monitor_joinable`): up to `join_store_per_second`
//! predictions per deployment each second are kept in the database with their inputs, so
//! feedback that comes after the in-memory join has forgotten its prediction still joins, and
//! labelled production rows can be exported as a dataset for a drift retraining. What the
//! reader gathers is written in the transaction of its checkpoint, so a restart neither loses
//! nor repeats a join.

use std::collections::{BTreeMap, HashMap};

use flywheel_events::payloads::PredictionLogged;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Order, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction};
use serde_json::Value;

use crate::schema::Joinable;
use crate::windows::PREDICTION;
use crate::{MonitorError, Result};

/// How the store samples and how long it keeps rows (`[service]` options).
#[derive(Debug, Clone, Copy)]
pub struct JoinStoreConfig {
    /// `join_store_per_second`: predictions kept per deployment per second (0: none).
    pub per_second: u32,
    /// `join_store_hours`: how long a kept prediction stays.
    pub retention_ms: i64,
}

/// A prediction to keep.
#[derive(Debug)]
struct Kept {
    request_id: String,
    deployment: String,
    model: String,
    version: u32,
    inputs: String,
    predicted: String,
    score: Option<f64>,
    logged_at: i64,
}

/// An outcome joined from the store (its prediction had left memory).
#[derive(Debug)]
pub(crate) struct StoredOutcome {
    pub deployment: String,
    pub model: String,
    pub version: u32,
    pub predicted: Value,
    pub score: Option<f64>,
    pub truth: Value,
}

/// What the reader gathered since its last checkpoint.
#[derive(Debug, Default)]
pub(crate) struct JoinStore {
    kept: Vec<Kept>,
    /// Ground truth of kept predictions joined in memory: (request id, truth).
    labels: Vec<(String, Value)>,
    /// Feedback whose prediction was not in memory: (request id, truth).
    lookups: Vec<(String, Value)>,
    /// Per deployment: the second and how many were kept in it.
    budget: HashMap<String, (i64, u32)>,
    last_trim: i64,
}

/// Rows per multi-row statement.
const CHUNK: usize = 200;

impl JoinStore {
    /// Keeps the prediction if the deployment's budget for this second allows; returns whether
    /// it was kept.
    pub(crate) fn keep(
        &mut self,
        prediction: &PredictionLogged,
        config: JoinStoreConfig,
        now: i64,
    ) -> bool {
        if config.per_second == 0 || prediction.shadow || prediction.error.is_some() {
            return false;
        }
        let Some(predicted) = prediction.outputs.get(PREDICTION) else {
            return false;
        };
        let second = now.div_euclid(1000);
        let used = match self.budget.get_mut(prediction.deployment.as_str()) {
            Some(entry) => entry,
            None => self
                .budget
                .entry(prediction.deployment.clone())
                .or_insert((second, 0)),
        };
        if used.0 != second {
            *used = (second, 0);
        }
        if used.1 >= config.per_second {
            return false;
        }
        used.1 += 1;
        self.kept.push(Kept {
            request_id: prediction.request_id.clone(),
            deployment: prediction.deployment.clone(),
            model: prediction.model.clone(),
            version: prediction.version,
            inputs: serde_json::to_string(&prediction.inputs).unwrap_or_default(),
            predicted: predicted.to_string(),
            score: crate::performance::binary_score(&prediction.outputs),
            logged_at: now,
        });
        true
    }

    /// Records the ground truth of a kept prediction joined in memory.
    pub(crate) fn label(&mut self, request_id: &str, truth: &Value) {
        self.labels.push((request_id.to_owned(), truth.clone()));
    }

    /// Asks the store for a prediction memory no longer has.
    pub(crate) fn look_up(&mut self, request_id: &str, truth: &Value) {
        self.lookups.push((request_id.to_owned(), truth.clone()));
    }

    /// Writes what was gathered (in the checkpoint's transaction) and returns the outcomes the
    /// store could join.
    pub(crate) async fn flush(
        &mut self,
        txn: &DatabaseTransaction,
        config: JoinStoreConfig,
        now: i64,
    ) -> Result<Vec<StoredOutcome>> {
        for chunk in self.kept.chunks(CHUNK) {
            let mut insert = Query::insert();
            insert.into_table(Joinable::Table).columns([
                Joinable::RequestId,
                Joinable::Deployment,
                Joinable::Model,
                Joinable::Version,
                Joinable::Inputs,
                Joinable::Predicted,
                Joinable::Score,
                Joinable::LoggedAt,
            ]);
            for kept in chunk {
                insert
                    .values([
                        kept.request_id.clone().into(),
                        kept.deployment.clone().into(),
                        kept.model.clone().into(),
                        i32::try_from(kept.version).unwrap_or(i32::MAX).into(),
                        kept.inputs.clone().into(),
                        kept.predicted.clone().into(),
                        kept.score.into(),
                        kept.logged_at.into(),
                    ])
                    .map_err(|e| MonitorError::Invalid(e.to_string()))?;
            }
            insert.on_conflict(
                OnConflict::column(Joinable::RequestId)
                    .do_nothing()
                    .to_owned(),
            );
            txn.execute(&insert).await?;
        }
        self.kept.clear();
        for (request_id, truth) in self.labels.drain(..) {
            set_truth(txn, &request_id, &truth, now).await?;
        }
        let mut outcomes = Vec::new();
        let lookups = std::mem::take(&mut self.lookups);
        for chunk in lookups.chunks(CHUNK) {
            let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
            let rows = txn
                .query_all(
                    &Query::select()
                        .columns([
                            Joinable::RequestId,
                            Joinable::Deployment,
                            Joinable::Model,
                            Joinable::Version,
                            Joinable::Predicted,
                            Joinable::Score,
                        ])
                        .from(Joinable::Table)
                        .and_where(Expr::col(Joinable::RequestId).is_in(ids))
                        .and_where(Expr::col(Joinable::GroundTruth).is_null())
                        .to_owned(),
                )
                .await?;
            let mut found = HashMap::new();
            for row in rows {
                let id: String = row.try_get("", "request_id")?;
                found.insert(id, row);
            }
            for (request_id, truth) in chunk {
                let Some(row) = found.remove(request_id) else {
                    metrics::counter!("flywheel_monitor_feedback_unmatched_total").increment(1);
                    continue;
                };
                let predicted: String = row.try_get("", "predicted")?;
                outcomes.push(StoredOutcome {
                    deployment: row.try_get("", "deployment")?,
                    model: row.try_get("", "model")?,
                    version: u32::try_from(row.try_get::<i32>("", "version")?).unwrap_or(0),
                    predicted: serde_json::from_str(&predicted).unwrap_or(Value::Null),
                    score: row.try_get("", "score")?,
                    truth: truth.clone(),
                });
                set_truth(txn, request_id, truth, now).await?;
                metrics::counter!("flywheel_monitor_feedback_joined_late_total").increment(1);
            }
        }
        if now - self.last_trim >= 60_000 {
            self.last_trim = now;
            txn.execute(
                &Query::delete()
                    .from_table(Joinable::Table)
                    .and_where(Expr::col(Joinable::LoggedAt).lt(now - config.retention_ms))
                    .to_owned(),
            )
            .await?;
        }
        Ok(outcomes)
    }
}

async fn set_truth(
    txn: &DatabaseTransaction,
    request_id: &str,
    truth: &Value,
    now: i64,
) -> Result<()> {
    txn.execute(
        &Query::update()
            .table(Joinable::Table)
            .value(Joinable::GroundTruth, truth.to_string())
            .value(Joinable::LabelledAt, now)
            .and_where(Expr::col(Joinable::RequestId).eq(request_id))
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// A deployment's latest labelled production rows (inputs and ground truth), newest first.
pub(crate) async fn labelled_rows<C: ConnectionTrait>(
    db: &C,
    deployment: &str,
    limit: u64,
) -> Result<Vec<(BTreeMap<String, Value>, Value)>> {
    let rows = db
        .query_all(
            &Query::select()
                .columns([Joinable::Inputs, Joinable::GroundTruth])
                .from(Joinable::Table)
                .and_where(Expr::col(Joinable::Deployment).eq(deployment))
                .and_where(Expr::col(Joinable::GroundTruth).is_not_null())
                .order_by(Joinable::LabelledAt, Order::Desc)
                .limit(limit)
                .to_owned(),
        )
        .await?;
    rows.into_iter()
        .map(|row| {
            let inputs: String = row.try_get("", "inputs")?;
            let truth: String = row.try_get("", "ground_truth")?;
            Ok((
                serde_json::from_str(&inputs).unwrap_or_default(),
                serde_json::from_str(&truth).unwrap_or(Value::Null),
            ))
        })
        .collect()
}

/// Labelled rows as CSV: the inputs' columns (sorted) and the target last; text is quoted when
/// it must be.
pub(crate) fn to_csv(rows: &[(BTreeMap<String, Value>, Value)], target: &str) -> String {
    let mut columns: Vec<&str> = rows
        .iter()
        .flat_map(|(inputs, _)| inputs.keys().map(String::as_str))
        .filter(|c| *c != target)
        .collect();
    columns.sort_unstable();
    columns.dedup();
    let mut out = String::new();
    let header: Vec<String> = columns
        .iter()
        .copied()
        .chain(std::iter::once(target))
        .map(cell_text)
        .collect();
    out.push_str(&header.join(","));
    out.push('\n');
    for (inputs, truth) in rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| inputs.get(*c).map(value_text).unwrap_or_default())
            .chain(std::iter::once(value_text(truth)))
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

fn value_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => cell_text(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => cell_text(&other.to_string()),
    }
}

fn cell_text(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_sorted_inputs_then_the_target_and_quotes_what_needs_it() {
        let rows = vec![
            (
                serde_json::from_str(r#"{"b": 2.5, "a": "x,y", "label": "ignored"}"#)
                    .expect("valid"),
                Value::from("yes"),
            ),
            (
                serde_json::from_str(r#"{"a": "say \"hi\"", "b": null}"#).expect("valid"),
                Value::from(1),
            ),
        ];
        assert_eq!(
            to_csv(&rows, "label"),
            "a,b,label\n\"x,y\",2.5,yes\n\"say \"\"hi\"\"\",,1\n"
        );
    }
}
