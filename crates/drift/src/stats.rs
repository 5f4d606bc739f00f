//! The drift statistics, each as scipy and Evidently 0.7 compute it.

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

use crate::binning::{self, binned_shares};
use crate::{Column, DriftError};

/// Population Stability Index over Evidently's bins (zeros filled).
pub fn psi(reference: &Column<'_>, current: &Column<'_>) -> f64 {
    let (r, c) = binned_shares(reference, current, true);
    psi_of_shares(&r, &c)
}

fn psi_of_shares(r: &[f64], c: &[f64]) -> f64 {
    r.iter().zip(c).map(|(r, c)| (r - c) * (r / c).ln()).sum()
}

/// PSI of two count vectors over the same bins (a reference profile's histogram and a live
/// window's), with Evidently's epsilon for empty bins.
pub fn psi_of_counts(reference: &[f64], current: &[f64]) -> f64 {
    let r = binning::fill_zeroes(binning::shares(reference));
    let c = binning::fill_zeroes(binning::shares(current));
    psi_of_shares(&r, &c)
}

/// Jensen–Shannon distance of two count vectors over the same bins.
pub fn jensen_shannon_of_counts(reference: &[f64], current: &[f64]) -> f64 {
    js_of_shares(&binning::shares(reference), &binning::shares(current))
}

/// `x·ln(x/y)` as `scipy.special.rel_entr`.
fn rel_entr(x: f64, y: f64) -> f64 {
    if x > 0.0 && y > 0.0 {
        x * (x / y).ln()
    } else if x == 0.0 && y >= 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// Jensen–Shannon distance (natural log) over Evidently's bins, as
/// `scipy.spatial.distance.jensenshannon`.
pub fn jensen_shannon(reference: &Column<'_>, current: &Column<'_>) -> f64 {
    let (p, q) = binned_shares(reference, current, false);
    js_of_shares(&p, &q)
}

fn js_of_shares(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    let mut js = 0.0;
    for (p, q) in p.iter().zip(q) {
        let (p, q) = (p / sp, q / sq);
        let m = (p + q) / 2.0;
        js += rel_entr(p, m) + rel_entr(q, m);
    }
    (js / 2.0).sqrt()
}

/// `numpy.std` (population) of a sample.
fn std(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt()
}

/// `scipy.stats.wasserstein_distance` between two samples.
pub fn wasserstein(u: &[f64], v: &[f64]) -> f64 {
    let mut us = u.to_vec();
    let mut vs = v.to_vec();
    us.sort_by(f64::total_cmp);
    vs.sort_by(f64::total_cmp);
    let mut all: Vec<f64> = us.iter().chain(&vs).copied().collect();
    all.sort_by(f64::total_cmp);
    let (nu, nv) = (us.len() as f64, vs.len() as f64);
    let (mut i, mut j, mut total) = (0, 0, 0.0);
    for w in all.windows(2) {
        // CDFs at w[0]: how many values are ≤ it (searchsorted right).
        while i < us.len() && us[i] <= w[0] {
            i += 1;
        }
        while j < vs.len() && vs[j] <= w[0] {
            j += 1;
        }
        total += (i as f64 / nu - j as f64 / nv).abs() * (w[1] - w[0]);
    }
    total
}

/// Evidently's normed Wasserstein distance: divided by the reference's standard deviation
/// (at least 0.001).
pub fn wasserstein_normed(reference: &[f64], current: &[f64]) -> f64 {
    wasserstein(reference, current) / std(reference).max(0.001)
}

/// Hellinger distance as Evidently computes it: per category shares, or density histograms on
/// Sturges bins over the distinct values of both samples.
pub fn hellinger(reference: &Column<'_>, current: &Column<'_>) -> f64 {
    let overlap: f64 = match (reference, current) {
        (Column::Numeric(r), Column::Numeric(c)) => {
            let mut keys: Vec<f64> = r.iter().chain(c.iter()).copied().collect();
            keys.sort_by(f64::total_cmp);
            keys.dedup_by(|a, b| binning::key(*a) == binning::key(*b));
            let edges = binning::sturges_edges(&keys);
            let density = |values: &[f64]| -> Vec<f64> {
                let counts = binning::histogram(values, &edges);
                let total: f64 = counts.iter().sum();
                counts
                    .iter()
                    .zip(edges.windows(2))
                    // numpy's order: n / db / n.sum()
                    .map(|(c, e)| c / (e[1] - e[0]) / total)
                    .collect()
            };
            let (h1, h2) = (density(r), density(c));
            let max = edges.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let min = edges.iter().copied().fold(f64::INFINITY, f64::min);
            let width = (max - min) / (edges.len() - 1) as f64;
            h1.iter()
                .zip(&h2)
                .map(|(p, q)| (p * q).sqrt() * width)
                .sum()
        }
        _ => {
            let (rc, cc) = binning::binned_counts(reference, current);
            let (nr, nc) = (reference.len() as f64, current.len() as f64);
            rc.iter()
                .zip(&cc)
                .map(|(r, c)| ((r / nr) * (c / nc)).sqrt())
                .sum()
        }
    };
    (1.0 - overlap.clamp(0.0, 1.0)).sqrt()
}

/// Chi-square goodness of fit of the current counts against the reference's scaled to the
/// current size (Evidently's `chisquare`): the p-value of `scipy.stats.chisquare`.
pub fn chi_square(reference: &Column<'_>, current: &Column<'_>) -> (f64, f64) {
    let (rc, cc) = binning::value_counts_of(reference, current);
    chi_square_of_counts(&rc, &cc)
}

/// Two-proportion z-test (Evidently's `z`): the share of values other than the smallest value,
/// reference against current; two-sided p-value as `2·(1 − Φ(|z|))`.
pub fn z_test(reference: &Column<'_>, current: &Column<'_>) -> f64 {
    let (rc, cc) = binning::value_counts_of(reference, current);
    if rc.len() == 1 && rc[0] > 0.0 && cc[0] > 0.0 {
        return 1.0; // one and the same value on both sides
    }
    let (n1, n2) = (reference.len() as f64, current.len() as f64);
    // value_counts_of orders keys ascending, as Evidently's `sorted(keys)`.
    let p1 = (n1 - rc.first().copied().unwrap_or(0.0)) / n1;
    let p2 = (n2 - cc.first().copied().unwrap_or(0.0)) / n2;
    let pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
    let z = (p1 - p2) / (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    let phi = Normal::standard().cdf(z.abs());
    2.0 * (1.0 - phi)
}

/// The two-sample Kolmogorov–Smirnov statistic D and its two-sided p-value, as
/// `scipy.stats.ks_2samp(method="auto")`: exact when both samples have at most 10 000 values.
pub fn ks(reference: &[f64], current: &[f64]) -> Result<(f64, f64), DriftError> {
    let (n1, n2) = (reference.len(), current.len());
    if n1 == 0 || n2 == 0 {
        return Err(DriftError::Empty);
    }
    let mut a = reference.to_vec();
    let mut b = current.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let mut d: f64 = 0.0;
    for v in a.iter().chain(&b) {
        let fa = a.partition_point(|x| x <= v) as f64 / n1 as f64;
        let fb = b.partition_point(|x| x <= v) as f64 / n2 as f64;
        d = d.max((fa - fb).abs());
    }
    if n1.max(n2) > 10_000 {
        // scipy's asymptotic two-sided p-value: kstwo.sf(D, round(m·n / (m + n))).
        let (m, n) = (n1.max(n2) as f64, n1.min(n2) as f64);
        let en = (m * n / (m + n)).round_ties_even() as u64;
        return Ok((d, crate::kolmogorov::sf(en.max(1), d)));
    }
    let g = gcd(n1, n2);
    let lcm = (n1 / g) * n2;
    let h = (d * lcm as f64).round() as usize;
    let d = h as f64 / lcm as f64;
    if h == 0 {
        return Ok((d, 1.0));
    }
    let p = if n1 == n2 {
        outside_square(n1, h)
    } else {
        outside_inside_method(n1, n2, g, h)
    };
    Ok((d, p.clamp(0.0, 1.0)))
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// scipy's `_compute_prob_outside_square(n, h)`.
fn outside_square(n: usize, h: usize) -> f64 {
    let (n, h) = (n as f64, h as f64);
    let mut p = 0.0;
    let mut k = (n / h).floor();
    while k >= 0.0 {
        let mut p1 = 1.0;
        let mut j = 0.0;
        while j < h {
            p1 = (n - k * h - j) * p1 / (n + k * h + j + 1.0);
            j += 1.0;
        }
        p = p1 * (1.0 - p);
        k -= 1.0;
    }
    2.0 * p
}

/// scipy's `_compute_outer_prob_inside_method(m, n, g, h)`: the share of lattice paths from
/// (0, 0) to (m, n) that leave the band |x/m − y/n| < h/lcm.
fn outside_inside_method(m: usize, n: usize, g: usize, h: usize) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (mg, ng) = (m / g, n / g);
    let (mut minj, mut maxj) = (0usize, h.div_ceil(mg).min(n + 1));
    let mut curlen = maxj - minj;
    let len = (2 * maxj + 2).min(n + 1);
    let mut a = vec![1.0f64; len];
    a[minj..maxj].iter_mut().for_each(|v| *v = 0.0);
    for i in 1..=m {
        let (lastminj, lastlen) = (minj, curlen);
        let low = (ng * i) as i64 - h as i64;
        minj = if low < 0 {
            0
        } else {
            (low as usize / mg + 1).min(n)
        };
        maxj = (ng * i + h).div_ceil(mg).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        for jj in 0..maxj - minj {
            let j = jj + minj;
            val = (a[jj + minj - lastminj] * i as f64 + val * j as f64) / (i + j) as f64;
            a[jj] = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let from = maxj - minj;
            a[from..from + (lastlen - curlen)]
                .iter_mut()
                .for_each(|v| *v = 1.0);
        }
    }
    a[maxj - minj - 1]
}

/// Hellinger distance of two count vectors over the same bins (for equal-width bins this is
/// Evidently's density form: `√(pᵢqᵢ)·width` reduces to `√(shareᵢ·shareᵢ')`).
pub fn hellinger_of_counts(reference: &[f64], current: &[f64]) -> f64 {
    let (r, c) = (binning::shares(reference), binning::shares(current));
    let overlap: f64 = r.iter().zip(&c).map(|(r, c)| (r * c).sqrt()).sum();
    (1.0 - overlap.clamp(0.0, 1.0)).sqrt()
}

/// Chi-square statistic and p-value of two count vectors over the same bins, as
/// [`chi_square`]: the current counts against the reference's scaled to the current total.
/// Bins empty on both sides are left out; current values where the reference has none make the
/// statistic infinite (p 0).
pub fn chi_square_of_counts(reference: &[f64], current: &[f64]) -> (f64, f64) {
    let (nr, nc): (f64, f64) = (reference.iter().sum(), current.iter().sum());
    let k_norm = nc / nr;
    let used: Vec<(f64, f64)> = reference
        .iter()
        .zip(current)
        .filter(|(r, c)| **r > 0.0 || **c > 0.0)
        .map(|(r, c)| (*r, *c))
        .collect();
    let statistic: f64 = used
        .iter()
        .map(|(r, o)| {
            let e = r * k_norm;
            (o - e).powi(2) / e
        })
        .sum();
    let df = used.len() as f64 - 1.0;
    let p = if statistic.is_nan() || df < 1.0 {
        f64::NAN
    } else if statistic.is_infinite() {
        0.0
    } else {
        ChiSquared::new(df).map_or(f64::NAN, |d| d.sf(statistic))
    };
    (statistic, p)
}

/// A method's statistic and p-value (when it has one) computed on counts over shared bins —
/// what a bounded streaming window keeps. `None` for methods that need the raw values
/// (`ks`, `wasserstein`, `z`).
pub fn of_counts(
    method: crate::Method,
    reference: &[f64],
    current: &[f64],
) -> Option<(f64, Option<f64>)> {
    use crate::Method;
    match method {
        Method::Psi => Some((psi_of_counts(reference, current), None)),
        Method::JensenShannon => Some((jensen_shannon_of_counts(reference, current), None)),
        Method::Hellinger => Some((hellinger_of_counts(reference, current), None)),
        Method::ChiSquare => {
            let (statistic, p) = chi_square_of_counts(reference, current);
            Some((statistic, Some(p)))
        }
        Method::Ks | Method::Wasserstein | Method::Z => None,
    }
}

#[cfg(test)]
mod counts_tests {
    use super::*;
    use crate::{Column, Method};

    fn counts_of(values: &[&str], categories: &[&str]) -> Vec<f64> {
        categories
            .iter()
            .map(|c| values.iter().filter(|v| *v == c).count() as f64)
            .collect()
    }

    /// The counts forms agree with the forms checked against Evidently, given the same bins.
    #[test]
    fn counts_forms_agree_with_the_sample_forms_on_categories() {
        let reference = ["a", "a", "b", "c", "c", "c", "a", "b", "b", "c"];
        let current = ["a", "c", "c", "c", "c", "b", "c", "c"];
        let categories = ["a", "b", "c"];
        let (r, c) = (
            counts_of(&reference, &categories),
            counts_of(&current, &categories),
        );
        let (rc, cc) = (
            Column::Categorical(&reference),
            Column::Categorical(&current),
        );
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(1.0);
        assert!(close(hellinger_of_counts(&r, &c), hellinger(&rc, &cc)));
        let (s1, p1) = chi_square_of_counts(&r, &c);
        let (s2, p2) = chi_square(&rc, &cc);
        assert!(close(s1, s2) && close(p1, p2), "{s1} {p1} vs {s2} {p2}");
        assert!(close(
            of_counts(Method::Psi, &r, &c).expect("psi").0,
            psi(&rc, &cc)
        ));
        assert!(close(
            of_counts(Method::JensenShannon, &r, &c).expect("js").0,
            jensen_shannon(&rc, &cc)
        ));
        assert!(of_counts(Method::Ks, &r, &c).is_none());
    }

    #[test]
    fn bins_empty_on_both_sides_are_left_out_and_new_values_drift() {
        let (s, p) = chi_square_of_counts(&[0.0, 5.0, 5.0, 0.0], &[0.0, 5.0, 5.0, 0.0]);
        assert_eq!((s, p), (0.0, 1.0));
        let (s, p) = chi_square_of_counts(&[0.0, 5.0, 5.0, 0.0], &[0.0, 5.0, 5.0, 1.0]);
        assert!(s.is_infinite() && p == 0.0);
    }
}
