//! Registry benchmark: metric logging throughput through the MLflow-compatible endpoint
//! (batched and single) and run search over 100 000 runs.
//!
//!     cargo run --release -p flywheel-registry --example bench -- [--runs 100000] [--db URL]
//!
//! `--db` takes a `postgres://…/db` or `sqlite://file.db` URL (default: a fresh PostgreSQL
//! database on `FLYWHEEL_TEST_DATABASE_URL`, else a temporary SQLite file). NATS comes from
//! `FLYWHEEL_TEST_NATS_URL` (default local). Prints a table of figures.

use std::time::{Duration, Instant};

use anyhow::Context;
use flywheel_registry::tracking::{ImportedRun, KeyValue, Metric};
use flywheel_runtime::{CancellationToken, ServiceSettings};
use serde_json::{Value, json};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runs: usize = arg("--runs")
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    let db = match arg("--db") {
        Some(url) => flywheel_db::DbConfig {
            url,
            ..flywheel_db::DbConfig::default()
        },
        None => match flywheel_testkit::fresh_postgres().await {
            Ok(db) => db,
            Err(_) => flywheel_testkit::fresh_sqlite(dir.path()),
        },
    };
    let backend = if db.url.starts_with("sqlite") {
        "SQLite"
    } else {
        "PostgreSQL"
    };
    let mut settings = ServiceSettings::defaults_for("registry", 0);
    settings.bus = flywheel_testkit::bus_config(&flywheel_testkit::unique_name());
    settings.db = flywheel_db::DbConfig {
        max_connections: 16,
        ..db.clone()
    };
    settings.artifacts.url = "memory://".into();
    settings.telemetry.log_level = "warn".into();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/api/2.0/mlflow", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(flywheel_registry::run(settings, listener, shutdown.clone()));
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if http
            .get(base.replace("/api/2.0/mlflow", "/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "registry benchmark on {backend} (release build: {})",
        !cfg!(debug_assertions)
    );

    // 1. Batched metric logging: 1000 metrics per log-batch (the client's own chunk size), 8 in flight.
    let run: Value = http
        .post(format!("{base}/runs/create"))
        .json(&json!({"experiment_id": "0"}))
        .send()
        .await?
        .json()
        .await?;
    let run_id = run["run"]["info"]["run_id"]
        .as_str()
        .context("run id")?
        .to_owned();
    let batches = 200;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    for b in 0..batches {
        let (http, base, run_id, semaphore) = (
            http.clone(),
            base.clone(),
            run_id.clone(),
            semaphore.clone(),
        );
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await?;
            let metrics: Vec<Value> = (0..1000).map(|i| json!({"key": format!("m{}", i % 10), "value": i as f64, "timestamp": 1_700_000_000_000i64 + b, "step": b * 1000 + i})).collect();
            let response = http.post(format!("{base}/runs/log-batch")).json(&json!({"run_id": run_id, "metrics": metrics})).send().await?;
            anyhow::ensure!(response.status() == 200, "log-batch: {}", response.status());
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let batched = started.elapsed();
    let batched_rate = (batches * 1000) as f64 / batched.as_secs_f64();

    // 2. One metric per request, sequential (what `mlflow.log_metric` in a loop does).
    let singles = 2000;
    let mut latencies = Vec::with_capacity(singles);
    let started = Instant::now();
    for i in 0..singles {
        let t = Instant::now();
        let response = http.post(format!("{base}/runs/log-metric")).json(&json!({"run_id": run_id, "key": "loss", "value": 1.0 / (i + 1) as f64, "timestamp": 1, "step": i})).send().await?;
        anyhow::ensure!(response.status() == 200);
        latencies.push(t.elapsed());
    }
    let single_rate = singles as f64 / started.elapsed().as_secs_f64();
    let single_p50 = percentile(&mut latencies, 0.5);

    // 3. Run search over `runs` runs.
    let database = flywheel_db::connect(&db).await?;
    let experiment: Value = http
        .post(format!("{base}/experiments/create"))
        .json(&json!({"name": "bench-search"}))
        .send()
        .await?
        .json()
        .await?;
    let experiment_id: i64 = experiment["experiment_id"]
        .as_str()
        .context("id")?
        .parse()?;
    let mut rng_state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        (rng_state >> 11) as f64 / (1u64 << 53) as f64
    };
    let imported: Vec<ImportedRun> = (0..runs)
        .map(|i| ImportedRun {
            run_name: format!("run-{i}"),
            user_id: "bench".into(),
            status: if i % 10 == 0 {
                "FAILED".into()
            } else {
                "FINISHED".into()
            },
            start_time: 1_700_000_000_000 + i as i64,
            end_time: Some(1_700_000_100_000 + i as i64),
            params: vec![
                KeyValue {
                    key: "model".into(),
                    value: ["tree", "linear", "forest"][i % 3].into(),
                },
                KeyValue {
                    key: "lr".into(),
                    value: format!("{:.3}", next() / 10.0),
                },
            ],
            tags: vec![KeyValue {
                key: "team".into(),
                value: ["a", "b", "c", "d"][i % 4].into(),
            }],
            metrics: vec![
                Metric {
                    key: "accuracy".into(),
                    value: next(),
                    timestamp: 1,
                    step: 0,
                },
                Metric {
                    key: "loss".into(),
                    value: next(),
                    timestamp: 1,
                    step: 0,
                },
                Metric {
                    key: "f1".into(),
                    value: next(),
                    timestamp: 1,
                    step: 0,
                },
            ],
        })
        .collect();
    let started = Instant::now();
    flywheel_registry::tracking::runs::import(&database, experiment_id, &imported).await?;
    let import_rate = runs as f64 / started.elapsed().as_secs_f64();
    let queries = [
        (
            "metrics.accuracy > 0.9 and params.model = 'tree'",
            vec!["metrics.accuracy DESC"],
            100,
        ),
        (
            "tags.team = 'a' and attributes.status = 'FINISHED'",
            vec![],
            100,
        ),
        ("", vec![], 1000),
        ("", vec!["metrics.loss ASC"], 100),
    ];
    let mut search_rows = Vec::new();
    for (filter, order_by, max) in &queries {
        let mut samples = Vec::new();
        let mut found = 0;
        for _ in 0..20 {
            let t = Instant::now();
            let reply: Value = http
                .post(format!("{base}/runs/search"))
                .json(&json!({"experiment_ids": [experiment_id.to_string()], "filter": filter, "max_results": max, "order_by": order_by}))
                .send()
                .await?
                .json()
                .await?;
            samples.push(t.elapsed());
            found = reply["runs"].as_array().map_or(0, Vec::len);
        }
        let p50 = percentile(&mut samples, 0.5);
        let p95 = percentile(&mut samples, 0.95);
        search_rows.push(format!(
            "| search `{}` order {:?} max {max} | {found} runs | p50 {:.1} ms, p95 {:.1} ms |",
            if filter.is_empty() { "(none)" } else { filter },
            order_by,
            p50.as_secs_f64() * 1e3,
            p95.as_secs_f64() * 1e3
        ));
    }

    println!("| what | amount | figure |");
    println!("|---|---|---|");
    println!(
        "| log-batch, 1000 metrics/request, 8 in flight | {} metrics in {:.2} s | {:.0} metrics/s |",
        batches * 1000,
        batched.as_secs_f64(),
        batched_rate
    );
    println!(
        "| log-metric, one per request, sequential | {singles} requests | {single_rate:.0} req/s, p50 {:.2} ms |",
        single_p50.as_secs_f64() * 1e3
    );
    println!(
        "| bulk import of runs (3 metrics, 2 params, 2 tags each) | {runs} runs | {import_rate:.0} runs/s |"
    );
    for row in search_rows {
        println!("{row}");
    }
    shutdown.cancel();
    let _ = server.await;
    Ok(())
}
