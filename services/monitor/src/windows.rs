//! Tumbling windows of prediction logs per deployment and version, in bounded memory whatever
//! the traffic: per numeric feature the counts on the reference profile's histogram edges (plus
//! below/above the reference's range), per categorical feature the counts of the reference's
//! known categories plus everything else, missing and wrongly typed values, latency. A window
//! closes after `window_size` predictions or `window_seconds`, whichever comes first.

use std::collections::BTreeMap;

use flywheel_data::{ColumnProfile, Profile};
use flywheel_drift::sketch::QuantileSketch;
use flywheel_drift::{Method, stats};
use flywheel_events::payloads::{ColumnDrift, FeatureHistogram, PredictionLogged};
use serde::{Deserialize, Serialize};

use crate::settings::{MonitoringSettings, ReferenceChoice};

/// The pseudo-feature holding the model's predictions, judged against the training target.
pub(crate) const PREDICTION: &str = "prediction";

/// A deployment version's reference: its training dataset's profile and target column.
#[derive(Debug)]
pub(crate) struct Reference {
    /// The profile.
    pub profile: Profile,
    /// The training target (compared with the predictions), when known.
    pub target: Option<String>,
}

impl Reference {
    /// The profile column a window feature is judged against.
    fn column(&self, feature: &str) -> Option<&ColumnProfile> {
        match (feature, &self.target) {
            (PREDICTION, Some(target)) => self.profile.column(target),
            (PREDICTION, None) => None,
            (name, target) if target.as_deref() == Some(name) => None,
            (name, _) => self.profile.column(name),
        }
    }
}

/// Largest number of distinct unknown categories remembered per feature (the rest are counted
/// together), so memory stays bounded.
const UNKNOWN_CATEGORIES_KEPT: usize = 100;

/// One feature's counts in a window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum FeatureWindow {
    /// Counts per reference bin: `[below, bins..., above]`.
    Numeric {
        /// Counts.
        counts: Vec<u64>,
        /// Null values.
        missing: u64,
        /// Values that were not numbers.
        wrong_type: u64,
        /// Quantiles of the values (mergeable, 1 % relative accuracy).
        #[serde(default)]
        sketch: QuantileSketch,
    },
    /// Counts per reference category, and of categories the reference's top list lacks.
    Categorical {
        /// Counts of the reference's categories, in its order.
        known: Vec<u64>,
        /// Counts of other categories (the first [`UNKNOWN_CATEGORIES_KEPT`] by name).
        unknown: BTreeMap<String, u64>,
        /// Other categories beyond those kept.
        unknown_overflow: u64,
        /// Null values.
        missing: u64,
    },
}

/// Which deployment version a window is of, and when it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Span {
    /// Deployment.
    pub deployment: String,
    /// Model.
    pub model: String,
    /// Version.
    pub version: u32,
    /// Stream sequence of its first message (its report's identity).
    pub first_sequence: u64,
    /// When it opened and when it last counted something, ms.
    pub started_at: i64,
    /// See `started_at`.
    pub last_at: i64,
}

impl Span {
    /// A span opening now.
    pub(crate) fn open(
        deployment: &str,
        model: &str,
        version: u32,
        sequence: u64,
        now: i64,
    ) -> Self {
        Self {
            deployment: deployment.to_owned(),
            model: model.to_owned(),
            version,
            first_sequence: sequence,
            started_at: now,
            last_at: now,
        }
    }
}

/// An open window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Window {
    /// Whose and when.
    #[serde(flatten)]
    pub span: Span,
    /// Predictions counted.
    pub count: u64,
    /// Per feature of the reference.
    pub features: BTreeMap<String, FeatureWindow>,
    /// Inputs the reference does not know, with how often they came.
    pub unexpected: BTreeMap<String, u64>,
    /// Sum of latencies, µs.
    pub latency_us_sum: u64,
    /// Largest latency, µs.
    pub latency_us_max: u64,
    /// Latency quantiles, µs.
    #[serde(default)]
    pub latency: QuantileSketch,
    /// Requests that failed on the server's side.
    #[serde(default)]
    pub errors: u64,
}

fn known_categories(column: &ColumnProfile) -> Vec<String> {
    column
        .categorical
        .as_ref()
        .map(|c| c.top.iter().map(|(v, _)| v.clone()).collect())
        .unwrap_or_default()
}

impl Window {
    /// A new window shaped by the reference profile (`None`: no reference yet; only counts).
    pub(crate) fn open(
        prediction: &PredictionLogged,
        reference: Option<&Reference>,
        sequence: u64,
        now: i64,
    ) -> Self {
        let mut features = BTreeMap::new();
        let names = reference
            .map(|r| {
                r.profile
                    .columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .chain(std::iter::once(PREDICTION))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for (name, column) in names
            .into_iter()
            .filter_map(|n| Some((n, reference?.column(n)?)))
        {
            let feature = if let Some(numeric) = &column.numeric {
                FeatureWindow::Numeric {
                    counts: vec![0; numeric.histogram.counts.len() + 2],
                    missing: 0,
                    wrong_type: 0,
                    sketch: QuantileSketch::new(),
                }
            } else {
                FeatureWindow::Categorical {
                    known: vec![0; known_categories(column).len()],
                    unknown: BTreeMap::new(),
                    unknown_overflow: 0,
                    missing: 0,
                }
            };
            features.insert(name.to_owned(), feature);
        }
        Self {
            span: Span::open(
                &prediction.deployment,
                &prediction.model,
                prediction.version,
                sequence,
                now,
            ),
            count: 0,
            features,
            unexpected: BTreeMap::new(),
            latency_us_sum: 0,
            latency_us_max: 0,
            latency: QuantileSketch::new(),
            errors: 0,
        }
    }

    /// Counts one prediction.
    pub(crate) fn add(
        &mut self,
        prediction: &PredictionLogged,
        reference: Option<&Reference>,
        now: i64,
    ) {
        self.count += 1;
        self.span.last_at = now;
        self.latency_us_sum = self.latency_us_sum.saturating_add(prediction.latency_us);
        self.latency_us_max = self.latency_us_max.max(prediction.latency_us);
        self.latency.add(prediction.latency_us as f64);
        if prediction.error.is_some() {
            self.errors += 1;
            return;
        }
        let predicted = prediction.outputs.get(PREDICTION).map(|v| (PREDICTION, v));
        let shaped = !self.features.is_empty();
        for (name, value) in prediction
            .inputs
            .iter()
            .map(|(n, v)| (n.as_str(), v))
            .chain(predicted)
        {
            let Some(feature) = self.features.get_mut(name) else {
                if shaped {
                    *self.unexpected.entry(name.to_owned()).or_default() += 1;
                }
                continue;
            };
            let Some(column) = reference.and_then(|r| r.column(name)) else {
                continue;
            };
            match feature {
                FeatureWindow::Numeric {
                    counts,
                    missing,
                    wrong_type,
                    sketch,
                } => match value {
                    serde_json::Value::Null => *missing += 1,
                    serde_json::Value::Number(n) => match (n.as_f64(), &column.numeric) {
                        (Some(v), Some(numeric)) => {
                            counts[bin(&numeric.histogram.edges, v)] += 1;
                            sketch.add(v);
                        }
                        _ => *wrong_type += 1,
                    },
                    // Class labels come back as text ("1") for a numeric target.
                    serde_json::Value::String(text) => {
                        match (text.trim().parse::<f64>(), &column.numeric) {
                            (Ok(v), Some(numeric)) => {
                                counts[bin(&numeric.histogram.edges, v)] += 1;
                                sketch.add(v);
                            }
                            _ => *wrong_type += 1,
                        }
                    }
                    _ => *wrong_type += 1,
                },
                FeatureWindow::Categorical {
                    known,
                    unknown,
                    unknown_overflow,
                    missing,
                } => {
                    let text: std::borrow::Cow<'_, str> = match value {
                        serde_json::Value::Null => {
                            *missing += 1;
                            continue;
                        }
                        serde_json::Value::String(s) => s.as_str().into(),
                        other => other.to_string().into(),
                    };
                    let top = column.categorical.as_ref().map(|c| c.top.as_slice());
                    let kept = unknown.len();
                    match top.and_then(|t| t.iter().position(|(c, _)| *c == *text)) {
                        Some(i) => known[i] += 1,
                        None => match unknown.get_mut(text.as_ref()) {
                            Some(count) => *count += 1,
                            None if kept < UNKNOWN_CATEGORIES_KEPT => {
                                unknown.insert(text.into_owned(), 1);
                            }
                            None => *unknown_overflow += 1,
                        },
                    }
                }
            }
        }
    }

    /// Whether the window is done.
    pub(crate) fn is_full(&self, size: u64, max_age_ms: i64, now: i64) -> bool {
        self.count >= size || (self.count > 0 && now - self.span.started_at >= max_age_ms)
    }
}

/// The bin of `[below, bins..., above]` a value falls in (numpy's rule inside the edges).
fn bin(edges: &[f64], v: f64) -> usize {
    let bins = edges.len().saturating_sub(1);
    if bins == 0 || v.is_nan() {
        return 0;
    }
    if v < edges[0] {
        return 0;
    }
    if v > edges[bins] {
        return bins + 1;
    }
    edges.partition_point(|e| *e <= v).clamp(1, bins)
}

/// What a closed window says: per-feature drift and data-quality findings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Evaluation {
    /// Per-feature drift.
    pub columns: Vec<ColumnDrift>,
    /// Drifted share.
    pub drift_share: f64,
    /// Dataset-level verdict.
    pub dataset_drift: bool,
    /// The predictions against the training target (not part of the dataset share).
    pub prediction: Option<ColumnDrift>,
    /// Findings, e.g. `age: 12 values above the reference's range`.
    pub findings: Vec<String>,
    /// Per numeric feature: its 5th, 50th and 95th percentile in the window.
    pub quantiles: BTreeMap<String, [f64; 3]>,
    /// Per judged feature: the window's counts beside the reference's.
    pub histograms: Vec<FeatureHistogram>,
}

/// Judges a window against its reference: by default PSI (threshold 0.1) on the reference's
/// histogram bins for numeric features, Jensen–Shannon distance (0.1) on categories for the
/// others — both Evidently's definitions, computed on the counts a bounded window keeps — or
/// the method and threshold the deployment's settings give a column; the dataset drifts when
/// at least the drift share (the settings', else `default_share`) of the features do.
pub(crate) fn evaluate(
    window: &Window,
    reference: Option<&Reference>,
    settings: &MonitoringSettings,
    default_share: f64,
) -> Evaluation {
    let drift_share = settings.drift_share.unwrap_or(default_share);
    let mut columns = Vec::new();
    let mut findings = Vec::new();
    if window.errors > 0 {
        findings.push(format!(
            "{} of {} requests failed on the server's side",
            window.errors, window.count
        ));
    }
    let quantiles = window
        .features
        .iter()
        .filter_map(|(name, feature)| match feature {
            FeatureWindow::Numeric { sketch, .. } => Some((
                name.clone(),
                [
                    sketch.quantile(0.05)?,
                    sketch.quantile(0.5)?,
                    sketch.quantile(0.95)?,
                ],
            )),
            FeatureWindow::Categorical { .. } => None,
        })
        .collect();
    // A window opened before its reference was known has no bins to judge.
    let Some(reference) = reference.filter(|_| !window.features.is_empty()) else {
        findings.push(match settings.reference {
            ReferenceChoice::Baseline { rows } => format!(
                "no reference yet for {} version {}: gathering a baseline of its first {rows} \
                 predictions",
                window.span.model, window.span.version
            ),
            ReferenceChoice::Dataset {
                ref dataset,
                ref version,
            } => format!(
                "no reference profile for {} version {}: dataset {dataset} version {version} \
                 is unknown to the monitor",
                window.span.model, window.span.version
            ),
            ReferenceChoice::Training => format!(
                "no reference profile for {} version {}: the training dataset's profile is unknown",
                window.span.model, window.span.version
            ),
        });
        return Evaluation {
            columns,
            drift_share: 0.0,
            dataset_drift: false,
            prediction: None,
            findings,
            quantiles,
            histograms: Vec::new(),
        };
    };
    for (name, seen) in &window.unexpected {
        findings.push(format!("{name}: not in the reference ({seen} values)"));
    }
    let mut histograms = Vec::new();
    for (name, feature) in &window.features {
        let Some(column) = reference.column(name) else {
            continue;
        };
        let (default_method, labels, reference_counts, current_counts) = match feature {
            FeatureWindow::Numeric {
                counts,
                missing,
                wrong_type,
                ..
            } => {
                let Some(numeric) = &column.numeric else {
                    continue;
                };
                if *missing > 0 {
                    findings.push(format!("{name}: {missing} missing values"));
                }
                if *wrong_type > 0 {
                    findings.push(format!("{name}: {wrong_type} values that are not numbers"));
                }
                let (below, above) = (counts[0], counts[counts.len() - 1]);
                if below + above > 0 {
                    findings.push(format!(
                        "{name}: {below} values below and {above} above the reference's range [{}, {}]",
                        numeric.min, numeric.max
                    ));
                }
                let mut reference_counts = vec![0.0];
                reference_counts.extend(numeric.histogram.counts.iter().map(|c| *c as f64));
                reference_counts.push(0.0);
                (
                    Method::Psi,
                    range_labels(&numeric.histogram.edges),
                    reference_counts,
                    counts.iter().map(|c| *c as f64).collect::<Vec<_>>(),
                )
            }
            FeatureWindow::Categorical {
                known,
                unknown,
                unknown_overflow,
                missing,
            } => {
                if *missing > 0 {
                    findings.push(format!("{name}: {missing} missing values"));
                }
                let Some(categorical) = &column.categorical else {
                    continue;
                };
                let top_total: u64 = categorical.top.iter().map(|(_, c)| c).sum();
                let others_in_reference = column.count.saturating_sub(top_total);
                let complete = others_in_reference == 0;
                let unknown_total: u64 = unknown.values().sum::<u64>() + unknown_overflow;
                if complete && unknown_total > 0 {
                    let names: Vec<&str> = unknown.keys().take(10).map(String::as_str).collect();
                    findings.push(format!(
                        "{name}: {unknown_total} values in categories the reference never had ({})",
                        names.join(", ")
                    ));
                }
                let mut reference_counts: Vec<f64> =
                    categorical.top.iter().map(|(_, c)| *c as f64).collect();
                let mut current_counts: Vec<f64> = known.iter().map(|c| *c as f64).collect();
                // Everything outside the reference's top categories, on both sides.
                reference_counts.push(others_in_reference as f64);
                current_counts.push(unknown_total as f64);
                let mut labels: Vec<String> =
                    categorical.top.iter().map(|(c, _)| c.clone()).collect();
                labels.push("(other)".into());
                (
                    Method::JensenShannon,
                    labels,
                    reference_counts,
                    current_counts,
                )
            }
        };
        let total: f64 = current_counts.iter().sum();
        if total == 0.0 {
            // Not an input of this model (e.g. the training target), or only missing values
            // (reported above).
            continue;
        }
        if reference_counts.iter().sum::<f64>() == 0.0 {
            findings.push(format!(
                "{name}: the reference has no values to compare with"
            ));
            continue;
        }
        let choice = settings.columns.get(name.as_str());
        let method = choice
            .and_then(|c| c.method().ok().flatten())
            .unwrap_or(default_method);
        let threshold = choice
            .and_then(|c| c.threshold)
            .unwrap_or_else(|| method.default_threshold());
        let Some((statistic, p_value)) =
            stats::of_counts(method, &reference_counts, &current_counts)
        else {
            continue;
        };
        histograms.push(FeatureHistogram {
            column: name.clone(),
            labels,
            reference: reference_counts,
            current: current_counts,
        });
        let score = p_value.unwrap_or(statistic);
        columns.push(ColumnDrift {
            column: name.clone(),
            method: method.name().into(),
            statistic,
            p_value,
            threshold,
            drifted: method.drifted(score, threshold),
        });
    }
    let prediction = columns
        .iter()
        .position(|c| c.column == PREDICTION)
        .map(|i| columns.remove(i));
    let drifted = columns.iter().filter(|c| c.drifted).count();
    let share = if columns.is_empty() {
        0.0
    } else {
        drifted as f64 / columns.len() as f64
    };
    Evaluation {
        dataset_drift: !columns.is_empty() && share >= drift_share,
        drift_share: share,
        columns,
        prediction,
        findings,
        quantiles,
        histograms,
    }
}

/// Labels of a numeric feature's bins as the window counts them: below the reference's range,
/// each `[a, b)` bin, above it.
fn range_labels(edges: &[f64]) -> Vec<String> {
    let short = |v: f64| format!("{}", (v * 1000.0).round() / 1000.0);
    let mut labels = Vec::with_capacity(edges.len() + 1);
    if let (Some(first), Some(last)) = (edges.first(), edges.last()) {
        labels.push(format!("< {}", short(*first)));
        labels.extend(
            edges
                .windows(2)
                .map(|pair| format!("{}–{}", short(pair[0]), short(pair[1]))),
        );
        labels.push(format!("> {}", short(*last)));
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::bin;

    #[test]
    fn values_fall_in_numpys_bins_or_outside() {
        let edges = [0.0, 1.0, 2.0, 3.0];
        let bins: Vec<usize> = [-0.5, 0.0, 0.5, 1.0, 2.999, 3.0, 3.5]
            .iter()
            .map(|v| bin(&edges, *v))
            .collect();
        assert_eq!(bins, [0, 1, 1, 2, 3, 3, 4]);
    }
}
