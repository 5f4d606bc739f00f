//! Serving benchmark (the deployer issue's figures): a built-in 20-feature logistic regression
//! and an ONNX tree ensemble behind the Open Inference Protocol, hammered over loopback HTTP
//! from the same machine at 1, 16 and 64 requests in flight, with prediction logging on (every
//! request) and off. Prints a Markdown table. Needs NATS (and nothing else):
//!   cargo run --release -p flywheel-deployer --example serving_bench -- [requests] [model.onnx]
//! The ONNX model defaults to the committed 20-tree forest fixture; a 200-tree one comes from
//! `crates/inference/bench/onnx_vs_onnxruntime.py --save DIR`.

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

/// One measured case: (requests/s, p50 ms, p99 ms).
async fn run_case(
    url: &str,
    body: &Value,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    let http = reqwest::Client::new();
    let body = serde_json::to_vec(body)?;
    for _ in 0..200 {
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
    Ok((requests as f64 / elapsed, pct(0.5), pct(0.99)))
}

/// A synthetic binary problem with 20 features (deterministic), as CSV.
fn twenty_features() -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 20_000) as f64 / 5_000.0 - 2.0
    };
    let mut csv: String = (0..20).map(|i| format!("f{i},")).collect();
    csv.push_str("label\n");
    for _ in 0..2000 {
        let row: Vec<f64> = (0..20).map(|_| next()).collect();
        let score: f64 = row
            .iter()
            .enumerate()
            .map(|(i, v)| v * (i as f64 - 9.5))
            .sum();
        for v in &row {
            csv.push_str(&format!("{v:.4},"));
        }
        csv.push_str(if score + next() * 3.0 > 0.0 {
            "1\n"
        } else {
            "0\n"
        });
    }
    csv.into_bytes()
}

/// A deployer serving both models, logging `sample_rate` of the requests in `log_mode`.
async fn deployer(
    sample_rate: &str,
    log_mode: &str,
    dir: &std::path::Path,
    logistic: &flywheel_train::Trained,
    onnx: &[u8],
) -> anyhow::Result<(InProcess, Bus)> {
    let prefix = flywheel_testkit::unique_name();
    let mut settings = ServiceSettings::defaults_for("deployer", 0);
    settings.bus = flywheel_testkit::bus_config(&prefix);
    settings.db = flywheel_testkit::fresh_sqlite(dir);
    settings.artifacts.url = format!("file://{}", dir.join("artifacts").display());
    settings
        .service
        .insert("prediction_log_sample_rate".into(), sample_rate.into());
    settings
        .service
        .insert("prediction_log_mode".into(), log_mode.into());
    let store = ArtifactStore::from_config(&settings.artifacts)?;
    let deployer = InProcess::start(settings, flywheel_deployer::run).await?;
    let bus = Bus::connect(&flywheel_testkit::bus_config(&prefix), "bench").await?;
    let (model_bytes, signature) = (logistic.model_bytes(), logistic.signature.clone());
    publish(
        &bus,
        &store,
        "logistic",
        "flywheel",
        "model.json",
        model_bytes,
        signature,
    )
    .await?;
    let onnx = onnx.to_vec();
    publish(
        &bus,
        &store,
        "trees",
        "onnx",
        "model.onnx",
        onnx,
        Signature::default(),
    )
    .await?;
    let http = reqwest::Client::new();
    for name in ["logistic", "trees"] {
        http.put(deployer.url(&format!("/api/v1/deployments/{name}")))
            .json(&json!({"model": name, "version": 1}))
            .send()
            .await?
            .error_for_status()?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in ["logistic", "trees"] {
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
    Ok((deployer, bus))
}

/// `flywheel_deployer_prediction_logs_dropped_total` from `/metrics`.
async fn dropped(deployer: &InProcess) -> anyhow::Result<f64> {
    let text = reqwest::get(deployer.url("/metrics")).await?.text().await?;
    Ok(text
        .lines()
        .find(|l| l.starts_with("flywheel_deployer_prediction_logs_dropped_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let requests: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let onnx_path = args.get(2).cloned().unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../crates/inference/tests/reference/forest_binary.onnx"
        )
        .to_owned()
    });
    let onnx = std::fs::read(&onnx_path)?;
    let width = flywheel_inference::OnnxModel::load(&onnx)?.width();
    let table = flywheel_data::read(twenty_features().into(), flywheel_data::Format::Csv)?;
    let logistic = flywheel_train::train(
        &table,
        "logistic_regression",
        &serde_json::from_value(json!({"target": "label"}))?,
        &mut |_, _| {},
    )?;
    let row: Vec<f64> = (0..20).map(|i| f64::from(i) * 0.1 - 1.0).collect();
    let logistic_body =
        json!({"inputs": [{"name": "X", "shape": [1, 20], "datatype": "FP64", "data": [row]}]});
    let trees_row: Vec<f64> = (0..width).map(|i| (i as f64) * 0.1 - 0.3).collect();
    let trees_body = json!({"inputs": [{"name": "X", "shape": [1, width], "datatype": "FP32", "data": [trees_row]}]});
    println!(
        "ONNX model: {onnx_path} ({width} features); {requests} requests per case, one row each"
    );
    println!();
    println!("| model | logging | in flight | requests/s | p50 ms | p99 ms | logs dropped |");
    println!("|---|---|---|---|---|---|---|");
    for (logging, rate, mode) in [
        ("on, buffered", "1", "buffered"),
        ("on, acked", "1", "acked"),
        ("off", "0", "buffered"),
    ] {
        let dir = tempfile::tempdir()?;
        let (deployer, bus) = deployer(rate, mode, dir.path(), &logistic, &onnx).await?;
        for (model, body) in [("logistic", &logistic_body), ("trees", &trees_body)] {
            let url = deployer.url(&format!("/v2/models/{model}/infer"));
            for concurrency in [1, 16, 64] {
                let before = dropped(&deployer).await?;
                let n = if concurrency == 1 {
                    requests / 4
                } else {
                    requests
                };
                let (rate, p50, p99) = run_case(&url, body, n, concurrency).await?;
                let lost = dropped(&deployer).await? - before;
                let label = if model == "logistic" {
                    "built-in logistic regression, 20 features".to_owned()
                } else {
                    format!("ONNX tree ensemble ({width} features)")
                };
                println!(
                    "| {label} | {logging} | {concurrency} | {rate:.0} | {p50:.2} | {p99:.2} | {lost:.0} |"
                );
            }
        }
        deployer.stop().await?;
        flywheel_testkit::cleanup_bus(&bus).await;
    }
    Ok(())
}
