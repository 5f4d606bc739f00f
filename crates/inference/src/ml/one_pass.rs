//! The tract plumbing of the project's operators, written once: each computes its outputs from
//! one input, read as f32, in a single pass.

use tract_onnx::tract_hir::internal::*;

/// What an operator computes.
pub(crate) trait OnePass: std::fmt::Debug + Clone + Send + Sync + Eq + 'static {
    /// The operator's name in plans and errors.
    fn op_name(&self) -> StaticName;
    /// The output facts for the input's.
    fn facts(&self, input: &TypedFact) -> TractResult<TVec<TypedFact>>;
    /// The outputs for an f32 input.
    fn compute(&self, input: &Tensor) -> TractResult<TVec<TValue>>;
}

/// A [`OnePass`] as a tract typed op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OnePassOp<T>(pub(crate) T);

impl<T: OnePass> Op for OnePassOp<T> {
    fn name(&self) -> StaticName {
        self.0.op_name()
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl<T: OnePass> EvalOp for OnePassOp<T> {
    fn eval(&self, _ctx: &EvalContext<'_>, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = inputs
            .into_iter()
            .next()
            .ok_or_else(|| format_err!("{} takes one input", self.0.op_name()))?;
        let input = input.cast_to::<f32>()?;
        self.0.compute(&input)
    }

    fn eval_out_of_plan(&self, inputs: TVec<TValue>) -> TractResult<Option<TVec<TValue>>> {
        Ok(Some(self.eval(&EvalContext::out_of_plan(), inputs)?))
    }
}

impl<T: OnePass> TypedOp for OnePassOp<T> {
    fn as_op(&self) -> &dyn Op {
        self
    }

    fn as_op_mut(&mut self) -> &mut dyn Op {
        self
    }

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let input = inputs
            .first()
            .ok_or_else(|| format_err!("{} takes one input", self.0.op_name()))?;
        self.0.facts(input)
    }
}
