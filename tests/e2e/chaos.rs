//! Chaos: services killed with SIGKILL at random moments mid-workload and started again.
//! After it, every accepted training request has produced exactly one registered version, no
//! job is stuck, and the registry's audit log holds one registration per version.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::cluster::{Cluster, SERVICES};

/// A small xorshift, so a failing run can be replayed from its printed seed.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const REQUESTS: usize = 40;

#[tokio::test(flavor = "multi_thread")]
async fn killing_each_service_mid_workload_loses_nothing_and_doubles_nothing() -> anyhow::Result<()>
{
    let mut cluster = Cluster::start(&[("trainer-runner", "slots", "2")]).await?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1;
    let mut random = Random(seed);
    let http = crate::cluster::http();
    let version = cluster.push_training_data("chaos-data").await?;
    let request = |id: &str| {
        json!({
            "request_id": id, "model": "chaos", "reason": "manual",
            "dataset": {"name": "chaos-data", "version": version},
            "trainer": {"kind": "builtin", "name": "logistic_regression", "params": {"target": "label"}},
            "resources": {"cpu": 1.0, "memory_mb": 128},
        })
    };

    // Half the requests over HTTP, half as JSON `training.requested` events on NATS from an
    // outside system; all accepted before the chaos starts.
    let mut accepted = BTreeSet::new();
    for i in 0..REQUESTS {
        let id = format!("chaos-{i:03}");
        if i % 2 == 0 {
            http.post(format!("{}/api/v1/jobs", cluster.url("scheduler")))
                .json(&request(&id))
                .send()
                .await?
                .error_for_status()?;
        } else {
            let envelope = json!({
                "id": uuid_v7_like(i), "type": "training.requested", "schema_version": 1,
                "time": chrono::Utc::now(), "source": "outside-system", "project": "default",
                "payload": request(&id),
            });
            cluster
                .bus
                .jetstream()
                .publish(
                    cluster.bus.subjects().event("training.requested"),
                    serde_json::to_vec(&envelope)?.into(),
                )
                .await?
                .await?;
        }
        accepted.insert(id);
    }

    // Each service killed in turn at a random moment, then started again.
    let started = Instant::now();
    let mut kills = Vec::new();
    for service in SERVICES {
        tokio::time::sleep(Duration::from_millis(300 + random.below(1500))).await;
        cluster.kill(service).await?;
        kills.push(format!("{service}@{:.1}s", started.elapsed().as_secs_f64()));
        tokio::time::sleep(Duration::from_millis(200 + random.below(800))).await;
        cluster.restart(service).await?;
    }

    // Everything finishes, once.
    let scheduler = cluster.url("scheduler");
    let mut jobs: Vec<Value> = Vec::new();
    let settled = flywheel_testkit::wait_for(
        "every job to finish",
        Duration::from_secs(180),
        async || {
            jobs = http
                .get(format!("{scheduler}/api/v1/jobs?model=chaos&limit=1000"))
                .send()
                .await?
                .json()
                .await?;
            Ok(jobs.len() >= REQUESTS
                && jobs.iter().all(|j| {
                    ["succeeded", "failed", "cancelled"]
                        .contains(&j["status"].as_str().unwrap_or_default())
                }))
        },
    )
    .await;
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for job in &jobs {
        *by_status
            .entry(job["status"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    settled
        .with_context(|| format!("jobs by status: {by_status:?} (seed {seed}, kills {kills:?})"))?;
    let job_requests: BTreeSet<String> = jobs
        .iter()
        .filter_map(|j| j["request_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(jobs.len(), REQUESTS, "one job per request: {by_status:?}");
    assert_eq!(job_requests, accepted);
    assert_eq!(by_status.get("succeeded"), Some(&REQUESTS), "{by_status:?}");

    let mut per_request = BTreeMap::new();
    flywheel_testkit::wait_for(
        "every version registered",
        Duration::from_secs(60),
        async || {
            per_request = cluster.versions_per_request("chaos").await?;
            Ok(per_request.values().sum::<usize>() >= REQUESTS)
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await; // a duplicate would land by now
    let per_request = cluster.versions_per_request("chaos").await?;
    let twice: Vec<_> = per_request.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "registered twice: {twice:?} (seed {seed}, kills {kills:?})"
    );
    assert_eq!(
        per_request.keys().cloned().collect::<BTreeSet<_>>(),
        accepted,
        "one version per accepted request"
    );
    let audit: Vec<Value> = http
        .get(format!(
            "{}/api/v1/models/chaos/audit",
            cluster.url("registry")
        ))
        .send()
        .await?
        .json()
        .await?;
    let registrations = audit
        .iter()
        .filter(|a| a["action"] == "version.registered")
        .count();
    assert_eq!(registrations, REQUESTS, "one audit entry per registration");
    let gaps = cluster.audit_gaps("chaos").await?;
    assert!(gaps.is_empty(), "audit log: {gaps:?} (seed {seed})");
    println!(
        "chaos (seed {seed}): killed {kills:?}; {REQUESTS} requests accepted → {} jobs {by_status:?} → {} versions, {registrations} audited registrations, none twice; settled {:.1} s after the first kill",
        jobs.len(),
        per_request.values().sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    cluster.stop().await
}

/// A UUID for the outside system's envelope (any unique one will do).
fn uuid_v7_like(i: usize) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let hex = format!("{:032x}", nanos ^ ((i as u128) << 64));
    format!(
        "{}-{}-7{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}
