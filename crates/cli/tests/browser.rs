//! The dashboard in a real browser: `flywheel up --demo` runs (all five services in one
//! process, temporary directory, free ports, the test NATS), and `tests/browser/dashboard.mjs`
//! drives Debian's headless Chromium through playwright-core against it — live overview
//! counts, a run's metric charts, the model page's lineage and charts, a confirmed rollback and
//! approval that move `production`, the monitoring and delivery pages. Screenshots land in
//! `tests/output/screenshots/` (CI keeps them as artifacts).

mod support;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// The browser binary, and that playwright-core is installed.
fn chromium() -> anyhow::Result<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    anyhow::ensure!(
        root.join("tests/browser/node_modules/playwright-core")
            .is_dir(),
        "playwright-core is not installed: run `npm ci` in tests/browser (scripts/test.sh does)"
    );
    let chromium = std::env::var("FLYWHEEL_TEST_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
    anyhow::ensure!(
        std::path::Path::new(&chromium).exists(),
        "no Chromium at {chromium}: install Debian's `chromium` (scripts/test.sh does) or set \
         FLYWHEEL_TEST_CHROMIUM"
    );
    Ok(chromium)
}

/// Runs one of the browser scripts; its output is printed and must end with `passed`.
async fn node(script: &str, args: &[&str], chromium: &str) -> anyhow::Result<()> {
    let browser_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser");
    let output = tokio::time::timeout(
        Duration::from_secs(480),
        tokio::process::Command::new("node")
            .arg(browser_dir.join(script))
            .args(args)
            .env("CHROMIUM", chromium)
            .current_dir(&browser_dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("{script} did not finish within 8 minutes"))??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    anyhow::ensure!(output.status.success(), "{script} failed");
    anyhow::ensure!(stdout.contains("test passed"), "{script} did not finish");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_works_in_headless_chromium_against_up_demo() -> anyhow::Result<()> {
    let chromium = chromium()?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir()?;
    let bus_config = flywheel_testkit::bus_config(&flywheel_testkit::unique_name());
    let (child, registry) = support::start(&["--demo"], dir.path(), &bus_config, &[]).await?;

    let screenshots = root.join("tests/output/screenshots");
    let shots = screenshots.display().to_string();
    node("dashboard.mjs", &[&registry, &shots], &chromium).await?;
    for name in [
        "01-overview",
        "03-model",
        "04-deployment",
        "06-model-after-rollback",
    ] {
        let shot = screenshots.join(format!("{name}.png"));
        let size = std::fs::metadata(&shot)
            .with_context(|| format!("{} missing", shot.display()))?
            .len();
        assert!(size > 10_000, "{} is {size} bytes", shot.display());
    }

    // The state the browser changed is the platform's: `production` is version 1 again.
    let version: serde_json::Value = reqwest::get(format!(
        "{registry}/api/2.0/mlflow/registered-models/alias?name=churn&alias=production"
    ))
    .await?
    .json()
    .await?;
    assert_eq!(version["model_version"]["version"], "1", "{version}");

    support::stop(child).await?;
    let bus = flywheel_bus::Bus::connect(&bus_config, "test").await?;
    flywheel_testkit::cleanup_bus(&bus).await;
    Ok(())
}

const BOOTSTRAP: &str = "bootstrap-admin-token-for-the-sign-in-test-0123456789";

/// With authentication on: the sign-in page, an HTTP-only session, roles and CSRF, in Chromium.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_signs_in_with_a_token_and_enforces_roles_in_chromium() -> anyhow::Result<()>
{
    let chromium = chromium()?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir()?;
    let bus_config = flywheel_testkit::bus_config(&flywheel_testkit::unique_name());
    let (child, registry) = support::start(
        &[],
        dir.path(),
        &bus_config,
        &[
            ("FLYWHEEL__AUTH__ENABLED", "true"),
            ("FLYWHEEL__AUTH__BOOTSTRAP_ADMIN_TOKEN", BOOTSTRAP),
            ("FLYWHEEL__AUTH__SERVICE_TOKEN", BOOTSTRAP),
        ],
    )
    .await?;
    let http = reqwest::Client::new();
    flywheel_testkit::wait_for(
        "the registry to be ready",
        Duration::from_secs(60),
        async || {
            Ok(http
                .get(format!("{registry}/readyz"))
                .send()
                .await?
                .status()
                == 200)
        },
    )
    .await?;
    let as_admin =
        async |path: &str, body: serde_json::Value| -> anyhow::Result<serde_json::Value> {
            let response = http
                .post(format!("{registry}{path}"))
                .bearer_auth(BOOTSTRAP)
                .json(&body)
                .send()
                .await?;
            let status = response.status();
            let answer: serde_json::Value = response.json().await?;
            anyhow::ensure!(status.is_success(), "{path}: {status} {answer}");
            Ok(answer)
        };
    let mut tokens = Vec::new();
    for (name, role) in [("vera", "viewer"), ("olga", "operator")] {
        let issued = as_admin(
            "/api/v1/tokens",
            serde_json::json!({"name": name, "project": "default", "role": role}),
        )
        .await?;
        tokens.push(issued["token"].as_str().context("token")?.to_owned());
    }
    as_admin(
        "/api/2.0/mlflow/registered-models/create",
        serde_json::json!({"name": "churn"}),
    )
    .await?;
    as_admin(
        "/api/2.0/mlflow/model-versions/create",
        serde_json::json!({"name": "churn", "source": "s3://bucket/churn/1"}),
    )
    .await?;

    let shots = root.join("tests/output/screenshots").display().to_string();
    node(
        "signin.mjs",
        &[&registry, &shots, &tokens[0], &tokens[1]],
        &chromium,
    )
    .await?;

    // What the operator did in the browser is the platform's, done as olga.
    let audit: serde_json::Value = http
        .get(format!("{registry}/api/v1/models/churn/audit"))
        .bearer_auth(BOOTSTRAP)
        .send()
        .await?
        .json()
        .await?;
    let moved = audit
        .as_array()
        .into_iter()
        .flatten()
        .any(|a| a["action"] == "alias.set" && a["actor"] == "olga");
    assert!(moved, "the promotion is audited as olga: {audit}");
    support::stop(child).await?;
    let bus = flywheel_bus::Bus::connect(&bus_config, "test").await?;
    flywheel_testkit::cleanup_bus(&bus).await;
    Ok(())
}
