//! Datasets through the native API: content addressing, profiles, validation suites, events,
//! push by reference, and refusal of bad files.

use std::time::{Duration, Instant};

use flywheel_bus::{Bus, StreamKind};
use flywheel_events::Event;
use serde_json::{Value, json};

use crate::helpers::Registry;

on_both_backends!(
    same_bytes_same_version_and_profiles,
    validation_names_failures_and_announces_them,
    bad_files_are_refused_and_nothing_is_stored
);

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../crates/data/tests/reference/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn push(
    r: &Registry,
    dataset: &str,
    body: Vec<u8>,
    content_type: &str,
) -> anyhow::Result<(u16, Value)> {
    let response = r
        .http
        .post(r.url(&format!("/api/v1/datasets/{dataset}/versions")))
        .header("content-type", content_type)
        .header("x-flywheel-actor", "alice")
        .body(body)
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

async fn same_bytes_same_version_and_profiles(r: &Registry) -> anyhow::Result<()> {
    let (status, first) = push(r, "customers", fixture("customers.csv"), "text/csv").await?;
    assert_eq!(status, 201, "{first}");
    let version = first["version"].as_str().expect("version").to_owned();
    assert_eq!(version.len(), 16);
    assert_eq!(first["row_count"], 1000);
    assert_eq!(first["format"], "csv");
    assert_eq!(
        first["columns"][1],
        json!({"name": "age", "data_type": "int", "nullable": true})
    );
    let (status, again) = push(r, "customers", fixture("customers.csv"), "text/csv").await?;
    assert_eq!(
        (status, again["version"].as_str()),
        (200, Some(version.as_str())),
        "same bytes, same version"
    );

    // The same rows as Parquet are other bytes: a second version that follows the first.
    let (status, parquet) = push(
        r,
        "customers",
        fixture("customers.parquet"),
        "application/octet-stream",
    )
    .await?;
    assert_eq!(status, 201);
    assert_eq!(parquet["format"], "parquet");
    assert_eq!(parquet["seq"], 2);
    assert_eq!(parquet["previous_version"], version.as_str());

    // By reference: an object already in the artifact store.
    let store = flywheel_artifacts::ArtifactStore::from_config(&r.artifacts)?;
    store
        .put("incoming/customers.csv", fixture("customers.csv").into())
        .await?;
    let response = r
        .http
        .post(r.url("/api/v1/datasets/customers/versions"))
        .json(&json!({"key": "incoming/customers.csv"}))
        .send()
        .await?;
    assert_eq!(
        response.status(),
        200,
        "a reference to known bytes is the known version"
    );
    let by_reference: Value = response.json().await?;
    assert_eq!(by_reference["version"], version.as_str());

    let listed: Value = r
        .http
        .get(r.url("/api/v1/datasets/customers/versions"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    let profile: Value = r
        .http
        .get(r.url(&format!(
            "/api/v1/datasets/customers/versions/{version}/profile"
        )))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(profile["row_count"], 1000);
    let age = profile["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .find(|c| c["name"] == "age")
        .expect("age")
        .clone();
    assert_eq!(
        age["numeric"]["histogram"]["edges"]
            .as_array()
            .map(Vec::len),
        Some(21),
        "stable bin edges stored for the monitor"
    );
    assert_eq!(age["numeric"]["min"], 18.0);
    let plan = profile["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .find(|c| c["name"] == "plan")
        .expect("plan")
        .clone();
    assert_eq!(plan["categorical"]["top"][0][0], "basic");
    Ok(())
}

async fn validation_names_failures_and_announces_them(r: &Registry) -> anyhow::Result<()> {
    let suite = json!([
        {"type": "allowed_values", "column": "plan", "values": ["basic", "pro", "trial"]},
        {"type": "value_range", "column": "age", "min": 18, "max": 100},
        {"type": "not_null_ratio", "column": "income", "min": 0.5},
        {"type": "schema_unchanged"}
    ]);
    let response = r
        .http
        .put(r.url("/api/v1/datasets/churn-data/suite"))
        .json(&suite)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let (status, pushed) = push(r, "churn-data", fixture("customers.csv"), "text/csv").await?;
    assert_eq!(status, 201);
    assert_eq!(pushed["validation_passed"], false);
    let failed: Vec<&Value> = pushed["validation"]
        .as_array()
        .expect("validation")
        .iter()
        .filter(|o| o["passed"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["expectation"], "allowed_values(plan)");
    assert!(
        failed[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("'enterprise'"),
        "offending values summarised"
    );

    let bus = Bus::connect(&flywheel_testkit::bus_config(&r.prefix), "probe").await?;
    let mut stream = bus
        .jetstream()
        .get_stream(bus.subjects().stream(StreamKind::Events))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while seen.len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen.clear();
        let state = stream.info().await?.state.clone();
        if state.messages == 0 {
            continue;
        }
        for seq in state.first_sequence..=state.last_sequence {
            let message = stream.get_raw_message(seq).await?;
            seen.push(flywheel_events::decode_with_header(
                &message.payload,
                message.headers.get("Content-Type").map(|v| v.as_str()),
            )?);
        }
    }
    match (&seen[0].event, &seen[1].event) {
        (Event::DatasetVersionCreated(created), Event::DatasetValidationCompleted(validated)) => {
            assert_eq!(created.dataset, "churn-data");
            assert_eq!(created.row_count, 1000);
            assert!(
                created
                    .profile_uri
                    .as_deref()
                    .unwrap_or_default()
                    .ends_with(".json")
            );
            assert!(!validated.passed);
            let failed: Vec<&str> = validated
                .results
                .iter()
                .filter(|r| !r.passed)
                .map(|r| r.expectation.as_str())
                .collect();
            assert_eq!(failed, ["allowed_values(plan)"]);
        }
        other => panic!("unexpected events {other:?}"),
    }
    flywheel_testkit::cleanup_bus(&bus).await;
    Ok(())
}

async fn bad_files_are_refused_and_nothing_is_stored(r: &Registry) -> anyhow::Result<()> {
    let (status, body) = push(r, "broken", b"a,b\n1,2,3\n4\n".to_vec(), "text/csv").await?;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("malformed csv"),
        "{body}"
    );
    let (status, _) = push(
        r,
        "broken",
        b"PAR1garbage".to_vec(),
        "application/octet-stream",
    )
    .await?;
    assert_eq!(status, 400);
    let (status, _) = push(r, "broken", Vec::new(), "text/csv").await?;
    assert_eq!(status, 400);
    let (status, _) = push(r, "broken", b"a\n1\n".to_vec(), "image/png").await?;
    assert_eq!(status, 400);
    let (status, _) = push(r, "..evil", b"a\n1\n".to_vec(), "text/csv").await?;
    assert_eq!(status, 400);
    let listed: Value = r
        .http
        .get(r.url("/api/v1/datasets/broken/versions"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed, json!([]), "nothing half-written");
    let response = r
        .http
        .put(r.url("/api/v1/datasets/broken/suite"))
        .json(&json!([{"type": "nonsense"}]))
        .send()
        .await?;
    assert_eq!(response.status(), 422);
    let response = r
        .http
        .get(r.url("/api/v1/datasets/broken/versions/0123456789abcdef"))
        .send()
        .await?;
    assert_eq!(response.status(), 404);
    Ok(())
}
