//! The registry's OpenAPI document against the real thing: schemathesis (PyPI) generates
//! requests from it — valid, boundary and malformed — against `flywheel up` (all five services,
//! so relayed actions reach their peers) and checks no answer is a 5xx, every status and
//! content type is documented, and every body matches its schema.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// Fixed, so CI is repeatable; `FLYWHEEL_SCHEMATHESIS_SEED` explores further.
const SEED: &str = "126837475510020831982225029552466322496";

#[tokio::test(flavor = "multi_thread")]
async fn the_registry_api_keeps_its_openapi_promises_under_generated_requests() -> anyhow::Result<()>
{
    let python = std::env::var("FLYWHEEL_TEST_PYTHON")
        .context("FLYWHEEL_TEST_PYTHON is not set (scripts/test.sh sets it)")?;
    let schemathesis = PathBuf::from(&python).with_file_name("schemathesis");
    anyhow::ensure!(
        schemathesis.exists(),
        "{} is missing: scripts/test.sh installs schemathesis into the test virtualenv",
        schemathesis.display()
    );
    let dir = tempfile::tempdir()?;
    let bus_config = flywheel_testkit::bus_config(&flywheel_testkit::unique_name());
    let (child, registry) = support::start(&[], dir.path(), &bus_config, &[]).await?;

    let seed = std::env::var("FLYWHEEL_SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.to_owned());
    let output = tokio::time::timeout(
        Duration::from_secs(420),
        tokio::process::Command::new(&schemathesis)
            .args(["run", &format!("{registry}/api/v1/openapi.json")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "25",
                "--workers",
                "1",
                "--seed",
                &seed,
            ])
            .env("NO_COLOR", "1")
            .current_dir(dir.path())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("schemathesis did not finish within 7 minutes")??;
    let report = String::from_utf8_lossy(&output.stdout);
    let summary: Vec<&str> = report
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect();
    println!("schemathesis (seed {seed}):\n{}", summary.join("\n"));
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    support::stop(child).await
}
