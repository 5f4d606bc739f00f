//! `Scaler` ((x - offset) * scale per column: StandardScaler, RobustScaler, MaxAbsScaler) and
//! `Imputer` (missing values replaced per column: SimpleImputer).

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::attributes;
use super::one_pass::{OnePass, OnePassOp};

type Built = TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

/// Per-column values as a `[1, n]` row, f32.
fn row(values: &[f64]) -> TractResult<Tensor> {
    let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    tensor1(&values).into_shape(&[1, values.len()])
}

/// Width both parameters agree on (1 broadcasts).
fn width_of(name: &str, a: usize, b: usize) -> TractResult<usize> {
    match (a, b) {
        (a, b) if a == b || b == 1 => Ok(a),
        (1, b) => Ok(b),
        _ => bail!("{name}: parameter lengths {a} and {b} disagree"),
    }
}

fn rank2_rules<'r, 'p: 'r>(
    s: &mut Solver<'r>,
    inputs: &'p [TensorProxy],
    outputs: &'p [TensorProxy],
    width: usize,
) -> InferenceResult {
    check_input_arity(inputs, 1)?;
    check_output_arity(outputs, 1)?;
    s.equals(&outputs[0].datum_type, DatumType::F32)?;
    s.equals(&inputs[0].rank, 2)?;
    s.equals(&outputs[0].rank, 2)?;
    s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
    if width > 1 {
        s.equals(&inputs[0].shape[1], width.to_dim())?;
    }
    s.equals(&outputs[0].shape[1], &inputs[0].shape[1])?;
    Ok(())
}

/// ONNX `Scaler`.
#[derive(Debug, Clone)]
struct Scaler {
    offset: Vec<f64>,
    scale: Vec<f64>,
}

pub(crate) fn scaler(_ctx: &ParsingContext<'_>, node: &NodeProto) -> Built {
    let offset = attributes::floats(node, "offset")?.unwrap_or_else(|| vec![0.0]);
    let scale = attributes::floats(node, "scale")?.unwrap_or_else(|| vec![1.0]);
    width_of("Scaler", offset.len(), scale.len())?;
    Ok((expand(Scaler { offset, scale }), vec![]))
}

impl Expansion for Scaler {
    fn name(&self) -> StaticName {
        "Scaler".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        let width = width_of("Scaler", self.offset.len(), self.scale.len())?;
        rank2_rules(s, inputs, outputs, width)
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let mut x = inputs[0];
        if model.outlet_fact(x)?.datum_type != f32::datum_type() {
            x = model.wire_node(
                format!("{prefix}.cast"),
                tract_core::ops::cast::cast(f32::datum_type()),
                &[x],
            )?[0];
        }
        let offset = model.add_const(format!("{prefix}.offset"), row(&self.offset)?)?;
        let scale = model.add_const(format!("{prefix}.scale"), row(&self.scale)?)?;
        let centred = model.wire_node(
            format!("{prefix}.centre"),
            tract_core::ops::math::sub(),
            &[x, offset],
        )?[0];
        model.wire_node(
            format!("{prefix}.scaled"),
            tract_core::ops::math::mul(),
            &[centred, scale],
        )
    }
}

/// ONNX `Imputer` (float form).
#[derive(Debug, Clone)]
struct Imputer {
    values: Vec<f32>,
    replaced: f32,
}

pub(crate) fn imputer(_ctx: &ParsingContext<'_>, node: &NodeProto) -> Built {
    let values: Vec<f32> = attributes::floats(node, "imputed_value_floats")?
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            format_err!("Imputer: only float imputation (imputed_value_floats) is supported")
        })?
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let replaced = attributes::float(node, "replaced_value_float").unwrap_or(f32::NAN);
    Ok((expand(Imputer { values, replaced }), vec![]))
}

impl Expansion for Imputer {
    fn name(&self) -> StaticName {
        "Imputer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        rank2_rules(s, inputs, outputs, self.values.len())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(
            prefix,
            OnePassOp(Impute {
                values: self.values.clone(),
                replaced_bits: self.replaced.to_bits(),
            }),
            inputs,
        )
    }
}

/// The typed form of `Imputer`: a value equal to `replaced` (or NaN when that is NaN) becomes
/// the column's imputed value.
#[derive(Debug, Clone)]
struct Impute {
    values: Vec<f32>,
    replaced_bits: u32,
}

impl Impute {
    fn replaced(&self) -> f32 {
        f32::from_bits(self.replaced_bits)
    }
}

// Equal when bit for bit equal (tract merges equal ops).
impl PartialEq for Impute {
    fn eq(&self, other: &Self) -> bool {
        self.replaced_bits == other.replaced_bits
            && self.values.len() == other.values.len()
            && self
                .values
                .iter()
                .zip(&other.values)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

impl Eq for Impute {}

impl OnePass for Impute {
    fn op_name(&self) -> StaticName {
        "Impute".into()
    }

    fn facts(&self, input: &TypedFact) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(input.shape.clone())))
    }

    fn compute(&self, input: &Tensor) -> TractResult<TVec<TValue>> {
        let mut output = input.clone();
        let width = output.shape().get(1).copied().unwrap_or(1);
        let replaced = self.replaced();
        let mut view = output.try_as_plain_ram_mut()?;
        let values = view.as_slice_mut::<f32>()?;
        for (i, v) in values.iter_mut().enumerate() {
            let missing = if replaced.is_nan() {
                v.is_nan()
            } else {
                *v == replaced
            };
            if missing {
                *v = if self.values.len() == 1 {
                    self.values[0]
                } else {
                    self.values[i % width]
                };
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }
}
