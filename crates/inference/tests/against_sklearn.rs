//! ONNX exports of scikit-learn models, run with tract, agree with scikit-learn's own
//! predictions (tests/reference/make_onnx.py made both).

use flywheel_inference::{OnnxError, OnnxModel, OutputData};
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(include_str!("reference/onnx_reference.json")).expect("reference")
}

fn model(name: &str) -> Result<OnnxModel, OnnxError> {
    let path = format!("{}/tests/reference/{name}.onnx", env!("CARGO_MANIFEST_DIR"));
    OnnxModel::load(&std::fs::read(path).expect("fixture"))
}

fn rows(entry: &Value) -> (usize, Vec<f32>) {
    let rows = entry["rows"].as_array().expect("rows");
    let data = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|v| v.as_f64().expect("number") as f32)
        })
        .collect();
    (rows.len(), data)
}

#[test]
fn classifiers_agree_with_scikit_learn() {
    let r = reference();
    for name in [
        "logistic_binary",
        "logistic_multiclass",
        "tree_multiclass",
        "forest_multiclass",
    ] {
        let entry = &r["models"][name];
        let model = model(name).expect("loads");
        assert_eq!(model.input_name(), "X");
        let (n, data) = rows(entry);
        let outputs = model.run(n, data).expect("runs");
        let OutputData::I64(labels) = &outputs[0].data else {
            panic!("{name}: labels are INT64");
        };
        let expected: Vec<i64> = entry["labels"]
            .as_array()
            .expect("labels")
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        assert_eq!(labels, &expected, "{name}: labels");
        let OutputData::F32(probabilities) = &outputs[1].data else {
            panic!("{name}: probabilities are FP32");
        };
        let expected: Vec<f64> = entry["probabilities"]
            .as_array()
            .expect("probabilities")
            .iter()
            .flat_map(|row| {
                row.as_array()
                    .expect("row")
                    .iter()
                    .filter_map(Value::as_f64)
            })
            .collect();
        assert_eq!(probabilities.len(), expected.len());
        for (ours, theirs) in probabilities.iter().zip(&expected) {
            assert!(
                (f64::from(*ours) - theirs).abs() < 1e-5,
                "{name}: {ours} vs {theirs}"
            );
        }
    }
}

#[test]
fn regressors_agree_with_scikit_learn() {
    let r = reference();
    let entry = &r["models"]["linear_regression"];
    let model = model("linear_regression").expect("loads");
    let (n, data) = rows(entry);
    let outputs = model.run(n, data).expect("runs");
    let OutputData::F32(values) = &outputs[0].data else {
        panic!("values are FP32");
    };
    assert_eq!(outputs[0].shape, [n, 1]);
    for (ours, theirs) in values
        .iter()
        .zip(entry["values"].as_array().expect("values"))
    {
        let theirs = theirs.as_f64().expect("value");
        assert!(
            (f64::from(*ours) - theirs).abs() <= 1e-4 * theirs.abs().max(1.0),
            "{ours} vs {theirs}"
        );
    }
}

#[test]
fn unsupported_operators_and_bad_input_are_named() {
    let err = model("scaled_logistic").expect_err("Scaler is not in tract");
    assert!(err.to_string().contains("Scaler"), "{err}");
    let err = OnnxModel::load(b"not a model").expect_err("garbage");
    assert!(matches!(err, OnnxError::Load(_)), "{err}");
    let model = model("logistic_binary").expect("loads");
    assert_eq!(model.width(), 6);
    let err = model.run(2, vec![0.0; 5]).expect_err("too few values");
    assert!(
        err.to_string()
            .contains("5 values for 2 rows of 6 features"),
        "{err}"
    );
}
