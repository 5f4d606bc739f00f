//! The `flywheel` binary against a running monitor (real NATS, SQLite, S3): `drift` prints
//! Evidently's verdicts as a table or JSON, `--fail-on-drift` exits 1 on drift, `status` names
//! what is down, and unreachable services or bad files fail in one line with exit code 2.

use std::process::{Command, Output};

use flywheel_runtime::ServiceSettings;
use flywheel_testkit::service::InProcess;
use serde_json::Value;

async fn start_monitor(dir: &std::path::Path) -> anyhow::Result<InProcess> {
    let mut settings = ServiceSettings::defaults_for("monitor", 0);
    settings.bus = flywheel_testkit::bus_config(&flywheel_testkit::unique_name());
    settings.db = flywheel_testkit::fresh_sqlite(dir);
    settings.artifacts = flywheel_testkit::s3_config(&flywheel_testkit::unique_name())?;
    InProcess::start(settings, flywheel_monitor::run).await
}

/// Runs the binary off the async threads.
async fn flywheel(args: Vec<String>) -> anyhow::Result<Output> {
    Ok(tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_flywheel"))
            .args(args)
            .env_remove("FLYWHEEL_MONITOR_URL")
            .output()
    })
    .await??)
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Two CSV samples: `level` moves a lot, `plan` does not.
fn samples(dir: &std::path::Path) -> anyhow::Result<(String, String)> {
    let mut reference = String::from("level,plan\n");
    let mut current = String::from("level,plan\n");
    for i in 0..300 {
        let plan = ["basic", "pro", "team"][i % 3];
        reference.push_str(&format!("{},{plan}\n", (i % 97) as f64 * 0.5));
        current.push_str(&format!("{},{plan}\n", 30.0 + (i % 89) as f64 * 0.5));
    }
    let (r, c) = (dir.join("reference.csv"), dir.join("current.csv"));
    std::fs::write(&r, reference)?;
    std::fs::write(&c, current)?;
    Ok((r.display().to_string(), c.display().to_string()))
}

#[tokio::test]
async fn drift_status_and_failures() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let monitor = start_monitor(dir.path()).await?;
    let (reference, current) = samples(dir.path())?;
    let url = monitor.url("");

    // A table, the dataset verdict, exit 0.
    let out = flywheel(args(&[
        "--monitor-url",
        &url,
        "drift",
        &reference,
        &current,
    ]))
    .await?;
    let text = String::from_utf8(out.stdout)?;
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let level = text
        .lines()
        .find(|l| l.contains("level"))
        .unwrap_or_default();
    let plan = text
        .lines()
        .find(|l| l.contains("plan"))
        .unwrap_or_default();
    assert!(level.contains("ks") && level.contains("DRIFT"), "{text}");
    assert!(plan.contains("chisquare") && plan.contains("ok"), "{text}");
    assert!(
        text.contains("dataset drift: YES (1 of 2 columns"),
        "{text}"
    );

    // JSON for scripts; --fail-on-drift exits 1.
    let out = flywheel(args(&[
        "--json",
        "--monitor-url",
        &url,
        "drift",
        &reference,
        &current,
        "--fail-on-drift",
    ]))
    .await?;
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["dataset_drift"], true);
    assert_eq!(report["columns"].as_array().map(Vec::len), Some(2));

    // Status: the monitor is ready, the rest (nothing listens on port 9) are not: exit 1.
    let down = "http://127.0.0.1:9";
    let out = flywheel(args(&[
        "--json",
        "--monitor-url",
        &url,
        "--registry-url",
        down,
        "--scheduler-url",
        down,
        "--runner-url",
        down,
        "--deployer-url",
        down,
        "status",
    ]))
    .await?;
    assert_eq!(out.status.code(), Some(1));
    let status: Value = serde_json::from_slice(&out.stdout)?;
    let states: Vec<(&str, &str)> = status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s["service"].as_str()?, s["state"].as_str()?)))
        .collect();
    assert!(states.contains(&("monitor", "ready")), "{status}");
    assert!(states.contains(&("registry", "unreachable")), "{status}");

    // Failures: one line, exit 2, no backtrace.
    for (list, needle) in [
        (
            args(&["--monitor-url", down, "drift", &reference, &current]),
            "cannot reach the monitor",
        ),
        (
            args(&["--monitor-url", &url, "drift", "/no/such.csv", &current]),
            "cannot read /no/such.csv",
        ),
        (
            args(&["--monitor-url", &url, "drift", "nope@v1", &current]),
            "the monitor refused",
        ),
    ] {
        let out = flywheel(list).await?;
        let stderr = String::from_utf8(out.stderr)?;
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("flywheel: ") && stderr.contains(needle),
            "{stderr}"
        );
    }

    // Alerts: an empty table is still a table.
    let out = flywheel(args(&["--monitor-url", &url, "alerts"])).await?;
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout)?.contains("severity"));
    monitor.stop().await?;
    Ok(())
}
