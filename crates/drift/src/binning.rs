//! Binning as Evidently 0.7 does it: equal-width Sturges bins over both samples for a numeric
//! column with more than 20 distinct reference values, one bin per value otherwise; empty bins
//! filled with a small epsilon where the method needs it (PSI).

use std::collections::HashMap;

use crate::Column;

/// A float as a map key that sorts like the number: -0.0 and 0.0 are one value, as in pandas.
pub(crate) fn key(v: f64) -> u64 {
    let bits = if v == 0.0 { 0 } else { v.to_bits() };
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// Distinct values of a column.
pub(crate) fn distinct(column: &Column<'_>) -> usize {
    match column {
        Column::Numeric(values) => {
            let mut keys: Vec<u64> = values.iter().map(|v| key(*v)).collect();
            keys.sort_unstable();
            keys.dedup();
            keys.len()
        }
        Column::Categorical(values) => {
            let mut seen: Vec<&str> = values.to_vec();
            seen.sort_unstable();
            seen.dedup();
            seen.len()
        }
    }
}

/// Distinct values of two columns together.
pub(crate) fn distinct_together(a: &Column<'_>, b: &Column<'_>) -> usize {
    match (a, b) {
        (Column::Numeric(x), Column::Numeric(y)) => {
            let mut keys: Vec<u64> = x.iter().chain(y.iter()).map(|v| key(*v)).collect();
            keys.sort_unstable();
            keys.dedup();
            keys.len()
        }
        (Column::Categorical(x), Column::Categorical(y)) => {
            let mut seen: Vec<&str> = x.iter().chain(y.iter()).copied().collect();
            seen.sort_unstable();
            seen.dedup();
            seen.len()
        }
        _ => 0,
    }
}

/// `numpy.histogram_bin_edges(values, bins="sturges")`.
pub(crate) fn sturges_edges(values: &[f64]) -> Vec<f64> {
    let (mut first, mut last) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if values.is_empty() {
        (first, last) = (0.0, 1.0);
    }
    let range = last - first;
    let width = range / ((values.len() as f64).log2() + 1.0);
    if first == last {
        first -= 0.5;
        last += 0.5;
    }
    let bins = if width > 0.0 {
        ((last - first) / width).ceil() as usize
    } else {
        1
    };
    // numpy.linspace: start + i * step, the last edge exactly `last`.
    let step = (last - first) / bins as f64;
    let mut edges: Vec<f64> = (0..=bins).map(|i| first + i as f64 * step).collect();
    if let Some(end) = edges.last_mut() {
        *end = last;
    }
    edges
}

/// `numpy.histogram(values, edges)[0]`: bins closed on the left, the last also on the right;
/// values outside the edges are not counted.
pub(crate) fn histogram(values: &[f64], edges: &[f64]) -> Vec<f64> {
    let bins = edges.len().saturating_sub(1);
    let mut counts = vec![0.0; bins];
    if bins == 0 {
        return counts;
    }
    let (lo, hi) = (edges[0], edges[bins]);
    for &v in values {
        if !(lo..=hi).contains(&v) {
            continue;
        }
        // The last edge not above v (searchsorted right − 1), clamped into the last bin.
        let i = edges
            .partition_point(|e| *e <= v)
            .saturating_sub(1)
            .min(bins - 1);
        counts[i] += 1.0;
    }
    counts
}

/// Counts per distinct value, over the union of both columns' values, keys ascending (the same
/// order for both).
pub(crate) fn value_counts_of(
    reference: &Column<'_>,
    current: &Column<'_>,
) -> (Vec<f64>, Vec<f64>) {
    fn count<K: std::hash::Hash + Eq + Copy + Ord>(
        a: impl Iterator<Item = K> + Clone,
        b: impl Iterator<Item = K> + Clone,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut keys: Vec<K> = a.clone().chain(b.clone()).collect();
        keys.sort_unstable();
        keys.dedup();
        let index: HashMap<K, usize> = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        let mut ca = vec![0.0; keys.len()];
        let mut cb = vec![0.0; keys.len()];
        a.for_each(|k| ca[index[&k]] += 1.0);
        b.for_each(|k| cb[index[&k]] += 1.0);
        (ca, cb)
    }
    match (reference, current) {
        (Column::Numeric(x), Column::Numeric(y)) => {
            count(x.iter().map(|v| key(*v)), y.iter().map(|v| key(*v)))
        }
        (Column::Categorical(x), Column::Categorical(y)) => {
            count(x.iter().copied(), y.iter().copied())
        }
        _ => (Vec::new(), Vec::new()),
    }
}

/// Counts per bin of both columns (Evidently's `get_binned_data` before dividing).
pub(crate) fn binned_counts(reference: &Column<'_>, current: &Column<'_>) -> (Vec<f64>, Vec<f64>) {
    match (reference, current) {
        (Column::Numeric(x), Column::Numeric(y)) if distinct(reference) > 20 => {
            let combined: Vec<f64> = x.iter().chain(y.iter()).copied().collect();
            let edges = sturges_edges(&combined);
            (histogram(x, &edges), histogram(y, &edges))
        }
        _ => value_counts_of(reference, current),
    }
}

/// Shares of a count vector.
pub(crate) fn shares(counts: &[f64]) -> Vec<f64> {
    let total: f64 = counts.iter().sum();
    counts.iter().map(|c| c / total).collect()
}

/// Evidently's epsilon for empty bins: the smallest non-zero share / 10⁶ if that is ≤ 10⁻⁴,
/// else 10⁻⁴.
pub(crate) fn fill_zeroes(mut shares: Vec<f64>) -> Vec<f64> {
    let smallest = shares
        .iter()
        .copied()
        .filter(|s| *s != 0.0)
        .fold(f64::INFINITY, f64::min);
    if smallest.is_finite() {
        let epsilon = if smallest <= 0.0001 {
            smallest / 1e6
        } else {
            0.0001
        };
        shares
            .iter_mut()
            .filter(|s| **s == 0.0)
            .for_each(|s| *s = epsilon);
    }
    shares
}

/// Evidently's `get_binned_data`: shares per bin (of all values, as it divides by the sample's
/// length), zeros filled when `fill`.
pub(crate) fn binned_shares(
    reference: &Column<'_>,
    current: &Column<'_>,
    fill: bool,
) -> (Vec<f64>, Vec<f64>) {
    let (rc, cc) = binned_counts(reference, current);
    let share = |counts: Vec<f64>, n: usize| -> Vec<f64> {
        let shares: Vec<f64> = counts.iter().map(|c| c / n as f64).collect();
        if fill { fill_zeroes(shares) } else { shares }
    };
    (share(rc, reference.len()), share(cc, current.len()))
}
