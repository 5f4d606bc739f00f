//! Declarative expectations, the dataset's validation suite. Every failure is named and says
//! what was observed, with the offending values summarised.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::profile::{Profile, numeric_values, string_values};
use crate::read::{ColumnSchema, Table};

/// One expectation of a validation suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Expectation {
    /// The column exists (with this logical type, when given).
    ColumnExists {
        /// Column name.
        column: String,
        /// Expected logical type (`int`, `float`, `bool`, `string`, `date`, `timestamp`).
        #[serde(default)]
        data_type: Option<String>,
    },
    /// At least `min` of the rows are not null (0 to 1).
    NotNullRatio {
        /// Column name.
        column: String,
        /// Smallest acceptable ratio.
        min: f64,
    },
    /// Every value lies in `[min, max]`.
    ValueRange {
        /// Column name.
        column: String,
        /// Lower bound.
        #[serde(default)]
        min: Option<f64>,
        /// Upper bound.
        #[serde(default)]
        max: Option<f64>,
    },
    /// Every value is one of `values`.
    AllowedValues {
        /// Column name.
        column: String,
        /// The allowed categories.
        values: Vec<String>,
    },
    /// No value occurs twice.
    Unique {
        /// Column name.
        column: String,
    },
    /// The row count lies in `[min, max]`.
    RowCount {
        /// Fewest rows.
        #[serde(default)]
        min: Option<u64>,
        /// Most rows.
        #[serde(default)]
        max: Option<u64>,
    },
    /// Column names and types equal the previous version's.
    SchemaUnchanged,
}

impl Expectation {
    /// A short name such as `value_range(age)`.
    pub fn name(&self) -> String {
        match self {
            Expectation::ColumnExists { column, .. } => format!("column_exists({column})"),
            Expectation::NotNullRatio { column, .. } => format!("not_null_ratio({column})"),
            Expectation::ValueRange { column, .. } => format!("value_range({column})"),
            Expectation::AllowedValues { column, .. } => format!("allowed_values({column})"),
            Expectation::Unique { column } => format!("unique({column})"),
            Expectation::RowCount { .. } => "row_count".into(),
            Expectation::SchemaUnchanged => "schema_unchanged".into(),
        }
    }

    fn column(&self) -> Option<&str> {
        match self {
            Expectation::ColumnExists { column, .. }
            | Expectation::NotNullRatio { column, .. }
            | Expectation::ValueRange { column, .. }
            | Expectation::AllowedValues { column, .. }
            | Expectation::Unique { column } => Some(column),
            Expectation::RowCount { .. } | Expectation::SchemaUnchanged => None,
        }
    }
}

/// The outcome of one expectation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExpectationOutcome {
    /// The expectation's name.
    pub expectation: String,
    /// Its column, if any.
    pub column: Option<String>,
    /// Whether it held.
    pub passed: bool,
    /// What was observed.
    pub message: String,
}

fn summarise(counts: &BTreeMap<String, u64>, limit: usize) -> String {
    let mut items: Vec<(&String, &u64)> = counts.iter().collect();
    items.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let shown: Vec<String> = items
        .iter()
        .take(limit)
        .map(|(v, c)| format!("'{v}' ×{c}"))
        .collect();
    let more = items.len().saturating_sub(limit);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Runs a suite against a table and its profile; `previous` is the prior version's schema.
pub fn validate(
    table: &Table,
    profile: &Profile,
    suite: &[Expectation],
    previous: Option<&[ColumnSchema]>,
) -> Vec<ExpectationOutcome> {
    let index_of = |name: &str| table.schema.fields().iter().position(|f| f.name() == name);
    suite
        .iter()
        .map(|expectation| {
            let (passed, message) = check(table, profile, expectation, previous, &index_of);
            ExpectationOutcome {
                expectation: expectation.name(),
                column: expectation.column().map(str::to_owned),
                passed,
                message,
            }
        })
        .collect()
}

fn check(
    table: &Table,
    profile: &Profile,
    expectation: &Expectation,
    previous: Option<&[ColumnSchema]>,
    index_of: &dyn Fn(&str) -> Option<usize>,
) -> (bool, String) {
    let missing = |column: &str| (false, format!("column `{column}` is missing"));
    match expectation {
        Expectation::ColumnExists { column, data_type } => {
            match (profile.column(column), data_type) {
                (None, _) => missing(column),
                (Some(c), Some(expected)) if &c.data_type != expected => (
                    false,
                    format!("`{column}` is {}, expected {expected}", c.data_type),
                ),
                (Some(c), _) => (true, format!("`{column}` present ({})", c.data_type)),
            }
        }
        Expectation::NotNullRatio { column, min } => match profile.column(column) {
            None => missing(column),
            Some(c) => {
                let ratio = if profile.row_count == 0 {
                    1.0
                } else {
                    c.count as f64 / profile.row_count as f64
                };
                (
                    ratio >= *min,
                    format!(
                        "{:.4} of rows not null ({} nulls of {}), need at least {min}",
                        ratio, c.nulls, profile.row_count
                    ),
                )
            }
        },
        Expectation::ValueRange { column, min, max } => match index_of(column) {
            None => missing(column),
            Some(index) => {
                let values = numeric_values(table, index);
                if profile
                    .column(column)
                    .is_some_and(|c| c.numeric.is_none() && c.count > 0)
                {
                    return (false, format!("`{column}` is not numeric"));
                }
                let outside: Vec<f64> = values
                    .iter()
                    .copied()
                    .filter(|v| min.is_some_and(|m| *v < m) || max.is_some_and(|m| *v > m))
                    .collect();
                let low = outside.iter().copied().fold(f64::INFINITY, f64::min);
                let high = outside.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if outside.is_empty() {
                    (
                        true,
                        format!(
                            "all {} values within [{}, {}]",
                            values.len(),
                            fmt_bound(*min),
                            fmt_bound(*max)
                        ),
                    )
                } else {
                    (
                        false,
                        format!(
                            "{} values outside [{}, {}] (offending values from {low} to {high})",
                            outside.len(),
                            fmt_bound(*min),
                            fmt_bound(*max)
                        ),
                    )
                }
            }
        },
        Expectation::AllowedValues { column, values } => match index_of(column) {
            None => missing(column),
            Some(index) => {
                let allowed: HashSet<&str> = values.iter().map(String::as_str).collect();
                let mut unexpected: BTreeMap<String, u64> = BTreeMap::new();
                for value in string_values(table, index) {
                    if !allowed.contains(value.as_str()) {
                        *unexpected.entry(value).or_default() += 1;
                    }
                }
                if unexpected.is_empty() {
                    (true, "every value is allowed".into())
                } else {
                    let rows: u64 = unexpected.values().sum();
                    (
                        false,
                        format!(
                            "{rows} rows with {} unexpected values: {}",
                            unexpected.len(),
                            summarise(&unexpected, 5)
                        ),
                    )
                }
            }
        },
        Expectation::Unique { column } => match index_of(column) {
            None => missing(column),
            Some(index) => {
                let mut counts: HashMap<String, u64> = HashMap::new();
                for value in string_values(table, index) {
                    *counts.entry(value).or_default() += 1;
                }
                let duplicates: BTreeMap<String, u64> =
                    counts.into_iter().filter(|(_, c)| *c > 1).collect();
                if duplicates.is_empty() {
                    (true, "all values distinct".into())
                } else {
                    (
                        false,
                        format!(
                            "{} values occur more than once: {}",
                            duplicates.len(),
                            summarise(&duplicates, 5)
                        ),
                    )
                }
            }
        },
        Expectation::RowCount { min, max } => {
            let n = profile.row_count;
            let ok = min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m);
            (
                ok,
                format!(
                    "{n} rows, expected [{}, {}]",
                    min.map_or("-".into(), |m| m.to_string()),
                    max.map_or("-".into(), |m| m.to_string())
                ),
            )
        }
        Expectation::SchemaUnchanged => match previous {
            None => (true, "first version: nothing to compare".into()),
            Some(previous) => {
                let now: BTreeMap<&str, &str> = profile
                    .columns
                    .iter()
                    .map(|c| (c.name.as_str(), c.data_type.as_str()))
                    .collect();
                let before: BTreeMap<&str, &str> = previous
                    .iter()
                    .map(|c| (c.name.as_str(), c.data_type.as_str()))
                    .collect();
                let mut changes = Vec::new();
                for (name, ty) in &before {
                    match now.get(name) {
                        None => changes.push(format!("removed `{name}`")),
                        Some(new) if new != ty => {
                            changes.push(format!("`{name}` changed from {ty} to {new}"))
                        }
                        Some(_) => {}
                    }
                }
                changes.extend(
                    now.keys()
                        .filter(|name| !before.contains_key(*name))
                        .map(|name| format!("added `{name}`")),
                );
                if changes.is_empty() {
                    (true, "schema unchanged".into())
                } else {
                    (false, changes.join("; "))
                }
            }
        },
    }
}

fn fmt_bound(bound: Option<f64>) -> String {
    bound.map_or_else(|| "-inf/inf".into(), |b| b.to_string())
}
