//! Serving benchmark: a built-in random forest (100 trees) and an ONNX logistic regression,
//! behind the Open Inference Protocol, hammered over HTTP from the same machine. Prints
//! requests/s, rows/s and latency percentiles per case. Needs NATS (and nothing else):
//!   cargo run --release -p flywheel-deployer --example serving_bench -- 4000 16

use std::time::{Duration, Instant};

use bytes::Bytes;
use flywheel_artifacts::ArtifactStore;
use flywheel_artifacts::package::{self, Manifest, PackageLineage};
use flywheel_bus::Bus;
use flywheel_events::payloads::{Lineage, ModelVersionRegistered, Signature};
use flywheel_events::{Envelope, Event};
use flywheel_runtime::ServiceSettings;
use flywheel_testkit::service::InProcess;
use futures::StreamExt;
use serde_json::{Value, json};

async fn publish(
    bus: &Bus,
    store: &ArtifactStore,
    model: &str,
    flavor: &str,
    file: &str,
    bytes: Vec<u8>,
    signature: Signature,
) -> anyhow::Result<()> {
    let files = vec![(file.to_owned(), Bytes::from(bytes))];
    let manifest = Manifest::describe(
        flavor,
        file,
        signature.clone(),
        Default::default(),
        PackageLineage::default(),
        &files,
    )?;
    let stored = package::upload(store, &manifest, &files).await?;
    bus.publish(&Envelope::new(
        "bench",
        "default",
        Event::ModelVersionRegistered(ModelVersionRegistered {
            model: model.into(),
            version: 1,
            package_uri: stored.uri,
            flavor: flavor.into(),
            metrics: Default::default(),
            signature,
            lineage: Lineage::default(),
        }),
    ))
    .await?;
    Ok(())
}

async fn run_case(
    name: &str,
    url: &str,
    body: Value,
    rows: usize,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let body = serde_json::to_vec(&body)?;
    // Warm up.
    for _ in 0..50 {
        http.post(url)
            .body(body.clone())
            .send()
            .await?
            .error_for_status()?;
    }
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(0..requests)
        .map(|_| {
            let (http, body) = (http.clone(), body.clone());
            async move {
                let t = Instant::now();
                let response = http.post(url).body(body).send().await?;
                response.error_for_status()?.bytes().await?;
                Ok::<_, anyhow::Error>(t.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |q: f64| {
        latencies[((latencies.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0
    };
    println!(
        "{name}: {requests} requests × {rows} rows, {concurrency} in flight: {:.0} req/s, {:.0} rows/s, p50 {:.2} ms, p99 {:.2} ms",
        requests as f64 / elapsed,
        (requests * rows) as f64 / elapsed,
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let requests: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4000);
    let concurrency: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(16);
    let dir = tempfile::tempdir()?;
    let prefix = flywheel_testkit::unique_name();
    let mut settings = ServiceSettings::defaults_for("deployer", 0);
    settings.bus = flywheel_testkit::bus_config(&prefix);
    settings.db = flywheel_testkit::fresh_sqlite(dir.path());
    settings.artifacts.url = format!("file://{}", dir.path().join("artifacts").display());
    let store = ArtifactStore::from_config(&settings.artifacts)?;
    let deployer = InProcess::start(settings, flywheel_deployer::run).await?;
    let bus = Bus::connect(&flywheel_testkit::bus_config(&prefix), "bench").await?;
    let reference = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crates");
    let csv = std::fs::read(format!(
        "{reference}/train/tests/reference/binary_train.csv"
    ))?;
    let table = flywheel_data::read(csv.into(), flywheel_data::Format::Csv)?;
    let forest = flywheel_train::train(
        &table,
        "random_forest",
        &serde_json::from_value(json!({"target": "label", "n_estimators": 100}))?,
        &mut |_, _| {},
    )?;
    publish(
        &bus,
        &store,
        "forest",
        "flywheel",
        "model.json",
        forest.model_bytes(),
        forest.signature.clone(),
    )
    .await?;
    let onnx = std::fs::read(format!(
        "{reference}/inference/tests/reference/logistic_binary.onnx"
    ))?;
    publish(
        &bus,
        &store,
        "onnx",
        "onnx",
        "model.onnx",
        onnx,
        Signature::default(),
    )
    .await?;
    let http = reqwest::Client::new();
    for name in ["forest", "onnx"] {
        http.put(deployer.url(&format!("/api/v1/deployments/{name}")))
            .json(&json!({"model": name, "version": 1}))
            .send()
            .await?
            .error_for_status()?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in ["forest", "onnx"] {
        while http
            .get(deployer.url(&format!("/v2/models/{name}/ready")))
            .send()
            .await?
            .status()
            != 200
        {
            anyhow::ensure!(Instant::now() < deadline, "{name} not serving");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let row: Vec<f64> = vec![0.1, -1.2, 0.4, 2.0, 0.0, -0.3];
    let batch: Vec<Vec<f64>> = (0..64)
        .map(|i| row.iter().map(|v| v + f64::from(i) * 0.01).collect())
        .collect();
    let matrix = |rows: &[Vec<f64>], dt: &str| json!({"inputs": [{"name": "X", "shape": [rows.len(), 6], "datatype": dt, "data": rows}]});
    let forest_url = deployer.url("/v2/models/forest/infer");
    let onnx_url = deployer.url("/v2/models/onnx/infer");
    run_case(
        "flywheel forest (100 trees), 1 row",
        &forest_url,
        matrix(std::slice::from_ref(&row), "FP64"),
        1,
        requests,
        concurrency,
    )
    .await?;
    run_case(
        "flywheel forest (100 trees), 64 rows",
        &forest_url,
        matrix(&batch, "FP64"),
        64,
        requests / 4,
        concurrency,
    )
    .await?;
    run_case(
        "ONNX logistic (tract), 1 row",
        &onnx_url,
        matrix(std::slice::from_ref(&row), "FP32"),
        1,
        requests,
        concurrency,
    )
    .await?;
    run_case(
        "ONNX logistic (tract), 64 rows",
        &onnx_url,
        matrix(&batch, "FP32"),
        64,
        requests / 4,
        concurrency,
    )
    .await?;
    deployer.stop().await?;
    flywheel_testkit::cleanup_bus(&bus).await;
    Ok(())
}
