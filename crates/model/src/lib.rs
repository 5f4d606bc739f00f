//! The portable model format of the built-in trainers (`model.json` in a package, flavor
//! `flywheel`): input columns with their preprocessing, an optional standard scaler, and one
//! estimator — linear, logistic, tree ensemble or k-means centroids. Evaluating it needs no ML
//! library, so a server can load it without linfa.

use serde::{Deserialize, Serialize};

/// A row that does not fit the model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid input: {0}")]
pub struct InputError(pub String);

/// How one input column becomes model features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputColumn {
    /// A number; missing values become `fill` (the training mean).
    Numeric {
        /// Column name.
        name: String,
        /// Replacement for missing values.
        fill: f64,
    },
    /// A category, one-hot encoded over the categories seen in training (unknown → all zero).
    Categorical {
        /// Column name.
        name: String,
        /// Categories in encoding order.
        categories: Vec<String>,
    },
}

impl InputColumn {
    /// The column name.
    pub fn name(&self) -> &str {
        match self {
            InputColumn::Numeric { name, .. } | InputColumn::Categorical { name, .. } => name,
        }
    }

    /// Features this column contributes.
    pub fn width(&self) -> usize {
        match self {
            InputColumn::Numeric { .. } => 1,
            InputColumn::Categorical { categories, .. } => categories.len(),
        }
    }
}

/// One input value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Number(f64),
    /// Text.
    Text(String),
    /// Missing.
    Missing,
}

/// What the model predicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// One of `classes`.
    Classification {
        /// Class labels, sorted.
        classes: Vec<String>,
    },
    /// A number.
    Regression,
    /// A cluster index.
    Clustering,
}

/// A node of a binary decision tree: `x[feature] <= threshold` goes left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Feature index, or -1 for a leaf.
    pub feature: i64,
    /// Split threshold.
    pub threshold: f64,
    /// Left child index.
    pub left: u32,
    /// Right child index.
    pub right: u32,
    /// Leaf value: class probabilities, or one regression value.
    pub value: Vec<f64>,
}

/// A tree as a flat node array, root first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    /// Nodes.
    pub nodes: Vec<Node>,
}

impl Tree {
    fn leaf(&self, x: &[f64]) -> &[f64] {
        let mut index = 0usize;
        loop {
            let Some(node) = self.nodes.get(index) else {
                return &[];
            };
            let Ok(feature) = usize::try_from(node.feature) else {
                return &node.value;
            };
            let value = x.get(feature).copied().unwrap_or(f64::NAN);
            index = if value <= node.threshold {
                node.left as usize
            } else {
                node.right as usize
            };
        }
    }
}

/// The fitted estimator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Estimator {
    /// `y = x·coef + intercept`.
    Linear {
        /// Coefficients per feature.
        coef: Vec<f64>,
        /// Intercept.
        intercept: f64,
    },
    /// Binary: `P(classes[1]) = σ(x·coef[0] + intercept[0])`; multiclass: softmax over classes.
    Logistic {
        /// One row per class (one row in total for binary).
        coef: Vec<Vec<f64>>,
        /// One per row of `coef`.
        intercept: Vec<f64>,
    },
    /// Average of the trees' leaf values.
    Trees {
        /// The trees.
        trees: Vec<Tree>,
    },
    /// Nearest centroid.
    KMeans {
        /// Centroids.
        centroids: Vec<Vec<f64>>,
    },
}

/// Standardisation applied after encoding: `(x - mean) / scale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    /// Per-feature mean.
    pub mean: Vec<f64>,
    /// Per-feature scale (std; 1 where the std is 0).
    pub scale: Vec<f64>,
}

/// A built-in model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Algorithm that made it.
    pub algorithm: String,
    /// What it predicts.
    pub task: Task,
    /// Target column (supervised models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Inputs in order.
    pub inputs: Vec<InputColumn>,
    /// Scaling after encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaler: Option<Scaler>,
    /// The estimator.
    pub estimator: Estimator,
}

/// One prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Class label, number or cluster index as text-or-number.
    pub value: f64,
    /// The class label (classification).
    pub label: Option<String>,
    /// Class probabilities (classification), in `classes` order.
    pub probabilities: Vec<f64>,
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn softmax(z: &mut [f64]) {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in z.iter_mut() {
        *v /= sum;
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl Model {
    /// Number of features after encoding.
    pub fn width(&self) -> usize {
        self.inputs.iter().map(InputColumn::width).sum()
    }

    /// Encodes one row given as values in `inputs` order.
    pub fn encode(&self, row: &[Value]) -> Result<Vec<f64>, InputError> {
        if row.len() != self.inputs.len() {
            return Err(InputError(format!(
                "expected {} inputs, got {}",
                self.inputs.len(),
                row.len()
            )));
        }
        let mut x = Vec::with_capacity(self.width());
        for (column, value) in self.inputs.iter().zip(row) {
            match (column, value) {
                (InputColumn::Numeric { fill, .. }, Value::Missing) => x.push(*fill),
                (InputColumn::Numeric { .. }, Value::Number(v)) if v.is_finite() => x.push(*v),
                (InputColumn::Numeric { fill, .. }, Value::Number(_)) => x.push(*fill),
                (InputColumn::Numeric { name, .. }, Value::Text(t)) => {
                    match t.trim().parse::<f64>() {
                        Ok(v) => x.push(v),
                        Err(_) => {
                            return Err(InputError(format!(
                                "input `{name}` must be a number, got `{t}`"
                            )));
                        }
                    }
                }
                (InputColumn::Categorical { categories, .. }, value) => {
                    let text = match value {
                        Value::Text(t) => Some(t.clone()),
                        Value::Number(v) => Some(format_number(*v)),
                        Value::Missing => None,
                    };
                    x.extend(
                        categories
                            .iter()
                            .map(|c| f64::from(u8::from(text.as_deref() == Some(c.as_str())))),
                    );
                }
            }
        }
        if let Some(scaler) = &self.scaler {
            for ((v, mean), scale) in x.iter_mut().zip(&scaler.mean).zip(&scaler.scale) {
                *v = (*v - mean) / scale;
            }
        }
        Ok(x)
    }

    /// Predicts one encoded row.
    pub fn predict_encoded(&self, x: &[f64]) -> Prediction {
        let classes = match &self.task {
            Task::Classification { classes } => Some(classes),
            _ => None,
        };
        let (value, probabilities) = match &self.estimator {
            Estimator::Linear { coef, intercept } => (dot(x, coef) + intercept, Vec::new()),
            Estimator::Logistic { coef, intercept } => {
                let mut z: Vec<f64> = coef
                    .iter()
                    .zip(intercept)
                    .map(|(w, b)| dot(x, w) + b)
                    .collect();
                let probabilities = if z.len() == 1 {
                    let p = sigmoid(z[0]);
                    vec![1.0 - p, p]
                } else {
                    softmax(&mut z);
                    z
                };
                (argmax(&probabilities) as f64, probabilities)
            }
            Estimator::Trees { trees } => {
                let mut sum: Vec<f64> = Vec::new();
                for tree in trees {
                    let leaf = tree.leaf(x);
                    if sum.is_empty() {
                        sum = vec![0.0; leaf.len()];
                    }
                    for (s, v) in sum.iter_mut().zip(leaf) {
                        *s += v;
                    }
                }
                let n = trees.len().max(1) as f64;
                sum.iter_mut().for_each(|s| *s /= n);
                if classes.is_some() {
                    (argmax(&sum) as f64, sum)
                } else {
                    (sum.first().copied().unwrap_or(f64::NAN), Vec::new())
                }
            }
            Estimator::KMeans { centroids } => {
                let nearest = centroids
                    .iter()
                    .map(|c| c.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum::<f64>())
                    .enumerate()
                    .fold((0usize, f64::INFINITY), |best, (i, d)| {
                        if d < best.1 { (i, d) } else { best }
                    })
                    .0;
                (nearest as f64, Vec::new())
            }
        };
        let label = classes.and_then(|c| c.get(value as usize).cloned());
        Prediction {
            value,
            label,
            probabilities,
        }
    }

    /// Encodes and predicts one row.
    pub fn predict(&self, row: &[Value]) -> Result<Prediction, InputError> {
        Ok(self.predict_encoded(&self.encode(row)?))
    }
}

/// Index of the largest value (the first on ties, as numpy's argmax).
pub fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

/// Integers without a trailing `.0`, so `1` and `1.0` name the same category.
pub fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}
