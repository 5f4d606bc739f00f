//! The unmodified `mlflow` Python client drives the registry (`client_workflow.py`).
//! `FLYWHEEL_TEST_PYTHON` names the interpreter of a virtualenv with mlflow;
//! scripts/test.sh creates it.

use std::process::Command;

use anyhow::Context;

use crate::helpers::{Backend, Registry};

#[tokio::test]
async fn mlflow_client_workflow() -> anyhow::Result<()> {
    let python = std::env::var("FLYWHEEL_TEST_PYTHON")
        .context("FLYWHEEL_TEST_PYTHON is not set: run the tests with scripts/test.sh, which installs mlflow")?;
    let registry = Registry::start(Backend::Postgres).await?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/client_workflow.py");
    let base = registry.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("MLFLOW_TRACKING_URI", base)
            .env("MLFLOW_DISABLE_TELEMETRY", "true")
            // Deterministic errors must surface at once, not after minutes of retries.
            .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "mlflow client workflow failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("tracking workflow passed"));
    registry.stop().await
}
