//! End to end across processes: the five service binaries as separate OS processes on real
//! NATS JetStream, PostgreSQL and S3, driven through public interfaces only (HTTP, and JSON
//! events on NATS from an outside system) — and the same under chaos.

mod chaos;
mod cluster;
mod faults;
mod infrastructure;
mod poison;
mod serving;

use std::time::{Duration, Instant};

use anyhow::Context;
use flywheel_bus::StreamKind;
use flywheel_events::Event;
use flywheel_events::payloads::TrainingReason;
use tokio::io::{AsyncBufReadExt, BufReader};

use cluster::Cluster;

/// The whole loop: `flywheel demo` (the CLI's scripted operator and traffic, an outside
/// system) pushes a dataset, trains, gates, registers, promotes, deploys as a canary, sends
/// traffic with delayed ground truth as JSON on NATS, shifts it; the monitor raises drift,
/// the runner retrains on production rows, version 2 rolls out. Timings are printed.
///
/// With authentication on, as an admin of project `churn-team` only: everything the loop makes
/// lands in that project, and `default` stays empty.
#[tokio::test(flavor = "multi_thread")]
async fn the_loop_closes_across_five_processes() -> anyhow::Result<()> {
    const ADMIN: &str = "e2e-bootstrap-admin-token-0123456789abcdef";
    let mut cluster = Cluster::start_on(
        &cluster::Infra {
            admin_token: Some(ADMIN.into()),
            ..cluster::Infra::default()
        },
        &[
            ("monitor", "window_size", "400"),
            ("monitor", "window_seconds", "30"),
        ],
    )
    .await?;
    let http = cluster::http();
    let issued: serde_json::Value = http
        .post(format!("{}/api/v1/tokens", cluster.url("registry")))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"name": "churn-lead", "project": "churn-team", "role": "admin"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    cluster.cli_token = Some(issued["token"].as_str().context("token")?.to_owned());
    let started = Instant::now();
    let mut demo = cluster
        .cli()?
        .arg("demo")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(demo.stderr.take().context("stderr")?).lines();
    let mut shifted_at = None;
    tokio::time::timeout(Duration::from_secs(400), async {
        while let Some(line) = lines.next_line().await? {
            eprintln!("{line}");
            if line.starts_with("demo: the customers change") {
                shifted_at = Some(chrono::Utc::now());
            }
            if line.starts_with("demo: the loop is closed") {
                return anyhow::Ok(());
            }
        }
        anyhow::bail!("flywheel demo ended early")
    })
    .await
    .with_context(|| {
        format!(
            "the loop did not close; logs in {}",
            cluster.dir.path().display()
        )
    })??;
    let status = demo.wait().await?;
    assert!(status.success(), "flywheel demo: {status}");
    let closed_in = started.elapsed();

    let events = flywheel_testkit::envelopes(&cluster.bus, StreamKind::Events).await?;
    let find = |check: &dyn Fn(&Event) -> bool| events.iter().find(|e| check(&e.event));
    let retraining =
        find(&|e| matches!(e, Event::TrainingRequested(r) if r.reason == TrainingReason::Drift))
            .context("a drift retraining")?;
    let Event::TrainingRequested(request) = &retraining.event else {
        unreachable!()
    };
    assert_eq!(request.dataset.name, "customers-production");
    let completed = find(
        &|e| matches!(e, Event::TrainingJobCompleted(c) if c.request_id == request.request_id),
    )
    .context("the retraining's job completed")?;
    let registered: Vec<u32> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::ModelVersionRegistered(v) => Some(v.version),
            _ => None,
        })
        .collect();
    assert_eq!(registered, [1, 2], "one version per training");
    assert!(
        find(&|e| matches!(e, Event::DeploymentRolledOut(r) if r.version == 2)).is_some(),
        "version 2 rolled out"
    );
    assert!(find(&|e| matches!(e, Event::DeploymentRolledBack(_))).is_none());

    // Version 2's first answered request, from the prediction logs.
    let logs = flywheel_testkit::envelopes(&cluster.bus, StreamKind::Predictions).await?;
    let first_v2 = logs
        .iter()
        .find(|e| matches!(&e.event, Event::PredictionLogged(p) if p.version == 2 && p.error.is_none()))
        .context("a prediction by version 2")?;
    let to_serving = (first_v2.time - completed.time).num_milliseconds() as f64 / 1000.0;
    let shifted_at = shifted_at.context("the traffic change")?;
    let to_retraining = (retraining.time - shifted_at).num_milliseconds() as f64 / 1000.0;
    let predictions = logs
        .iter()
        .filter(|e| matches!(e.event, Event::PredictionLogged(_)))
        .count();
    println!(
        "e2e loop across 5 processes: closed in {:.1} s; {} events, {predictions} prediction logs; \
         training.job.completed (v2) → first request served by v2: {to_serving:.2} s; \
         drift onset → retraining requested: {to_retraining:.1} s",
        closed_in.as_secs_f64(),
        events.len()
    );
    assert!(to_serving > 0.0 && to_retraining > 0.0);

    // All of it is the project's: its events, and nothing in `default`.
    let domain: Vec<&flywheel_events::Envelope> = events
        .iter()
        .filter(|e| !matches!(e.event, Event::SecurityAccessDenied(_)))
        .collect();
    let elsewhere: Vec<String> = domain
        .iter()
        .filter(|e| e.project != "churn-team")
        .map(|e| format!("{} in {}", e.event.event_type(), e.project))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "events outside the project: {elsewhere:?}"
    );
    let models: serde_json::Value = http
        .get(format!(
            "{}/api/2.0/mlflow/registered-models/search",
            cluster.url("registry")
        ))
        .bearer_auth(ADMIN)
        .header("X-Flywheel-Project", "default")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert!(
        models["registered_models"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "models in default: {models}"
    );
    cluster.stop().await
}
