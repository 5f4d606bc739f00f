//! Offline comparison of two datasets, like Evidently's data drift report on two data frames:
//! per column the method Evidently would choose (or the one asked for), its score, p-value where
//! it has one, threshold and verdict, and the dataset-level verdict by the share of drifted
//! columns. Beyond Evidently, what would make a statistic meaningless is reported as a finding
//! instead of crashing or passing silently: missing and non-finite values (left out), empty and
//! constant columns, categories the reference never had.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use flywheel_data::{Format, Table};
use flywheel_drift::{Column, Method, column_drift, dataset_drifted, stats};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{AppState, MonitorError, Result};

/// Where a sample comes from: CSV text in the request, or a dataset version from the registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Sample {
    /// CSV with a header row.
    Csv {
        /// The CSV text.
        csv: String,
    },
    /// A registered dataset version.
    Dataset {
        /// Dataset name.
        dataset: String,
        /// Version id.
        version: String,
    },
}

/// `POST /api/v1/drift`.
#[derive(Debug, Clone, Deserialize)]
pub struct DriftRequest {
    /// The reference sample.
    pub reference: Sample,
    /// The sample compared with it.
    pub current: Sample,
    /// Columns to compare (default: every column both have).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Per-column method overrides, by Evidently's names (`ks`, `psi`, ...).
    #[serde(default)]
    pub methods: BTreeMap<String, String>,
    /// Per-column threshold overrides.
    #[serde(default)]
    pub thresholds: BTreeMap<String, f64>,
    /// Share of drifted columns that makes the dataset drifted (Evidently's 0.5).
    #[serde(default = "half")]
    pub drift_share: f64,
}

fn half() -> f64 {
    0.5
}

/// One column's result.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnReport {
    /// Column name.
    pub column: String,
    /// `numeric` or `categorical`.
    pub kind: &'static str,
    /// Method used.
    pub method: String,
    /// The score the verdict uses (the p-value for tests, the distance otherwise).
    pub score: f64,
    /// The test statistic, for KS (D) and chi-square.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistic: Option<f64>,
    /// The p-value, for tests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Threshold.
    pub threshold: f64,
    /// Verdict.
    pub drifted: bool,
    /// Values compared (reference, current).
    pub counts: (usize, usize),
}

/// Something that makes a column's statistic less meaningful, or impossible.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Column name.
    pub column: String,
    /// `missing`, `non_finite`, `empty`, `constant`, `new_categories`, `type_mismatch`,
    /// `missing_column`.
    pub kind: &'static str,
    /// Details, in words.
    pub detail: String,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    /// Per-column results, in column order.
    pub columns: Vec<ColumnReport>,
    /// Columns judged drifted.
    pub drifted_columns: usize,
    /// Their share of the judged columns.
    pub share: f64,
    /// The threshold on the share.
    pub drift_share: f64,
    /// The dataset-level verdict.
    pub dataset_drift: bool,
    /// Findings.
    pub findings: Vec<Finding>,
}

/// One column's clean values.
enum Values {
    Numbers(Vec<f64>),
    Words(Vec<String>),
}

async fn load(state: &AppState, sample: &Sample, which: &str) -> Result<Table> {
    let (bytes, format) = match sample {
        Sample::Csv { csv } => (Bytes::from(csv.clone().into_bytes()), Format::Csv),
        Sample::Dataset { dataset, version } => {
            let stored = crate::catalog::dataset(state, dataset, version).await?;
            let key = state.artifacts.key_of(&stored.uri).ok_or_else(|| {
                MonitorError::Artifacts(format!("{} is outside the artifact store", stored.uri))
            })?;
            let bytes = state
                .artifacts
                .get(key)
                .await
                .map_err(|e| MonitorError::Artifacts(e.to_string()))?;
            if hex::encode(Sha256::digest(&bytes)) != stored.sha256 {
                return Err(MonitorError::Artifacts(format!(
                    "dataset {dataset} version {version} does not match its sha256"
                )));
            }
            let format = if stored.format == "parquet" {
                Format::Parquet
            } else {
                Format::Csv
            };
            (bytes, format)
        }
    };
    flywheel_data::read(bytes, format).map_err(|e| MonitorError::Invalid(format!("{which}: {e}")))
}

/// A column's values without missing and non-finite ones, with findings about what was left out.
fn clean(table: &Table, name: &str, which: &str, findings: &mut Vec<Finding>) -> Result<Values> {
    let invalid = |e: flywheel_data::DataError| MonitorError::Invalid(format!("{which}: {e}"));
    if table.is_numeric(name).map_err(invalid)? {
        let raw = table.f64_column(name).map_err(invalid)?;
        let missing = raw.iter().filter(|v| v.is_none()).count();
        let values: Vec<f64> = raw.into_iter().flatten().collect();
        let non_finite = values.iter().filter(|v| !v.is_finite()).count();
        if missing > 0 {
            findings.push(Finding {
                column: name.to_owned(),
                kind: "missing",
                detail: format!("{missing} missing values in the {which}, left out"),
            });
        }
        if non_finite > 0 {
            findings.push(Finding {
                column: name.to_owned(),
                kind: "non_finite",
                detail: format!("{non_finite} NaN or infinite values in the {which}, left out"),
            });
        }
        Ok(Values::Numbers(
            values.into_iter().filter(|v| v.is_finite()).collect(),
        ))
    } else {
        let raw = table.string_column(name).map_err(invalid)?;
        let missing = raw.iter().filter(|v| v.is_none()).count();
        if missing > 0 {
            findings.push(Finding {
                column: name.to_owned(),
                kind: "missing",
                detail: format!("{missing} missing values in the {which}, left out"),
            });
        }
        Ok(Values::Words(raw.into_iter().flatten().collect()))
    }
}

fn method_of(request: &DriftRequest, column: &str) -> Result<Option<Method>> {
    request
        .methods
        .get(column)
        .map(|name| {
            Method::parse(name).ok_or_else(|| {
                MonitorError::Invalid(format!(
                    "methods.{column}: unknown method `{name}` (ks, chisquare, z, wasserstein, jensenshannon, psi, hellinger)"
                ))
            })
        })
        .transpose()
}

/// Compares two samples column by column.
pub(crate) async fn compare(state: &AppState, request: &DriftRequest) -> Result<DriftReport> {
    if !(0.0..=1.0).contains(&request.drift_share) {
        return Err(MonitorError::Invalid("drift_share: 0 to 1".into()));
    }
    let reference = load(state, &request.reference, "reference").await?;
    let current = load(state, &request.current, "current").await?;
    let names_of =
        |t: &Table| -> Vec<String> { t.schema.fields().iter().map(|f| f.name().clone()).collect() };
    let (ref_names, cur_names) = (names_of(&reference), names_of(&current));
    let mut findings = Vec::new();
    let columns: Vec<String> = match &request.columns {
        Some(wanted) => wanted.clone(),
        None => ref_names
            .iter()
            .filter(|n| cur_names.contains(n))
            .cloned()
            .collect(),
    };
    if columns.is_empty() {
        return Err(MonitorError::Invalid(
            "the samples have no column in common".into(),
        ));
    }
    let mut reports = Vec::new();
    for name in &columns {
        if !ref_names.contains(name) || !cur_names.contains(name) {
            findings.push(Finding {
                column: name.clone(),
                kind: "missing_column",
                detail: format!(
                    "not in the {}",
                    if ref_names.contains(name) {
                        "current sample"
                    } else {
                        "reference"
                    }
                ),
            });
            continue;
        }
        let method = method_of(request, name)?;
        let r = clean(&reference, name, "reference", &mut findings)?;
        let c = clean(&current, name, "current", &mut findings)?;
        let threshold = request.thresholds.get(name).copied();
        let report = match (&r, &c) {
            (Values::Numbers(r), Values::Numbers(c)) => judge(
                name,
                "numeric",
                Column::Numeric(r),
                Column::Numeric(c),
                method,
                threshold,
                &mut findings,
            )?,
            (Values::Words(r), Values::Words(c)) => {
                let rs: Vec<&str> = r.iter().map(String::as_str).collect();
                let cs: Vec<&str> = c.iter().map(String::as_str).collect();
                let known: BTreeSet<&str> = rs.iter().copied().collect();
                let new: BTreeSet<&str> =
                    cs.iter().copied().filter(|v| !known.contains(v)).collect();
                if !new.is_empty() && !rs.is_empty() {
                    findings.push(Finding {
                        column: name.clone(),
                        kind: "new_categories",
                        detail: format!(
                            "{} categories the reference never had: {}",
                            new.len(),
                            new.iter().take(10).copied().collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
                judge(
                    name,
                    "categorical",
                    Column::Categorical(&rs),
                    Column::Categorical(&cs),
                    method,
                    threshold,
                    &mut findings,
                )?
            }
            _ => {
                findings.push(Finding {
                    column: name.clone(),
                    kind: "type_mismatch",
                    detail: "numeric in one sample, text in the other; not compared".into(),
                });
                None
            }
        };
        reports.extend(report);
    }
    let verdicts: Vec<flywheel_drift::ColumnDrift> = reports
        .iter()
        .map(|r| flywheel_drift::ColumnDrift {
            method: Method::parse(&r.method).unwrap_or(Method::Psi),
            score: r.score,
            threshold: r.threshold,
            drifted: r.drifted,
        })
        .collect();
    let drifted_columns = reports.iter().filter(|r| r.drifted).count();
    let share = if reports.is_empty() {
        0.0
    } else {
        drifted_columns as f64 / reports.len() as f64
    };
    Ok(DriftReport {
        dataset_drift: dataset_drifted(&verdicts, request.drift_share),
        columns: reports,
        drifted_columns,
        share,
        drift_share: request.drift_share,
        findings,
    })
}

/// One column's verdict, or a finding saying why there is none.
fn judge(
    name: &str,
    kind: &'static str,
    reference: Column<'_>,
    current: Column<'_>,
    method: Option<Method>,
    threshold: Option<f64>,
    findings: &mut Vec<Finding>,
) -> Result<Option<ColumnReport>> {
    if reference.is_empty() || current.is_empty() {
        findings.push(Finding {
            column: name.to_owned(),
            kind: "empty",
            detail: format!(
                "no values in the {}; not compared",
                if reference.is_empty() {
                    "reference"
                } else {
                    "current sample"
                }
            ),
        });
        return Ok(None);
    }
    let constant = |c: &Column<'_>| match c {
        Column::Numeric(v) => v.iter().all(|x| *x == v[0]),
        Column::Categorical(v) => v.iter().all(|x| *x == v[0]),
    };
    if constant(&reference) && constant(&current) {
        findings.push(Finding {
            column: name.to_owned(),
            kind: "constant",
            detail: "one value in both samples".into(),
        });
    }
    let drift = column_drift(&reference, &current, method, threshold)
        .map_err(|e| MonitorError::Invalid(format!("column {name}: {e}")))?;
    let statistic = match (drift.method, &reference, &current) {
        (Method::Ks, Column::Numeric(r), Column::Numeric(c)) => stats::ks(r, c).ok().map(|k| k.0),
        (Method::ChiSquare, _, _) => Some(stats::chi_square(&reference, &current).0),
        _ => None,
    };
    Ok(Some(ColumnReport {
        column: name.to_owned(),
        kind,
        method: drift.method.name().to_owned(),
        score: drift.score,
        statistic,
        p_value: drift.method.is_p_value().then_some(drift.score),
        threshold: drift.threshold,
        drifted: drift.drifted,
        counts: (reference.len(), current.len()),
    }))
}
