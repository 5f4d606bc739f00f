//! Every statistic against Evidently 0.7 and scipy on the committed samples
//! (tests/reference/make_reference.py made them): tolerance 1e-9 relative.

use flywheel_drift::{
    Column, Method, column_drift, dataset_drifted, default_method, kolmogorov, stats,
};
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(include_str!("reference/drift_reference.json")).expect("reference")
}

/// Relative agreement, with an absolute floor for values near zero.
fn close(ours: f64, theirs: f64) -> bool {
    if theirs.is_nan() || ours.is_nan() {
        return theirs.is_nan() && ours.is_nan();
    }
    if theirs.is_infinite() || ours.is_infinite() {
        return ours == theirs;
    }
    (ours - theirs).abs() <= 1e-9 * theirs.abs().max(1e-300) || (ours - theirs).abs() < 1e-15
}

struct Case {
    numbers: (Vec<f64>, Vec<f64>),
    words: (Vec<String>, Vec<String>),
    numeric: bool,
}

impl Case {
    fn of(entry: &Value) -> Self {
        let numeric = entry["kind"] == "numeric";
        let list = |key: &str| entry[key].as_array().expect("values").clone();
        let (r, c) = (list("reference"), list("current"));
        if numeric {
            let f = |v: &[Value]| v.iter().map(|x| x.as_f64().expect("number")).collect();
            Case {
                numbers: (f(&r), f(&c)),
                words: (Vec::new(), Vec::new()),
                numeric,
            }
        } else {
            let s = |v: &[Value]| {
                v.iter()
                    .map(|x| x.as_str().expect("text").to_owned())
                    .collect()
            };
            Case {
                numbers: (Vec::new(), Vec::new()),
                words: (s(&r), s(&c)),
                numeric,
            }
        }
    }
}

fn with_columns<T>(case: &Case, f: impl FnOnce(Column<'_>, Column<'_>) -> T) -> T {
    if case.numeric {
        f(
            Column::Numeric(&case.numbers.0),
            Column::Numeric(&case.numbers.1),
        )
    } else {
        let r: Vec<&str> = case.words.0.iter().map(String::as_str).collect();
        let c: Vec<&str> = case.words.1.iter().map(String::as_str).collect();
        f(Column::Categorical(&r), Column::Categorical(&c))
    }
}

#[test]
fn every_statistic_agrees_with_evidently_and_scipy() {
    let r = reference();
    let columns = r["columns"].as_object().expect("columns");
    assert!(columns.len() >= 15);
    let mut failures = Vec::new();
    let mut compared = 0;
    for (name, entry) in columns {
        let case = Case::of(entry);
        with_columns(&case, |reference, current| {
            let default = default_method(&reference, &current);
            if default.name() != entry["default_method"] {
                failures.push(format!(
                    "{name}: default {} vs {}",
                    default.name(),
                    entry["default_method"]
                ));
            }
            for (method, theirs) in entry["scores"].as_object().expect("scores") {
                let theirs = theirs.as_f64().unwrap_or(f64::NAN);
                let method = Method::parse(method).expect("known method");
                let ours = match column_drift(&reference, &current, Some(method), None) {
                    Ok(d) => d.score,
                    Err(e) => {
                        failures.push(format!("{name}.{}: {e}", method.name()));
                        continue;
                    }
                };
                compared += 1;
                if !close(ours, theirs) {
                    failures.push(format!("{name}.{}: {ours:e} vs {theirs:e}", method.name()));
                }
            }
            if let Some(d) = entry["ks_statistic"].as_f64() {
                let (ours, _) = stats::ks(&case.numbers.0, &case.numbers.1).expect("ks");
                if !close(ours, d) {
                    failures.push(format!("{name}.ks statistic: {ours} vs {d}"));
                }
            }
        });
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(compared >= 80, "{compared} comparisons");
}

#[test]
fn verdicts_follow_evidentlys_operators_and_share_rule() {
    // p-values: ks drifts at p <= threshold, chi-square and z below it; distances at or above.
    assert!(Method::Ks.drifted(0.05, 0.05));
    assert!(!Method::ChiSquare.drifted(0.05, 0.05));
    assert!(!Method::Z.drifted(0.05, 0.05));
    assert!(Method::Psi.drifted(0.1, 0.1));
    assert!(!Method::Wasserstein.drifted(0.0999, 0.1));
    let r = reference();
    let mut verdicts = Vec::new();
    for (_, entry) in r["columns"].as_object().expect("columns") {
        let case = Case::of(entry);
        verdicts.push(with_columns(&case, |a, b| column_drift(&a, &b, None, None)).expect("drift"));
    }
    let drifted = verdicts.iter().filter(|v| v.drifted).count();
    let share = drifted as f64 / verdicts.len() as f64;
    assert!(
        drifted > 0 && drifted < verdicts.len(),
        "{drifted} of {}",
        verdicts.len()
    );
    assert!(dataset_drifted(&verdicts, share));
    assert!(!dataset_drifted(&verdicts, share + 1e-9));
}

#[test]
fn bad_samples_are_errors_not_panics() {
    let empty: [f64; 0] = [];
    let some = [1.0, 2.0];
    assert!(
        column_drift(
            &Column::Numeric(&empty),
            &Column::Numeric(&some),
            None,
            None
        )
        .is_err()
    );
    let words = ["a"];
    assert!(
        column_drift(
            &Column::Numeric(&some),
            &Column::Categorical(&words),
            None,
            None
        )
        .is_err()
    );
    assert!(
        column_drift(
            &Column::Categorical(&words),
            &Column::Categorical(&words),
            Some(Method::Ks),
            None
        )
        .is_err()
    );
}

#[test]
fn the_kolmogorov_distribution_agrees_with_scipys_kstwo() {
    let r = reference();
    let grid = r["kolmogorov_sf"].as_array().expect("grid");
    assert!(grid.len() > 60);
    let mut failures = Vec::new();
    for point in grid {
        let n = point[0].as_u64().expect("n");
        let x = point[1].as_f64().expect("x");
        let theirs = point[2].as_f64().expect("sf");
        let ours = kolmogorov::sf(n, x);
        if !close(ours, theirs) {
            failures.push(format!("sf({n}, {x}) = {ours:e}, scipy {theirs:e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn large_samples_take_scipys_asymptotic_path() {
    let r = reference();
    let case = &r["ks_large"];
    let values = |key: &str| -> Vec<f64> {
        case[key]
            .as_array()
            .expect("values")
            .iter()
            .map(|v| v.as_f64().expect("number"))
            .collect()
    };
    let (d, p) = stats::ks(&values("reference"), &values("current")).expect("ks");
    assert!(close(d, case["statistic"].as_f64().expect("d")), "{d}");
    assert!(
        close(p, case["p_value"].as_f64().expect("p")),
        "{p} vs {}",
        case["p_value"]
    );
}

#[test]
fn count_vectors_give_the_same_psi_and_jensen_shannon() {
    // What the monitor's windows hold: counts per bin (here per category) on both sides.
    let r = reference();
    for name in ["categories_same", "new_category", "large_categories"] {
        let entry = &r["columns"][name];
        let case = Case::of(entry);
        let mut keys: Vec<&String> = case.words.0.iter().chain(&case.words.1).collect();
        keys.sort();
        keys.dedup();
        let counts = |values: &[String]| -> Vec<f64> {
            keys.iter()
                .map(|k| values.iter().filter(|v| v == k).count() as f64)
                .collect()
        };
        let (rc, cc) = (counts(&case.words.0), counts(&case.words.1));
        let psi = stats::psi_of_counts(&rc, &cc);
        let js = stats::jensen_shannon_of_counts(&rc, &cc);
        assert!(
            close(psi, entry["scores"]["psi"].as_f64().expect("psi")),
            "{name}: {psi}"
        );
        assert!(
            close(js, entry["scores"]["jensenshannon"].as_f64().expect("js")),
            "{name}: {js}"
        );
    }
}
