//! ONNX exports of scikit-learn models, run with tract and the project's own `ai.onnx.ml`
//! operators, agree with scikit-learn's own answers (tests/reference/make_onnx.py made both):
//! every family in the reference, every output, tolerance 1e-5 (labels exactly).

use flywheel_inference::{OnnxError, OnnxModel, OutputData};
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(include_str!("reference/onnx_reference.json")).expect("reference")
}

fn model(name: &str) -> Result<OnnxModel, OnnxError> {
    let path = format!("{}/tests/reference/{name}.onnx", env!("CARGO_MANIFEST_DIR"));
    OnnxModel::load(&std::fs::read(path).expect("fixture"))
}

/// Rows as one row-major buffer; null is a missing value (NaN).
fn rows(entry: &Value) -> (usize, Vec<f32>) {
    let rows = entry["rows"].as_array().expect("rows");
    let data = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|v| v.as_f64().map_or(f32::NAN, |x| x as f32))
        })
        .collect();
    (rows.len(), data)
}

fn flatten(value: &Value, into: &mut Vec<f64>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, into)),
        other => into.push(other.as_f64().expect("number")),
    }
}

#[test]
fn every_exported_family_agrees_with_scikit_learn() {
    let r = reference();
    let models = r["models"].as_object().expect("models");
    assert!(models.len() >= 25, "the reference covers the families");
    let mut failures = Vec::new();
    for (name, entry) in models {
        let model = match model(name) {
            Ok(model) => model,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let (n, data) = rows(entry);
        let outputs = model.run(n, data).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = entry["outputs"].as_object().expect("outputs");
        assert_eq!(outputs.len(), expected.len(), "{name}: outputs");
        for output in &outputs {
            let mut theirs = Vec::new();
            flatten(&expected[&output.name], &mut theirs);
            let ours: Vec<f64> = match &output.data {
                OutputData::I64(v) => v.iter().map(|&x| x as f64).collect(),
                OutputData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
                OutputData::F64(v) => v.clone(),
                OutputData::Strings(_) => panic!("{name}: string labels not expected"),
            };
            assert_eq!(ours.len(), theirs.len(), "{name}.{}: size", output.name);
            assert_eq!(output.shape[0], n, "{name}.{}: rows", output.name);
            for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                let exact = matches!(output.data, OutputData::I64(_));
                let close = if exact {
                    a == b
                } else {
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0)
                };
                if !close {
                    failures.push(format!("{name}.{}[{i}]: {a} vs {b}", output.name));
                    break;
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn graphs_tract_cannot_run_are_refused_with_the_operator_named() {
    let r = reference();
    let refused = r["refused"].as_object().expect("refused");
    assert!(!refused.is_empty());
    for (name, operator) in refused {
        let err = model(name).expect_err("refused");
        let operator = operator.as_str().expect("operator");
        assert!(err.to_string().contains(operator), "{name}: {err}");
    }
}

#[test]
fn bad_models_and_bad_input_are_named() {
    let err = OnnxModel::load(b"not a model").expect_err("garbage");
    assert!(matches!(err, OnnxError::Load(_)), "{err}");
    let model = model("logistic_binary").expect("loads");
    assert_eq!(model.width(), 6);
    assert_eq!(model.output_names(), ["label", "probabilities"]);
    let err = model.run(2, vec![0.0; 5]).expect_err("too few values");
    assert!(
        err.to_string()
            .contains("5 values for 2 rows of 6 features"),
        "{err}"
    );
}
