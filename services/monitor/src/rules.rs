//! Alert rules on report metrics (`PUT /api/v1/rules/{name}`): a metric of a deployment's
//! reports, a comparison with a threshold, how many reports in a row must breach it, and a
//! severity. Checked whenever a report is stored; raised and resolved like the built-in rules.
//!
//! Metrics: `drift_share`, `dataset_drift` (1 or 0), `latency_us_mean`, `latency_us_max`,
//! `latency_us_p50`, `latency_us_p95`, `latency_us_p99`, `error_rate`, `errors`, `count`, `drift.<feature>` (the feature's drift score), `prediction_drift`, and from
//! performance reports `accuracy`, `f1_macro`, `auc`, `mae`, `rmse`.

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Order, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema::{Reports, Rules};
use crate::{AppState, MonitorError, Result};

/// One rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertRule {
    /// Deployment it watches (`*`: every one).
    #[serde(default = "every")]
    pub deployment: String,
    /// The report metric.
    pub metric: String,
    /// `>`, `>=`, `<` or `<=`.
    pub op: String,
    /// The threshold.
    pub threshold: f64,
    /// Reports in a row that must breach it.
    #[serde(default = "one")]
    pub windows: u32,
    /// `info`, `warning` or `critical`.
    #[serde(default = "warning")]
    pub severity: String,
}

fn every() -> String {
    "*".into()
}

fn one() -> u32 {
    1
}

fn warning() -> String {
    "warning".into()
}

impl AlertRule {
    /// Refuses rules that could never work.
    pub(crate) fn validate(&self) -> Result<()> {
        if !matches!(self.op.as_str(), ">" | ">=" | "<" | "<=") {
            return Err(MonitorError::Invalid("op: one of >, >=, <, <=".into()));
        }
        if !matches!(self.severity.as_str(), "info" | "warning" | "critical") {
            return Err(MonitorError::Invalid(
                "severity: info, warning or critical".into(),
            ));
        }
        if !self.threshold.is_finite() || self.windows == 0 {
            return Err(MonitorError::Invalid(
                "threshold: a number; windows: at least 1".into(),
            ));
        }
        if self.metric.trim().is_empty() {
            return Err(MonitorError::Invalid("metric: a report metric".into()));
        }
        Ok(())
    }

    fn breached(&self, value: f64) -> bool {
        match self.op.as_str() {
            ">" => value > self.threshold,
            ">=" => value >= self.threshold,
            "<" => value < self.threshold,
            _ => value <= self.threshold,
        }
    }
}

/// A metric of a stored report body, if it has it.
pub(crate) fn metric(report: &Value, name: &str) -> Option<f64> {
    if let Some(feature) = name.strip_prefix("drift.") {
        return report["columns"]
            .as_array()?
            .iter()
            .find(|c| c["column"] == feature)?["statistic"]
            .as_f64();
    }
    match name {
        "dataset_drift" => report["dataset_drift"]
            .as_bool()
            .map(|b| f64::from(u8::from(b))),
        "prediction_drift" => report["prediction_drift"]["statistic"].as_f64(),
        "accuracy" | "f1_macro" | "auc" | "mae" | "rmse" => report["performance"][name].as_f64(),
        other => report[other].as_f64(),
    }
}

/// Stores (or replaces) a rule.
pub(crate) async fn put(state: &AppState, name: &str, rule: &AlertRule) -> Result<()> {
    rule.validate()?;
    flywheel_events::subjects::check_token(name).map_err(|_| {
        MonitorError::Invalid(format!(
            "invalid rule name `{name}`: letters, digits, `_` or `-`"
        ))
    })?;
    let body = serde_json::to_string(rule).map_err(|e| MonitorError::Invalid(e.to_string()))?;
    let mut upsert = Query::insert();
    upsert
        .into_table(Rules::Table)
        .columns([Rules::Name, Rules::Body])
        .values([name.into(), body.into()])
        .map_err(|e| MonitorError::Invalid(e.to_string()))?
        .on_conflict(
            OnConflict::column(Rules::Name)
                .update_column(Rules::Body)
                .to_owned(),
        );
    state.db.execute(&upsert).await?;
    Ok(())
}

/// Every rule, by name.
pub(crate) async fn list<C: ConnectionTrait>(conn: &C) -> Result<Vec<(String, AlertRule)>> {
    let rows = conn
        .query_all(
            &Query::select()
                .columns([Rules::Name, Rules::Body])
                .from(Rules::Table)
                .to_owned(),
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let name: String = r.try_get("", "name").ok()?;
            let body: String = r.try_get("", "body").ok()?;
            Some((name, serde_json::from_str(&body).ok()?))
        })
        .collect())
}

/// Checks every rule that watches `deployment` against its latest reports having the metric:
/// a rule breached by its last `windows` of them raises its alert (`rule:<name>`), otherwise
/// resolves it.
pub(crate) async fn check(
    txn: &DatabaseTransaction,
    state: &AppState,
    (deployment, model): (&str, &str),
    report_id: &str,
    now: i64,
) -> Result<()> {
    for (name, rule) in list(txn).await? {
        if rule.deployment != "*" && rule.deployment != deployment {
            continue;
        }
        let rows = txn
            .query_all(
                &Query::select()
                    .column(Reports::Body)
                    .from(Reports::Table)
                    .and_where(Expr::col(Reports::Deployment).eq(deployment))
                    .order_by(Reports::CreatedAt, Order::Desc)
                    .order_by(Reports::WindowStart, Order::Desc)
                    .limit(200)
                    .to_owned(),
            )
            .await?;
        let values: Vec<f64> = rows
            .iter()
            .filter_map(|r| r.try_get::<String>("", "body").ok())
            .filter_map(|b| serde_json::from_str::<Value>(&b).ok())
            .filter_map(|b| metric(&b, &rule.metric))
            .take(rule.windows as usize)
            .collect();
        let alert_rule = format!("rule:{name}");
        let breached =
            values.len() == rule.windows as usize && values.iter().all(|v| rule.breached(*v));
        if breached {
            let message = format!(
                "{} {} {} for the last {} reports of {deployment} (latest {:.4})",
                rule.metric, rule.op, rule.threshold, rule.windows, values[0]
            );
            crate::reports::raise(
                txn,
                state,
                (&alert_rule, &rule.severity),
                (deployment, model),
                message,
                report_id,
                now,
            )
            .await?;
        } else if !values.is_empty() {
            crate::reports::resolve(txn, state, &alert_rule, deployment, now).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metrics_are_read_from_report_bodies() {
        let report = json!({
            "drift_share": 0.5, "dataset_drift": true, "latency_us_mean": 120,
            "columns": [{"column": "x1", "statistic": 0.7}],
            "prediction_drift": {"statistic": 0.2},
            "performance": {"accuracy": 0.9},
        });
        assert_eq!(metric(&report, "drift_share"), Some(0.5));
        assert_eq!(metric(&report, "dataset_drift"), Some(1.0));
        assert_eq!(metric(&report, "latency_us_mean"), Some(120.0));
        assert_eq!(metric(&report, "drift.x1"), Some(0.7));
        assert_eq!(metric(&report, "drift.x9"), None);
        assert_eq!(metric(&report, "prediction_drift"), Some(0.2));
        assert_eq!(metric(&report, "accuracy"), Some(0.9));
        let rule = AlertRule {
            deployment: every(),
            metric: "accuracy".into(),
            op: "<".into(),
            threshold: 0.95,
            windows: 1,
            severity: warning(),
        };
        assert!(rule.breached(0.9) && !rule.breached(0.95));
        assert!(
            AlertRule {
                op: "!=".into(),
                ..rule
            }
            .validate()
            .is_err()
        );
    }
}
