//! Two replicas of every service on a three-node JetStream cluster with R3 streams: one node
//! is SIGKILLed while training requests flow, and every request still becomes exactly one job,
//! one registered version and one audited registration; with that node back, another is
//! SIGKILLed while predictions flow through both deployer replicas, and the two monitor
//! replicas count every prediction exactly once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use flywheel_runtime::ServiceSettings;
use flywheel_testkit::NatsCluster;
use flywheel_testkit::service::InProcess;
use serde_json::{Value, json};

const REQUESTS: usize = 20;
const PREDICTIONS: usize = 2000;
const WINDOW: usize = 200;

#[tokio::test(flavor = "multi_thread")]
async fn replicas_on_a_jetstream_cluster_survive_a_node_dying() -> anyhow::Result<()> {
    // The services' warnings, and the monitor's partition moves, go with a failure's output.
    let _logs = flywheel_runtime::telemetry::init(
        &flywheel_runtime::TelemetryConfig {
            log_level: "warn,flywheel_monitor=info,flywheel_deployer=info".into(),
            ..flywheel_runtime::TelemetryConfig::default()
        },
        "cluster-test",
    )?;
    let mut nats = NatsCluster::start(3).await?;
    let prefix = flywheel_testkit::unique_name();
    let mut bus = flywheel_testkit::bus_config(&prefix);
    bus.url = nats.urls();
    bus.replicas = 3;
    let artifacts = flywheel_testkit::s3_config(&prefix)?;
    let work = tempfile::tempdir()?;
    // One database per service, shared by its replicas.
    let mut databases = BTreeMap::new();
    for service in [
        "registry",
        "scheduler",
        "trainer-runner",
        "monitor",
        "deployer",
    ] {
        databases.insert(service, flywheel_testkit::fresh_postgres().await?);
    }
    let settings = |service: &str| {
        let mut settings = ServiceSettings::defaults_for(service, 0);
        settings.bus = bus.clone();
        settings.db = databases[service].clone();
        settings.artifacts = artifacts.clone();
        settings
    };
    let mut registries = Vec::new();
    for _ in 0..2 {
        registries.push(InProcess::start(settings("registry"), flywheel_registry::run).await?);
    }
    let mut schedulers = Vec::new();
    for _ in 0..2 {
        schedulers.push(InProcess::start(settings("scheduler"), flywheel_scheduler::run).await?);
    }
    let mut runners = Vec::new();
    for (i, registry) in registries.iter().enumerate() {
        let mut runner = settings("trainer-runner");
        runner
            .service
            .insert("registry_url".into(), registry.base.clone());
        runner.service.insert(
            "work_dir".into(),
            work.path().join(format!("r{i}")).display().to_string(),
        );
        runner.service.insert("heartbeat_ms".into(), "300".into());
        runners.push(InProcess::start(runner, flywheel_trainer_runner::run).await?);
    }
    let mut monitors = Vec::new();
    let mut deployers = Vec::new();
    for _ in 0..2 {
        let mut monitor = settings("monitor");
        for (key, value) in [
            ("partitions", "4"),
            ("window_size", "200"),
            ("window_seconds", "600"),
        ] {
            monitor.service.insert(key.into(), value.into());
        }
        monitors.push(InProcess::start(monitor, flywheel_monitor::run).await?);
        let mut deployer = settings("deployer");
        deployer
            .service
            .insert("prediction_log_mode".into(), "acked".into());
        deployers.push(InProcess::start(deployer, flywheel_deployer::run).await?);
    }

    // The streams are replicated on all three nodes.
    let probe = flywheel_bus::Bus::connect(&bus, "probe").await?;
    let mut events = probe
        .jetstream()
        .get_stream(probe.subjects().stream(flywheel_bus::StreamKind::Events))
        .await?;
    assert_eq!(events.info().await?.config.num_replicas, 3);

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let csv = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/train/tests/reference/binary_train.csv"
    ))?;
    let pushed: Value = http
        .post(registries[0].url("/api/v1/datasets/cluster-data/versions?format=csv"))
        .body(csv)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let version = pushed["version"].as_str().context("version")?.to_owned();
    let request = |id: &str| {
        json!({
            "request_id": id, "model": "clustered", "reason": "manual",
            "dataset": {"name": "cluster-data", "version": version},
            "trainer": {"kind": "builtin", "name": "logistic_regression", "params": {"target": "label"}},
            "resources": {"cpu": 1.0, "memory_mb": 128},
        })
    };

    // Requests alternate between the scheduler replicas; a node dies half-way (submissions
    // that fail while the cluster re-elects are retried, as any client would).
    let started = Instant::now();
    for i in 0..REQUESTS {
        if i == REQUESTS / 2 {
            nats.nodes[0].kill().await?;
            eprintln!("killed NATS node n0 after {i} requests");
        }
        let id = format!("cluster-{i:03}");
        let scheduler = &schedulers[i % 2];
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = http
                .post(scheduler.url("/api/v1/jobs"))
                .json(&request(&id))
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => break,
                other if attempt < 30 => {
                    eprintln!("{id}: attempt {attempt}: {other:?}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => anyhow::bail!("{id} not accepted: {other:?}"),
            }
        }
    }

    // Every request: one job, succeeded; one version; one audited registration.
    let mut jobs: Vec<Value> = Vec::new();
    flywheel_testkit::wait_for(
        "every job to succeed",
        Duration::from_secs(240),
        async || {
            jobs = http
                .get(schedulers[1].url("/api/v1/jobs?limit=1000"))
                .send()
                .await?
                .json()
                .await?;
            Ok(jobs.len() >= REQUESTS && jobs.iter().all(|j| j["status"] == "succeeded"))
        },
    )
    .await
    .with_context(|| format!("jobs: {jobs:?}"))?;
    assert_eq!(jobs.len(), REQUESTS, "one job per request");
    let jobs_done = started.elapsed();
    let mut versions: Vec<Value> = Vec::new();
    let mut last_report = Instant::now();
    flywheel_testkit::wait_for("every version registered", Duration::from_secs(240), async || {
        let found: Value = http
            .get(registries[1].url(
                "/api/2.0/mlflow/model-versions/search?filter=name%3D%27clustered%27&max_results=1000",
            ))
            .send()
            .await?
            .json()
            .await?;
        versions = found["model_versions"].as_array().cloned().unwrap_or_default();
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("{} versions after {:.0} s", versions.len(), started.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
        Ok(versions.len() >= REQUESTS)
    })
    .await?;
    assert_eq!(versions.len(), REQUESTS, "one version per request");
    let audit: Vec<Value> = http
        .get(registries[0].url("/api/v1/models/clustered/audit"))
        .send()
        .await?
        .json()
        .await?;
    let registrations = audit
        .iter()
        .filter(|e| e["action"] == "version.registered")
        .count();
    assert_eq!(
        registrations, REQUESTS,
        "one audited registration per version"
    );
    println!(
        "nats cluster: {REQUESTS} requests through 2 replicas each of registry, scheduler and \
         runner on 3 R3 nodes, n0 killed half-way: {REQUESTS} jobs succeeded after {:.1} s, \
         {REQUESTS} versions after {:.1} s",
        jobs_done.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    // Serving: n0 back, a deployment of `clustered@production` on both deployer replicas.
    nats.nodes[0].restart().await?;
    http.put(deployers[1].url("/api/v1/deployments/clustered"))
        .json(&json!({"model": "clustered", "alias": "production"}))
        .send()
        .await?
        .error_for_status()?;
    http.post(registries[0].url("/api/2.0/mlflow/registered-models/alias"))
        .json(&json!({"name": "clustered", "alias": "production", "version": "1"}))
        .send()
        .await?
        .error_for_status()?;
    flywheel_testkit::wait_for(
        "both deployers serving version 1",
        Duration::from_secs(60),
        async || {
            for deployer in &deployers {
                let replica: Value = http
                    .get(deployer.url("/api/v1/replica"))
                    .send()
                    .await?
                    .json()
                    .await?;
                if replica["serving"]["clustered"]["stable"] != 1 {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await?;
    // Predictions alternate between the deployers (each retried with its id until answered);
    // node n1 dies half-way.
    let serving_started = Instant::now();
    let mut retries = 0;
    for n in 0..PREDICTIONS {
        if n == PREDICTIONS / 2 {
            nats.nodes[1].kill().await?;
            eprintln!("killed NATS node n1 after {n} predictions");
        }
        let x = (n % 100) as f64 / 50.0 - 1.0;
        let body = json!({"id": format!("p-{n}"), "inputs": (0..6)
            .map(|c| json!({"name": format!("f{c}"), "shape": [1], "datatype": "FP64", "data": [x * (c as f64 + 1.0) / 3.0]}))
            .collect::<Vec<_>>()});
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let reply = http
                .post(deployers[n % 2].url("/v2/models/clustered/infer"))
                .json(&body)
                .send()
                .await;
            if reply.as_ref().is_ok_and(|r| r.status().is_success()) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "prediction p-{n} unanswered: {reply:?}"
            );
            retries += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let answered = serving_started.elapsed();
    // The monitors split the deployments' partitions; every prediction counted once.
    let mut counts: Vec<u64> = Vec::new();
    let reported = flywheel_testkit::wait_for(
        "every window reported",
        Duration::from_secs(120),
        async || {
            let reports: Vec<Value> = http
                .get(monitors[0].url("/api/v1/reports?deployment=clustered&limit=1000"))
                .send()
                .await?
                .json()
                .await?;
            counts = reports
                .iter()
                .map(|r| r["count"].as_u64().unwrap_or(0))
                .collect();
            Ok(counts.len() >= PREDICTIONS / WINDOW)
        },
    )
    .await;
    if let Err(e) = reported {
        // Where the counting stands: partition leases and checkpoints, and the stream.
        let db = flywheel_db::connect(&databases["monitor"]).await?;
        for table in ["monitor_leases", "monitor_checkpoints"] {
            let rows = flywheel_db::sea_orm::ConnectionTrait::query_all_raw(
                &db,
                flywheel_db::sea_orm::Statement::from_string(
                    flywheel_db::sea_orm::DbBackend::Postgres,
                    format!("SELECT row_to_json(t)::text AS row FROM {table} t"),
                ),
            )
            .await?;
            for row in rows {
                let row: String = row.try_get("", "row")?;
                eprintln!("{table}: {}", row.chars().take(300).collect::<String>());
            }
        }
        let mut predictions = probe
            .jetstream()
            .get_stream(
                probe
                    .subjects()
                    .stream(flywheel_bus::StreamKind::Predictions),
            )
            .await?;
        eprintln!(
            "predictions stream: {:?}; windows {counts:?}",
            predictions.info().await?.state
        );
        return Err(e);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reports: Vec<Value> = http
        .get(monitors[1].url("/api/v1/reports?deployment=clustered&limit=1000"))
        .send()
        .await?
        .json()
        .await?;
    let counts: Vec<u64> = reports
        .iter()
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        counts,
        vec![WINDOW as u64; PREDICTIONS / WINDOW],
        "every prediction counted once"
    );
    println!(
        "nats cluster: {PREDICTIONS} predictions through 2 deployer replicas, n1 killed half-way: \
         answered in {:.1} s ({retries} retries), counted exactly once by 2 monitor replicas in \
         {} windows",
        answered.as_secs_f64(),
        counts.len()
    );
    for service in registries
        .into_iter()
        .chain(schedulers)
        .chain(runners)
        .chain(monitors)
        .chain(deployers)
    {
        service.stop().await?;
    }
    Ok(())
}
