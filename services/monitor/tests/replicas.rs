//! Monitor replicas on one database, NATS and bucket: the deployments are partitioned between
//! them (each partition a lease), both count, and when one is killed mid-window the other
//! takes its partitions over from their checkpoints — every deployment's windows add up to
//! exactly what was published, no window reported twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flywheel_bus::Bus;
use flywheel_db::leases;
use flywheel_events::payloads::PredictionLogged;
use flywheel_events::{Envelope, Event};
use flywheel_runtime::ServiceSettings;
use flywheel_testkit::service::Isolated;
use serde_json::{Value, json};

const DEPLOYMENTS: usize = 8;
const WINDOW: usize = 100;
const PER_DEPLOYMENT: usize = 3 * WINDOW;

async fn publish(bus: &Bus, rounds: std::ops::Range<usize>) -> anyhow::Result<()> {
    for i in rounds {
        for d in 0..DEPLOYMENTS {
            let event = Event::PredictionLogged(PredictionLogged {
                deployment: format!("replica-{d}"),
                model: "m".into(),
                version: 1,
                request_id: format!("r{d}-{i}"),
                inputs: [("x".to_owned(), json!(i))].into_iter().collect(),
                outputs: [("prediction".to_owned(), json!(1))].into_iter().collect(),
                latency_us: 100,
                shadow: false,
                error: None,
            });
            bus.publish(&Envelope::new("deployer", "default", event))
                .await?;
        }
    }
    Ok(())
}

async fn reports(
    http: &reqwest::Client,
    monitor: &Isolated,
    d: usize,
) -> anyhow::Result<Vec<Value>> {
    Ok(http
        .get(monitor.url(&format!("/api/v1/reports?deployment=replica-{d}")))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

#[tokio::test]
async fn two_replicas_split_the_deployments_and_a_killed_one_loses_no_window() -> anyhow::Result<()>
{
    let prefix = flywheel_testkit::unique_name();
    let mut settings = ServiceSettings::defaults_for("monitor", 0);
    settings.bus = flywheel_testkit::bus_config(&prefix);
    settings.db = flywheel_testkit::fresh_postgres().await?;
    settings.artifacts = flywheel_testkit::s3_config(&flywheel_testkit::unique_name())?;
    for (key, value) in [
        ("window_size", WINDOW.to_string()),
        ("window_seconds", "600".to_owned()),
        ("checkpoint_every", "20".to_owned()),
        ("partitions", "4".to_owned()),
        ("lease_ms", "1500".to_owned()),
    ] {
        settings.service.insert(key.into(), value);
    }
    let bus = Bus::connect(&flywheel_testkit::bus_config(&prefix), "test").await?;
    let http = reqwest::Client::new();
    let db = flywheel_db::connect(&settings.db).await?;
    let first = Isolated::start(settings.clone(), flywheel_monitor::run).await?;
    let second = Isolated::start(settings.clone(), flywheel_monitor::run).await?;

    // Both replicas hold two of the four partitions.
    let mut holders = BTreeMap::new();
    flywheel_testkit::wait_for(
        "the partitions to spread",
        Duration::from_secs(30),
        async || {
            holders = leases::live(&db, "monitor", "partition:")
                .await?
                .into_iter()
                .map(|h| (h.name, h.holder))
                .collect();
            let distinct: BTreeSet<&String> = holders.values().collect();
            Ok(holders.len() == 4 && distinct.len() == 2)
        },
    )
    .await?;

    // One and a half windows per deployment, then the first replica dies mid-window.
    publish(&bus, 0..150).await?;
    flywheel_testkit::wait_for(
        "a window of each deployment",
        Duration::from_secs(60),
        async || {
            for d in 0..DEPLOYMENTS {
                if reports(&http, &second, d).await?.is_empty() {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1200)).await; // a checkpoint mid-window
    first.kill();
    publish(&bus, 150..PER_DEPLOYMENT).await?;
    flywheel_testkit::wait_for(
        "every window reported",
        Duration::from_secs(90),
        async || {
            for d in 0..DEPLOYMENTS {
                if reports(&http, &second, d).await?.len() < PER_DEPLOYMENT / WINDOW {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for d in 0..DEPLOYMENTS {
        let reports = reports(&http, &second, d).await?;
        let counts: Vec<u64> = reports
            .iter()
            .map(|r| r["count"].as_u64().unwrap_or(0))
            .collect();
        assert_eq!(
            counts,
            vec![WINDOW as u64; PER_DEPLOYMENT / WINDOW],
            "replica-{d}: no window lost, none twice"
        );
        let ids: BTreeSet<&str> = reports
            .iter()
            .filter_map(|r| r["report_id"].as_str())
            .collect();
        assert_eq!(ids.len(), reports.len(), "replica-{d}: {reports:?}");
    }
    // The survivor took the dead replica's partitions over.
    let survivors: BTreeSet<String> = leases::live(&db, "monitor", "partition:")
        .await?
        .into_iter()
        .map(|h| h.holder)
        .collect();
    assert_eq!(survivors.len(), 1, "{survivors:?}");
    second.stop().await?;
    flywheel_testkit::cleanup_bus(&bus).await;
    Ok(())
}
