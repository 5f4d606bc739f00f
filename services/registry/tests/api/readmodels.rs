//! Deployment and alert read-models from the bus, the jobs listing, and retraining from the API.

use std::time::{Duration, Instant};

use flywheel_bus::{Bus, StreamKind};
use flywheel_events::payloads::{DeploymentRolledOut, MonitorAlertRaised, MonitorAlertResolved};
use flywheel_events::{Envelope, Event};
use serde_json::{Value, json};

use crate::helpers::Registry;

on_both_backends!(
    deployments_and_alerts_follow_the_bus,
    retraining_is_requested_on_the_latest_dataset_version
);

async fn poll(r: &Registry, path: &str, ready: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value: Value = r.http.get(r.url(path)).send().await?.json().await?;
        if ready(&value) || Instant::now() > deadline {
            return Ok(value);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn deployments_and_alerts_follow_the_bus(r: &Registry) -> anyhow::Result<()> {
    let bus = Bus::connect(&flywheel_testkit::bus_config(&r.prefix), "deployer").await?;
    let event = |e: Event| Envelope::new("deployer", "default", e);
    bus.publish(&event(Event::DeploymentRolledOut(DeploymentRolledOut {
        deployment: "churn-prod".into(),
        rollout_id: "r1".into(),
        model: "churn".into(),
        version: 3,
    })))
    .await?;
    bus.publish(&event(Event::MonitorAlertRaised(MonitorAlertRaised {
        alert_id: "a1".into(),
        rule: "drift".into(),
        deployment: "churn-prod".into(),
        severity: "warning".into(),
        message: "age drifted".into(),
        report_id: None,
    })))
    .await?;
    bus.publish(&event(Event::MonitorAlertRaised(MonitorAlertRaised {
        alert_id: "a2".into(),
        rule: "latency".into(),
        deployment: "churn-prod".into(),
        severity: "critical".into(),
        message: "p99 over SLO".into(),
        report_id: None,
    })))
    .await?;
    bus.publish(&event(Event::MonitorAlertResolved(MonitorAlertResolved {
        alert_id: "a2".into(),
        rule: "latency".into(),
        deployment: "churn-prod".into(),
    })))
    .await?;

    let deployments = poll(r, "/api/v1/deployments?model=churn", |v| {
        v.as_array().is_some_and(|a| !a.is_empty())
    })
    .await?;
    assert_eq!(deployments[0]["deployment"], "churn-prod");
    assert_eq!(deployments[0]["version"], 3);
    assert_eq!(deployments[0]["status"], "serving");
    // Wait until all four events are applied, whatever order the concurrent handlers took.
    let all = poll(r, "/api/v1/alerts", |v| {
        v.as_array().is_some_and(|a| {
            a.len() == 2
                && a.iter()
                    .any(|x| x["alert_id"] == "a2" && x["status"] == "resolved")
        })
    })
    .await?;
    assert_eq!(all[0]["status"], "open");
    assert_eq!(
        all[1]["status"], "resolved",
        "the newer event wins even if handled first: {all}"
    );
    let open: Value = r
        .http
        .get(r.url("/api/v1/alerts?open=true"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        open.as_array().map(|a| a
            .iter()
            .filter_map(|x| x["alert_id"].as_str())
            .collect::<Vec<_>>()),
        Some(vec!["a1"])
    );
    flywheel_testkit::cleanup_bus(&bus).await;
    Ok(())
}

async fn retraining_is_requested_on_the_latest_dataset_version(r: &Registry) -> anyhow::Result<()> {
    let body = json!({"dataset": "customers", "trainer": {"kind": "builtin", "name": "logistic_regression"}});
    let response = r
        .http
        .post(r.url("/api/v1/models/churn/retrain"))
        .json(&body)
        .send()
        .await?;
    assert_eq!(response.status(), 404, "no dataset version yet");
    let csv = "age,plan\n30,basic\n40,pro\n";
    let pushed: Value = r
        .http
        .post(r.url("/api/v1/datasets/customers/versions"))
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await?
        .json()
        .await?;
    let response = r
        .http
        .post(r.url("/api/v1/models/churn/retrain"))
        .header("x-flywheel-actor", "alice")
        .json(&body)
        .send()
        .await?;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await?;
    let request_id = accepted["request_id"]
        .as_str()
        .expect("request id")
        .to_owned();
    let response = r.http.post(r.url("/api/v1/models/churn/retrain")).json(&json!({"dataset": "customers", "trainer": {"kind": "builtin", "name": "x"}, "colour": "red"})).send().await?;
    assert_eq!(response.status(), 422, "unknown fields are refused");

    let bus = Bus::connect(&flywheel_testkit::bus_config(&r.prefix), "probe").await?;
    let mut stream = bus
        .jetstream()
        .get_stream(bus.subjects().stream(StreamKind::Events))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut requested = None;
    while requested.is_none() && Instant::now() < deadline {
        let state = stream.info().await?.state.clone();
        for seq in state.first_sequence..=state.last_sequence.max(state.first_sequence) {
            if state.messages == 0 {
                break;
            }
            let message = stream.get_raw_message(seq).await?;
            let envelope = flywheel_events::decode_with_header(
                &message.payload,
                message.headers.get("Content-Type").map(|v| v.as_str()),
            )?;
            if let Event::TrainingRequested(payload) = envelope.event {
                requested = Some(payload);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let requested = requested.expect("training.requested published");
    assert_eq!(requested.request_id, request_id);
    assert_eq!(requested.model, "churn");
    assert_eq!(
        requested.dataset.version,
        pushed["version"].as_str().expect("version")
    );
    assert_eq!(requested.trainer.name, "logistic_regression");
    let jobs: Value = r
        .http
        .get(r.url("/api/v1/jobs"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(jobs, json!([]));
    flywheel_testkit::cleanup_bus(&bus).await;
    Ok(())
}
