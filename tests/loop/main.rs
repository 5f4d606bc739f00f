//! The loop so far, all five services in one process on real NATS, PostgreSQL and S3, driven
//! through public interfaces only: push a dataset, request training, the version registers,
//! promote it, the deployer serves it over the Open Inference Protocol, predictions are logged.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flywheel_runtime::ServiceSettings;
use flywheel_testkit::service::InProcess;
use serde_json::{Value, json};

async fn settings(
    service: &str,
    prefix: &str,
    artifacts: &flywheel_artifacts::ArtifactsConfig,
) -> anyhow::Result<ServiceSettings> {
    let mut settings = ServiceSettings::defaults_for(service, 0);
    settings.bus = flywheel_testkit::bus_config(prefix);
    settings.db = flywheel_testkit::fresh_postgres().await?;
    settings.artifacts = artifacts.clone();
    settings.http.shutdown_grace_secs = 2;
    Ok(settings)
}

async fn eventually(
    what: &str,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<Value>>,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn dataset_to_served_prediction() -> anyhow::Result<()> {
    let prefix = flywheel_testkit::unique_name();
    let artifacts = flywheel_testkit::s3_config(&flywheel_testkit::unique_name())?;
    let registry = InProcess::start(
        settings("registry", &prefix, &artifacts).await?,
        flywheel_registry::run,
    )
    .await?;
    let scheduler = InProcess::start(
        settings("scheduler", &prefix, &artifacts).await?,
        flywheel_scheduler::run,
    )
    .await?;
    let deployer = InProcess::start(
        settings("deployer", &prefix, &artifacts).await?,
        flywheel_deployer::run,
    )
    .await?;
    let mut runner_settings = settings("trainer-runner", &prefix, &artifacts).await?;
    let work = tempfile::tempdir()?;
    runner_settings
        .service
        .insert("registry_url".into(), registry.base.clone());
    runner_settings
        .service
        .insert("work_dir".into(), work.path().display().to_string());
    runner_settings
        .service
        .insert("heartbeat_ms".into(), "300".into());
    let runner = InProcess::start(runner_settings, flywheel_trainer_runner::run).await?;
    let http = reqwest::Client::new();
    let started = Instant::now();

    let csv = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/train/tests/reference/binary_train.csv"
    ))?;
    let pushed: Value = http
        .post(registry.url("/api/v1/datasets/customers/versions"))
        .header("Content-Type", "text/csv")
        .body(csv)
        .send()
        .await?
        .json()
        .await?;
    let version = pushed["version"]
        .as_str()
        .context("dataset version")?
        .to_owned();
    let job: Value = http
        .post(scheduler.url("/api/v1/jobs"))
        .json(&json!({
            "request_id": "loop-1", "model": "churn", "reason": "manual",
            "dataset": {"name": "customers", "version": version},
            "trainer": {"kind": "builtin", "name": "random_forest", "params": {"target": "label", "n_estimators": 30}},
            "resources": {"cpu": 1, "memory_mb": 256},
            "gates": [{"metric": "accuracy", "op": ">=", "threshold": 0.7}],
        }))
        .send()
        .await?
        .json()
        .await?;
    let job_id = job["job_id"].as_str().context("job id")?.to_owned();
    let model_version = eventually("a registered version", async || {
        let found: Value = http
            .get(registry.url("/api/2.0/mlflow/registered-models/get-latest-versions?name=churn"))
            .send()
            .await?
            .json()
            .await?;
        Ok(found["model_versions"]
            .as_array()
            .and_then(|v| v.first())
            .cloned())
    })
    .await?;
    assert_eq!(model_version["version"], "1");
    let trained_in = started.elapsed();
    let done: Value = http
        .get(scheduler.url(&format!("/api/v1/jobs/{job_id}")))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(done["status"], "succeeded");

    // Deploy whatever `production` points at, then promote version 1.
    http.put(deployer.url("/api/v1/deployments/churn"))
        .json(&json!({"model": "churn", "alias": "production"}))
        .send()
        .await?
        .error_for_status()?;
    let promoted = Instant::now();
    http.post(registry.url("/api/2.0/mlflow/registered-models/alias"))
        .json(&json!({"name": "churn", "alias": "production", "version": "1"}))
        .send()
        .await?
        .error_for_status()?;
    eventually("the deployment to serve", async || {
        let ready = http
            .get(deployer.url("/v2/models/churn/ready"))
            .send()
            .await?
            .status()
            == 200;
        Ok(ready.then_some(Value::Null))
    })
    .await?;
    let serving_after = promoted.elapsed();
    let answer: Value = http
        .post(deployer.url("/v1/deployments/churn/predict"))
        .json(&json!([{"f0": 0.1, "f1": -1.2, "f2": 0.4, "f3": 2.0, "f4": 0.0, "f5": -0.3}]))
        .send()
        .await?
        .json()
        .await?;
    let label = answer["predictions"][0]["prediction"]
        .as_str()
        .context("a label")?;
    assert!(label == "0" || label == "1", "{answer}");
    let deployments: Value = http
        .get(registry.url("/api/v1/deployments"))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "loop: dataset → trained and registered in {:.2} s; promoted → serving in {:.2} s; registry sees {}",
        trained_in.as_secs_f64(),
        serving_after.as_secs_f64(),
        deployments
    );
    for service in [runner, deployer, scheduler, registry] {
        service.stop().await?;
    }
    Ok(())
}
