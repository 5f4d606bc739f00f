//! Flywheel's built-in trainers on tabular data: logistic regression (binary and
//! multiclass), linear and ridge regression, decision tree, random forest and k-means. Each
//! trains on a seeded split, evaluates on the held-out rows with metrics defined as
//! scikit-learn defines them, and yields a portable [`model::Model`]. Deterministic: the same
//! table, parameters and seed give the same model bytes.

mod cart;
pub mod metrics;

pub use flywheel_model as model;

use std::collections::{BTreeMap, HashMap};

use flywheel_data::Table;
use flywheel_events::payloads::{Params, Signature, TensorSpec};
use linfa::prelude::*;
use ndarray::{Array1, Array2};
use rand08::SeedableRng;
use rand08::rngs::StdRng;
use rand08::seq::SliceRandom;
use serde_json::Value as Json;

use model::{Estimator, InputColumn, Model, Scaler, Task, Value, format_number};

/// Algorithms [`train`] knows.
pub const ALGORITHMS: [&str; 6] = [
    "logistic_regression",
    "linear_regression",
    "ridge",
    "decision_tree",
    "random_forest",
    "kmeans",
];

/// Why training could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// No such algorithm.
    #[error(
        "unknown algorithm `{0}` (built-in: logistic_regression, linear_regression, ridge, decision_tree, random_forest, kmeans)"
    )]
    UnknownAlgorithm(String),
    /// A parameter is unknown or has a bad value.
    #[error("invalid parameter: {0}")]
    InvalidParams(String),
    /// The data cannot train this model.
    #[error("unusable data: {0}")]
    Data(String),
    /// A row given for prediction does not fit the model.
    #[error(transparent)]
    InvalidInput(#[from] model::InputError),
    /// The optimiser failed.
    #[error("fitting failed: {0}")]
    Fit(String),
}

/// A trained model and what it scored on the held-out rows.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The model.
    pub model: Model,
    /// Held-out metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Inputs and outputs, in V2 protocol terms.
    pub signature: Signature,
    /// Parameters as used (defaults filled in).
    pub params: Params,
    /// Rows trained on.
    pub train_rows: usize,
    /// Rows evaluated on.
    pub test_rows: usize,
}

impl Trained {
    /// The model's canonical bytes (`model.json`).
    pub fn model_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(&self.model).unwrap_or_default()
    }
}

/// Reads parameters, refusing unknown ones, remembering what was used.
struct ParamReader<'a> {
    given: &'a Params,
    used: Params,
}

impl<'a> ParamReader<'a> {
    fn new(given: &'a Params) -> Self {
        Self {
            given,
            used: Params::new(),
        }
    }

    fn get(&mut self, key: &str, default: Json) -> Json {
        let value = self.given.get(key).cloned().unwrap_or(default);
        self.used.insert(key.to_owned(), value.clone());
        value
    }

    fn f64(&mut self, key: &str, default: f64, min: f64) -> Result<f64, TrainError> {
        let value = self.get(key, Json::from(default));
        match value.as_f64() {
            Some(v) if v.is_finite() && v >= min => Ok(v),
            _ => Err(TrainError::InvalidParams(format!(
                "`{key}` must be a number >= {min}, got {value}"
            ))),
        }
    }

    fn usize(&mut self, key: &str, default: usize, min: usize) -> Result<usize, TrainError> {
        let value = self.get(key, Json::from(default));
        match value.as_u64().and_then(|v| usize::try_from(v).ok()) {
            Some(v) if v >= min => Ok(v),
            _ => Err(TrainError::InvalidParams(format!(
                "`{key}` must be an integer >= {min}, got {value}"
            ))),
        }
    }

    fn optional_usize(&mut self, key: &str) -> Result<Option<usize>, TrainError> {
        match self.get(key, Json::Null) {
            Json::Null => Ok(None),
            value => match value.as_u64().and_then(|v| usize::try_from(v).ok()) {
                Some(v) if v >= 1 => Ok(Some(v)),
                _ => Err(TrainError::InvalidParams(format!(
                    "`{key}` must be an integer >= 1 or null, got {value}"
                ))),
            },
        }
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, TrainError> {
        match self.get(key, Json::Null) {
            Json::Null => Ok(None),
            Json::String(s) => Ok(Some(s)),
            other => Err(TrainError::InvalidParams(format!(
                "`{key}` must be a string, got {other}"
            ))),
        }
    }

    fn finish(self) -> Result<Params, TrainError> {
        let unknown: Vec<&String> = self
            .given
            .keys()
            .filter(|k| !self.used.contains_key(*k))
            .collect();
        if !unknown.is_empty() {
            let known: Vec<&String> = self.used.keys().collect();
            return Err(TrainError::InvalidParams(format!(
                "unknown {unknown:?}; this algorithm takes {known:?}"
            )));
        }
        Ok(self.used)
    }
}

/// A table as rows of raw input values and a raw target.
struct Rows {
    inputs: Vec<String>,
    values: Vec<Vec<Value>>,
    target: Vec<Value>,
}

fn extract(table: &Table, target: Option<&str>, features: &[String]) -> Result<Rows, TrainError> {
    let data = |e: flywheel_data::DataError| TrainError::Data(e.to_string());
    let n = usize::try_from(table.row_count()).unwrap_or(0);
    let column = |name: &str| -> Result<Vec<Value>, TrainError> {
        if table.is_numeric(name).map_err(data)? {
            Ok(table
                .f64_column(name)
                .map_err(data)?
                .into_iter()
                .map(|v| v.map_or(Value::Missing, Value::Number))
                .collect())
        } else {
            Ok(table
                .string_column(name)
                .map_err(data)?
                .into_iter()
                .map(|v| v.map_or(Value::Missing, Value::Text))
                .collect())
        }
    };
    let mut columns = Vec::with_capacity(features.len());
    for name in features {
        columns.push(column(name)?);
    }
    let target = match target {
        Some(name) => column(name)?,
        None => vec![Value::Missing; n],
    };
    let values = (0..n)
        .map(|row| columns.iter().map(|c| c[row].clone()).collect())
        .collect();
    Ok(Rows {
        inputs: features.to_vec(),
        values,
        target,
    })
}

fn fit_inputs(table: &Table, rows: &Rows, train: &[usize]) -> Result<Vec<InputColumn>, TrainError> {
    let mut inputs = Vec::new();
    for (i, name) in rows.inputs.iter().enumerate() {
        let numeric = table
            .is_numeric(name)
            .map_err(|e| TrainError::Data(e.to_string()))?;
        if numeric {
            let present: Vec<f64> = train
                .iter()
                .filter_map(|&r| match rows.values[r][i] {
                    Value::Number(v) => Some(v),
                    _ => None,
                })
                .collect();
            let fill = if present.is_empty() {
                0.0
            } else {
                present.iter().sum::<f64>() / present.len() as f64
            };
            inputs.push(InputColumn::Numeric {
                name: name.clone(),
                fill,
            });
        } else {
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for &r in train {
                if let Value::Text(t) = &rows.values[r][i] {
                    *counts.entry(t.as_str()).or_default() += 1;
                }
            }
            let mut categories: Vec<(&str, usize)> = counts.into_iter().collect();
            categories.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            categories.truncate(50);
            let mut categories: Vec<String> =
                categories.into_iter().map(|(c, _)| c.to_owned()).collect();
            categories.sort();
            inputs.push(InputColumn::Categorical {
                name: name.clone(),
                categories,
            });
        }
    }
    Ok(inputs)
}

fn label_of(value: &Value) -> Option<String> {
    match value {
        Value::Number(v) => Some(format_number(*v)),
        Value::Text(t) => Some(t.clone()),
        Value::Missing => None,
    }
}

/// Sorted class labels, numerically when every label is a number (as numpy sorts them).
fn classes_of(labels: impl Iterator<Item = String>) -> Vec<String> {
    let mut classes: Vec<String> = labels.collect();
    classes.sort();
    classes.dedup();
    if classes.iter().all(|c| c.parse::<f64>().is_ok()) {
        classes.sort_by(|a, b| {
            let (x, y) = (
                a.parse::<f64>().unwrap_or(0.0),
                b.parse::<f64>().unwrap_or(0.0),
            );
            x.total_cmp(&y)
        });
    }
    classes
}

fn matrix(rows: &[Vec<f64>], width: usize) -> Array2<f64> {
    Array2::from_shape_fn((rows.len(), width), |(r, c)| rows[r][c])
}

fn standardize(encoded: &[Vec<f64>], width: usize) -> Scaler {
    let n = encoded.len().max(1) as f64;
    let mut mean = vec![0.0; width];
    for row in encoded {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v / n;
        }
    }
    let mut scale = vec![0.0; width];
    for row in encoded {
        for ((s, v), m) in scale.iter_mut().zip(row).zip(&mean) {
            *s += (v - m) * (v - m) / n;
        }
    }
    let scale = scale
        .into_iter()
        .map(|v| if v > 0.0 { v.sqrt() } else { 1.0 })
        .collect();
    Scaler { mean, scale }
}

/// Solves the symmetric positive definite system `a·x = b` (Cholesky).
#[allow(clippy::needless_range_loop)] // index form mirrors the textbook algorithm
fn solve_spd(mut a: Vec<Vec<f64>>, b: Vec<f64>) -> Result<Vec<f64>, TrainError> {
    let n = b.len();
    for j in 0..n {
        let mut d = a[j][j];
        for k in 0..j {
            d -= a[j][k] * a[j][k];
        }
        if d <= 1e-12 {
            return Err(TrainError::Fit(
                "the features are collinear; use ridge with alpha > 0".into(),
            ));
        }
        a[j][j] = d.sqrt();
        for i in j + 1..n {
            let mut s = a[i][j];
            for k in 0..j {
                s -= a[i][k] * a[j][k];
            }
            a[i][j] = s / a[j][j];
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= a[i][k] * y[k];
        }
        y[i] = s / a[i][i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let mut s = y[i];
        for k in i + 1..n {
            s -= a[k][i] * x[k];
        }
        x[i] = s / a[i][i];
    }
    Ok(x)
}

/// Ridge regression with an unpenalised intercept (centred data), as scikit-learn's `Ridge`.
#[allow(clippy::needless_range_loop)]
fn ridge(
    x: &[Vec<f64>],
    y: &[f64],
    width: usize,
    alpha: f64,
) -> Result<(Vec<f64>, f64), TrainError> {
    let n = x.len() as f64;
    let mut mean_x = vec![0.0; width];
    for row in x {
        for (m, v) in mean_x.iter_mut().zip(row) {
            *m += v / n;
        }
    }
    let mean_y = y.iter().sum::<f64>() / n;
    let mut xtx = vec![vec![0.0; width]; width];
    let mut xty = vec![0.0; width];
    for (row, t) in x.iter().zip(y) {
        let centred: Vec<f64> = row.iter().zip(&mean_x).map(|(v, m)| v - m).collect();
        for i in 0..width {
            xty[i] += centred[i] * (t - mean_y);
            for j in 0..=i {
                xtx[i][j] += centred[i] * centred[j];
            }
        }
    }
    for i in 0..width {
        xtx[i][i] += alpha;
        for j in 0..i {
            xtx[j][i] = xtx[i][j];
        }
    }
    let coef = solve_spd(xtx, xty)?;
    let intercept = mean_y - coef.iter().zip(&mean_x).map(|(c, m)| c * m).sum::<f64>();
    Ok((coef, intercept))
}

/// Trains `algorithm` on a seeded split of `table` (param `test_fraction`, default 0.2) and
/// evaluates it on the held-out rows. `progress` gets (fraction, stage).
pub fn train(
    table: &Table,
    algorithm: &str,
    params: &Params,
    progress: &mut dyn FnMut(f64, &str),
) -> Result<Trained, TrainError> {
    run(table, None, algorithm, params, progress)
}

/// Trains on `train` and evaluates on `test` (no split), e.g. to compare with another library
/// on identical rows.
pub fn train_and_evaluate(
    train: &Table,
    test: &Table,
    algorithm: &str,
    params: &Params,
    progress: &mut dyn FnMut(f64, &str),
) -> Result<Trained, TrainError> {
    run(train, Some(test), algorithm, params, progress)
}

#[allow(clippy::too_many_lines)]
fn run(
    table: &Table,
    test_table: Option<&Table>,
    algorithm: &str,
    params: &Params,
    progress: &mut dyn FnMut(f64, &str),
) -> Result<Trained, TrainError> {
    if !ALGORITHMS.contains(&algorithm) {
        return Err(TrainError::UnknownAlgorithm(algorithm.to_owned()));
    }
    let mut p = ParamReader::new(params);
    let seed = u64::try_from(p.usize("seed", 42, 0)?).unwrap_or(42);
    let names: Vec<String> = table.columns().into_iter().map(|c| c.name).collect();
    let supervised = algorithm != "kmeans";
    let target = if supervised {
        let target = p
            .string("target")?
            .or_else(|| names.last().cloned())
            .ok_or_else(|| TrainError::Data("the table has no columns".into()))?;
        if !names.contains(&target) {
            return Err(TrainError::InvalidParams(format!(
                "target `{target}` is not a column (columns: {names:?})"
            )));
        }
        Some(target)
    } else {
        None
    };
    let features: Vec<String> = match p.get("features", Json::Null) {
        Json::Null => names
            .iter()
            .filter(|n| Some(*n) != target.as_ref())
            .cloned()
            .collect(),
        Json::Array(list) => list
            .iter()
            .map(|v| {
                v.as_str()
                    .filter(|name| {
                        names.iter().any(|n| n == name) && Some(*name) != target.as_deref()
                    })
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        TrainError::InvalidParams(format!(
                            "`features`: {v} is not a feature column (columns: {names:?})"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(TrainError::InvalidParams(format!(
                "`features` must be a list of column names, got {other}"
            )));
        }
    };
    if features.is_empty() {
        return Err(TrainError::Data("no feature columns".into()));
    }
    let test_fraction = if test_table.is_none() {
        let f = p.f64("test_fraction", 0.2, 0.0)?;
        if f >= 1.0 {
            return Err(TrainError::InvalidParams(
                "`test_fraction` must be below 1".into(),
            ));
        }
        f
    } else {
        0.0
    };
    progress(0.05, "reading data");
    let mut rows = extract(table, target.as_deref(), &features)?;
    let (train_idx, test_idx): (Vec<usize>, Vec<usize>) = if let Some(test) = test_table {
        let extra = extract(test, target.as_deref(), &features)?;
        let offset = rows.values.len();
        rows.values.extend(extra.values);
        rows.target.extend(extra.target);
        (
            (0..offset)
                .filter(|&r| !supervised || rows.target[r] != Value::Missing)
                .collect(),
            (offset..rows.values.len())
                .filter(|&r| !supervised || rows.target[r] != Value::Missing)
                .collect(),
        )
    } else {
        let mut usable: Vec<usize> = (0..rows.values.len())
            .filter(|&r| !supervised || rows.target[r] != Value::Missing)
            .collect();
        usable.shuffle(&mut StdRng::seed_from_u64(seed));
        let n_test = (usable.len() as f64 * test_fraction).ceil() as usize;
        let test = usable[..n_test.min(usable.len())].to_vec();
        let train = usable[n_test.min(usable.len())..].to_vec();
        (train, test)
    };
    if train_idx.len() < 2 {
        return Err(TrainError::Data(format!(
            "{} usable training rows; need at least 2",
            train_idx.len()
        )));
    }
    let inputs = fit_inputs(table, &rows, &train_idx)?;
    let classification = match algorithm {
        "logistic_regression" => true,
        "linear_regression" | "ridge" | "kmeans" => false,
        _ => {
            let target_numeric = target
                .as_deref()
                .map(|t| table.is_numeric(t))
                .transpose()
                .map_err(|e| TrainError::Data(e.to_string()))?
                .unwrap_or(false);
            let default = if target_numeric {
                let distinct =
                    classes_of(train_idx.iter().filter_map(|&r| label_of(&rows.target[r])));
                let integral = train_idx
                    .iter()
                    .all(|&r| matches!(rows.target[r], Value::Number(v) if v.fract() == 0.0));
                if integral && distinct.len() <= 20 {
                    "classification"
                } else {
                    "regression"
                }
            } else {
                "classification"
            };
            match p.get("task", Json::from(default)).as_str() {
                Some("classification") => true,
                Some("regression") => false,
                _ => {
                    return Err(TrainError::InvalidParams(
                        "`task` must be `classification` or `regression`".into(),
                    ));
                }
            }
        }
    };
    let mut model = Model {
        algorithm: algorithm.to_owned(),
        task: Task::Regression,
        target,
        inputs,
        scaler: None,
        estimator: Estimator::Linear {
            coef: Vec::new(),
            intercept: 0.0,
        },
    };
    let width = model.width();
    let encode = |model: &Model, idx: &[usize]| -> Result<Vec<Vec<f64>>, TrainError> {
        idx.iter()
            .map(|&r| model.encode(&rows.values[r]).map_err(TrainError::from))
            .collect()
    };
    if matches!(algorithm, "logistic_regression" | "kmeans") {
        let raw = encode(&model, &train_idx)?;
        model.scaler = Some(standardize(&raw, width));
    }
    let x_train = encode(&model, &train_idx)?;
    let x_test = encode(&model, &test_idx)?;
    let classes = if classification {
        classes_of(train_idx.iter().filter_map(|&r| label_of(&rows.target[r])))
    } else {
        Vec::new()
    };
    if classification && classes.len() < 2 {
        return Err(TrainError::Data(format!(
            "classification needs at least 2 classes in the target, found {}",
            classes.len()
        )));
    }
    let class_index = |r: usize| -> Option<usize> {
        label_of(&rows.target[r]).and_then(|l| classes.iter().position(|c| *c == l))
    };
    let number = |r: usize| -> Result<f64, TrainError> {
        match &rows.target[r] {
            Value::Number(v) => Ok(*v),
            other => Err(TrainError::Data(format!(
                "regression needs a numeric target, found {other:?}"
            ))),
        }
    };
    progress(0.2, "fitting");
    let mut rng = StdRng::seed_from_u64(seed);
    let tree_params =
        |p: &mut ParamReader<'_>, forest: bool| -> Result<cart::TreeParams, TrainError> {
            let max_features = if forest {
                match p.get(
                    "max_features",
                    Json::from(if classification { "sqrt" } else { "all" }),
                ) {
                    Json::String(s) if s == "sqrt" => {
                        Some(((width as f64).sqrt().floor() as usize).max(1))
                    }
                    Json::String(s) if s == "all" => None,
                    Json::Number(n) => match n.as_u64() {
                        Some(k) if k >= 1 => Some(usize::try_from(k).unwrap_or(usize::MAX)),
                        _ => {
                            return Err(TrainError::InvalidParams(
                                "`max_features` must be `sqrt`, `all` or an integer >= 1".into(),
                            ));
                        }
                    },
                    _ => {
                        return Err(TrainError::InvalidParams(
                            "`max_features` must be `sqrt`, `all` or an integer >= 1".into(),
                        ));
                    }
                }
            } else {
                None
            };
            Ok(cart::TreeParams {
                max_depth: p.optional_usize("max_depth")?,
                min_samples_split: p.usize("min_samples_split", 2, 2)?,
                min_samples_leaf: p.usize("min_samples_leaf", 1, 1)?,
                max_features,
            })
        };
    match algorithm {
        "logistic_regression" => {
            let alpha = p.f64("alpha", 1.0, 0.0)?;
            let max_iterations = p.usize("max_iterations", 200, 1)?;
            let y: Vec<usize> = train_idx.iter().filter_map(|&r| class_index(r)).collect();
            let x = matrix(&x_train, width);
            let fit = |e: linfa_logistic::error::Error| TrainError::Fit(e.to_string());
            if classes.len() == 2 {
                let fitted = linfa_logistic::LogisticRegression::default()
                    .alpha(alpha)
                    .max_iterations(max_iterations as u64)
                    .fit(&Dataset::new(x, Array1::from(y)))
                    .map_err(fit)?;
                let sign = if fitted.labels().pos.class == 1 {
                    1.0
                } else {
                    -1.0
                };
                model.estimator = Estimator::Logistic {
                    coef: vec![fitted.params().iter().map(|w| sign * w).collect()],
                    intercept: vec![sign * fitted.intercept()],
                };
            } else {
                let fitted = linfa_logistic::MultiLogisticRegression::default()
                    .alpha(alpha)
                    .max_iterations(max_iterations as u64)
                    .fit(&Dataset::new(x, Array1::from(y)))
                    .map_err(fit)?;
                let mut coef = vec![vec![0.0; width]; classes.len()];
                let mut intercept = vec![0.0; classes.len()];
                for (column, class) in fitted.classes().iter().enumerate() {
                    if let Some(row) = coef.get_mut(*class) {
                        *row = fitted.params().column(column).to_vec();
                        intercept[*class] = fitted.intercept()[column];
                    }
                }
                model.estimator = Estimator::Logistic { coef, intercept };
            }
        }
        "linear_regression" | "ridge" => {
            let y: Vec<f64> = train_idx
                .iter()
                .map(|&r| number(r))
                .collect::<Result<_, _>>()?;
            if algorithm == "ridge" {
                let alpha = p.f64("alpha", 1.0, 0.0)?;
                let (coef, intercept) = ridge(&x_train, &y, width, alpha)?;
                model.estimator = Estimator::Linear { coef, intercept };
            } else {
                let fitted = linfa_linear::LinearRegression::new()
                    .fit(&Dataset::new(matrix(&x_train, width), Array1::from(y)))
                    .map_err(|e| TrainError::Fit(e.to_string()))?;
                model.estimator = Estimator::Linear {
                    coef: fitted.params().to_vec(),
                    intercept: fitted.intercept(),
                };
            }
        }
        "decision_tree" | "random_forest" => {
            let forest = algorithm == "random_forest";
            let n_trees = if forest {
                p.usize("n_estimators", 100, 1)?
            } else {
                1
            };
            let params = tree_params(&mut p, forest)?;
            let columns: Vec<Vec<f64>> = (0..width)
                .map(|c| x_train.iter().map(|row| row[c]).collect())
                .collect();
            let y_class: Vec<usize>;
            let y_value: Vec<f64>;
            let target = if classification {
                y_class = train_idx
                    .iter()
                    .map(|&r| class_index(r).unwrap_or(0))
                    .collect();
                cart::Target::Classes(&y_class, classes.len())
            } else {
                y_value = train_idx
                    .iter()
                    .map(|&r| number(r))
                    .collect::<Result<_, _>>()?;
                cart::Target::Values(&y_value)
            };
            let trees = if forest {
                cart::fit_forest(
                    &columns,
                    target,
                    x_train.len(),
                    n_trees,
                    &params,
                    &mut rng,
                    |done| {
                        progress(0.2 + 0.7 * done as f64 / n_trees as f64, "growing trees");
                    },
                )
            } else {
                vec![cart::fit_tree(
                    &columns,
                    target,
                    (0..x_train.len()).collect(),
                    &params,
                    &mut rng,
                )]
            };
            model.estimator = Estimator::Trees { trees };
        }
        "kmeans" => {
            let k = p.usize("n_clusters", 3, 1)?;
            let max_iterations = p.usize("max_iterations", 300, 1)?;
            let n_runs = p.usize("n_runs", 3, 1)?;
            if k > x_train.len() {
                return Err(TrainError::InvalidParams(format!(
                    "`n_clusters` ({k}) exceeds the training rows ({})",
                    x_train.len()
                )));
            }
            let fitted = linfa_clustering::KMeans::params_with_rng(k, rng.clone())
                .max_n_iterations(max_iterations as u64)
                .n_runs(n_runs)
                .tolerance(1e-4)
                .fit(&DatasetBase::from(matrix(&x_train, width)))
                .map_err(|e| TrainError::Fit(e.to_string()))?;
            model.estimator = Estimator::KMeans {
                centroids: fitted
                    .centroids()
                    .rows()
                    .into_iter()
                    .map(|r| r.to_vec())
                    .collect(),
            };
        }
        _ => return Err(TrainError::UnknownAlgorithm(algorithm.to_owned())),
    }
    let used = p.finish()?;
    model.task = if classification {
        Task::Classification {
            classes: classes.clone(),
        }
    } else if algorithm == "kmeans" {
        Task::Clustering
    } else {
        Task::Regression
    };
    progress(0.9, "evaluating");
    let predictions: Vec<model::Prediction> =
        x_test.iter().map(|x| model.predict_encoded(x)).collect();
    let metrics = if classification {
        let truth: Vec<usize> = test_idx
            .iter()
            .map(|&r| class_index(r).unwrap_or(usize::MAX))
            .collect();
        let predicted: Vec<usize> = predictions.iter().map(|p| p.value as usize).collect();
        let probabilities: Vec<Vec<f64>> = predictions
            .iter()
            .map(|p| p.probabilities.clone())
            .collect();
        metrics::classification(&truth, &predicted, &probabilities, classes.len())
    } else if algorithm == "kmeans" {
        let mut inertia = 0.0;
        if let Estimator::KMeans { centroids } = &model.estimator {
            for (x, p) in x_test.iter().zip(&predictions) {
                let c = &centroids[p.value as usize];
                inertia += c.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
            }
        }
        BTreeMap::from([("inertia".to_owned(), inertia)])
    } else {
        let truth: Vec<f64> = test_idx
            .iter()
            .map(|&r| number(r))
            .collect::<Result<_, _>>()?;
        let predicted: Vec<f64> = predictions.iter().map(|p| p.value).collect();
        metrics::regression(&truth, &predicted)
    };
    let signature = signature_of(&model);
    progress(1.0, "trained");
    Ok(Trained {
        model,
        metrics,
        signature,
        params: used,
        train_rows: train_idx.len(),
        test_rows: test_idx.len(),
    })
}

/// The model's V2 signature: one tensor per input column, the prediction (and probabilities).
pub fn signature_of(model: &Model) -> Signature {
    let inputs = model
        .inputs
        .iter()
        .map(|c| TensorSpec {
            name: c.name().to_owned(),
            datatype: match c {
                InputColumn::Numeric { .. } => "FP64".into(),
                InputColumn::Categorical { .. } => "BYTES".into(),
            },
            shape: vec![-1],
        })
        .collect();
    let mut outputs = vec![TensorSpec {
        name: "prediction".into(),
        datatype: match model.task {
            Task::Classification { .. } => "BYTES".into(),
            Task::Regression => "FP64".into(),
            Task::Clustering => "INT64".into(),
        },
        shape: vec![-1],
    }];
    if let Task::Classification { classes } = &model.task {
        outputs.push(TensorSpec {
            name: "probabilities".into(),
            datatype: "FP64".into(),
            shape: vec![-1, i64::try_from(classes.len()).unwrap_or(-1)],
        });
    }
    Signature { inputs, outputs }
}
