//! `flywheel up --demo` as a user runs it (the binary, all five services in its process, on a
//! temporary directory and free ports, against the test NATS): the loop closes — drift raised,
//! a retraining on the labelled production rows, version 2 rolled out as a canary and
//! promoted — within a bounded time, asserted on the events the platform published; Ctrl-C
//! (SIGTERM) then stops everything cleanly.

mod support;

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use flywheel_bus::Bus;
use flywheel_events::Event;
use flywheel_events::payloads::TrainingReason;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread")]
async fn up_demo_closes_the_loop_from_drift_to_a_promoted_retrained_version() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let bus_config = flywheel_testkit::bus_config(&flywheel_testkit::unique_name());
    let mut child = support::up(&["--demo"], dir.path(), &bus_config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
    // Read stdout to its end (a closed pipe would fail the child's next print).
    let (url_tx, registry) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut url_tx = Some(url_tx);
        while let Ok(Some(line)) = stdout.next_line().await {
            if let (Some(url), Some(tx)) = (line.strip_prefix("registry"), url_tx.take()) {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let mut progress = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(420), async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with("demo:") {
                eprintln!("{line}");
                progress.push(line.clone());
            }
            if line.starts_with("demo: the loop is closed:") {
                return Ok::<_, anyhow::Error>(true);
            }
            if line.starts_with("flywheel:") {
                anyhow::bail!("flywheel up failed: {line}");
            }
        }
        Ok(false)
    })
    .await
    .context("the loop did not close within 7 minutes")??;
    assert!(closed, "flywheel up ended early: {progress:?}");

    let bus = Bus::connect(&bus_config, "test").await?;
    let events = flywheel_testkit::events(&bus).await?;
    let registered: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::ModelVersionRegistered(v) if v.model == "churn" => Some(v.version),
            _ => None,
        })
        .collect();
    assert_eq!(registered, [1, 2]);
    let requests: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::TrainingRequested(r) => Some(r),
            _ => None,
        })
        .collect();
    let drift: Vec<_> = requests
        .iter()
        .filter(|r| r.reason == TrainingReason::Drift)
        .collect();
    assert_eq!(drift.len(), 1, "one retraining: {requests:?}");
    assert_eq!(
        drift[0].dataset.name, "customers-production",
        "retrained on the labelled production rows"
    );
    let position = |check: &dyn Fn(&Event) -> bool| events.iter().position(check);
    let alert = position(&|e| matches!(e, Event::MonitorAlertRaised(a) if a.rule == "data_drift"))
        .context("a drift alert")?;
    let retraining = position(
        &|e| matches!(e, Event::TrainingRequested(r) if r.reason == TrainingReason::Drift),
    )
    .context("the retraining")?;
    let canary = position(&|e| {
        matches!(e, Event::DeploymentTrafficShifted(t)
            if t.splits.iter().any(|s| s.version == 2 && s.percent > 0 && s.percent < 100))
    })
    .context("version 2 as a canary")?;
    let promoted = position(&|e| matches!(e, Event::DeploymentRolledOut(r) if r.version == 2))
        .context("version 2 promoted")?;
    assert!(
        alert < retraining && retraining < canary && canary < promoted,
        "in order: alert {alert}, retraining {retraining}, canary {canary}, promoted {promoted}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::DeploymentRolledBack(_))),
        "nothing rolled back"
    );

    // The delivery metrics, from the event log: both versions' lead times, the drift episode
    // recovered by version 2, no rollback.
    let registry = registry.await.context("the registry's URL")?;
    let mut delivery = serde_json::Value::Null;
    for _ in 0..40 {
        delivery = reqwest::get(format!("{registry}/api/v1/delivery"))
            .await?
            .json()
            .await?;
        if delivery["models"][0]["recoveries"][0]["version"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let churn = &delivery["models"][0];
    assert_eq!(churn["model"], "churn", "{delivery}");
    let lead: Vec<u64> = churn["lead_times"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["version"].as_u64())
        .collect();
    assert_eq!(lead, [1, 2], "{delivery}");
    assert!(
        churn["median_lead_time_seconds"].as_f64() > Some(0.0),
        "{delivery}"
    );
    assert_eq!(churn["rollbacks"], 0);
    assert_eq!(churn["change_failure_rate"], 0.0);
    assert!(churn["deployments"].as_u64() >= Some(2), "{delivery}");
    let recovery = &churn["recoveries"][0];
    assert_eq!(recovery["version"], 2, "{delivery}");
    assert!(recovery["seconds"].as_f64() > Some(0.0), "{delivery}");

    // Ctrl-C: everything stops cleanly.
    support::stop(child).await?;
    flywheel_testkit::cleanup_bus(&bus).await;
    Ok(())
}
