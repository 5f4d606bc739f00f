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

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_works_in_headless_chromium_against_up_demo() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let browser_dir = root.join("tests/browser");
    anyhow::ensure!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci` in tests/browser (scripts/test.sh does)"
    );
    let chromium = std::env::var("FLYWHEEL_TEST_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
    anyhow::ensure!(
        std::path::Path::new(&chromium).exists(),
        "no Chromium at {chromium}: install Debian's `chromium` (scripts/test.sh does) or set \
         FLYWHEEL_TEST_CHROMIUM"
    );
    let dir = tempfile::tempdir()?;
    let bus_config = flywheel_testkit::bus_config(&flywheel_testkit::unique_name());
    let (child, registry) = support::start(&["--demo"], dir.path(), &bus_config).await?;

    let screenshots = root.join("tests/output/screenshots");
    let output = tokio::time::timeout(
        Duration::from_secs(480),
        tokio::process::Command::new("node")
            .arg(browser_dir.join("dashboard.mjs"))
            .arg(&registry)
            .arg(&screenshots)
            .env("CHROMIUM", &chromium)
            .current_dir(&browser_dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("the browser test did not finish within 8 minutes")??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the browser test failed");
    assert!(stdout.contains("browser test passed"));
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
