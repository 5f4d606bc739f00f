//! `LinearClassifier` in one pass per row: scores = x·Wᵀ + b (accumulated in f64), the post
//! transform, and the label of the highest score; ONNX Runtime's binary single-model layout
//! (one score s: label by s > 0, probabilities [−s, s] transformed) included.

use std::sync::Arc;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::attributes;
use super::one_pass::{OnePass, OnePassOp};
use super::scores::{Labels, PostTransform, output_rules};

type Built = TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

/// Weights and how scores become outputs.
#[derive(Debug)]
struct Linear {
    /// `models × features`, row-major.
    coefficients: Vec<f64>,
    intercepts: Vec<f64>,
    models: usize,
    features: usize,
    post_transform: PostTransform,
    labels: Labels,
}

impl Linear {
    /// One model's score for two classes: ONNX's binary layout.
    fn single_score(&self) -> bool {
        self.models == 1 && self.labels.len() == 2
    }

    fn columns(&self) -> usize {
        if self.single_score() { 2 } else { self.models }
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<TValue>> {
        let shape = input.shape();
        if shape.len() != 2 || shape[1] != self.features {
            bail!(
                "LinearClassifier takes [rows, {}] inputs, got {shape:?}",
                self.features
            );
        }
        let rows = shape[0];
        let data = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let mut winners = Vec::with_capacity(rows);
        let mut probabilities = Vec::with_capacity(rows * self.columns());
        let mut scores = vec![0.0; self.models];
        for row in data.chunks_exact(self.features.max(1)).take(rows) {
            for (m, score) in scores.iter_mut().enumerate() {
                let weights = &self.coefficients[m * self.features..(m + 1) * self.features];
                *score = weights
                    .iter()
                    .zip(row)
                    .map(|(w, x)| w * f64::from(*x))
                    .sum::<f64>()
                    + self.intercepts.get(m).copied().unwrap_or(0.0);
            }
            if self.single_score() {
                let s = scores[0];
                winners.push(usize::from(s > 0.0));
                let mut pair = [-s, s];
                self.post_transform.apply(&mut pair);
                probabilities.extend(pair.iter().map(|&p| p as f32));
            } else {
                winners.push(Labels::argmax(&scores));
                self.post_transform.apply(&mut scores);
                probabilities.extend(scores.iter().map(|&p| p as f32));
            }
        }
        let probabilities = tensor1(&probabilities).into_shape(&[rows, self.columns()])?;
        Ok(tvec!(
            self.labels.pick(&winners).into_tvalue(),
            probabilities.into_tvalue()
        ))
    }
}

/// The typed op.
#[derive(Debug, Clone)]
struct LinearOp(Arc<Linear>);

impl PartialEq for LinearOp {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for LinearOp {}

impl OnePass for LinearOp {
    fn op_name(&self) -> StaticName {
        "FlatLinearClassifier".into()
    }

    fn facts(&self, input: &TypedFact) -> TractResult<TVec<TypedFact>> {
        let rows = input.shape[0].clone();
        Ok(tvec!(
            TypedFact::dt_shape(self.0.labels.datum_type(), std::slice::from_ref(&rows)),
            f32::fact(&[rows, self.0.columns().to_dim()])
        ))
    }

    fn compute(&self, input: &Tensor) -> TractResult<TVec<TValue>> {
        Linear::eval(&self.0, input)
    }
}

/// The inference-time form.
#[derive(Debug, Clone)]
struct LinearClassifier(LinearOp);

impl Expansion for LinearClassifier {
    fn name(&self) -> StaticName {
        "LinearClassifier".into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(2)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        let linear = &self.0.0;
        output_rules(s, inputs, outputs, Some(&linear.labels), linear.columns())?;
        s.equals(&inputs[0].shape[1], linear.features.to_dim())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, OnePassOp(self.0.clone()), inputs)
    }
}

pub(crate) fn classifier(_ctx: &ParsingContext<'_>, node: &NodeProto) -> Built {
    let labels = Labels::parse(node, "classlabels_ints", "classlabels_strings")?;
    let coefficients = attributes::required_floats(node, "coefficients")?;
    let intercepts = attributes::floats(node, "intercepts")?.unwrap_or_default();
    let models = if !intercepts.is_empty() {
        intercepts.len()
    } else if labels.len() == 2 && coefficients.len() % 2 == 1 {
        1
    } else {
        labels.len()
    };
    if models == 0 || coefficients.is_empty() || coefficients.len() % models != 0 {
        bail!(
            "LinearClassifier: {} coefficients do not split into {models} models",
            coefficients.len()
        );
    }
    if models != 1 && models != labels.len() {
        bail!(
            "LinearClassifier: {models} models for {} classes",
            labels.len()
        );
    }
    let features = coefficients.len() / models;
    let post_transform = PostTransform::parse(attributes::string(node, "post_transform")?)?;
    let linear = Linear {
        coefficients,
        intercepts,
        models,
        features,
        post_transform,
        labels,
    };
    Ok((expand(LinearClassifier(LinearOp(Arc::new(linear)))), vec![]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ONNX's binary single-model layout: one margin s; label 1 when s > 0; scores [−s, s].
    #[test]
    fn one_model_for_two_classes_scores_both() {
        let linear = Linear {
            coefficients: vec![1.0, -1.0],
            intercepts: vec![0.5],
            models: 1,
            features: 2,
            post_transform: PostTransform::None,
            labels: Labels::Ints(vec![7, 9]),
        };
        let input = tensor1(&[1.0f32, 0.0, 0.0, 2.0])
            .into_shape(&[2, 2])
            .expect("shape");
        let outputs = linear.eval(&input).expect("runs");
        let labels = outputs[0].to_plain_array_view::<i64>().expect("labels");
        assert_eq!(labels.iter().copied().collect::<Vec<_>>(), [9, 7]);
        let scores = outputs[1].to_plain_array_view::<f32>().expect("scores");
        assert_eq!(
            scores.iter().copied().collect::<Vec<_>>(),
            [-1.5, 1.5, 1.5, -1.5]
        );
    }
}
