//! Scheduler and trainer-runner together on real NATS, PostgreSQL and S3: built-in and
//! external trainers, priority order, quotas, a runner killed mid-job, a scheduler killed
//! mid-queue, cancel and timeout, duplicate requests, triggers, accounting and bad input.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use support::{QueryPairs, Stack, binary_csv, request, sleepy_trainer};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn builtin_training_registers_a_reproducible_version() -> anyhow::Result<()> {
    let mut stack = Stack::start(true, &[]).await?;
    stack.start_runner(&[("slots", "2")]).await?;
    let version = stack.push_dataset("customers", &binary_csv()).await?;
    let mut req = request(
        "req-builtin-1",
        "churn",
        ("customers", &version),
        json!({"kind": "builtin", "name": "logistic_regression", "params": {"target": "label", "seed": 7}}),
    );
    req["gates"] = json!([{"metric": "accuracy", "op": ">=", "threshold": 0.7}]);
    let job = stack.submit(req.clone(), "default").await?;
    let again = stack.submit(req.clone(), "default").await?;
    assert_eq!(
        job["job_id"], again["job_id"],
        "the same request id is the same job"
    );
    let id = job["job_id"].as_str().unwrap_or_default().to_owned();
    let done = stack.wait_job(&id, None, MINUTE).await?;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1);
    let versions = stack
        .wait_versions("churn", 1, Duration::from_secs(20))
        .await?;
    assert_eq!(versions.len(), 1, "one version per job");
    let source = versions[0]["source"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let tags = versions[0]["tags"].as_array().cloned().unwrap_or_default();
    assert!(
        tags.iter()
            .any(|t| t["key"] == "flywheel.trainer_gates_passed" && t["value"] == "true"),
        "{tags:?}"
    );
    // The package verifies against its manifest and holds the metrics.
    let store = flywheel_artifacts::ArtifactStore::from_config(&stack.runner_settings.artifacts)?;
    let (manifest, files) = flywheel_artifacts::package::download(&store, &source).await?;
    assert_eq!(manifest.flavor, "flywheel");
    assert!(manifest.metrics["accuracy"] > 0.7, "{:?}", manifest.metrics);
    assert!(manifest.metrics.contains_key("roc_auc"));
    assert_eq!(files.len(), 1);
    // Same dataset, parameters and seed: the same package, byte for byte.
    let mut twin = req.clone();
    twin["request_id"] = json!("req-builtin-2");
    let twin_job = stack.submit(twin, "default").await?;
    let twin_id = twin_job["job_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        stack.wait_job(&twin_id, None, MINUTE).await?["status"],
        "succeeded"
    );
    let versions = stack
        .wait_versions("churn", 2, Duration::from_secs(20))
        .await?;
    let sources: HashSet<&str> = versions
        .iter()
        .filter_map(|v| v["source"].as_str())
        .collect();
    assert_eq!(sources.len(), 1, "reproducible: {sources:?}");

    // Accounting: resource-seconds per model and project, and as a metric.
    let usage: Value = stack
        .http
        .get(stack.scheduler_url("/api/v1/usage"))
        .query_pairs(&[("by", "model".into())])
        .send()
        .await?
        .json()
        .await?;
    let churn = usage
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["key"] == "churn"))
        .cloned()
        .unwrap_or_default();
    assert!(
        churn["cpu_seconds"].as_f64().unwrap_or(0.0) > 0.0,
        "{usage}"
    );
    assert_eq!(churn["attempts"], 2);
    stack.stop().await
}

#[tokio::test]
async fn priority_order_and_project_quotas() -> anyhow::Result<()> {
    let mut stack = Stack::start(true, &[]).await?;
    let version = stack.push_dataset("events", b"a,b\n1,2\n3,4\n").await?;
    // Queue while no runner is alive: low first, then high, then middle.
    let mut ids = Vec::new();
    for (name, priority) in [("low", 1), ("high", 9), ("middle", 5)] {
        let mut req = request(
            &format!("prio-{name}"),
            "m",
            ("events", &version),
            sleepy_trainer(0.2),
        );
        req["priority"] = json!(priority);
        ids.push((
            name,
            stack.submit(req, "default").await?["job_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ));
    }
    stack.start_runner(&[("slots", "1")]).await?;
    let mut started = Vec::new();
    for (name, id) in &ids {
        let job = stack.wait_job(id, Some("succeeded"), MINUTE).await?;
        started.push((job["started_at"].as_i64().unwrap_or_default(), *name));
    }
    started.sort();
    let order: Vec<&str> = started.iter().map(|(_, n)| *n).collect();
    assert_eq!(order, ["high", "middle", "low"], "priority first");

    // Quota: team-a may run one job at a time; team-b is not held back by it.
    stack
        .http
        .put(stack.scheduler_url("/api/v1/quotas/team-a"))
        .json(&json!({"max_jobs": 1}))
        .send()
        .await?
        .error_for_status()?;
    stack.start_runner(&[("slots", "3")]).await?;
    let mut team_a = Vec::new();
    for i in 0..3 {
        let req = request(
            &format!("quota-a-{i}"),
            "m",
            ("events", &version),
            sleepy_trainer(0.5),
        );
        team_a.push(
            stack.submit(req, "team-a").await?["job_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    let b = stack
        .submit(
            request("quota-b", "m", ("events", &version), sleepy_trainer(0.5)),
            "team-b",
        )
        .await?["job_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut spans = Vec::new();
    for id in &team_a {
        let job = stack.wait_job(id, Some("succeeded"), MINUTE).await?;
        spans.push((
            job["started_at"].as_i64().unwrap_or_default(),
            job["finished_at"].as_i64().unwrap_or_default(),
        ));
    }
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "team-a jobs overlapped: {spans:?}");
    }
    let b = stack.wait_job(&b, Some("succeeded"), MINUTE).await?;
    let b_started = b["started_at"].as_i64().unwrap_or_default();
    assert!(
        b_started < spans[2].0,
        "team-b ran alongside team-a's queue: {b_started} {spans:?}"
    );
    stack.stop().await
}

#[tokio::test]
async fn a_killed_runner_s_job_completes_elsewhere_as_attempt_two() -> anyhow::Result<()> {
    let mut stack = Stack::start(true, &[]).await?;
    let version = stack.push_dataset("events", b"a,b\n1,2\n3,4\n").await?;
    let mut victim = stack.spawn_runner_process(&[("slots", "1"), ("runner_id", "victim")])?;
    let job = stack
        .submit(
            request(
                "kill-1",
                "survivor",
                ("events", &version),
                sleepy_trainer(3.0),
            ),
            "default",
        )
        .await?;
    let id = job["job_id"].as_str().unwrap_or_default().to_owned();
    let running = stack.wait_job(&id, Some("running"), MINUTE).await?;
    assert_eq!(running["runner"], "victim");
    victim.kill()?;
    victim.wait()?;
    stack
        .start_runner(&[("slots", "1"), ("runner_id", "rescuer")])
        .await?;
    let done = stack.wait_job(&id, Some("succeeded"), MINUTE).await?;
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["runner"], "rescuer");
    let history = done["attempt_history"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(history[0]["status"], "lost", "{history:?}");
    assert_eq!(history[1]["status"], "succeeded");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let versions = stack
        .wait_versions("survivor", 1, Duration::from_secs(20))
        .await?;
    assert_eq!(versions.len(), 1, "exactly one model version");
    let tags = versions[0]["tags"].as_array().cloned().unwrap_or_default();
    assert!(
        tags.iter()
            .any(|t| t["key"] == "flywheel.attempt" && t["value"] == "2"),
        "{tags:?}"
    );
    stack.stop().await
}

#[tokio::test]
async fn a_killed_scheduler_loses_nothing_and_dispatches_nothing_twice() -> anyhow::Result<()> {
    let mut stack = Stack::start(true, &[]).await?;
    let version = stack.push_dataset("events", b"a,b\n1,2\n3,4\n").await?;
    stack.start_runner(&[("slots", "4")]).await?;
    let mut ids = Vec::new();
    for i in 0..24 {
        let req = request(
            &format!("restart-{i}"),
            "restart",
            ("events", &version),
            sleepy_trainer(0.1),
        );
        ids.push(
            stack.submit(req, "default").await?["job_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    // Kill mid-queue (every task of it stops where it is), then start a new one on the same
    // database.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before: Value = stack
        .http
        .get(stack.scheduler_url("/api/v1/jobs?status=succeeded"))
        .send()
        .await?
        .json()
        .await?;
    if let Some(scheduler) = stack.scheduler.take() {
        scheduler.kill();
    }
    let finished_before = before.as_array().map_or(0, Vec::len);
    assert!(
        finished_before < ids.len(),
        "killed mid-queue ({finished_before} done)"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.scheduler = Some(
        flywheel_testkit::service::Isolated::start(
            stack.scheduler_settings.clone(),
            flywheel_scheduler::run,
        )
        .await?,
    );
    for id in &ids {
        let job = stack.wait_job(id, None, MINUTE).await?;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "dispatched once: {job}");
    }
    let versions = stack
        .wait_versions("restart", ids.len(), Duration::from_secs(30))
        .await?;
    assert_eq!(versions.len(), ids.len(), "one version per job, none twice");
    stack.stop().await
}

#[tokio::test]
async fn cancel_stops_a_running_job_and_timeouts_end_slow_ones() -> anyhow::Result<()> {
    let mut stack = Stack::start(true, &[]).await?;
    let version = stack.push_dataset("events", b"a,b\n1,2\n3,4\n").await?;
    stack.start_runner(&[("slots", "2")]).await?;
    let marker = stack.dir.path().join("still-running");
    let trainer = json!({
        "kind": "external",
        "name": format!("sleep 3; touch {}; echo x > \"$FLYWHEEL_OUTPUT_DIR/m\"", marker.display()),
    });
    let job = stack
        .submit(
            request("cancel-1", "c", ("events", &version), trainer),
            "default",
        )
        .await?;
    let id = job["job_id"].as_str().unwrap_or_default().to_owned();
    stack.wait_job(&id, Some("running"), MINUTE).await?;
    let cancelled: Value = stack
        .http
        .post(stack.scheduler_url(&format!("/api/v1/jobs/{id}/cancel")))
        .json(&json!({"reason": "not needed"}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(cancelled["status"], "cancelled");
    let again = stack
        .http
        .post(stack.scheduler_url(&format!("/api/v1/jobs/{id}/cancel")))
        .send()
        .await?;
    assert_eq!(again.status(), 409, "a finished job cannot be cancelled");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!marker.exists(), "the runner killed the cancelled trainer");
    assert!(
        stack.versions("c").await?.is_empty(),
        "a cancelled job registers nothing"
    );

    let mut slow = request("timeout-1", "t", ("events", &version), sleepy_trainer(30.0));
    slow["timeout_seconds"] = json!(1);
    let job = stack.submit(slow, "default").await?;
    let id = job["job_id"].as_str().unwrap_or_default().to_owned();
    let done = stack.wait_job(&id, None, MINUTE).await?;
    assert_eq!(done["status"], "timed_out", "{done}");
    stack.stop().await
}

#[tokio::test]
async fn bad_input_fails_clearly_and_wedges_nothing() -> anyhow::Result<()> {
    let mut stack = Stack::start(false, &[("max_attempts", "2")]).await?;
    let version = stack.push_dataset("events", &binary_csv()).await?;
    stack.start_runner(&[("slots", "2"), ("cpu", "2")]).await?;
    let cases = [
        (
            "unknown-dataset",
            request("bad-1", "b", ("nope", "0000"), sleepy_trainer(0.0)),
            "unknown dataset nope@0000",
            1,
        ),
        (
            "unknown-algorithm",
            request(
                "bad-2",
                "b",
                ("events", &version),
                json!({"kind": "builtin", "name": "magic"}),
            ),
            "unknown algorithm `magic`",
            1,
        ),
        (
            "invalid-params",
            request(
                "bad-3",
                "b",
                ("events", &version),
                json!({"kind": "builtin", "name": "ridge", "params": {"alpah": 1}}),
            ),
            "alpah",
            1,
        ),
        (
            "crashing-trainer",
            request(
                "bad-4",
                "b",
                ("events", &version),
                json!({"kind": "external", "name": "echo boom >&2; exit 3"}),
            ),
            "boom",
            2,
        ),
        (
            "no-model",
            request(
                "bad-5",
                "b",
                ("events", &version),
                json!({"kind": "external", "name": "true"}),
            ),
            "wrote no model",
            1,
        ),
    ];
    let mut ids = Vec::new();
    for (name, req, _, _) in &cases {
        ids.push((
            *name,
            stack.submit(req.clone(), "default").await?["job_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ));
    }
    let mut huge = request("bad-6", "b", ("events", &version), sleepy_trainer(0.0));
    huge["resources"] = json!({"cpu": 64.0, "memory_mb": 256});
    let huge = stack.submit(huge, "default").await?["job_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let good = stack
        .submit(
            request("good-1", "g", ("events", &version), sleepy_trainer(0.0)),
            "default",
        )
        .await?["job_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for ((name, id), (_, _, reason, attempts)) in ids.iter().zip(&cases) {
        let job = stack.wait_job(id, None, MINUTE).await?;
        assert_eq!(job["status"], "failed", "{name}: {job}");
        assert!(
            job["detail"].as_str().unwrap_or_default().contains(reason),
            "{name}: {job}"
        );
        assert_eq!(job["attempts"], *attempts, "{name}: {job}");
    }
    let job = stack.wait_job(&huge, None, MINUTE).await?;
    assert_eq!(job["status"], "failed");
    assert!(
        job["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("no runner can fit"),
        "{job}"
    );
    assert_eq!(
        stack.wait_job(&good, None, MINUTE).await?["status"],
        "succeeded",
        "the queue still moves"
    );
    // Bad requests at the door: 400 with a message.
    let response = stack
        .http
        .post(stack.scheduler_url("/api/v1/jobs"))
        .json(&json!({"request_id": "x", "model": "m"}))
        .send()
        .await?;
    assert_eq!(response.status(), 422, "an incomplete request is refused");
    let body: Value = response.json().await?;
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    stack.stop().await
}

#[tokio::test]
async fn a_python_trainer_reports_metrics_and_its_model_is_packaged() -> anyhow::Result<()> {
    let mut stack = Stack::start(false, &[]).await?;
    let version = stack.push_dataset("customers", &binary_csv()).await?;
    stack.start_runner(&[("slots", "1")]).await?;
    let script = stack.dir.path().join("train.py");
    std::fs::write(
        &script,
        r#"import csv, json, os
rows = list(csv.DictReader(open(os.environ["FLYWHEEL_DATASET_PATH"])))
params = json.loads(os.environ["FLYWHEEL_PARAMS"])
positive = sum(1 for r in rows if r["label"] == "1") / len(rows)
print(f"FLYWHEEL_METRIC positive_rate {positive}", flush=True)
import time; time.sleep(1.2)  # progress reports are rate-limited to one a second
print("FLYWHEEL_PROGRESS 0.5 counted")
print(f"FLYWHEEL_METRIC rows {len(rows)}")
print("an ordinary log line")
out = os.environ["FLYWHEEL_OUTPUT_DIR"]
json.dump({"threshold": params["threshold"], "seed": int(os.environ["FLYWHEEL_SEED"])}, open(os.path.join(out, "model.json"), "w"))
"#,
    )?;
    let trainer = json!({"kind": "external", "name": format!("python3 {}", script.display()), "params": {"threshold": 0.5, "seed": 3}});
    let job = stack
        .submit(
            request("py-1", "py", ("customers", &version), trainer),
            "default",
        )
        .await?;
    let id = job["job_id"].as_str().unwrap_or_default().to_owned();
    let done = stack.wait_job(&id, None, MINUTE).await?;
    assert_eq!(done["status"], "succeeded", "{done}");
    let versions = stack
        .wait_versions("py", 1, Duration::from_secs(20))
        .await?;
    let source = versions[0]["source"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let store = flywheel_artifacts::ArtifactStore::from_config(&stack.runner_settings.artifacts)?;
    let (manifest, files) = flywheel_artifacts::package::download(&store, &source).await?;
    assert_eq!(manifest.flavor, "external");
    assert_eq!(manifest.metrics["rows"], 900.0);
    let expected_rate = String::from_utf8(binary_csv())?
        .lines()
        .skip(1)
        .filter(|l| l.ends_with(",1"))
        .count() as f64
        / 900.0;
    assert!((manifest.metrics["positive_rate"] - expected_rate).abs() < 1e-12);
    let model: Value = serde_json::from_slice(&files[0].1)?;
    assert_eq!(model, json!({"threshold": 0.5, "seed": 3}));
    // Live metrics: the progress report carries what was measured before it.
    let live = flywheel_testkit::events(&stack.bus)
        .await?
        .into_iter()
        .find_map(|e| match e {
            flywheel_events::Event::TrainingJobProgress(p) if p.message == "counted" => Some(p),
            _ => None,
        })
        .context("the trainer's progress report")?;
    assert_eq!(live.fraction, 0.5);
    assert!(
        (live.metrics["positive_rate"] - expected_rate).abs() < 1e-12,
        "{live:?}"
    );
    stack.stop().await
}

#[tokio::test]
async fn new_data_and_cron_triggers_submit_training() -> anyhow::Result<()> {
    let mut stack = Stack::start(true, &[]).await?;
    stack.start_runner(&[("slots", "2")]).await?;
    let template = json!({
        "model": "fresh",
        "dataset": {"name": "feed", "version": "latest"},
        "trainer": sleepy_trainer(0.0),
        "resources": {"cpu": 1.0, "memory_mb": 128},
    });
    let put = stack
        .http
        .put(stack.scheduler_url("/api/v1/triggers/on-feed"))
        .json(&json!({"dataset": "feed", "request": template}))
        .send()
        .await?;
    assert_eq!(put.status(), 200, "{}", put.text().await?);
    let version = stack.push_dataset("feed", b"a,b\n1,2\n").await?;
    let request_id = format!("new_data:on-feed:feed@{version}");
    let deadline = std::time::Instant::now() + MINUTE;
    let job = loop {
        let jobs: Value = stack
            .http
            .get(stack.scheduler_url("/api/v1/jobs?model=fresh"))
            .send()
            .await?
            .json()
            .await?;
        if let Some(job) = jobs
            .as_array()
            .and_then(|j| j.iter().find(|j| j["request_id"] == request_id.as_str()))
        {
            break job.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no job for the new dataset version: {jobs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job["request"]["reason"], "new_data");
    assert_eq!(job["request"]["dataset"]["version"], version.as_str());

    // Every second (6-field cron with seconds); then removed.
    let put = stack
        .http
        .put(stack.scheduler_url("/api/v1/triggers/every-second"))
        .json(&json!({"cron": "* * * * * *", "request": template}))
        .send()
        .await?;
    assert_eq!(put.status(), 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stack
        .http
        .delete(stack.scheduler_url("/api/v1/triggers/every-second"))
        .send()
        .await?
        .error_for_status()?;
    let jobs: Value = stack
        .http
        .get(stack.scheduler_url("/api/v1/jobs?model=fresh"))
        .send()
        .await?
        .json()
        .await?;
    let scheduled: Vec<&str> = jobs
        .as_array()
        .map(|j| {
            j.iter()
                .filter_map(|j| j["request_id"].as_str())
                .filter(|r| r.starts_with("schedule:every-second:"))
                .collect()
        })
        .unwrap_or_default();
    assert!((1..=4).contains(&scheduled.len()), "{scheduled:?}");
    let bad = stack
        .http
        .put(stack.scheduler_url("/api/v1/triggers/broken"))
        .json(&json!({"cron": "every tuesday", "request": template}))
        .send()
        .await?;
    assert_eq!(bad.status(), 400);
    stack.stop().await
}

#[tokio::test]
async fn a_search_fans_out_trials_and_registers_the_best() -> anyhow::Result<()> {
    let mut stack = Stack::start(true, &[]).await?;
    stack
        .start_runner(&[("slots", "2"), ("runner_id", "left")])
        .await?;
    stack
        .start_runner(&[("slots", "2"), ("runner_id", "right")])
        .await?;
    let version = stack.push_dataset("customers", &binary_csv()).await?;
    let mut req = request(
        "search-1",
        "forest",
        ("customers", &version),
        json!({"kind": "builtin", "name": "random_forest", "params": {"target": "label", "n_estimators": 60}}),
    );
    req["search"] = json!({
        "strategy": "grid",
        "space": {"max_depth": [1, 2, 4, null]},
        "max_trials": 4,
        "metric": "accuracy",
        "goal": "maximize",
    });
    let job = stack.submit(req, "default").await?;
    let id = job["job_id"].as_str().unwrap_or_default().to_owned();
    let done = stack.wait_job(&id, None, MINUTE).await?;
    assert_eq!(done["status"], "succeeded", "{done}");
    let all: Value = stack
        .http
        .get(stack.scheduler_url("/api/v1/jobs?model=forest"))
        .send()
        .await?
        .json()
        .await?;
    let trials: Vec<&Value> = all
        .as_array()
        .map(|j| {
            j.iter()
                .filter(|j| j["parent_job_id"] == id.as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(trials.len(), 4, "{all}");
    assert!(trials.iter().all(|t| t["status"] == "succeeded"));
    let mut spans: Vec<(i64, i64)> = trials
        .iter()
        .map(|t| {
            (
                t["started_at"].as_i64().unwrap_or(0),
                t["finished_at"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    spans.sort();
    assert!(
        spans.windows(2).any(|w| w[1].0 < w[0].1),
        "trials ran in parallel: {spans:?}"
    );
    let runners: HashSet<&str> = trials.iter().filter_map(|t| t["runner"].as_str()).collect();
    println!("trials ran on runners {runners:?}");

    // One version: the best trial's model, linked to its run; every trial is a child run.
    let versions = stack
        .wait_versions("forest", 1, Duration::from_secs(20))
        .await?;
    assert_eq!(versions.len(), 1, "a search registers one version");
    let experiment: Value = stack
        .http
        .get(
            stack
                .registry
                .url("/api/2.0/mlflow/experiments/get-by-name"),
        )
        .query_pairs(&[("experiment_name", "flywheel/forest".into())])
        .send()
        .await?
        .json()
        .await?;
    let experiment_id = experiment["experiment"]["experiment_id"].clone();
    let runs: Value = stack
        .http
        .post(stack.registry.url("/api/2.0/mlflow/runs/search"))
        .json(&json!({"experiment_ids": [experiment_id], "max_results": 100}))
        .send()
        .await?
        .json()
        .await?;
    let runs = runs["runs"].as_array().cloned().unwrap_or_default();
    assert_eq!(runs.len(), 5, "a parent run and four trial runs");
    let tag = |run: &Value, key: &str| -> Option<String> {
        run["data"]["tags"]
            .as_array()?
            .iter()
            .find(|t| t["key"] == key)
            .and_then(|t| t["value"].as_str().map(str::to_owned))
    };
    let children: Vec<&Value> = runs
        .iter()
        .filter(|r| tag(r, "mlflow.parentRunId").is_some())
        .collect();
    assert_eq!(children.len(), 4);
    let accuracy = |run: &Value| -> f64 {
        run["data"]["metrics"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["key"] == "accuracy"))
            .and_then(|m| m["value"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let best = children
        .iter()
        .find(|r| tag(r, "flywheel.best").as_deref() == Some("true"))
        .expect("a best trial");
    let top = children
        .iter()
        .map(|r| accuracy(r))
        .fold(f64::MIN, f64::max);
    assert_eq!(
        accuracy(best),
        top,
        "the best trial has the highest accuracy"
    );
    assert_eq!(
        versions[0]["run_id"], best["info"]["run_id"],
        "the version links the best run"
    );
    stack.stop().await
}

#[tokio::test]
async fn an_attempt_its_runner_stops_listing_is_retried() -> anyhow::Result<()> {
    use flywheel_events::control::{
        AttemptClaim, AttemptRef, ClaimReply, RunnerHeartbeat, decode_control, encode_control,
    };
    let mut stack = Stack::start(true, &[("listing_grace_ms", "1000")]).await?;
    let version = stack.push_dataset("events", b"a,b\n1,2\n").await?;
    // A runner that claims an attempt and then forgets it (its claim reply was "lost").
    let heartbeat = |finished: Vec<AttemptRef>| {
        encode_control(&RunnerHeartbeat {
            runner: "forgetful".into(),
            pool: "default".into(),
            capacity: flywheel_events::payloads::Resources {
                cpu: 4.0,
                memory_mb: 4096,
                gpu: 0,
            },
            slots: 1,
            running: Vec::new(),
            finished,
        })
    };
    let beat = heartbeat(Vec::new())?;
    let client = stack.bus.client().clone();
    client
        .request(
            stack.bus.subjects().runner_heartbeats(),
            beat.clone().into(),
        )
        .await?;
    let job = stack
        .submit(
            request(
                "forgotten-1",
                "forgotten",
                ("events", &version),
                sleepy_trainer(0.0),
            ),
            "default",
        )
        .await?;
    let id = job["job_id"].as_str().unwrap_or_default().to_owned();
    stack.wait_job(&id, Some("dispatched"), MINUTE).await?;
    let claim = encode_control(&AttemptClaim {
        attempt: AttemptRef {
            job_id: id.clone(),
            attempt: 1,
        },
        runner: "forgetful".into(),
    })?;
    let reply = client
        .request(stack.bus.subjects().attempt_claims(), claim.into())
        .await?;
    let reply: ClaimReply = decode_control(&reply.payload).map_err(anyhow::Error::msg)?;
    assert!(reply.granted, "{reply:?}");
    assert_eq!(stack.job(&id).await?["runner"], "forgetful");
    // Listed as finished (its report on the way), the attempt is not lost, past the grace.
    let finished_beat = heartbeat(vec![AttemptRef {
        job_id: id.clone(),
        attempt: 1,
    }])?;
    for _ in 0..15 {
        client
            .request(
                stack.bus.subjects().runner_heartbeats(),
                finished_beat.clone().into(),
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let waiting = stack.job(&id).await?;
    assert_eq!(
        (&waiting["status"], &waiting["attempts"]),
        (&json!("running"), &json!(1)),
        "{waiting}"
    );
    // It keeps beating without the attempt; a real runner joins.
    stack.start_runner(&[("slots", "1")]).await?;
    let deadline = std::time::Instant::now() + MINUTE;
    let done = loop {
        client
            .request(
                stack.bus.subjects().runner_heartbeats(),
                beat.clone().into(),
            )
            .await?;
        let job = stack.job(&id).await?;
        if job["status"] == "succeeded" || std::time::Instant::now() > deadline {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2);
    assert_eq!(done["attempt_history"][0]["status"], "lost");
    stack.stop().await
}
