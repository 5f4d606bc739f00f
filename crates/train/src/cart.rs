//! CART decision trees (Gini for classes, squared error for numbers) and random forests over
//! them. Our own rather than linfa-trees: its leaves keep no class probabilities, it has no
//! regression trees, and it breaks ties by iterating a `HashMap`, so the same data and seed
//! could give different trees. Here everything is ordered, so a seed fixes the model.

use rand08::Rng;
use rand08::seq::SliceRandom;

use crate::model::{Node, Tree};

/// What a tree predicts.
#[derive(Clone, Copy)]
pub(crate) enum Target<'a> {
    /// Class indices and the number of classes.
    Classes(&'a [usize], usize),
    /// Numbers.
    Values(&'a [f64]),
}

/// Growth limits.
#[derive(Debug, Clone)]
pub(crate) struct TreeParams {
    pub max_depth: Option<usize>,
    pub min_samples_split: usize,
    pub min_samples_leaf: usize,
    /// Features tried per split (all when `None`).
    pub max_features: Option<usize>,
}

fn leaf_value(target: Target<'_>, samples: &[usize]) -> (Vec<f64>, f64) {
    match target {
        Target::Classes(y, k) => {
            let mut counts = vec![0.0; k];
            for &s in samples {
                counts[y[s]] += 1.0;
            }
            let n = samples.len().max(1) as f64;
            let gini = 1.0 - counts.iter().map(|c| (c / n) * (c / n)).sum::<f64>();
            (counts.iter().map(|c| c / n).collect(), gini)
        }
        Target::Values(y) => {
            let n = samples.len().max(1) as f64;
            let mean = samples.iter().map(|&s| y[s]).sum::<f64>() / n;
            let var = samples
                .iter()
                .map(|&s| (y[s] - mean) * (y[s] - mean))
                .sum::<f64>()
                / n;
            (vec![mean], var)
        }
    }
}

struct Split {
    feature: usize,
    threshold: f64,
    /// Weighted child impurity (lower is better).
    score: f64,
}

/// The best split of `samples` on `feature`, by weighted child impurity.
fn best_split_on(
    columns: &[Vec<f64>],
    target: Target<'_>,
    samples: &[usize],
    feature: usize,
    min_leaf: usize,
) -> Option<Split> {
    let column = &columns[feature];
    let mut order: Vec<usize> = samples.to_vec();
    order.sort_by(|a, b| column[*a].total_cmp(&column[*b]).then(a.cmp(b)));
    let n = order.len();
    let mut best: Option<Split> = None;
    match target {
        Target::Classes(y, k) => {
            let mut left = vec![0.0f64; k];
            let mut right = vec![0.0f64; k];
            for &s in &order {
                right[y[s]] += 1.0;
            }
            let gini = |counts: &[f64], total: f64| {
                1.0 - counts
                    .iter()
                    .map(|c| (c / total) * (c / total))
                    .sum::<f64>()
            };
            for i in 0..n - 1 {
                let s = order[i];
                left[y[s]] += 1.0;
                right[y[s]] -= 1.0;
                let (a, b) = (column[s], column[order[i + 1]]);
                if a == b || i + 1 < min_leaf || n - i - 1 < min_leaf {
                    continue;
                }
                let (nl, nr) = ((i + 1) as f64, (n - i - 1) as f64);
                let score = (nl * gini(&left, nl) + nr * gini(&right, nr)) / n as f64;
                if best.as_ref().is_none_or(|b| score < b.score) {
                    best = Some(Split {
                        feature,
                        threshold: a + (b - a) / 2.0,
                        score,
                    });
                }
            }
        }
        Target::Values(y) => {
            let (mut sum_l, mut sq_l) = (0.0, 0.0);
            let sum: f64 = order.iter().map(|&s| y[s]).sum();
            let sq: f64 = order.iter().map(|&s| y[s] * y[s]).sum();
            for i in 0..n - 1 {
                let s = order[i];
                sum_l += y[s];
                sq_l += y[s] * y[s];
                let (a, b) = (column[s], column[order[i + 1]]);
                if a == b || i + 1 < min_leaf || n - i - 1 < min_leaf {
                    continue;
                }
                let (nl, nr) = ((i + 1) as f64, (n - i - 1) as f64);
                let (sum_r, sq_r) = (sum - sum_l, sq - sq_l);
                let sse = (sq_l - sum_l * sum_l / nl) + (sq_r - sum_r * sum_r / nr);
                let score = sse / n as f64;
                if best.as_ref().is_none_or(|b| score < b.score) {
                    best = Some(Split {
                        feature,
                        threshold: a + (b - a) / 2.0,
                        score,
                    });
                }
            }
        }
    }
    best
}

/// Grows one tree on `samples` (indices into the rows; repeats allowed, as in a bootstrap).
pub(crate) fn fit_tree<R: Rng>(
    columns: &[Vec<f64>],
    target: Target<'_>,
    samples: Vec<usize>,
    params: &TreeParams,
    rng: &mut R,
) -> Tree {
    let mut nodes: Vec<Node> = Vec::new();
    // (node index, samples, depth)
    let mut stack = vec![(0usize, samples, 0usize)];
    nodes.push(Node {
        feature: -1,
        threshold: 0.0,
        left: 0,
        right: 0,
        value: Vec::new(),
    });
    let features: Vec<usize> = (0..columns.len()).collect();
    while let Some((index, samples, depth)) = stack.pop() {
        let (value, impurity) = leaf_value(target, &samples);
        nodes[index].value = value;
        let can_split = samples.len() >= params.min_samples_split.max(2)
            && params.max_depth.is_none_or(|d| depth < d)
            && impurity > 1e-12;
        if !can_split {
            continue;
        }
        let tried: Vec<usize> = match params.max_features {
            Some(m) if m < features.len() => {
                let mut shuffled = features.clone();
                shuffled.shuffle(rng);
                shuffled.truncate(m.max(1));
                shuffled.sort_unstable();
                shuffled
            }
            _ => features.clone(),
        };
        let mut best: Option<Split> = None;
        for &feature in &tried {
            if let Some(split) = best_split_on(
                columns,
                target,
                &samples,
                feature,
                params.min_samples_leaf.max(1),
            ) && best.as_ref().is_none_or(|b| split.score < b.score - 1e-15)
            {
                best = Some(split);
            }
        }
        let Some(split) = best.filter(|s| s.score < impurity - 1e-15) else {
            continue;
        };
        let (left, right): (Vec<usize>, Vec<usize>) = samples
            .iter()
            .partition(|&&s| columns[split.feature][s] <= split.threshold);
        let left_index = nodes.len();
        for _ in 0..2 {
            nodes.push(Node {
                feature: -1,
                threshold: 0.0,
                left: 0,
                right: 0,
                value: Vec::new(),
            });
        }
        let node = &mut nodes[index];
        node.feature = i64::try_from(split.feature).unwrap_or(-1);
        node.threshold = split.threshold;
        node.left = u32::try_from(left_index).unwrap_or(u32::MAX);
        node.right = u32::try_from(left_index + 1).unwrap_or(u32::MAX);
        node.value.clear();
        stack.push((left_index + 1, right, depth + 1));
        stack.push((left_index, left, depth + 1));
    }
    Tree { nodes }
}

/// A random forest: `n_trees` trees on bootstrap samples, each split trying `max_features`.
pub(crate) fn fit_forest<R: Rng>(
    columns: &[Vec<f64>],
    target: Target<'_>,
    n_rows: usize,
    n_trees: usize,
    params: &TreeParams,
    rng: &mut R,
    mut progress: impl FnMut(usize),
) -> Vec<Tree> {
    let mut trees = Vec::with_capacity(n_trees);
    for t in 0..n_trees {
        let sample: Vec<usize> = (0..n_rows).map(|_| rng.gen_range(0..n_rows)).collect();
        trees.push(fit_tree(columns, target, sample, params, rng));
        progress(t + 1);
    }
    trees
}
