//! Drift statistics for the monitor, each agreeing with scipy and Evidently 0.7 on the same data
//! (`tests/reference` holds the values and the script that made them): PSI, Kolmogorov–Smirnov,
//! chi-square, two-proportion z, Jensen–Shannon, normed Wasserstein and Hellinger. The default
//! mode reproduces Evidently's choices: its per-column method by type, distinct values and
//! reference size, its binning, its epsilon for empty bins, its thresholds and comparison
//! operators, and its dataset-drift share rule.

mod binning;
pub mod kolmogorov;
pub mod sketch;
pub mod stats;

/// One column of one sample, without missing values (they are a data-quality finding).
#[derive(Debug, Clone, Copy)]
pub enum Column<'a> {
    /// Numbers.
    Numeric(&'a [f64]),
    /// Categories.
    Categorical(&'a [&'a str]),
}

impl Column<'_> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Column::Numeric(v) => v.len(),
            Column::Categorical(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a statistic cannot be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriftError {
    /// A sample has no values.
    #[error("a sample is empty")]
    Empty,
    /// The two samples are of different kinds, or the method does not apply to the kind.
    #[error("{0}")]
    Mismatch(String),
    /// Not implemented yet.
    #[error("not supported yet: {0}")]
    Unsupported(String),
}

/// A drift method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Kolmogorov–Smirnov p-value (numeric).
    Ks,
    /// Chi-square p-value.
    ChiSquare,
    /// Two-proportion z-test p-value.
    Z,
    /// Wasserstein distance normed by the reference's standard deviation (numeric).
    Wasserstein,
    /// Jensen–Shannon distance.
    JensenShannon,
    /// Population Stability Index.
    Psi,
    /// Hellinger distance.
    Hellinger,
}

impl Method {
    /// Evidently's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Method::Ks => "ks",
            Method::ChiSquare => "chisquare",
            Method::Z => "z",
            Method::Wasserstein => "wasserstein",
            Method::JensenShannon => "jensenshannon",
            Method::Psi => "psi",
            Method::Hellinger => "hellinger",
        }
    }

    /// From Evidently's name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Method::Ks,
            Method::ChiSquare,
            Method::Z,
            Method::Wasserstein,
            Method::JensenShannon,
            Method::Psi,
            Method::Hellinger,
        ]
        .into_iter()
        .find(|m| m.name() == name)
    }

    /// Evidently's default threshold.
    pub fn default_threshold(self) -> f64 {
        match self {
            Method::Ks | Method::ChiSquare | Method::Z => 0.05,
            _ => 0.1,
        }
    }

    /// Whether the score is a p-value (drift when small) rather than a distance (drift when
    /// large).
    pub fn is_p_value(self) -> bool {
        matches!(self, Method::Ks | Method::ChiSquare | Method::Z)
    }

    /// Evidently's verdict: `ks` drifts when p ≤ threshold, `chisquare` and `z` when
    /// p < threshold, distances when score ≥ threshold.
    pub fn drifted(self, score: f64, threshold: f64) -> bool {
        match self {
            Method::Ks => score <= threshold,
            Method::ChiSquare | Method::Z => score < threshold,
            _ => score >= threshold,
        }
    }
}

/// Evidently 0.7's choice of method for a column: by type, distinct values of both samples and
/// the reference's size.
pub fn default_method(reference: &Column<'_>, current: &Column<'_>) -> Method {
    let n_values = binning::distinct_together(reference, current);
    let numeric = matches!(reference, Column::Numeric(_));
    if reference.len() <= 1000 {
        if numeric && n_values > 5 {
            Method::Ks
        } else if n_values > 2 {
            Method::ChiSquare
        } else {
            Method::Z
        }
    } else if numeric && n_values > 5 {
        Method::Wasserstein
    } else {
        Method::JensenShannon
    }
}

/// One column's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDrift {
    /// The method used.
    pub method: Method,
    /// Its score: a p-value or a distance.
    pub score: f64,
    /// The threshold it was judged by.
    pub threshold: f64,
    /// Whether the column drifted.
    pub drifted: bool,
}

/// Runs a method (the default one when `None`) with its threshold (the default when `None`).
pub fn column_drift(
    reference: &Column<'_>,
    current: &Column<'_>,
    method: Option<Method>,
    threshold: Option<f64>,
) -> Result<ColumnDrift, DriftError> {
    if reference.is_empty() || current.is_empty() {
        return Err(DriftError::Empty);
    }
    let method = method.unwrap_or_else(|| default_method(reference, current));
    let numbers = || match (reference, current) {
        (Column::Numeric(r), Column::Numeric(c)) => Ok((*r, *c)),
        _ => Err(DriftError::Mismatch(format!(
            "{} needs numeric samples",
            method.name()
        ))),
    };
    if std::mem::discriminant(reference) != std::mem::discriminant(current) {
        return Err(DriftError::Mismatch(
            "the samples are of different kinds".into(),
        ));
    }
    let score = match method {
        Method::Ks => {
            let (r, c) = numbers()?;
            stats::ks(r, c)?.1
        }
        Method::ChiSquare => stats::chi_square(reference, current).1,
        Method::Z => stats::z_test(reference, current),
        Method::Wasserstein => {
            let (r, c) = numbers()?;
            stats::wasserstein_normed(r, c)
        }
        Method::JensenShannon => stats::jensen_shannon(reference, current),
        Method::Psi => stats::psi(reference, current),
        Method::Hellinger => stats::hellinger(reference, current),
    };
    let threshold = threshold.unwrap_or_else(|| method.default_threshold());
    Ok(ColumnDrift {
        method,
        score,
        threshold,
        drifted: method.drifted(score, threshold),
    })
}

/// Evidently's dataset drift: the share of drifted columns is at least `drift_share` (0.5 by
/// default).
pub fn dataset_drifted(columns: &[ColumnDrift], drift_share: f64) -> bool {
    if columns.is_empty() {
        return false;
    }
    let drifted = columns.iter().filter(|c| c.drifted).count();
    drifted as f64 / columns.len() as f64 >= drift_share
}
