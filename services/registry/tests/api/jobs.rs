//! Training job events from the bus: the registry registers each completed job's model version
//! once, continues the job's causal chain, and dead-letters what it cannot apply.

use std::time::{Duration, Instant};

use flywheel_bus::{Bus, StreamKind};
use flywheel_events::payloads::{DatasetRef, Lineage, TrainingJobCompleted, TrainingJobQueued};
use flywheel_events::{ContentType, Envelope, Event};
use serde_json::Value;

use crate::helpers::{Backend, Registry};

fn completed(job: &str, model: &str) -> Envelope {
    Envelope::new(
        "scheduler",
        "default",
        Event::TrainingJobCompleted(TrainingJobCompleted {
            job_id: job.into(),
            attempt: 1,
            request_id: format!("req-{job}"),
            model: model.into(),
            package_uri: format!("s3://bucket/packages/{job}"),
            metrics: [("auc".to_owned(), 0.87)].into(),
            gates_passed: true,
            signature: flywheel_events::payloads::Signature {
                inputs: vec![flywheel_events::payloads::TensorSpec {
                    name: "age".into(),
                    datatype: "FP64".into(),
                    shape: vec![-1, 1],
                }],
                outputs: vec![flywheel_events::payloads::TensorSpec {
                    name: "ltv".into(),
                    datatype: "FP64".into(),
                    shape: vec![-1, 1],
                }],
            },
            lineage: Lineage {
                dataset: Some(DatasetRef {
                    name: "customers".into(),
                    version: "3f2a".into(),
                }),
                ..Lineage::default()
            },
            cpu_seconds: 12.5,
            trials: Vec::new(),
        }),
    )
}

async fn versions_of(r: &Registry, model: &str) -> anyhow::Result<Vec<Value>> {
    let (_, found) = r
        .get(
            "model-versions/search",
            &[("filter", &format!("name = '{model}'"))],
        )
        .await?;
    Ok(found["model_versions"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

#[tokio::test]
async fn completed_jobs_register_versions_once_with_their_lineage() -> anyhow::Result<()> {
    let r = Registry::start(Backend::Postgres).await?;
    let bus = Bus::connect(&flywheel_testkit::bus_config(&r.prefix), "scheduler").await?;
    let queued = Envelope::new(
        "scheduler",
        "default",
        Event::TrainingJobQueued(TrainingJobQueued {
            job_id: "job-1".into(),
            request_id: "req-job-1".into(),
            model: "ltv".into(),
            priority: 0,
        }),
    );
    bus.publish(&queued).await?;
    let done = completed("job-1", "ltv");
    // As another system would: JSON over a plain publish.
    bus.publish_to(
        bus.subjects().event("training.job.completed"),
        &done,
        ContentType::Json,
    )
    .await?;

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut versions = Vec::new();
    while versions.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        versions = versions_of(&r, "ltv").await?;
    }
    assert_eq!(versions.len(), 1, "the completed job registered a version");
    assert_eq!(versions[0]["source"], "s3://bucket/packages/job-1");
    let tags = versions[0]["tags"].as_array().expect("tags");
    assert!(
        tags.iter()
            .any(|t| t["key"] == "flywheel.job_id" && t["value"] == "job-1"),
        "{tags:?}"
    );

    // The same completion published again under a new id (a retrying scheduler): no second version.
    let mut again = completed("job-1", "ltv");
    again.correlation_id = done.correlation_id;
    bus.publish(&again).await?;
    // A poison event: a model name the registry refuses.
    bus.publish(&completed("job-2", "bad/name")).await?;
    let dlq = bus
        .jetstream()
        .get_stream(bus.subjects().stream(StreamKind::Dlq))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut dlq = dlq;
    while dlq.info().await?.state.messages == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = dlq.info().await?.state.last_sequence;
    let parked = dlq.get_raw_message(last).await?;
    let reason = parked
        .headers
        .get(flywheel_bus::DLQ_ERROR)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    assert!(reason.contains("invalid model name"), "{reason}");
    assert_eq!(
        versions_of(&r, "ltv").await?.len(),
        1,
        "a repeated completion registered nothing new"
    );

    // model.version.registered continues the job's causal chain (the outbox publishes it
    // shortly after the commit).
    let mut events = bus
        .jetstream()
        .get_stream(bus.subjects().stream(StreamKind::Events))
        .await?;
    let mut registered = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while registered.is_none() && Instant::now() < deadline {
        let state = events.info().await?.state.clone();
        for seq in state.first_sequence..=state.last_sequence {
            let message = events.get_raw_message(seq).await?;
            let envelope = flywheel_events::decode_with_header(
                &message.payload,
                message.headers.get("Content-Type").map(|v| v.as_str()),
            )?;
            if let Event::ModelVersionRegistered(payload) = &envelope.event {
                assert_eq!(payload.lineage.job_id.as_deref(), Some("job-1"));
                assert_eq!(
                    payload.lineage.dataset.as_ref().map(|d| d.version.as_str()),
                    Some("3f2a")
                );
                assert_eq!(payload.metrics.get("auc"), Some(&0.87));
                assert_eq!(
                    payload.signature.inputs[0].name, "age",
                    "the signature travels with the version"
                );
                registered = Some(envelope);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let registered = registered.expect("model.version.registered published");
    assert_eq!(
        registered.correlation_id, done.correlation_id,
        "same correlation id as the training chain"
    );
    assert_eq!(registered.causation_id, Some(done.id));
    // The lineage chain: dataset version → job → model version → deployments.
    bus.publish(&Envelope::new(
        "deployer",
        "default",
        Event::DeploymentRolledOut(flywheel_events::payloads::DeploymentRolledOut {
            deployment: "ltv-prod".into(),
            rollout_id: "r1".into(),
            model: "ltv".into(),
            version: 1,
        }),
    ))
    .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let lineage = loop {
        let lineage: Value = r
            .http
            .get(r.url("/api/v1/models/ltv/versions/1/lineage"))
            .send()
            .await?
            .json()
            .await?;
        if lineage["deployments"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
            || Instant::now() > deadline
        {
            break lineage;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        lineage["dataset"],
        serde_json::json!({"name": "customers", "version": "3f2a"})
    );
    assert_eq!(lineage["job_id"], "job-1");
    assert_eq!(lineage["metrics"]["auc"], 0.87);
    assert_eq!(
        lineage["deployments"][0]["deployment"], "ltv-prod",
        "{lineage}"
    );
    flywheel_testkit::cleanup_bus(&bus).await;
    r.stop().await
}
