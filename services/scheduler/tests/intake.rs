//! Training requests become exactly one queued job each, from the HTTP API and from the bus,
//! on PostgreSQL and SQLite, announcing `training.job.queued` in the request's causal chain.

use std::time::{Duration, Instant};

use anyhow::bail;
use flywheel_bus::{Bus, StreamKind};
use flywheel_events::payloads::{
    DatasetRef, Resources, TrainerSpec, TrainingReason, TrainingRequested,
};
use flywheel_events::{ContentType, Envelope, Event};
use flywheel_runtime::{CancellationToken, ServiceResult, ServiceSettings};
use serde_json::{Value, json};

struct Scheduler {
    base: String,
    prefix: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<ServiceResult>,
    _dir: tempfile::TempDir,
}

impl Scheduler {
    async fn start(postgres: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut settings = ServiceSettings::defaults_for("scheduler", 0);
        let prefix = flywheel_testkit::unique_name();
        settings.bus = flywheel_testkit::bus_config(&prefix);
        settings.db = if postgres {
            flywheel_testkit::fresh_postgres().await?
        } else {
            flywheel_testkit::fresh_sqlite(dir.path())
        };
        settings.artifacts.url = "memory://".into();
        settings.http.shutdown_grace_secs = 3;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(flywheel_scheduler::run(
            settings,
            listener,
            shutdown.clone(),
        ));
        let scheduler = Self {
            base,
            prefix,
            http: reqwest::Client::new(),
            shutdown,
            task,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while scheduler
            .http
            .get(format!("{}/readyz", scheduler.base))
            .send()
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            if Instant::now() > deadline {
                bail!("scheduler not ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(scheduler)
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await??
            .map_err(Into::into)
    }
}

fn request(request_id: &str, priority: i32) -> TrainingRequested {
    TrainingRequested {
        request_id: request_id.into(),
        model: "churn".into(),
        dataset: DatasetRef {
            name: "customers".into(),
            version: "3f2a".into(),
        },
        trainer: TrainerSpec {
            kind: "builtin".into(),
            name: "logistic_regression".into(),
            params: Default::default(),
        },
        resources: Resources {
            cpu: 1.0,
            memory_mb: 512,
            gpu: 0,
        },
        priority,
        reason: TrainingReason::Manual,
        search: None,
        gates: Vec::new(),
        timeout_seconds: None,
    }
}

async fn suite(postgres: bool) -> anyhow::Result<()> {
    let s = Scheduler::start(postgres).await?;
    let submit = |body: Value| {
        s.http
            .post(format!("{}/api/v1/jobs", s.base))
            .json(&body)
            .send()
    };
    let first = submit(serde_json::to_value(request("req-1", 1))?).await?;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await?;
    let again = submit(serde_json::to_value(request("req-1", 1))?).await?;
    assert_eq!(again.status(), 200, "the same request id is the same job");
    let again: Value = again.json().await?;
    assert_eq!(first["job_id"], again["job_id"]);

    // From the bus, as another system would publish it (JSON).
    let bus = Bus::connect(&flywheel_testkit::bus_config(&s.prefix), "ci").await?;
    let from_bus = Envelope::new("ci", "acme", Event::TrainingRequested(request("req-2", 5)));
    bus.publish_to(
        bus.subjects().event("training.requested"),
        &from_bus,
        ContentType::Json,
    )
    .await?;
    // The same request again (a retrying publisher, a new envelope): handled concurrently,
    // either may become the job, never both.
    let repeated = Envelope::new("ci", "acme", Event::TrainingRequested(request("req-2", 5)));
    bus.publish(&repeated).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let jobs = loop {
        let jobs: Value = s
            .http
            .get(format!("{}/api/v1/jobs?status=queued", s.base))
            .send()
            .await?
            .json()
            .await?;
        if jobs.as_array().is_some_and(|j| j.len() >= 2) || Instant::now() > deadline {
            break jobs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let jobs_after: Value = s
        .http
        .get(format!("{}/api/v1/jobs", s.base))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        jobs_after.as_array().map(Vec::len),
        Some(2),
        "a repeated request from the bus made no second job"
    );
    let order: Vec<&str> = jobs
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["request_id"].as_str())
        .collect();
    assert_eq!(order, ["req-2", "req-1"], "higher priority first");
    assert_eq!(jobs[0]["project"], "acme");

    // training.job.queued continues the request's causal chain.
    let mut stream = bus
        .jetstream()
        .get_stream(bus.subjects().stream(StreamKind::Events))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut queued = Vec::new();
    while queued.len() < 2 && Instant::now() < deadline {
        queued.clear();
        let state = stream.info().await?.state.clone();
        for seq in state.first_sequence..=state.last_sequence {
            let message = stream.get_raw_message(seq).await?;
            let envelope = flywheel_events::decode_with_header(
                &message.payload,
                message.headers.get("Content-Type").map(|v| v.as_str()),
            )?;
            if matches!(envelope.event, Event::TrainingJobQueued(_)) {
                queued.push(envelope);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(queued.len(), 2, "one queued event per job");
    let cause = [&from_bus, &repeated]
        .into_iter()
        .find(|cause| queued.iter().any(|e| e.causation_id == Some(cause.id)))
        .expect("queued event caused by a bus request");
    let chained = queued
        .iter()
        .find(|e| e.causation_id == Some(cause.id))
        .expect("chained");
    assert_eq!(chained.correlation_id, cause.correlation_id);

    // Bad requests: 4xx over HTTP, DLQ from the bus.
    let mut bad = serde_json::to_value(request("req-3", 0))?;
    bad["resources"]["cpu"] = json!(0);
    assert_eq!(submit(bad).await?.status(), 400);
    assert_eq!(submit(json!({"request_id": "x"})).await?.status(), 422);
    let missing = s
        .http
        .get(format!("{}/api/v1/jobs/nope", s.base))
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    let mut poisoned = request("req-4", 0);
    poisoned.model = "bad/name".into();
    bus.publish(&Envelope::new(
        "ci",
        "acme",
        Event::TrainingRequested(poisoned),
    ))
    .await?;
    let mut dlq = bus
        .jetstream()
        .get_stream(bus.subjects().stream(StreamKind::Dlq))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while dlq.info().await?.state.messages == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        dlq.info().await?.state.messages,
        1,
        "the invalid request was dead-lettered"
    );
    flywheel_testkit::cleanup_bus(&bus).await;
    s.stop().await
}

#[tokio::test]
async fn intake_on_postgres() -> anyhow::Result<()> {
    suite(true).await
}

#[tokio::test]
async fn intake_on_sqlite() -> anyhow::Result<()> {
    suite(false).await
}
