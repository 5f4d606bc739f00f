//! Quality gates on evaluation metrics: thresholds (`>=`, `>`, `<=`, `<`) and no-regression
//! against the production version (`no_regression`, threshold = the allowed loss).

use std::collections::BTreeMap;

use flywheel_events::payloads::QualityGate;

/// Metrics where smaller is better; every other metric is better when larger.
const LOWER_IS_BETTER: [&str; 5] = ["rmse", "mae", "log_loss", "inertia", "mse"];

/// One gate's verdict.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GateOutcome {
    pub passed: bool,
    pub detail: String,
}

/// Evaluates every gate; `production` holds the production version's metrics, if any.
pub(crate) fn evaluate(
    gates: &[QualityGate],
    metrics: &BTreeMap<String, f64>,
    production: Option<&BTreeMap<String, f64>>,
) -> Vec<GateOutcome> {
    gates
        .iter()
        .map(|gate| {
            let Some(&value) = metrics.get(&gate.metric) else {
                return GateOutcome {
                    passed: false,
                    detail: format!("{}: not measured", gate.metric),
                };
            };
            if gate.op == "no_regression" {
                let Some(&baseline) = production.and_then(|p| p.get(&gate.metric)) else {
                    return GateOutcome {
                        passed: true,
                        detail: format!("{}: no production baseline", gate.metric),
                    };
                };
                let passed = if LOWER_IS_BETTER.contains(&gate.metric.as_str()) {
                    value <= baseline + gate.threshold
                } else {
                    value >= baseline - gate.threshold
                };
                return GateOutcome {
                    passed,
                    detail: format!("{} {value} vs production {baseline}", gate.metric),
                };
            }
            let passed = match gate.op.as_str() {
                ">=" => value >= gate.threshold,
                ">" => value > gate.threshold,
                "<=" => value <= gate.threshold,
                "<" => value < gate.threshold,
                _ => false,
            };
            GateOutcome {
                passed,
                detail: format!("{} {value} {} {}", gate.metric, gate.op, gate.threshold),
            }
        })
        .collect()
}

/// Whether `op` is one this module understands.
pub(crate) fn known_op(op: &str) -> bool {
    matches!(op, ">=" | ">" | "<=" | "<" | "no_regression")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(metric: &str, op: &str, threshold: f64) -> QualityGate {
        QualityGate {
            metric: metric.into(),
            op: op.into(),
            threshold,
        }
    }

    #[test]
    fn thresholds_and_no_regression() {
        let metrics = BTreeMap::from([("accuracy".to_owned(), 0.9), ("rmse".to_owned(), 2.0)]);
        let prod = BTreeMap::from([("accuracy".to_owned(), 0.92), ("rmse".to_owned(), 2.5)]);
        let outcomes = evaluate(
            &[
                gate("accuracy", ">=", 0.85),
                gate("accuracy", ">", 0.9),
                gate("accuracy", "no_regression", 0.01),
                gate("accuracy", "no_regression", 0.05),
                gate("rmse", "no_regression", 0.0),
                gate("auc", ">=", 0.5),
            ],
            &metrics,
            Some(&prod),
        );
        let passed: Vec<bool> = outcomes.iter().map(|o| o.passed).collect();
        assert_eq!(passed, [true, false, false, true, true, false]);
        assert!(evaluate(&[gate("accuracy", "no_regression", 0.0)], &metrics, None)[0].passed);
    }
}
