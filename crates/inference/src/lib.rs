//! ONNX models in pure Rust (tract-onnx), for models trained elsewhere (scikit-learn through
//! skl2onnx, and anything else tract runs) and served by the deployer. A model is loaded once
//! with a symbolic batch dimension, optimised, and then run for any number of rows from any
//! thread (`run` takes `&self`).
//!
//! The `ai.onnx.ml` operators scikit-learn exports use and tract lacks or gets wrong are the
//! project's own ([`ml`](crate::ml)): `Scaler`, `Imputer`, `TreeEnsembleRegressor` and a flattened
//! `TreeEnsembleClassifier`. `tests/against_sklearn.rs` checks every exported family against
//! scikit-learn; docs/architecture.md lists them.

mod ml;

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;
use tract_onnx::tract_hir::internal::DimLike;

/// Why a model cannot load or run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OnnxError {
    /// The bytes are not a model tract can run.
    #[error("cannot load the ONNX model: {0}")]
    Load(String),
    /// The input does not fit the model.
    #[error("invalid input: {0}")]
    Input(String),
    /// Running failed.
    #[error("the model failed: {0}")]
    Run(String),
}

/// One output tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    /// Output name from the graph.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values.
    pub data: OutputData,
}

/// Output values by type.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputData {
    /// 64-bit integers (class labels).
    I64(Vec<i64>),
    /// 32-bit floats (probabilities, regression values).
    F32(Vec<f32>),
    /// 64-bit floats.
    F64(Vec<f64>),
    /// Strings (class labels of models trained on string targets).
    Strings(Vec<String>),
}

impl OutputData {
    /// The V2 protocol datatype.
    pub fn datatype(&self) -> &'static str {
        match self {
            OutputData::I64(_) => "INT64",
            OutputData::F32(_) => "FP32",
            OutputData::F64(_) => "FP64",
            OutputData::Strings(_) => "BYTES",
        }
    }
}

type Plan = Arc<TypedRunnableModel>;

/// A loaded ONNX model with one `[N, width]` float input.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    plan: Plan,
    input_name: String,
    width: usize,
    output_names: Vec<String>,
}

fn load_error(e: impl std::fmt::Display) -> OnnxError {
    OnnxError::Load(format!("{e:#}"))
}

impl OnnxModel {
    /// Loads and optimises a model from its bytes.
    pub fn load(bytes: &[u8]) -> Result<Self, OnnxError> {
        let mut model = ml::onnx()
            .model_for_read(&mut &bytes[..])
            .map_err(load_error)?;
        if model.inputs.len() != 1 {
            return Err(OnnxError::Load(format!(
                "models with one input are supported, this one has {}",
                model.inputs.len()
            )));
        }
        let input_name = model.node(model.inputs[0].node).name.clone();
        let fact = model.input_fact(0).map_err(load_error)?.clone();
        let width = fact
            .shape
            .dims()
            .nth(1)
            .and_then(|d| d.concretize())
            .and_then(|d| d.to_usize().ok())
            .ok_or_else(|| {
                OnnxError::Load("the input must be a [batch, features] tensor".into())
            })?;
        let batch = model.sym("N");
        model
            .set_input_fact(
                0,
                InferenceFact::dt_shape(f32::datum_type(), tvec![batch.to_dim(), width.to_dim()]),
            )
            .map_err(load_error)?;
        let typed = model.into_optimized().map_err(load_error)?;
        let output_names = typed
            .output_outlets()
            .map_err(load_error)?
            .iter()
            .map(|outlet| {
                typed
                    .outlet_label(*outlet)
                    .map(str::to_owned)
                    .unwrap_or_else(|| typed.node(outlet.node).name.clone())
            })
            .collect();
        let plan = typed.into_runnable().map_err(load_error)?;
        Ok(Self {
            plan,
            input_name,
            width,
            output_names,
        })
    }

    /// The input's name in the graph.
    pub fn input_name(&self) -> &str {
        &self.input_name
    }

    /// Features per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Output names, in order.
    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    /// Runs `rows` rows of `width` features (row-major).
    pub fn run(&self, rows: usize, data: Vec<f32>) -> Result<Vec<OutputTensor>, OnnxError> {
        if data.len() != rows * self.width {
            return Err(OnnxError::Input(format!(
                "{} values for {rows} rows of {} features",
                data.len(),
                self.width
            )));
        }
        let input = tract_ndarray::Array2::from_shape_vec((rows, self.width), data)
            .map_err(|e| OnnxError::Input(e.to_string()))?;
        let outputs = self
            .plan
            .run(tvec!(Tensor::from(input).into()))
            .map_err(|e| OnnxError::Run(format!("{e:#}")))?;
        outputs
            .iter()
            .zip(&self.output_names)
            .map(|(value, name)| {
                let tensor: &Tensor = value;
                let shape = tensor.shape().to_vec();
                let data = match tensor.datum_type() {
                    dt if dt.is_integer() || dt == DatumType::TDim => OutputData::I64(
                        tensor
                            .cast_to::<i64>()
                            .map_err(|e| OnnxError::Run(e.to_string()))?
                            .to_plain_array_view::<i64>()
                            .map_err(|e| OnnxError::Run(e.to_string()))?
                            .iter()
                            .copied()
                            .collect(),
                    ),
                    DatumType::F32 => OutputData::F32(
                        tensor
                            .to_plain_array_view::<f32>()
                            .map_err(|e| OnnxError::Run(e.to_string()))?
                            .iter()
                            .copied()
                            .collect(),
                    ),
                    DatumType::F64 => OutputData::F64(
                        tensor
                            .to_plain_array_view::<f64>()
                            .map_err(|e| OnnxError::Run(e.to_string()))?
                            .iter()
                            .copied()
                            .collect(),
                    ),
                    DatumType::String => OutputData::Strings(
                        tensor
                            .to_plain_array_view::<String>()
                            .map_err(|e| OnnxError::Run(e.to_string()))?
                            .iter()
                            .cloned()
                            .collect(),
                    ),
                    other => {
                        return Err(OnnxError::Run(format!(
                            "output {name} has type {other:?}, which is not served"
                        )));
                    }
                };
                Ok(OutputTensor {
                    name: name.clone(),
                    shape,
                    data,
                })
            })
            .collect()
    }
}
