//! The `ai.onnx.ml` operators scikit-learn exports need and tract lacks or gets wrong, registered
//! in tract's operator registry: `Scaler`, `Imputer`, `TreeEnsembleRegressor`, and a
//! `TreeEnsembleClassifier` that replaces tract's (which walks every leaf of every tree, labels
//! binary forests 0 and refuses binary gradient boosting), and a one-pass `LinearClassifier`
//! (tract's chains a dozen small ops, slow on batches).

mod attributes;
mod linear;
mod one_pass;
mod scaling;
mod scores;
mod trees;

use tract_onnx::Onnx;

/// tract's ONNX loader with the project's operators in its registry.
pub(crate) fn onnx() -> Onnx {
    let mut onnx = tract_onnx::onnx();
    onnx.op_register.insert("Scaler", scaling::scaler);
    onnx.op_register.insert("Imputer", scaling::imputer);
    onnx.op_register
        .insert("TreeEnsembleClassifier", trees::classifier);
    onnx.op_register
        .insert("TreeEnsembleRegressor", trees::regressor);
    onnx.op_register
        .insert("LinearClassifier", linear::classifier);
    onnx
}
