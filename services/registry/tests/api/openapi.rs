//! `/api/v1/openapi.json` documents every native route and is a valid OpenAPI 3.1 document
//! (checked with openapi-spec-validator from `FLYWHEEL_TEST_PYTHON`).

use std::io::Write;
use std::process::Command;

use anyhow::Context;
use serde_json::Value;

use crate::helpers::{Backend, Registry};

#[tokio::test]
async fn openapi_document_is_valid_and_complete() -> anyhow::Result<()> {
    let python = std::env::var("FLYWHEEL_TEST_PYTHON")
        .context("FLYWHEEL_TEST_PYTHON is not set: run the tests with scripts/test.sh, which installs openapi-spec-validator")?;
    let r = Registry::start(Backend::Sqlite).await?;
    let document: Value = r
        .http
        .get(r.url("/api/v1/openapi.json"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(document["openapi"], "3.1.0");
    let paths: Vec<&str> = document["paths"]
        .as_object()
        .context("paths")?
        .keys()
        .map(String::as_str)
        .collect();
    for expected in [
        "/api/v1/datasets/{name}/suite",
        "/api/v1/datasets/{name}/versions",
        "/api/v1/datasets/{name}/versions/{version}",
        "/api/v1/datasets/{name}/versions/{version}/profile",
        "/api/v1/models/{name}/policy",
        "/api/v1/models/{name}/versions/{version}/promotions",
        "/api/v1/promotions/{id}",
        "/api/v1/promotions/{id}/approve",
        "/api/v1/promotions/{id}/reject",
        "/api/v1/models/{name}/audit",
        "/api/v1/models/{name}/retrain",
        "/api/v1/jobs",
        "/api/v1/deployments",
        "/api/v1/alerts",
        "/api/v1/overview",
        "/api/v1/openapi.json",
        "/api/v1/datasets",
        "/api/v1/delivery",
        "/api/v1/events/recent",
        "/api/v1/dashboard/jobs",
        "/api/v1/dashboard/models/{name}",
        "/api/v1/deployments/{name}/history",
        "/api/v1/models/{name}/versions/{version}/lineage",
    ] {
        assert!(paths.contains(&expected), "{expected} is not documented");
        // And the route really exists: anything but a 404 for an unknown route.
        let probe = expected
            .replace("{name}", "x")
            .replace("{version}", "1")
            .replace("{id}", "1");
        let response = r.http.get(r.url(&probe)).send().await?;
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(
            body["message"], "no such route",
            "{expected} is documented but not routed"
        );
    }
    assert!(document["components"]["schemas"]["Policy"].is_object());
    let mut file = tempfile::NamedTempFile::new()?;
    file.write_all(serde_json::to_string(&document)?.as_bytes())?;
    let output = Command::new(python)
        .args(["-c", "import sys, json; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1]))); print('valid')"])
        .arg(file.path())
        .output()?;
    assert!(
        output.status.success(),
        "invalid OpenAPI document:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    r.stop().await
}
