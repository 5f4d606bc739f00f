//! Column profiles: what a dataset version looks like, stored once and reused by the monitor
//! as its reference (histogram edges are fixed here so live windows can be binned the same way).

use std::collections::HashMap;

use arrow::array::{Array, Float64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use serde::{Deserialize, Serialize};

use crate::read::{Table, logical_type};

/// Quantile levels every numeric profile carries.
pub const QUANTILES: [f64; 7] = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99];

/// Histogram bins of numeric profiles.
pub const BINS: usize = 20;

/// Most frequent values kept for categorical columns.
pub const TOP_K: usize = 20;

/// Distinct values counted exactly up to this many per column.
pub const DISTINCT_CAP: usize = 100_000;

/// Equal-width bins; the last bin includes its right edge (as numpy.histogram).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Histogram {
    /// `bins + 1` increasing edges.
    pub edges: Vec<f64>,
    /// Values per bin.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Counts values into fixed edges (values outside fall in no bin).
    pub fn with_edges(edges: Vec<f64>, values: impl IntoIterator<Item = f64>) -> Self {
        let bins = edges.len().saturating_sub(1);
        let mut counts = vec![0u64; bins];
        if bins == 0 {
            return Self { edges, counts };
        }
        let (low, high) = (edges[0], edges[bins]);
        for value in values {
            if !(low..=high).contains(&value) {
                continue;
            }
            // Binary search for the bin; numpy's rule: [e_i, e_i+1), last bin closed.
            let index = match edges.partition_point(|edge| *edge <= value) {
                0 => 0,
                i if i > bins => bins - 1,
                i => i - 1,
            };
            counts[index.min(bins - 1)] += 1;
        }
        Self { edges, counts }
    }
}

/// Statistics of a numeric column (nulls and NaN excluded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NumericProfile {
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (ddof = 1); 0 for fewer than two values.
    pub std: f64,
    /// `(level, value)` for each of [`QUANTILES`], linear interpolation.
    pub quantiles: Vec<(f64, f64)>,
    /// Histogram over `[min, max]`.
    pub histogram: Histogram,
}

/// Frequencies of a categorical column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CategoricalProfile {
    /// The most frequent values with counts, most frequent first (ties by value).
    pub top: Vec<(String, u64)>,
}

/// One column's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ColumnProfile {
    /// Column name.
    pub name: String,
    /// Logical type.
    pub data_type: String,
    /// Non-null values.
    pub count: u64,
    /// Null (and NaN) values.
    pub nulls: u64,
    /// Distinct non-null values, exact up to [`DISTINCT_CAP`] (then `None`).
    pub distinct: Option<u64>,
    /// For numeric columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric: Option<NumericProfile>,
    /// For other columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categorical: Option<CategoricalProfile>,
}

/// A dataset version's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Profile {
    /// Rows.
    pub row_count: u64,
    /// One profile per column, in schema order.
    pub columns: Vec<ColumnProfile>,
}

impl Profile {
    /// A column's profile by name.
    pub fn column(&self, name: &str) -> Option<&ColumnProfile> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// numpy's default quantile: linear interpolation between closest ranks.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let position = q * (sorted.len() - 1) as f64;
    let lower = position.floor() as usize;
    let upper = position.ceil() as usize;
    let fraction = position - lower as f64;
    sorted[lower] + (sorted[upper] - sorted[lower]) * fraction
}

/// Non-null, non-NaN values of a numeric column as f64.
pub(crate) fn numeric_values(table: &Table, index: usize) -> Vec<f64> {
    let mut values = Vec::new();
    for batch in &table.batches {
        let Ok(column) = cast(batch.column(index), &DataType::Float64) else {
            continue;
        };
        let Some(floats) = column.as_any().downcast_ref::<Float64Array>() else {
            continue;
        };
        values.extend(floats.iter().flatten().filter(|v| !v.is_nan()));
    }
    values
}

/// Non-null values of any column as strings.
pub(crate) fn string_values(table: &Table, index: usize) -> Vec<String> {
    let mut values = Vec::new();
    for batch in &table.batches {
        let Ok(column) = cast(batch.column(index), &DataType::Utf8) else {
            continue;
        };
        let Some(strings) = column.as_any().downcast_ref::<StringArray>() else {
            continue;
        };
        values.extend(strings.iter().flatten().map(str::to_owned));
    }
    values
}

fn numeric_profile(values: &mut [f64]) -> Option<NumericProfile> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len() as f64;
    // Two-pass mean and variance: exact enough to agree with numpy to ~1e-12 relative.
    let mean = values.iter().sum::<f64>() / n;
    let variance = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    let (min, max) = (values[0], values[values.len() - 1]);
    let edges = if min == max {
        // numpy uses [min - 0.5, max + 0.5] for a constant array.
        (0..=BINS)
            .map(|i| (min - 0.5) + i as f64 / BINS as f64)
            .collect()
    } else {
        (0..=BINS)
            .map(|i| min + (max - min) * i as f64 / BINS as f64)
            .collect()
    };
    Some(NumericProfile {
        min,
        max,
        mean,
        std: variance.sqrt(),
        quantiles: QUANTILES
            .iter()
            .map(|q| (*q, quantile(values, *q)))
            .collect(),
        histogram: Histogram::with_edges(edges, values.iter().copied()),
    })
}

fn categorical_profile(values: &[String]) -> (CategoricalProfile, Option<u64>) {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for value in values {
        *counts.entry(value.as_str()).or_default() += 1;
    }
    let distinct = (counts.len() <= DISTINCT_CAP).then_some(counts.len() as u64);
    let mut top: Vec<(String, u64)> = counts.into_iter().map(|(v, c)| (v.to_owned(), c)).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(TOP_K);
    (CategoricalProfile { top }, distinct)
}

/// Profiles every column of a table.
pub fn profile(table: &Table) -> Profile {
    let row_count = table.row_count();
    let columns = table
        .schema
        .fields()
        .iter()
        .enumerate()
        .map(|(index, field)| {
            let data_type = logical_type(field.data_type());
            if matches!(data_type, "int" | "float") {
                let mut values = numeric_values(table, index);
                let count = values.len() as u64;
                let distinct = {
                    let mut bits: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
                    bits.sort_unstable();
                    bits.dedup();
                    (bits.len() <= DISTINCT_CAP).then_some(bits.len() as u64)
                };
                ColumnProfile {
                    name: field.name().clone(),
                    data_type: data_type.to_owned(),
                    count,
                    nulls: row_count - count,
                    distinct,
                    numeric: numeric_profile(&mut values),
                    categorical: None,
                }
            } else {
                let values = string_values(table, index);
                let count = values.len() as u64;
                let (categorical, distinct) = categorical_profile(&values);
                ColumnProfile {
                    name: field.name().clone(),
                    data_type: data_type.to_owned(),
                    count,
                    nulls: row_count - count,
                    distinct,
                    numeric: None,
                    categorical: Some(categorical),
                }
            }
        })
        .collect();
    Profile { row_count, columns }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let sorted = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&sorted, 0.5), 2.5);
        assert_eq!(quantile(&sorted, 0.25), 1.75);
        assert_eq!(quantile(&sorted, 1.0), 4.0);
        assert_eq!(quantile(&[7.0], 0.3), 7.0);
    }

    #[test]
    fn histogram_last_bin_is_closed() {
        let h = Histogram::with_edges(vec![0.0, 1.0, 2.0], [0.0, 0.5, 1.0, 2.0, 2.5, -1.0]);
        assert_eq!(
            h.counts,
            [2, 2],
            "1.0 opens the second bin, 2.0 closes it, outside values are dropped"
        );
    }
}
