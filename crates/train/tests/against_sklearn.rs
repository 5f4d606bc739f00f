//! The built-in trainers against scikit-learn on identical rows, and the metrics against
//! sklearn.metrics on fixed predictions. Reference values: tests/reference/make_reference.py.

use std::collections::BTreeMap;

use flywheel_events::payloads::Params;
use flywheel_train::{metrics, train, train_and_evaluate};
use serde_json::{Value, json};

fn reference() -> Value {
    let text = include_str!("reference/reference.json");
    serde_json::from_str(text).expect("reference.json")
}

fn table(name: &str) -> flywheel_data::Table {
    let path = format!("{}/tests/reference/{name}.csv", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).expect("fixture");
    flywheel_data::read(bytes.into(), flywheel_data::Format::Csv).expect("csv")
}

fn params(value: Value) -> Params {
    serde_json::from_value(value).expect("params")
}

fn fit(dataset: &str, algorithm: &str, p: Value) -> BTreeMap<String, f64> {
    let trained = train_and_evaluate(
        &table(&format!("{dataset}_train")),
        &table(&format!("{dataset}_test")),
        algorithm,
        &params(p),
        &mut |_, _| {},
    )
    .expect("trains");
    trained.metrics
}

fn close(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: flywheel {actual} vs scikit-learn {expected} (tolerance {tolerance})"
    );
}

#[test]
fn classifiers_reach_scikit_learn_accuracy() {
    let r = reference();
    let models = &r["models"];
    for (dataset, algorithm, p, tolerance) in [
        (
            "binary",
            "logistic_regression",
            json!({"target": "label"}),
            0.02,
        ),
        (
            "binary",
            "decision_tree",
            json!({"target": "label", "max_depth": 6}),
            0.04,
        ),
        ("binary", "random_forest", json!({"target": "label"}), 0.03),
        (
            "multiclass",
            "logistic_regression",
            json!({"target": "label"}),
            0.02,
        ),
        (
            "multiclass",
            "random_forest",
            json!({"target": "label"}),
            0.03,
        ),
    ] {
        let ours = fit(dataset, algorithm, p);
        let theirs = &models[format!("{dataset}/{algorithm}")];
        let expected = theirs["accuracy"].as_f64().expect("accuracy");
        // "Reach": not worse than scikit-learn by more than the tolerance.
        assert!(
            ours["accuracy"] >= expected - tolerance,
            "{dataset}/{algorithm}: accuracy {} vs scikit-learn {expected}",
            ours["accuracy"]
        );
        if let Some(auc) = theirs["roc_auc"].as_f64() {
            assert!(
                ours["roc_auc"] >= auc - tolerance,
                "{dataset}/{algorithm}: roc_auc {} vs {auc}",
                ours["roc_auc"]
            );
        }
    }
}

#[test]
fn regressors_match_scikit_learn() {
    let r = reference();
    let models = &r["models"];
    // Closed-form models agree to numerical precision.
    for algorithm in ["linear_regression", "ridge"] {
        let ours = fit("regression", algorithm, json!({"target": "label"}));
        let theirs = &models[format!("regression/{algorithm}")];
        for metric in ["rmse", "mae", "r2"] {
            close(
                ours[metric],
                theirs[metric].as_f64().expect("metric"),
                1e-6,
                metric,
            );
        }
    }
    let ours = fit("regression", "random_forest", json!({"target": "label"}));
    let theirs = &models["regression/random_forest"];
    assert!(
        ours["r2"] >= theirs["r2"].as_f64().expect("r2") - 0.03,
        "forest r2 {} vs {}",
        ours["r2"],
        theirs["r2"]
    );
}

#[test]
fn kmeans_inertia_is_close_to_scikit_learn() {
    let r = reference();
    let expected = r["models"]["multiclass/kmeans"]["inertia"]
        .as_f64()
        .expect("inertia");
    let train = table("multiclass_train");
    let test = table("multiclass_test");
    let trained = train_and_evaluate(
        &train,
        &test,
        "kmeans",
        &params(json!({"n_clusters": 3, "features": ["f0", "f1", "f2", "f3", "f4", "f5"]})),
        &mut |_, _| {},
    )
    .expect("kmeans");
    let ours = trained.metrics["inertia"];
    assert!(
        ours <= expected * 1.05,
        "k-means inertia {ours} vs scikit-learn {expected}"
    );
}

#[test]
fn metrics_equal_sklearn_metrics() {
    let r = reference();
    let m = &r["metrics"];
    let ints = |v: &Value| -> Vec<usize> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|x| usize::try_from(x.as_u64().expect("int")).expect("usize"))
            .collect()
    };
    let floats = |v: &Value| -> Vec<f64> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|x| x.as_f64().expect("float"))
            .collect()
    };
    let b = &m["binary"];
    let score = floats(&b["score"]);
    let proba: Vec<Vec<f64>> = score.iter().map(|s| vec![1.0 - s, *s]).collect();
    let ours = metrics::classification(&ints(&b["truth"]), &ints(&b["pred"]), &proba, 2);
    for key in [
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "log_loss",
    ] {
        close(ours[key], b[key].as_f64().expect("value"), 1e-12, key);
    }
    let c = &m["multiclass"];
    let proba: Vec<Vec<f64>> = c["proba"]
        .as_array()
        .expect("proba")
        .iter()
        .map(floats)
        .collect();
    let ours = metrics::classification(&ints(&c["truth"]), &ints(&c["pred"]), &proba, 3);
    for key in [
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "log_loss",
    ] {
        close(ours[key], c[key].as_f64().expect("value"), 1e-12, key);
    }
    let g = &m["regression"];
    let ours = metrics::regression(&floats(&g["truth"]), &floats(&g["pred"]));
    for key in ["rmse", "mae", "r2"] {
        close(ours[key], g[key].as_f64().expect("value"), 1e-12, key);
    }
}

#[test]
fn same_data_params_and_seed_give_identical_model_bytes() {
    let data = table("binary_train");
    for algorithm in ["logistic_regression", "random_forest", "kmeans", "ridge"] {
        let p = if algorithm == "kmeans" {
            json!({"n_clusters": 2})
        } else {
            json!({"target": "label", "seed": 9})
        };
        let a = train(&data, algorithm, &params(p.clone()), &mut |_, _| {}).expect("first");
        let b = train(&data, algorithm, &params(p), &mut |_, _| {}).expect("second");
        assert_eq!(
            a.model_bytes(),
            b.model_bytes(),
            "{algorithm} is reproducible"
        );
        assert_eq!(a.metrics, b.metrics);
    }
    let a = train(
        &data,
        "random_forest",
        &params(json!({"target": "label", "seed": 1})),
        &mut |_, _| {},
    )
    .expect("seed 1");
    let b = train(
        &data,
        "random_forest",
        &params(json!({"target": "label", "seed": 2})),
        &mut |_, _| {},
    )
    .expect("seed 2");
    assert_ne!(a.model_bytes(), b.model_bytes(), "the seed matters");
}

#[test]
fn bad_parameters_and_data_are_named() {
    let data = table("binary_train");
    let err = train(&data, "no_such", &Params::new(), &mut |_, _| {}).expect_err("unknown");
    assert!(
        err.to_string().contains("unknown algorithm `no_such`"),
        "{err}"
    );
    let err =
        train(&data, "ridge", &params(json!({"alpah": 1})), &mut |_, _| {}).expect_err("typo");
    assert!(err.to_string().contains("alpah"), "{err}");
    let err = train(
        &data,
        "ridge",
        &params(json!({"alpha": -1})),
        &mut |_, _| {},
    )
    .expect_err("negative");
    assert!(err.to_string().contains("`alpha`"), "{err}");
    let err = train(
        &data,
        "logistic_regression",
        &params(json!({"target": "nope"})),
        &mut |_, _| {},
    )
    .expect_err("target");
    assert!(err.to_string().contains("target `nope`"), "{err}");
}
