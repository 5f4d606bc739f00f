//! Deployer replicas on one PostgreSQL database, NATS and bucket: one leads rollouts (a lease),
//! every replica serves every deployment by the routes the leader writes. A deployment created
//! on a follower is taken up by the leader; a canary whose failures only a follower sees is
//! rolled back on the merged numbers; the leader killed mid-rollout is replaced and the rollout
//! finishes once, with every replica serving the promoted version.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use flywheel_artifacts::ArtifactStore;
use flywheel_artifacts::package::{self, Manifest, PackageLineage};
use flywheel_bus::Bus;
use flywheel_events::payloads::{Lineage, ModelVersionAliasChanged, ModelVersionRegistered};
use flywheel_events::{Envelope, Event};
use flywheel_runtime::ServiceSettings;
use flywheel_testkit::service::Isolated;
use serde_json::{Value, json};

fn trained(alpha: f64) -> anyhow::Result<flywheel_train::Trained> {
    let path = format!(
        "{}/../../crates/train/tests/reference/binary_train.csv",
        env!("CARGO_MANIFEST_DIR")
    );
    let table = flywheel_data::read(std::fs::read(path)?.into(), flywheel_data::Format::Csv)?;
    Ok(flywheel_train::train(
        &table,
        "logistic_regression",
        &serde_json::from_value(json!({"target": "label", "alpha": alpha}))?,
        &mut |_, _| {},
    )?)
}

/// Registers `churn` version `version` and points `production` at it.
async fn release(bus: &Bus, store: &ArtifactStore, version: u32) -> anyhow::Result<()> {
    let model = trained(f64::from(version))?;
    let files = vec![("model.json".to_owned(), Bytes::from(model.model_bytes()))];
    let manifest = Manifest::describe(
        "flywheel",
        "model.json",
        model.signature.clone(),
        model.metrics.clone(),
        PackageLineage {
            trainer: "test".into(),
            ..PackageLineage::default()
        },
        &files,
    )?;
    let stored = package::upload(store, &manifest, &files).await?;
    for event in [
        Event::ModelVersionRegistered(ModelVersionRegistered {
            model: "churn".into(),
            version,
            package_uri: stored.uri,
            flavor: "flywheel".into(),
            metrics: model.metrics.clone(),
            signature: model.signature.clone(),
            lineage: Lineage::default(),
        }),
        Event::ModelVersionAliasChanged(ModelVersionAliasChanged {
            model: "churn".into(),
            alias: "production".into(),
            version: Some(version),
            previous_version: None,
            changed_by: "test".into(),
        }),
    ] {
        bus.publish(&Envelope::new("registry", "default", event))
            .await?;
    }
    Ok(())
}

/// Sends `n` records requests; returns how many each version answered and each status.
async fn send(
    http: &reqwest::Client,
    replica: &Isolated,
    n: usize,
) -> anyhow::Result<(BTreeMap<u64, usize>, BTreeMap<u16, usize>)> {
    let (mut versions, mut statuses) = (BTreeMap::new(), BTreeMap::new());
    for _ in 0..n {
        let response = http
            .post(replica.url("/v1/deployments/churn/predict"))
            .json(&json!([{"f0": 0.3, "f1": -0.2, "f2": 1.0, "f3": 0.0, "f4": 0.5, "f5": -1.0}]))
            .send()
            .await?;
        *statuses.entry(response.status().as_u16()).or_default() += 1;
        let body: Value = response.json().await?;
        if let Some(version) = body["version"].as_u64() {
            *versions.entry(version).or_default() += 1;
        }
    }
    Ok((versions, statuses))
}

async fn get(http: &reqwest::Client, replica: &Isolated, path: &str) -> anyhow::Result<Value> {
    Ok(http.get(replica.url(path)).send().await?.json().await?)
}

/// What a replica serves for `churn`: (stable, candidate, percent).
async fn serves(
    http: &reqwest::Client,
    replica: &Isolated,
) -> anyhow::Result<(Option<u64>, Option<u64>, Option<u64>)> {
    let body = get(http, replica, "/api/v1/replica").await?;
    let churn = &body["serving"]["churn"];
    Ok((
        churn["stable"].as_u64(),
        churn["candidate"].as_u64(),
        churn["percent"].as_u64(),
    ))
}

async fn wait_for(
    what: &str,
    check: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    flywheel_testkit::wait_for(what, Duration::from_secs(60), check).await
}

#[tokio::test]
async fn replicas_serve_the_leader_s_routes_and_a_killed_leader_loses_no_rollout()
-> anyhow::Result<()> {
    let prefix = flywheel_testkit::unique_name();
    let mut settings = ServiceSettings::defaults_for("deployer", 0);
    settings.bus = flywheel_testkit::bus_config(&prefix);
    settings.db = flywheel_testkit::fresh_postgres().await?;
    settings.artifacts = flywheel_testkit::s3_config(&flywheel_testkit::unique_name())?;
    settings.http.shutdown_grace_secs = 2;
    for (key, value) in [
        ("fault_injection", "true"),
        ("lease_ms", "1500"),
        ("route_sync_ms", "200"),
    ] {
        settings.service.insert(key.into(), value.into());
    }
    let store = ArtifactStore::from_config(&settings.artifacts)?;
    let bus = Bus::connect(&flywheel_testkit::bus_config(&prefix), "test").await?;
    let http = reqwest::Client::new();
    let a = Isolated::start(settings.clone(), flywheel_deployer::run).await?;
    let b = Isolated::start(settings.clone(), flywheel_deployer::run).await?;
    let mut leading = (false, false);
    wait_for("a rollout leader", async || {
        leading = (
            get(&http, &a, "/api/v1/replica").await?["leading"] == true,
            get(&http, &b, "/api/v1/replica").await?["leading"] == true,
        );
        Ok(leading.0 || leading.1)
    })
    .await?;
    assert!(!(leading.0 && leading.1), "one leader");
    let (leader, follower) = if leading.0 { (a, b) } else { (b, a) };

    // Created on the follower; the leader takes it up and both serve version 1.
    let canary = json!({"kind": "canary", "steps": [50, 100], "step_seconds": 4});
    http.put(follower.url("/api/v1/deployments/churn"))
        .json(&json!({"model": "churn", "alias": "production", "strategy": canary, "slo": {"min_requests": 5}}))
        .send()
        .await?
        .error_for_status()?;
    release(&bus, &store, 1).await?;
    wait_for("both replicas serving version 1", async || {
        Ok(serves(&http, &leader).await?.0 == Some(1)
            && serves(&http, &follower).await?.0 == Some(1))
    })
    .await?;

    // Version 2 fails, but only on the follower, which alone gets traffic: the leader judges
    // it on the follower's numbers and rolls it back everywhere.
    release(&bus, &store, 2).await?;
    wait_for("the follower serving version 2 at 50 %", async || {
        Ok(serves(&http, &follower).await? == (Some(1), Some(2), Some(50)))
    })
    .await?;
    http.put(follower.url("/api/v1/deployments/churn/versions/2/fault"))
        .json(&json!({"error_percent": 100}))
        .send()
        .await?
        .error_for_status()?;
    let (_, statuses) = send(&http, &follower, 20).await?;
    assert_eq!(
        statuses,
        [(200, 10), (500, 10)].into_iter().collect(),
        "{statuses:?}"
    );
    let mut back = None;
    wait_for("deployment.rolled_back", async || {
        back = flywheel_testkit::events(&bus)
            .await?
            .into_iter()
            .find_map(|e| match e {
                Event::DeploymentRolledBack(e) => Some(e),
                _ => None,
            });
        Ok(back.is_some())
    })
    .await?;
    let back = back.context("rolled back")?;
    let candidate = back.candidate.clone().context("candidate numbers")?;
    assert_eq!(
        (candidate.version, candidate.requests, candidate.error_rate),
        (2, 10, 1.0),
        "{back:?}"
    );
    assert_eq!(
        back.stable.map(|s| s.requests),
        Some(10),
        "the follower's stable answers count"
    );
    wait_for("both replicas back on version 1 alone", async || {
        Ok(serves(&http, &leader).await? == (Some(1), None, None)
            && serves(&http, &follower).await? == (Some(1), None, None))
    })
    .await?;

    // Version 3 is healthy; the leader dies during its first step. The follower takes the
    // lease, starts the rollout again and promotes it once.
    release(&bus, &store, 3).await?;
    wait_for("both replicas serving version 3 at 50 %", async || {
        Ok(
            serves(&http, &leader).await? == (Some(1), Some(3), Some(50))
                && serves(&http, &follower).await? == (Some(1), Some(3), Some(50)),
        )
    })
    .await?;
    let (versions, _) = send(&http, &leader, 10).await?;
    assert_eq!(
        versions,
        [(1, 5), (3, 5)].into_iter().collect(),
        "the leader splits too"
    );
    leader.kill();
    wait_for("the follower to promote version 3", async || {
        let replica = get(&http, &follower, "/api/v1/replica").await?;
        Ok(replica["leading"] == true && serves(&http, &follower).await? == (Some(3), None, None))
    })
    .await?;
    let (versions, statuses) = send(&http, &follower, 10).await?;
    assert_eq!(
        (versions, statuses),
        (
            [(3, 10)].into_iter().collect(),
            [(200, 10)].into_iter().collect()
        )
    );
    let deployment = get(&http, &follower, "/api/v1/deployments/churn").await?;
    assert_eq!(deployment["serving_version"], 3, "{deployment}");
    let outcomes: Vec<String> = flywheel_testkit::events(&bus)
        .await?
        .iter()
        .filter_map(|e| match e {
            Event::DeploymentRolledOut(e) => Some(format!("rolled_out {}", e.version)),
            Event::DeploymentRolledBack(e) => Some(format!(
                "rolled_back {}",
                e.candidate.as_ref().map_or(0, |c| c.version)
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        outcomes,
        ["rolled_out 1", "rolled_back 2", "rolled_out 3"],
        "each decision once"
    );
    follower.stop().await?;
    flywheel_testkit::cleanup_bus(&bus).await;
    Ok(())
}
