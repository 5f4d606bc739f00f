//! A mergeable quantile sketch with a relative-error guarantee (DDSketch, Masson, Rim and Lee,
//! VLDB 2019): values fall in logarithmic buckets `(γ^(i-1), γ^i]` with `γ = (1+α)/(1-α)`, so any
//! quantile is answered within a relative error `α` of the true value at its rank, memory grows
//! with the logarithm of the range (not the count), and two sketches merge by adding buckets —
//! windows of a monitor can be combined without their raw values.

use serde::{Deserialize, Serialize};

/// Relative accuracy of the answers: 1 %.
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// Most buckets kept per sign; past it the lowest buckets are folded together (only quantiles
/// in the folded tail lose accuracy, as in DDSketch's collapsing variant).
const MAX_BUCKETS: usize = 2048;

/// Magnitudes below this count as zero.
const MIN_MAGNITUDE: f64 = 1e-9;

/// `ln γ = ln((1 + α)/(1 − α))` for α = 1 %, spelt out so a value costs one logarithm (a test
/// checks it against the formula).
const LN_GAMMA: f64 = 0.020_000_666_706_669_435;

/// `1 / ln γ`, so finding a bucket multiplies instead of dividing.
const INVERSE_LN_GAMMA: f64 = 1.0 / LN_GAMMA;

/// Counts of one sign's logarithmic buckets, densely from `offset`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Buckets {
    offset: i32,
    counts: Vec<u64>,
}

impl Buckets {
    fn add(&mut self, key: i32, n: u64) {
        if self.counts.is_empty() {
            self.offset = key;
            self.counts.push(n);
            return;
        }
        if key < self.offset {
            let grow = (self.offset - key) as usize;
            if self.counts.len() + grow > MAX_BUCKETS {
                // Below everything kept and no room: fold into the lowest bucket.
                self.counts[0] += n;
                return;
            }
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = key;
        }
        let index = (key - self.offset) as usize;
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += n;
        if self.counts.len() > MAX_BUCKETS {
            let fold = self.counts.len() - MAX_BUCKETS;
            let folded: u64 = self.counts.drain(..fold).sum();
            self.counts[0] += folded;
            self.offset += fold as i32;
        }
    }

    /// (key, count) of non-empty buckets, ascending.
    fn iter(&self) -> impl DoubleEndedIterator<Item = (i32, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (self.offset + i as i32, *c))
    }
}

/// A quantile sketch of real numbers (NaN and infinities are not counted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuantileSketch {
    positive: Buckets,
    negative: Buckets,
    zeros: u64,
    count: u64,
    /// Smallest and largest value seen (meaningful when `count > 0`).
    min: f64,
    max: f64,
}

impl QuantileSketch {
    /// An empty sketch.
    pub fn new() -> Self {
        Self::default()
    }

    fn key(magnitude: f64) -> i32 {
        (magnitude.ln() * INVERSE_LN_GAMMA).ceil() as i32
    }

    /// The value a bucket stands for: the point with equal relative error to both its ends.
    fn value(key: i32) -> f64 {
        let gamma = LN_GAMMA.exp();
        2.0 * gamma.powi(key) / (gamma + 1.0)
    }

    /// Counts one value; returns whether it was counted (finite).
    pub fn add(&mut self, value: f64) -> bool {
        if !value.is_finite() {
            return false;
        }
        if self.count == 0 {
            (self.min, self.max) = (value, value);
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        if value.abs() < MIN_MAGNITUDE {
            self.zeros += 1;
        } else if value > 0.0 {
            self.positive.add(Self::key(value), 1);
        } else {
            self.negative.add(Self::key(-value), 1);
        }
        true
    }

    /// Adds another sketch's counts to this one.
    pub fn merge(&mut self, other: &QuantileSketch) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            (self.min, self.max) = (other.min, other.max);
        } else {
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
        }
        self.count += other.count;
        self.zeros += other.zeros;
        for (key, n) in other.positive.iter() {
            self.positive.add(key, n);
        }
        for (key, n) in other.negative.iter() {
            self.negative.add(key, n);
        }
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q`-quantile (0 ≤ q ≤ 1): within [`RELATIVE_ACCURACY`] of the sorted values' element
    /// at index `⌊q·(n−1)⌋`; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = (q * (self.count - 1) as f64).floor() as u64;
        // The extremes are kept exactly.
        if rank == 0 {
            return Some(self.min);
        }
        if rank == self.count - 1 {
            return Some(self.max);
        }
        let mut seen = 0u64;
        // Most negative first: the negative buckets from the largest magnitude down.
        for (key, n) in self.negative.iter().rev() {
            seen += n;
            if seen > rank {
                return Some((-Self::value(key)).clamp(self.min, self.max));
            }
        }
        seen += self.zeros;
        if seen > rank {
            return Some(0.0);
        }
        for (key, n) in self.positive.iter() {
            seen += n;
            if seen > rank {
                return Some(Self::value(key).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so the test needs no dependency.
    fn samples(n: usize, seed: u64) -> Vec<f64> {
        let mut state = seed;
        (0..n)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                match i % 10 {
                    0 => 0.0,
                    1 | 2 => -(u * 50.0).exp(), // negative, huge range
                    _ => (u * 12.0 - 4.0).exp(),
                }
            })
            .collect()
    }

    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn the_bucket_constant_is_the_formulas() {
        let formula = ((1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)).ln();
        assert!((LN_GAMMA - formula).abs() < 1e-15, "{LN_GAMMA} {formula}");
    }

    #[test]
    fn quantiles_are_within_the_relative_accuracy() {
        let values = samples(100_000, 0x9e37_79b9_7f4a_7c15);
        let mut sketch = QuantileSketch::new();
        for v in &values {
            sketch.add(*v);
        }
        let mut sorted = values;
        sorted.sort_by(f64::total_cmp);
        for q in [
            0.0, 0.001, 0.05, 0.1, 0.15, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0,
        ] {
            let (want, got) = (exact(&sorted, q), sketch.quantile(q).expect("a quantile"));
            let error = if want == 0.0 {
                got.abs()
            } else {
                ((got - want) / want).abs()
            };
            assert!(error <= RELATIVE_ACCURACY + 1e-12, "q {q}: {got} vs {want}");
        }
        assert_eq!(sketch.quantile(0.0), Some(sorted[0]));
        assert_eq!(sketch.quantile(1.0), Some(sorted[sorted.len() - 1]));
    }

    #[test]
    fn merged_sketches_equal_the_sketch_of_both_samples() {
        let (a, b) = (samples(5_000, 1), samples(7_000, 2));
        let (mut left, mut right, mut both) = (
            QuantileSketch::new(),
            QuantileSketch::new(),
            QuantileSketch::new(),
        );
        a.iter().for_each(|v| _ = left.add(*v));
        b.iter().for_each(|v| _ = right.add(*v));
        a.iter().chain(&b).for_each(|v| _ = both.add(*v));
        left.merge(&right);
        assert_eq!(left, both);
    }

    #[test]
    fn non_finite_values_are_not_counted_and_empty_sketches_answer_nothing() {
        let mut sketch = QuantileSketch::new();
        assert_eq!(sketch.quantile(0.5), None);
        assert!(!sketch.add(f64::NAN));
        assert!(!sketch.add(f64::INFINITY));
        assert_eq!(sketch.count(), 0);
        assert!(sketch.add(3.0));
        assert_eq!(sketch.quantile(0.5), Some(3.0));
        assert_eq!(sketch.quantile(1.5), None);
    }

    #[test]
    fn memory_stays_bounded_over_any_range() {
        let mut sketch = QuantileSketch::new();
        for e in -300..300 {
            for m in [1.0, 3.0, 7.0] {
                sketch.add(m * 10f64.powi(e));
            }
        }
        assert!(sketch.positive.counts.len() <= MAX_BUCKETS);
        let high = sketch.quantile(0.99).expect("a quantile");
        // Sorted index ⌊0.99·1799⌋ = 1781 = 3·593 + 2: the third value of exponent −300 + 593.
        let want = 7.0e293;
        assert!(((high - want) / want).abs() <= RELATIVE_ACCURACY, "{high}");
    }
}
