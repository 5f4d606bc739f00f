//! The offline comparison (`POST /api/v1/drift`) on real NATS, SQLite and S3: the scores it
//! reports for CSV samples equal Evidently's and scipy's (crates/drift's committed reference),
//! registered dataset versions compare the same, and bad requests get clear 4xx errors.

use anyhow::Context;
use bytes::Bytes;
use flywheel_artifacts::ArtifactStore;
use flywheel_bus::Bus;
use flywheel_events::payloads::DatasetVersionCreated;
use flywheel_events::{Envelope, Event};
use flywheel_runtime::ServiceSettings;
use flywheel_testkit::service::InProcess;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const COLUMNS: [&str; 7] = [
    "mean_shift",
    "variance_change",
    "tiny",
    "few_values",
    "ks_unequal_moderate",
    "new_category",
    "binary_shift",
];

fn reference() -> anyhow::Result<Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crates/drift/tests/reference/drift_reference.json"
    ))?)?)
}

/// One CSV of the chosen columns' `side` ("reference" or "current"); shorter columns are
/// padded with empty cells (missing values, which the comparison leaves out).
fn csv(reference: &Value, side: &str) -> anyhow::Result<String> {
    let columns: Vec<&Vec<Value>> = COLUMNS
        .iter()
        .map(|c| reference["columns"][c][side].as_array().context("values"))
        .collect::<anyhow::Result<_>>()?;
    let rows = columns.iter().map(|c| c.len()).max().unwrap_or(0);
    let mut out = COLUMNS.join(",") + "\n";
    for r in 0..rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match c.get(r) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => format!("{:?}", n.as_f64().unwrap_or(f64::NAN)),
                _ => String::new(),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    Ok(out)
}

async fn start(dir: &std::path::Path) -> anyhow::Result<(InProcess, ArtifactStore, Bus)> {
    let prefix = flywheel_testkit::unique_name();
    let mut settings = ServiceSettings::defaults_for("monitor", 0);
    settings.bus = flywheel_testkit::bus_config(&prefix);
    settings.db = flywheel_testkit::fresh_sqlite(dir);
    settings.artifacts = flywheel_testkit::s3_config(&flywheel_testkit::unique_name())?;
    let store = ArtifactStore::from_config(&settings.artifacts)?;
    let monitor = InProcess::start(settings, flywheel_monitor::run).await?;
    let bus = Bus::connect(&flywheel_testkit::bus_config(&prefix), "test").await?;
    Ok((monitor, store, bus))
}

fn check_against_reference(report: &Value, reference: &Value) {
    let columns = report["columns"].as_array().expect("columns");
    assert_eq!(columns.len(), COLUMNS.len(), "{report}");
    for column in columns {
        let name = column["column"].as_str().expect("name");
        let expected = &reference["columns"][name];
        assert_eq!(column["method"], expected["default_method"], "{name}");
        let theirs = expected["scores"][expected["default_method"].as_str().expect("method")]
            .as_f64()
            .expect("score");
        let ours = column["score"].as_f64().expect("score");
        assert!(
            (ours - theirs).abs() <= 1e-9 * theirs.abs().max(1e-300)
                || (ours - theirs).abs() < 1e-15,
            "{name}: {ours:e} vs Evidently's {theirs:e}"
        );
        let method =
            flywheel_drift::Method::parse(column["method"].as_str().expect("m")).expect("known");
        assert_eq!(
            column["drifted"],
            method.drifted(theirs, method.default_threshold()),
            "{name}: Evidently's verdict"
        );
    }
}

#[tokio::test]
async fn compares_csv_samples_and_dataset_versions_as_evidently_does() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (monitor, store, bus) = start(dir.path()).await?;
    let http = reqwest::Client::new();
    let reference = reference()?;
    let (ref_csv, cur_csv) = (csv(&reference, "reference")?, csv(&reference, "current")?);
    let response = http
        .post(monitor.url("/api/v1/drift"))
        .json(&json!({"reference": {"csv": ref_csv}, "current": {"csv": cur_csv}}))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await?;
    check_against_reference(&report, &reference);
    let drifted = report["columns"]
        .as_array()
        .context("columns")?
        .iter()
        .filter(|c| c["drifted"] == true)
        .count();
    assert!(drifted > 0 && drifted < COLUMNS.len(), "{report}");
    assert_eq!(report["drifted_columns"], drifted);
    let share = drifted as f64 / COLUMNS.len() as f64;
    assert_eq!(report["dataset_drift"], share >= 0.5);
    let kinds = |column: &str| -> Vec<String> {
        report["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["column"] == column)
            .map(|f| f["kind"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        kinds("new_category"),
        ["missing", "missing", "new_categories"],
        "{report}"
    );
    assert!(
        kinds("variance_change").is_empty(),
        "the longest column: nothing left out"
    );

    // The same data as registered dataset versions, read from S3 and checked against sha256.
    for (version, text) in [("v1", &ref_csv), ("v2", &cur_csv)] {
        let key = format!("datasets/drifting/{version}.csv");
        let bytes = Bytes::from(text.clone().into_bytes());
        store.put(&key, bytes.clone()).await?;
        bus.publish(&Envelope::new(
            "registry",
            "default",
            Event::DatasetVersionCreated(DatasetVersionCreated {
                dataset: "drifting".into(),
                version: version.into(),
                sha256: hex::encode(Sha256::digest(&bytes)),
                uri: store.uri(&key),
                format: "csv".into(),
                size_bytes: bytes.len() as u64,
                row_count: 0,
                columns: Vec::new(),
                profile_uri: None,
                previous_version: None,
            }),
        ))
        .await?;
    }
    let by_version = json!({
        "reference": {"dataset": "drifting", "version": "v1"},
        "current": {"dataset": "drifting", "version": "v2"},
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let report: Value = loop {
        let response = http
            .post(monitor.url("/api/v1/drift"))
            .json(&by_version)
            .send()
            .await?;
        if response.status() == 200 {
            break response.json().await?;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "versions never became known"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    check_against_reference(&report, &reference);

    // Overrides: a method and a threshold per column.
    let report: Value = http
        .post(monitor.url("/api/v1/drift"))
        .json(&json!({
            "reference": {"csv": ref_csv}, "current": {"csv": cur_csv},
            "columns": ["mean_shift"], "methods": {"mean_shift": "psi"}, "thresholds": {"mean_shift": 10.0},
        }))
        .send()
        .await?
        .json()
        .await?;
    let column = &report["columns"][0];
    let psi = reference["columns"]["mean_shift"]["scores"]["psi"]
        .as_f64()
        .context("psi")?;
    assert_eq!(column["method"], "psi");
    assert!((column["score"].as_f64().context("score")? - psi).abs() < 1e-9 * psi);
    assert_eq!(
        (column["threshold"].as_f64(), &column["drifted"]),
        (Some(10.0), &json!(false))
    );

    // Bad requests: 4xx with a message (422 when the body does not fit the request's shape).
    for (body, status, needle) in [
        (json!({"reference": {"csv": "a\n1\n"}}), 422, "current"),
        (
            json!({"reference": {"csv": "a\n1\n"}, "current": {"csv": "b\n1\n"}}),
            400,
            "no column in common",
        ),
        (
            json!({"reference": {"csv": ref_csv}, "current": {"csv": cur_csv}, "methods": {"tiny": "magic"}}),
            400,
            "unknown method",
        ),
        (
            json!({"reference": {"dataset": "nope", "version": "x"}, "current": {"csv": cur_csv}}),
            404,
            "not known",
        ),
        (
            json!({"reference": {"csv": "a,b\n1\n2,3,4\n"}, "current": {"csv": cur_csv}}),
            400,
            "reference",
        ),
    ] {
        let response = http
            .post(monitor.url("/api/v1/drift"))
            .json(&body)
            .send()
            .await?;
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await?;
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle)),
            "{error}"
        );
    }
    monitor.stop().await?;
    flywheel_testkit::cleanup_bus(&bus).await;
    Ok(())
}
