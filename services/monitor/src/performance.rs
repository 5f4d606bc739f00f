//! Production performance: ground truth from `feedback.received`, joined to the prediction with
//! the same request id, is counted into tumbling windows of labelled outcomes per deployment
//! version — accuracy and macro F1 for labels, MAE and RMSE for numbers — and compared with the
//! version's evaluation at training.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::windows::Span;

/// Counts of one window of labelled outcomes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PerformanceWindow {
    /// Whose and when.
    #[serde(flatten)]
    pub span: Span,
    /// Outcomes counted.
    pub labelled: u64,
    /// Labels predicted right.
    pub correct: u64,
    /// Per class: true positives, false positives, false negatives.
    pub classes: BTreeMap<String, [u64; 3]>,
    /// Outcomes where both sides are numbers.
    pub numeric: u64,
    /// Sum of |predicted − truth| over them.
    pub abs_error_sum: f64,
    /// Sum of (predicted − truth)² over them.
    pub sq_error_sum: f64,
    /// (score of the last class, true label) of binary classifiers' outcomes, for AUC; the
    /// window closes at a bounded count, so this stays bounded.
    #[serde(default)]
    pub scored: Vec<(f64, String)>,
}

/// A value as a label: numbers without a fractional part print as integers ("1", not "1.0").
fn label(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// The probability of the last class of a binary classifier's answer (what AUC ranks by).
pub(crate) fn binary_score(outputs: &BTreeMap<String, Value>) -> Option<f64> {
    outputs
        .get("probabilities")
        .and_then(Value::as_array)
        .filter(|p| p.len() == 2)
        .and_then(|p| p[1].as_f64())
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|v: &f64| v.is_finite())
}

impl PerformanceWindow {
    /// A new window for a deployment version.
    pub(crate) fn open(span: Span) -> Self {
        Self {
            span,
            labelled: 0,
            correct: 0,
            classes: BTreeMap::new(),
            numeric: 0,
            abs_error_sum: 0.0,
            sq_error_sum: 0.0,
            scored: Vec::new(),
        }
    }

    /// Counts one joined outcome.
    pub(crate) fn add(&mut self, predicted: &Value, score: Option<f64>, truth: &Value, now: i64) {
        if let Some(score) = score.filter(|s| s.is_finite()) {
            self.scored.push((score, label(truth)));
        }
        self.labelled += 1;
        self.span.last_at = now;
        let (p, t) = (label(predicted), label(truth));
        if p == t {
            self.correct += 1;
            self.classes.entry(p).or_default()[0] += 1;
        } else {
            self.classes.entry(p).or_default()[1] += 1;
            self.classes.entry(t).or_default()[2] += 1;
        }
        if let (Some(p), Some(t)) = (number(predicted), number(truth)) {
            self.numeric += 1;
            self.abs_error_sum += (p - t).abs();
            self.sq_error_sum += (p - t).powi(2);
        }
    }

    /// Accuracy and macro F1 (scikit-learn's, over the classes seen), and MAE and RMSE when
    /// every outcome was a number.
    pub(crate) fn metrics(&self) -> BTreeMap<String, f64> {
        let mut metrics = BTreeMap::new();
        if self.labelled == 0 {
            return metrics;
        }
        metrics.insert(
            "accuracy".into(),
            self.correct as f64 / self.labelled as f64,
        );
        let f1s: Vec<f64> = self
            .classes
            .values()
            .map(|[tp, fp, fn_]| {
                let denominator = 2 * tp + fp + fn_;
                if denominator == 0 {
                    0.0
                } else {
                    2.0 * *tp as f64 / denominator as f64
                }
            })
            .collect();
        if !f1s.is_empty() {
            metrics.insert(
                "f1_macro".into(),
                f1s.iter().sum::<f64>() / f1s.len() as f64,
            );
        }
        if let Some(auc) = auc(&self.scored) {
            metrics.insert("auc".into(), auc);
        }
        if self.numeric == self.labelled {
            let n = self.numeric as f64;
            metrics.insert("mae".into(), self.abs_error_sum / n);
            metrics.insert("rmse".into(), (self.sq_error_sum / n).sqrt());
        }
        metrics
    }
}

/// ROC AUC as scikit-learn's `roc_auc_score` computes it for two classes (the positive one
/// the greater label, ties counted half): `None` unless both classes occur.
fn auc(scored: &[(f64, String)]) -> Option<f64> {
    let mut labels: Vec<&str> = scored.iter().map(|(_, l)| l.as_str()).collect();
    labels.sort_unstable();
    labels.dedup();
    let [_, positive] = labels.as_slice() else {
        return None;
    };
    // Mann–Whitney: average ranks of the positives.
    let mut order: Vec<usize> = (0..scored.len()).collect();
    order.sort_by(|a, b| scored[*a].0.total_cmp(&scored[*b].0));
    let mut ranks = vec![0.0; scored.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scored[order[j + 1]].0 == scored[order[i]].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[order[k]] = rank;
        }
        i = j + 1;
    }
    let positives = scored.iter().filter(|(_, l)| l == positive).count() as f64;
    let negatives = scored.len() as f64 - positives;
    let rank_sum: f64 = scored
        .iter()
        .zip(&ranks)
        .filter(|((_, l), _)| l == positive)
        .map(|(_, r)| r)
        .sum();
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// Whether production performance fell short of training: accuracy more than `margin` below
/// (classifiers), or RMSE more than `margin` (as a share) above (regressors). Returns the words
/// for the alert.
pub(crate) fn shortfall(
    production: &BTreeMap<String, f64>,
    training: &BTreeMap<String, f64>,
    margin: f64,
) -> Option<String> {
    if let (Some(now), Some(then)) = (production.get("accuracy"), training.get("accuracy"))
        && training.get("rmse").is_none()
        && *now < then - margin
    {
        return Some(format!(
            "accuracy {now:.3} in production against {then:.3} at training"
        ));
    }
    if let (Some(now), Some(then)) = (production.get("rmse"), training.get("rmse"))
        && *now > then * (1.0 + margin)
    {
        return Some(format!(
            "RMSE {now:.4} in production against {then:.4} at training"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accuracy_and_macro_f1_as_scikit_learn_defines_them() {
        // y_true = [1, 1, 0, 0, 1], y_pred = [1, 0, 0, 1, 1]:
        // accuracy 0.6; F1(1) = 2·2/(2·2+1+1) = 2/3, F1(0) = 2·1/(2·1+1+1) = 1/2; macro 7/12.
        let mut window = PerformanceWindow::open(Span::open("d", "m", 1, 1, 0));
        for (p, t) in [(1, 1), (0, 1), (0, 0), (1, 0), (1, 1)] {
            window.add(&json!(p.to_string()), None, &json!(t), 0);
        }
        let metrics = window.metrics();
        assert!((metrics["accuracy"] - 0.6).abs() < 1e-12);
        assert!((metrics["f1_macro"] - 7.0 / 12.0).abs() < 1e-12);
        assert!((metrics["rmse"] - (2.0f64 / 5.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn auc_counts_ties_half_as_scikit_learn_does() {
        // roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.75;
        // roc_auc_score([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) = 0.875.
        let case = |truth: [u8; 4], scores: [f64; 4]| {
            let scored: Vec<(f64, String)> = scores
                .iter()
                .zip(truth)
                .map(|(s, t)| (*s, t.to_string()))
                .collect();
            auc(&scored).expect("two classes")
        };
        assert!((case([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) - 0.75).abs() < 1e-12);
        assert!((case([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) - 0.875).abs() < 1e-12);
        assert_eq!(auc(&[(0.3, "1".into())]), None);
    }

    #[test]
    fn shortfalls_are_judged_against_training() {
        let training: BTreeMap<String, f64> = [("accuracy".to_owned(), 0.9)].into();
        let fine: BTreeMap<String, f64> = [("accuracy".to_owned(), 0.86)].into();
        let poor: BTreeMap<String, f64> = [("accuracy".to_owned(), 0.8)].into();
        assert!(shortfall(&fine, &training, 0.05).is_none());
        assert!(shortfall(&poor, &training, 0.05).is_some());
    }
}
