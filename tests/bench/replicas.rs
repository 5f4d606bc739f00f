//! Throughput of the registry, the deployer and the monitor with one and with two replicas on
//! this machine, so the cost of coordination is visible (docs/benchmarks.md, Replicas).
//!
//! ```sh
//! cargo run --release -p flywheel-tests --example replicas -- [--seconds 5] [--logs 40000]
//! ```
//!
//! Needs what the tests need: `FLYWHEEL_TEST_NATS_URL`, `FLYWHEEL_TEST_DATABASE_URL`,
//! `FLYWHEEL_TEST_S3_ENDPOINT` and `FLYWHEEL_TEST_S3_BUCKET` (scripts/test.sh sets them up).
//! Each replica runs on its own runtime in this process (as `Isolated` does in the tests);
//! replicas of one service share one database, NATS prefix and bucket prefix.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use flywheel_artifacts::ArtifactStore;
use flywheel_artifacts::package::{self, Manifest, PackageLineage};
use flywheel_bus::Bus;
use flywheel_events::payloads::{Lineage, ModelVersionRegistered, PredictionLogged};
use flywheel_events::{Envelope, Event};
use flywheel_runtime::ServiceSettings;
use flywheel_testkit::service::Isolated;
use futures::StreamExt;
use serde_json::{Value, json};

const CLIENTS: usize = 16;
const DEPLOYMENTS: usize = 8;

struct Options {
    seconds: u64,
    logs: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        seconds: 5,
        logs: 40_000,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--seconds", Some(v)) => options.seconds = v.parse()?,
            ("--logs", Some(v)) => options.logs = v.parse()?,
            (other, _) => anyhow::bail!("unknown option {other} (--seconds N, --logs N)"),
        }
    }
    Ok(options)
}

/// Settings shared by a service's replicas: one database, NATS prefix and bucket prefix.
async fn shared(service: &str) -> anyhow::Result<ServiceSettings> {
    let mut settings = ServiceSettings::defaults_for(service, 0);
    settings.bus = flywheel_testkit::bus_config(&flywheel_testkit::unique_name());
    settings.db = flywheel_testkit::fresh_postgres().await?;
    settings.artifacts = flywheel_testkit::s3_config(&flywheel_testkit::unique_name())?;
    settings.telemetry.log_level = "warn".into();
    Ok(settings)
}

async fn start<F, Fut>(
    settings: &ServiceSettings,
    n: usize,
    run: F,
) -> anyhow::Result<Vec<Isolated>>
where
    F: Fn(ServiceSettings, tokio::net::TcpListener, flywheel_runtime::CancellationToken) -> Fut
        + Copy
        + Send
        + 'static,
    Fut: std::future::Future<Output = flywheel_runtime::ServiceResult> + Send + 'static,
{
    let mut replicas = Vec::new();
    for _ in 0..n {
        replicas.push(Isolated::start(settings.clone(), run).await?);
    }
    Ok(replicas)
}

/// `CLIENTS` clients send `request(i)` round-robin over `urls` for `seconds`; requests/s.
async fn load(
    urls: Vec<String>,
    seconds: u64,
    body: impl Fn(u64) -> Value + Send + Sync + 'static,
) -> anyhow::Result<f64> {
    let http = reqwest::Client::new();
    let sent = Arc::new(AtomicU64::new(0));
    let body = Arc::new(body);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (http, sent, body, urls) = (http.clone(), sent.clone(), body.clone(), urls.clone());
        clients.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let i = sent.fetch_add(1, Ordering::Relaxed);
                let url = &urls[usize::try_from(i).unwrap_or(0) % urls.len()];
                http.post(url)
                    .json(&body(i))
                    .send()
                    .await?
                    .error_for_status()?;
            }
            anyhow::Ok(())
        }));
    }
    for client in clients {
        client.await??;
    }
    Ok(sent.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// MLflow `runs/log-metric`, one metric per request.
async fn registry(replicas: usize, seconds: u64) -> anyhow::Result<f64> {
    let settings = shared("registry").await?;
    let registries = start(&settings, replicas, flywheel_registry::run).await?;
    let http = reqwest::Client::new();
    let api = |path: &str| registries[0].url(&format!("/api/2.0/mlflow/{path}"));
    let experiment: Value = http
        .post(api("experiments/create"))
        .json(&json!({"name": "bench"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let run: Value = http
        .post(api("runs/create"))
        .json(&json!({"experiment_id": experiment["experiment_id"]}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let run_id = run["run"]["info"]["run_id"]
        .as_str()
        .context("run id")?
        .to_owned();
    let urls = registries
        .iter()
        .map(|r| r.url("/api/2.0/mlflow/runs/log-metric"))
        .collect();
    let rate = load(urls, seconds, move |i| {
        json!({"run_id": run_id, "key": "loss", "value": 1.0 / (i as f64 + 1.0), "timestamp": 0, "step": i})
    })
    .await?;
    for registry in registries {
        registry.stop().await?;
    }
    Ok(rate)
}

/// V2 inference of one row of a built-in logistic regression.
async fn deployer(replicas: usize, seconds: u64) -> anyhow::Result<f64> {
    let settings = shared("deployer").await?;
    let deployers = start(&settings, replicas, flywheel_deployer::run).await?;
    let store = ArtifactStore::from_config(&settings.artifacts)?;
    let bus = Bus::connect(&settings.bus, "bench").await?;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/train/tests/reference/binary_train.csv"
    );
    let table = flywheel_data::read(std::fs::read(path)?.into(), flywheel_data::Format::Csv)?;
    let model = flywheel_train::train(
        &table,
        "logistic_regression",
        &serde_json::from_value(json!({"target": "label"}))?,
        &mut |_, _| {},
    )?;
    let files = vec![("model.json".to_owned(), Bytes::from(model.model_bytes()))];
    let manifest = Manifest::describe(
        "flywheel",
        "model.json",
        model.signature.clone(),
        model.metrics.clone(),
        PackageLineage::default(),
        &files,
    )?;
    let stored = package::upload(&store, &manifest, &files).await?;
    bus.publish(&Envelope::new(
        "registry",
        "default",
        Event::ModelVersionRegistered(ModelVersionRegistered {
            model: "bench".into(),
            version: 1,
            package_uri: stored.uri,
            flavor: "flywheel".into(),
            metrics: model.metrics.clone(),
            signature: model.signature.clone(),
            lineage: Lineage::default(),
        }),
    ))
    .await?;
    let http = reqwest::Client::new();
    http.put(deployers[0].url("/api/v1/deployments/bench"))
        .json(&json!({"model": "bench", "version": 1}))
        .send()
        .await?
        .error_for_status()?;
    flywheel_testkit::wait_for(
        "every replica serving",
        Duration::from_secs(60),
        async || {
            for deployer in &deployers {
                let replica: Value = http
                    .get(deployer.url("/api/v1/replica"))
                    .send()
                    .await?
                    .json()
                    .await?;
                if replica["serving"]["bench"]["stable"] != 1 {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await?;
    let urls = deployers
        .iter()
        .map(|d| d.url("/v2/models/bench/infer"))
        .collect();
    let rate = load(urls, seconds, |i| {
        let x = (i % 100) as f64 / 50.0 - 1.0;
        json!({"inputs": (0..6)
            .map(|c| json!({"name": format!("f{c}"), "shape": [1], "datatype": "FP64", "data": [x * (c as f64 + 1.0) / 3.0]}))
            .collect::<Vec<_>>()})
    })
    .await?;
    for deployer in deployers {
        deployer.stop().await?;
    }
    flywheel_testkit::cleanup_bus(&bus).await;
    Ok(rate)
}

/// Prediction logs already in the stream, counted into windows by the replicas (4
/// partitions); predictions/s from the replicas' start to the last window reported.
async fn monitor(replicas: usize, logs: usize) -> anyhow::Result<f64> {
    let mut settings = shared("monitor").await?;
    for (key, value) in [
        ("partitions", "4"),
        ("window_size", "1000"),
        ("window_seconds", "600"),
    ] {
        settings.service.insert(key.into(), value.into());
    }
    let bus = Bus::connect(&settings.bus, "bench").await?;
    bus.provision().await?;
    let published = futures::stream::iter(0..logs)
        .map(|i| {
            let bus = bus.clone();
            async move {
                let event = Event::PredictionLogged(PredictionLogged {
                    deployment: format!("bench-{}", i % DEPLOYMENTS),
                    model: "bench".into(),
                    version: 1,
                    request_id: format!("r{i}"),
                    inputs: [("x".to_owned(), json!((i % 100) as f64))]
                        .into_iter()
                        .collect(),
                    outputs: [("prediction".to_owned(), json!(i % 2))]
                        .into_iter()
                        .collect(),
                    latency_us: 100,
                    shadow: false,
                    error: None,
                });
                bus.publish(&Envelope::new("deployer", "default", event))
                    .await
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    for receipt in published {
        receipt?;
    }
    let started = Instant::now();
    let monitors = start(&settings, replicas, flywheel_monitor::run).await?;
    let http = reqwest::Client::new();
    let windows = logs / 1000;
    flywheel_testkit::wait_for(
        "every window reported",
        Duration::from_secs(600),
        async || {
            let mut reported = 0;
            for d in 0..DEPLOYMENTS {
                let reports: Vec<Value> = http
                    .get(
                        monitors[0]
                            .url(&format!("/api/v1/reports?deployment=bench-{d}&limit=1000")),
                    )
                    .send()
                    .await?
                    .json()
                    .await?;
                reported += reports.len();
            }
            Ok(reported >= windows)
        },
    )
    .await?;
    let rate = logs as f64 / started.elapsed().as_secs_f64();
    for monitor in monitors {
        monitor.stop().await?;
    }
    flywheel_testkit::cleanup_bus(&bus).await;
    Ok(rate)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    let mut rows = Vec::new();
    for replicas in [1, 2] {
        let registry = registry(replicas, options.seconds).await?;
        eprintln!("registry, {replicas} replica(s): {registry:.0} log-metric requests/s");
        let deployer = deployer(replicas, options.seconds).await?;
        eprintln!("deployer, {replicas} replica(s): {deployer:.0} V2 requests/s");
        let monitor = monitor(replicas, options.logs).await?;
        eprintln!("monitor, {replicas} replica(s): {monitor:.0} predictions/s");
        rows.push((replicas, registry, deployer, monitor));
    }
    println!(
        "| replicas | registry log-metric req/s | deployer V2 req/s | monitor predictions/s |"
    );
    println!("|---|---|---|---|");
    for (replicas, registry, deployer, monitor) in rows {
        println!("| {replicas} | {registry:.0} | {deployer:.0} | {monitor:.0} |");
    }
    Ok(())
}
