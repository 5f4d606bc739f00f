//! Evaluation metrics, defined as scikit-learn defines them so numbers can be compared:
//! binary precision/recall/F1 for the second of the sorted classes (sklearn's `pos_label=1`
//! for 0/1 labels), macro averages for more classes with 0 where a ratio is undefined
//! (`zero_division=0`), ROC AUC with ties averaged (one-vs-rest macro for multiclass), log loss
//! with probabilities clipped to float64 epsilon and rows renormalised, R² of 0 for a constant
//! target unless predicted exactly.

use std::collections::BTreeMap;

/// Classification metrics from true class indices, predicted indices and probabilities.
pub fn classification(
    truth: &[usize],
    predicted: &[usize],
    probabilities: &[Vec<f64>],
    n_classes: usize,
) -> BTreeMap<String, f64> {
    let mut metrics = BTreeMap::new();
    if truth.is_empty() {
        return metrics;
    }
    let n = truth.len() as f64;
    let correct = truth.iter().zip(predicted).filter(|(t, p)| t == p).count() as f64;
    metrics.insert("accuracy".into(), correct / n);
    let per_class = |class: usize| {
        let tp = truth
            .iter()
            .zip(predicted)
            .filter(|(t, p)| **t == class && **p == class)
            .count() as f64;
        let predicted_pos = predicted.iter().filter(|p| **p == class).count() as f64;
        let actual_pos = truth.iter().filter(|t| **t == class).count() as f64;
        let precision = if predicted_pos > 0.0 {
            tp / predicted_pos
        } else {
            0.0
        };
        let recall = if actual_pos > 0.0 {
            tp / actual_pos
        } else {
            0.0
        };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        (precision, recall, f1)
    };
    let (precision, recall, f1) = if n_classes == 2 {
        per_class(1)
    } else {
        let classes: Vec<(f64, f64, f64)> = (0..n_classes).map(per_class).collect();
        let k = n_classes.max(1) as f64;
        (
            classes.iter().map(|c| c.0).sum::<f64>() / k,
            classes.iter().map(|c| c.1).sum::<f64>() / k,
            classes.iter().map(|c| c.2).sum::<f64>() / k,
        )
    };
    metrics.insert("precision".into(), precision);
    metrics.insert("recall".into(), recall);
    metrics.insert("f1".into(), f1);
    if probabilities.len() == truth.len() && probabilities.iter().all(|p| p.len() == n_classes) {
        let auc = if n_classes == 2 {
            let scores: Vec<f64> = probabilities.iter().map(|p| p[1]).collect();
            let positive: Vec<bool> = truth.iter().map(|t| *t == 1).collect();
            roc_auc(&positive, &scores)
        } else {
            let aucs: Vec<f64> = (0..n_classes)
                .filter_map(|class| {
                    let scores: Vec<f64> = probabilities.iter().map(|p| p[class]).collect();
                    let positive: Vec<bool> = truth.iter().map(|t| *t == class).collect();
                    roc_auc(&positive, &scores)
                })
                .collect();
            (aucs.len() == n_classes).then(|| aucs.iter().sum::<f64>() / n_classes as f64)
        };
        if let Some(auc) = auc {
            metrics.insert("roc_auc".into(), auc);
        }
        metrics.insert("log_loss".into(), log_loss(truth, probabilities));
    }
    metrics
}

/// Area under the ROC curve (Mann–Whitney U with tied scores counted half); `None` when only
/// one class is present.
pub fn roc_auc(positive: &[bool], scores: &[f64]) -> Option<f64> {
    let n_pos = positive.iter().filter(|p| **p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    // Average ranks over ties.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            if positive[order[k]] {
                rank_sum_pos += average_rank;
            }
        }
        i = j + 1;
    }
    let (p, q) = (n_pos as f64, n_neg as f64);
    Some((rank_sum_pos - p * (p + 1.0) / 2.0) / (p * q))
}

/// Mean negative log-likelihood of the true classes.
pub fn log_loss(truth: &[usize], probabilities: &[Vec<f64>]) -> f64 {
    let eps = f64::EPSILON;
    let mut total = 0.0;
    for (t, p) in truth.iter().zip(probabilities) {
        let clipped: Vec<f64> = p.iter().map(|v| v.clamp(eps, 1.0 - eps)).collect();
        let sum: f64 = clipped.iter().sum();
        total -= (clipped.get(*t).copied().unwrap_or(eps) / sum).ln();
    }
    total / truth.len().max(1) as f64
}

/// Regression metrics: RMSE, MAE and R².
pub fn regression(truth: &[f64], predicted: &[f64]) -> BTreeMap<String, f64> {
    let mut metrics = BTreeMap::new();
    if truth.is_empty() {
        return metrics;
    }
    let n = truth.len() as f64;
    let sse: f64 = truth
        .iter()
        .zip(predicted)
        .map(|(t, p)| (t - p) * (t - p))
        .sum();
    let sae: f64 = truth
        .iter()
        .zip(predicted)
        .map(|(t, p)| (t - p).abs())
        .sum();
    let mean = truth.iter().sum::<f64>() / n;
    let sst: f64 = truth.iter().map(|t| (t - mean) * (t - mean)).sum();
    let r2 = if sst > 0.0 {
        1.0 - sse / sst
    } else if sse == 0.0 {
        1.0
    } else {
        0.0
    };
    metrics.insert("rmse".into(), (sse / n).sqrt());
    metrics.insert("mae".into(), sae / n);
    metrics.insert("r2".into(), r2);
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_half() {
        let auc = roc_auc(&[false, true, false, true], &[0.1, 0.5, 0.5, 0.9]);
        assert_eq!(auc, Some(0.875));
        assert_eq!(roc_auc(&[true, true], &[0.1, 0.2]), None);
    }
}
