//! Ingest benchmark: prediction logs with 20 features are published to JetStream first, then a
//! monitor starts and counts them into windows (judged against a 20-feature reference profile);
//! prints predictions per second from the monitor's start to its last report.
//! Needs NATS: `cargo run --release -p flywheel-monitor --example ingest_bench -- [predictions]`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flywheel_artifacts::ArtifactStore;
use flywheel_bus::Bus;
use flywheel_events::payloads::{
    DatasetRef, DatasetVersionCreated, Lineage, ModelVersionRegistered, PredictionLogged,
};
use flywheel_events::{Envelope, Event};
use flywheel_runtime::ServiceSettings;
use flywheel_testkit::service::InProcess;
use futures::StreamExt;
use serde_json::{Value, json};

const FEATURES: usize = 20;
const WINDOW: u64 = 10_000;

fn draws(seed: u64) -> impl FnMut() -> f64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir()?;
    let prefix = flywheel_testkit::unique_name();
    let mut settings = ServiceSettings::defaults_for("monitor", 0);
    settings.bus = flywheel_testkit::bus_config(&prefix);
    settings.db = flywheel_testkit::fresh_sqlite(dir.path());
    settings.artifacts.url = format!("file://{}", dir.path().join("artifacts").display());
    settings
        .service
        .insert("window_size".into(), WINDOW.to_string());
    if let Ok(per_second) = std::env::var("BENCH_JOIN_STORE_PER_SECOND") {
        settings
            .service
            .insert("join_store_per_second".into(), per_second);
    }
    if let Ok(max) = std::env::var("BENCH_PENDING_MAX") {
        settings.service.insert("feedback_pending_max".into(), max);
    }
    let store = ArtifactStore::from_config(&settings.artifacts)?;
    let bus = Bus::connect(&flywheel_testkit::bus_config(&prefix), "bench").await?;
    bus.provision().await?;
    // The reference: 20 numeric features, profiled.
    let mut next = draws(7);
    let mut csv: String = (0..FEATURES).map(|i| format!("f{i},")).collect::<String>() + "label\n";
    for _ in 0..5000 {
        for _ in 0..FEATURES {
            csv.push_str(&format!("{:.4},", next()));
        }
        csv.push_str("0\n");
    }
    let table = flywheel_data::read(Bytes::from(csv.into_bytes()), flywheel_data::Format::Csv)?;
    store
        .put(
            "profiles/reference.json",
            Bytes::from(serde_json::to_vec(&flywheel_data::profile(&table))?),
        )
        .await?;
    for event in [
        Event::DatasetVersionCreated(DatasetVersionCreated {
            dataset: "reference".into(),
            version: "r1".into(),
            sha256: String::new(),
            uri: store.uri("datasets/reference.csv"),
            format: "csv".into(),
            size_bytes: 0,
            row_count: 5000,
            columns: Vec::new(),
            profile_uri: Some(store.uri("profiles/reference.json")),
            previous_version: None,
        }),
        Event::ModelVersionRegistered(ModelVersionRegistered {
            model: "bench".into(),
            version: 1,
            package_uri: "file:///none".into(),
            flavor: "flywheel".into(),
            metrics: Default::default(),
            signature: Default::default(),
            lineage: Lineage {
                dataset: Some(DatasetRef {
                    name: "reference".into(),
                    version: "r1".into(),
                }),
                ..Lineage::default()
            },
        }),
    ] {
        bus.publish(&Envelope::new("bench", "default", event))
            .await?;
    }
    // The traffic, published before the monitor starts.
    let started = Instant::now();
    futures::stream::iter(0..total)
        .map(|i| {
            let bus = bus.clone();
            let mut next = draws(i + 11);
            async move {
                let inputs: BTreeMap<String, Value> = (0..FEATURES)
                    .map(|f| (format!("f{f}"), json!(next())))
                    .collect();
                bus.publish(&Envelope::new(
                    "bench",
                    "default",
                    Event::PredictionLogged(PredictionLogged {
                        deployment: "bench".into(),
                        model: "bench".into(),
                        version: 1,
                        request_id: format!("r{i}"),
                        inputs,
                        outputs: [("prediction".to_owned(), json!(1))].into_iter().collect(),
                        latency_us: 200,
                        shadow: false,
                        error: None,
                    }),
                ))
                .await
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    println!(
        "published {total} prediction logs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let monitor = InProcess::start(settings, flywheel_monitor::run).await?;
    let http = reqwest::Client::new();
    let expected = total / WINDOW;
    loop {
        let reports: Vec<Value> = http
            .get(monitor.url("/api/v1/reports?limit=1000"))
            .send()
            .await?
            .json()
            .await?;
        if reports.len() as u64 >= expected {
            let counted: u64 = reports.iter().filter_map(|r| r["count"].as_u64()).sum();
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "monitor counted {counted} predictions × {FEATURES} features into {} windows in {seconds:.2} s: {:.0} predictions/s",
                reports.len(),
                counted as f64 / seconds
            );
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "too slow");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    monitor.stop().await?;
    flywheel_testkit::cleanup_bus(&bus).await;
    Ok(())
}
