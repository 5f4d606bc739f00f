//! The dashboard: the page and its assets come from the binary (no CDN), the overview counts
//! follow what happens, and the event stream relays each domain event as a server-sent event.

use std::time::Duration;

use anyhow::Context;
use flywheel_bus::Bus;
use flywheel_events::payloads::MonitorAlertRaised;
use flywheel_events::{Envelope, Event};
use futures::StreamExt;
use serde_json::Value;

use crate::helpers::Registry;

on_both_backends!(dashboard_serves_the_overview_and_streams_events);

async fn dashboard_serves_the_overview_and_streams_events(r: &Registry) -> anyhow::Result<()> {
    let page = r.http.get(r.url("/")).send().await?;
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()?
            .starts_with("text/html")
    );
    let html = page.text().await?;
    assert!(html.contains("<title>Flywheel</title>") && html.contains("/dashboard/app.js"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing from a CDN"
    );
    let script = r
        .http
        .get(r.url("/dashboard/app.js"))
        .send()
        .await?
        .text()
        .await?;
    assert!(script.contains("EventSource(\"/api/v1/events/stream\")"));

    let overview = |r: &Registry| {
        let http = r.http.clone();
        let url = r.url("/api/v1/overview");
        async move { anyhow::Ok(http.get(url).send().await?.json::<Value>().await?) }
    };
    let before = overview(r).await?;
    assert_eq!(before["datasets"], 0, "{before}");
    assert_eq!(before["open_alerts"], 0, "{before}");

    // Listen, then push a dataset: its event arrives on the stream, and the counts move.
    let stream = r.http.get(r.url("/api/v1/events/stream")).send().await?;
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()?
            .starts_with("text/event-stream")
    );
    let mut chunks = stream.bytes_stream();
    let pushed = r
        .http
        .post(r.url("/api/v1/datasets/customers/versions?format=csv"))
        .body("age,plan\n31,pro\n45,basic\n")
        .send()
        .await?;
    assert_eq!(pushed.status(), 201, "{}", pushed.text().await?);
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = chunks.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk?));
            if seen.contains("event: dataset.version.created") && seen.contains("\n\n") {
                return anyhow::Ok(());
            }
        }
        anyhow::bail!("the stream ended")
    })
    .await
    .with_context(|| format!("no dataset.version.created on the stream: {seen}"))??;
    let data = seen
        .lines()
        .skip_while(|l| *l != "event: dataset.version.created")
        .find_map(|l| l.strip_prefix("data: "))
        .context("a data line")?;
    let envelope: Value = serde_json::from_str(data)?;
    assert_eq!(envelope["type"], "dataset.version.created");
    assert_eq!(envelope["payload"]["dataset"], "customers");
    let after = overview(r).await?;
    assert_eq!(after["datasets"], 1, "{after}");
    assert_eq!(after["dataset_versions"], 1, "{after}");

    // An alert raised on the bus is counted open.
    let bus = Bus::connect(&flywheel_testkit::bus_config(&r.prefix), "monitor").await?;
    bus.publish(&Envelope::new(
        "monitor",
        "default",
        Event::MonitorAlertRaised(MonitorAlertRaised {
            alert_id: "a1".into(),
            rule: "data_drift".into(),
            deployment: "churn".into(),
            severity: "warning".into(),
            message: "age drifted".into(),
            report_id: None,
        }),
    ))
    .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = overview(r).await?;
        if now["open_alerts"] == 1 {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the open alert was not counted: {now}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The event log holds what was published: the alert, under its deployment. The log has
    // its own consumer, so it may catch up a moment after the alert was counted.
    let mut recent = Value::Null;
    flywheel_testkit::wait_for(
        "the alert in the event log",
        Duration::from_secs(20),
        async || {
            recent = r
                .http
                .get(r.url("/api/v1/events/recent?deployment=churn"))
                .send()
                .await?
                .json()
                .await?;
            Ok(recent.as_array().is_some_and(|events| !events.is_empty()))
        },
    )
    .await
    .with_context(|| format!("recent: {recent}"))?;
    assert_eq!(recent[0]["type"], "monitor.alert.raised", "{recent}");
    assert_eq!(recent.as_array().map(Vec::len), Some(1), "{recent}");
    // Charts are SVG; an unknown one is a 404 that names the known ones.
    let chart = r
        .http
        .get(r.url("/dashboard/charts/deployments/churn/drift"))
        .send()
        .await?;
    assert_eq!(chart.status(), 200);
    assert_eq!(
        chart.headers()[reqwest::header::CONTENT_TYPE],
        "image/svg+xml"
    );
    assert!(chart.text().await?.contains("no data yet"));
    let unknown = r
        .http
        .get(r.url("/dashboard/charts/deployments/churn/pie"))
        .send()
        .await?;
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await?;
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("histogram")),
        "{body}"
    );
    // Rolling back a deployment no deployer knows is a clear refusal, not a 500.
    let rollback = r
        .http
        .post(r.url("/api/v1/deployments/churn/rollback"))
        .send()
        .await?;
    assert!(
        rollback.status().is_client_error() || rollback.status() == 503,
        "{}",
        rollback.status()
    );
    Ok(())
}
