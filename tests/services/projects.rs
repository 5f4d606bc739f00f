//! Project isolation in the registry: with tokens of projects `alpha` and `beta`, what one
//! creates the other finds nowhere — not in lists, searches, gets, lineage, the overview, the
//! event log or the live event stream — and cannot change; an all-projects admin sees both and
//! narrows to one with `X-Flywheel-Project`.

use std::time::Duration;

use anyhow::Context;
use flywheel_testkit::service::InProcess;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use super::access::{BOOTSTRAP, call, settings, token};

/// A CSV pushed as a dataset version by `token`: the status and answer.
async fn push_answer(
    registry: &InProcess,
    token: &str,
    dataset: &str,
) -> anyhow::Result<(u16, Value)> {
    let response = reqwest::Client::new()
        .post(registry.url(&format!("/api/v1/datasets/{dataset}/versions?format=csv")))
        .bearer_auth(token)
        .body("age,plan\n31,pro\n45,basic\n")
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// A CSV pushed as a dataset version by `token`: the status.
async fn push(registry: &InProcess, token: &str, dataset: &str) -> anyhow::Result<u16> {
    Ok(push_answer(registry, token, dataset).await?.0)
}

/// Names of the registered models `token` finds (with an optional project header).
async fn model_names(
    registry: &InProcess,
    token: &str,
    project: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let mut request = reqwest::Client::new()
        .get(registry.url("/api/2.0/mlflow/registered-models/search"))
        .bearer_auth(token);
    if let Some(project) = project {
        request = request.header("X-Flywheel-Project", project);
    }
    let response = request.send().await?;
    anyhow::ensure!(response.status() == 200, "search: {}", response.status());
    let body: Value = response.json().await?;
    let mut names: Vec<String> = body["registered_models"]
        .as_array()
        .map(|models| {
            models
                .iter()
                .filter_map(|m| m["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    Ok(names)
}

#[tokio::test]
async fn a_project_sees_nothing_of_another() -> anyhow::Result<()> {
    let prefix = flywheel_testkit::unique_name();
    let registry =
        InProcess::start(settings("registry", &prefix).await?, flywheel_registry::run).await?;
    let alpha = token(
        &registry,
        json!({"name": "alice", "project": "alpha", "role": "operator"}),
    )
    .await?;
    let beta = token(
        &registry,
        json!({"name": "bruno", "project": "beta", "role": "operator"}),
    )
    .await?;
    let mlflow = |path: &str| registry.url(&format!("/api/2.0/mlflow/{path}"));

    // Beta listens to the live stream before anything happens.
    let stream = reqwest::Client::new()
        .get(registry.url("/api/v1/events/stream"))
        .bearer_auth(&beta)
        .send()
        .await?;
    assert_eq!(stream.status(), 200);
    let mut chunks = stream.bytes_stream();

    // Alpha: a dataset, an experiment with a run, a model with a version.
    let (status, pushed) = push_answer(&registry, &alpha, "a-data").await?;
    assert_eq!(status, 201, "{pushed}");
    let data_version = pushed["version"].as_str().context("version")?.to_owned();
    let (status, created) = call(
        Method::POST,
        &mlflow("experiments/create"),
        Some(&alpha),
        Some(json!({"name": "a-exp"})),
    )
    .await?;
    assert_eq!(status, 200, "{created}");
    let experiment = created["experiment_id"].as_str().context("id")?.to_owned();
    let (status, run) = call(
        Method::POST,
        &mlflow("runs/create"),
        Some(&alpha),
        Some(json!({"experiment_id": experiment})),
    )
    .await?;
    assert_eq!(status, 200, "{run}");
    let run_id = run["run"]["info"]["run_id"]
        .as_str()
        .context("run id")?
        .to_owned();
    let (status, body) = call(
        Method::POST,
        &mlflow("registered-models/create"),
        Some(&alpha),
        Some(json!({"name": "a-model"})),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        Method::POST,
        &mlflow("model-versions/create"),
        Some(&alpha),
        Some(json!({"name": "a-model", "source": format!("mlflow-artifacts:/{experiment}/m"), "run_id": run_id})),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    // Beta's own model.
    let (status, body) = call(
        Method::POST,
        &mlflow("registered-models/create"),
        Some(&beta),
        Some(json!({"name": "b-model"})),
    )
    .await?;
    assert_eq!(status, 200, "{body}");

    // Reads: beta finds nothing of alpha's anywhere.
    let (status, listed) = call(
        Method::GET,
        &registry.url("/api/v1/datasets"),
        Some(&beta),
        None,
    )
    .await?;
    assert_eq!((status, listed.clone()), (200, json!([])), "{listed}");
    let (status, listed) = call(
        Method::GET,
        &registry.url("/api/v1/datasets/a-data/versions"),
        Some(&beta),
        None,
    )
    .await?;
    assert_eq!((status, listed.clone()), (200, json!([])), "{listed}");
    for path in [
        format!("/api/v1/datasets/a-data/versions/{data_version}"),
        format!("/api/v1/datasets/a-data/versions/{data_version}/profile"),
        "/api/v1/models/a-model/versions/1/lineage".to_owned(),
        "/api/v1/models/a-model/audit".to_owned(),
        "/api/2.0/mlflow/registered-models/get?name=a-model".to_owned(),
        "/api/2.0/mlflow/model-versions/get?name=a-model&version=1".to_owned(),
        format!("/api/2.0/mlflow/runs/get?run_id={run_id}"),
        format!("/api/2.0/mlflow/experiments/get?experiment_id={experiment}"),
        "/api/2.0/mlflow/experiments/get-by-name?experiment_name=a-exp".to_owned(),
        format!("/api/2.0/mlflow-artifacts/artifacts?path={experiment}"),
    ] {
        let (status, body) = call(Method::GET, &registry.url(&path), Some(&beta), None).await?;
        assert_eq!(status, 404, "{path} answered beta {status}: {body}");
    }
    assert_eq!(model_names(&registry, &beta, None).await?, ["b-model"]);
    let (_, versions) = call(
        Method::GET,
        &mlflow("model-versions/search?filter=name%3D%27a-model%27"),
        Some(&beta),
        None,
    )
    .await?;
    assert!(
        versions["model_versions"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{versions}"
    );
    let (_, experiments) = call(
        Method::POST,
        &mlflow("experiments/search"),
        Some(&beta),
        Some(json!({"max_results": 1000})),
    )
    .await?;
    assert!(!experiments.to_string().contains("a-exp"), "{experiments}");
    let (_, runs) = call(
        Method::POST,
        &mlflow("runs/search"),
        Some(&beta),
        Some(json!({"experiment_ids": [experiment]})),
    )
    .await?;
    assert!(runs["runs"].as_array().is_none_or(Vec::is_empty), "{runs}");
    let (_, overview) = call(
        Method::GET,
        &registry.url("/api/v1/overview"),
        Some(&beta),
        None,
    )
    .await?;
    assert_eq!(
        (
            &overview["models"],
            &overview["datasets"],
            &overview["model_versions"]
        ),
        (&json!(1), &json!(0), &json!(0)),
        "{overview}"
    );

    // Writes: beta cannot touch alpha's resources, nor take their names.
    let (status, body) = call(
        Method::POST,
        &mlflow("runs/log-metric"),
        Some(&beta),
        Some(json!({"run_id": run_id, "key": "acc", "value": 0.5, "timestamp": 0})),
    )
    .await?;
    assert_eq!(status, 404, "{body}");
    let (status, body) = call(
        Method::POST,
        &mlflow("model-versions/create"),
        Some(&beta),
        Some(json!({"name": "a-model", "source": "s3://x/y"})),
    )
    .await?;
    assert_eq!(status, 404, "{body}");
    let (status, body) = call(
        Method::POST,
        &mlflow("registered-models/create"),
        Some(&beta),
        Some(json!({"name": "a-model"})),
    )
    .await?;
    assert!(
        (400..500).contains(&status) && body.to_string().contains("already exists"),
        "{status} {body}"
    );
    let (status, body) = call(
        Method::PUT,
        &registry.url("/api/v1/datasets/a-data/suite"),
        Some(&beta),
        Some(json!([])),
    )
    .await?;
    assert_eq!(status, 409, "{body}");
    assert_eq!(push(&registry, &beta, "a-data").await?, 409);
    // Only beta's own project can be named.
    let response = reqwest::Client::new()
        .get(registry.url("/api/v1/datasets"))
        .bearer_auth(&beta)
        .header("X-Flywheel-Project", "alpha")
        .send()
        .await?;
    assert_eq!(response.status(), 403);

    // Beta's own event reaches its stream; none of alpha's do.
    assert_eq!(push(&registry, &beta, "b-data").await?, 201);
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = chunks.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk?));
            if seen.contains("\"b-data\"") && seen.ends_with("\n\n") {
                return anyhow::Ok(());
            }
        }
        anyhow::bail!("the stream ended")
    })
    .await
    .with_context(|| format!("beta's event never arrived: {seen}"))??;
    // Alpha's events were published before beta's push was answered; give stragglers a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(Some(chunk)) =
        tokio::time::timeout(Duration::from_millis(200), chunks.next()).await
    {
        seen.push_str(&String::from_utf8_lossy(&chunk?));
    }
    assert!(
        !seen.contains("a-data") && !seen.contains("a-model"),
        "alpha's events on beta's stream: {seen}"
    );

    // The event log: beta's view holds only beta's events; the admin's holds alpha's, stamped.
    let recent = |who: &str| {
        let url = registry.url("/api/v1/events/recent?limit=1000");
        let who = who.to_owned();
        async move {
            let (status, events) = call(Method::GET, &url, Some(&who), None).await?;
            anyhow::ensure!(status == 200, "recent: {status} {events}");
            anyhow::Ok(events.as_array().cloned().unwrap_or_default())
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let admin_events = loop {
        let events = recent(BOOTSTRAP).await?;
        let registered = events
            .iter()
            .any(|e| e["type"] == "model.version.registered" && e["project"] == "alpha");
        if registered || tokio::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let projects_of = |events: &[Value], kind: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["type"] == kind)
            .filter_map(|e| e["project"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        projects_of(&admin_events, "model.version.registered"),
        ["alpha"]
    );
    let mut dataset_projects = projects_of(&admin_events, "dataset.version.created");
    dataset_projects.sort();
    assert_eq!(dataset_projects, ["alpha", "beta"]);
    let beta_events = recent(&beta).await?;
    assert!(!beta_events.is_empty());
    assert!(
        beta_events.iter().all(|e| e["project"] == "beta"),
        "{beta_events:?}"
    );

    // Alpha sees its own and not beta's; the all-projects admin sees both, or one on request.
    assert_eq!(model_names(&registry, &alpha, None).await?, ["a-model"]);
    assert_eq!(
        model_names(&registry, BOOTSTRAP, None).await?,
        ["a-model", "b-model"]
    );
    assert_eq!(
        model_names(&registry, BOOTSTRAP, Some("beta")).await?,
        ["b-model"]
    );
    let (status, lineage) = call(
        Method::GET,
        &registry.url("/api/v1/models/a-model/versions/1/lineage"),
        Some(&alpha),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{lineage}");
    assert_eq!(lineage["run_id"], json!(run_id));
    Ok(())
}

/// A training request for `model` as JSON.
fn training_request(request_id: &str, model: &str) -> Value {
    json!({
        "request_id": request_id,
        "model": model,
        "dataset": {"name": "customers", "version": "3f2a"},
        "trainer": {"kind": "builtin", "name": "logistic_regression", "params": {}},
        "resources": {"cpu": 1.0, "memory_mb": 512, "gpu": 0},
        "priority": 0,
        "reason": "manual"
    })
}

#[tokio::test]
async fn scheduler_jobs_triggers_and_quotas_stay_in_their_project() -> anyhow::Result<()> {
    let prefix = flywheel_testkit::unique_name();
    let registry =
        InProcess::start(settings("registry", &prefix).await?, flywheel_registry::run).await?;
    let scheduler = InProcess::start(
        settings("scheduler", &prefix).await?,
        flywheel_scheduler::run,
    )
    .await?;
    let alpha = token(
        &registry,
        json!({"name": "alice", "project": "alpha", "role": "operator"}),
    )
    .await?;
    let beta = token(
        &registry,
        json!({"name": "bruno", "project": "beta", "role": "admin"}),
    )
    .await?;
    let url = |path: &str| scheduler.url(path);

    // Alpha's job lands in alpha, whatever else it could have named.
    let (status, job) = call(
        Method::POST,
        &url("/api/v1/jobs"),
        Some(&alpha),
        Some(training_request("r-alpha", "a-model")),
    )
    .await?;
    assert_eq!(
        (status, job["project"].as_str()),
        (201, Some("alpha")),
        "{job}"
    );
    let job_id = job["job_id"].as_str().context("job id")?.to_owned();
    let (status, body) = call(
        Method::POST,
        &url("/api/v1/jobs?project=beta"),
        Some(&alpha),
        Some(training_request("r-alpha-2", "a-model")),
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    let trigger = json!({"cron": "0 0 * * *", "request": training_request("template", "a-model")});
    let (status, body) = call(
        Method::PUT,
        &url("/api/v1/triggers/nightly"),
        Some(&alpha),
        Some(trigger.clone()),
    )
    .await?;
    assert_eq!(
        (status, body["project"].as_str()),
        (200, Some("alpha")),
        "{body}"
    );

    // Beta (an admin, of beta) finds none of it and changes none of it.
    let (status, jobs) = call(Method::GET, &url("/api/v1/jobs"), Some(&beta), None).await?;
    assert_eq!((status, jobs), (200, json!([])));
    for (method, path) in [
        (Method::GET, format!("/api/v1/jobs/{job_id}")),
        (Method::POST, format!("/api/v1/jobs/{job_id}/cancel")),
        (Method::GET, "/api/v1/triggers/nightly".to_owned()),
        (Method::DELETE, "/api/v1/triggers/nightly".to_owned()),
    ] {
        let (status, body) = call(method, &url(&path), Some(&beta), None).await?;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, triggers) = call(Method::GET, &url("/api/v1/triggers"), Some(&beta), None).await?;
    assert_eq!((status, triggers), (200, json!([])));
    let (status, body) = call(
        Method::PUT,
        &url("/api/v1/triggers/nightly"),
        Some(&beta),
        Some(trigger),
    )
    .await?;
    assert_eq!(status, 409, "{body}");
    let (status, usage) = call(Method::GET, &url("/api/v1/usage"), Some(&beta), None).await?;
    assert_eq!(status, 200);
    assert!(!usage.to_string().contains("alpha"), "{usage}");
    // Quotas: a project's viewers read it, only its admins set it.
    let quota = json!({"max_jobs": 2, "cpu": 4.0, "memory_mb": 8192, "gpu": 0});
    let (status, _) = call(Method::GET, &url("/api/v1/quotas/alpha"), Some(&beta), None).await?;
    assert_eq!(status, 403);
    let (status, _) = call(
        Method::GET,
        &url("/api/v1/quotas/alpha"),
        Some(&alpha),
        None,
    )
    .await?;
    assert_eq!(status, 200);
    let (status, _) = call(
        Method::PUT,
        &url("/api/v1/quotas/alpha"),
        Some(&alpha),
        Some(quota.clone()),
    )
    .await?;
    assert_eq!(status, 403, "an operator does not set quotas");
    let (status, body) = call(
        Method::PUT,
        &url("/api/v1/quotas/beta"),
        Some(&beta),
        Some(quota),
    )
    .await?;
    assert_eq!(status, 200, "{body}");

    // Alpha still has its job and trigger; the all-projects admin sees them too.
    let (status, job) = call(
        Method::GET,
        &url(&format!("/api/v1/jobs/{job_id}")),
        Some(&alpha),
        None,
    )
    .await?;
    assert_eq!((status, job["project"].as_str()), (200, Some("alpha")));
    let (_, jobs) = call(Method::GET, &url("/api/v1/jobs"), Some(BOOTSTRAP), None).await?;
    assert_eq!(jobs.as_array().map(Vec::len), Some(1), "{jobs}");
    Ok(())
}

#[tokio::test]
async fn monitor_reports_alerts_and_settings_follow_their_deployments_project() -> anyhow::Result<()>
{
    use flywheel_events::payloads::PredictionLogged;
    use flywheel_events::{Envelope, Event};

    let prefix = flywheel_testkit::unique_name();
    let registry =
        InProcess::start(settings("registry", &prefix).await?, flywheel_registry::run).await?;
    let mut monitor_settings = settings("monitor", &prefix).await?;
    monitor_settings
        .service
        .insert("window_size".into(), "20".into());
    let monitor = InProcess::start(monitor_settings, flywheel_monitor::run).await?;
    let alpha = token(
        &registry,
        json!({"name": "alice", "project": "alpha", "role": "operator"}),
    )
    .await?;
    let beta = token(
        &registry,
        json!({"name": "bruno", "project": "beta", "role": "admin"}),
    )
    .await?;

    // The deployer stamps each log with its deployment's project; one window each.
    let bus =
        flywheel_bus::Bus::connect(&flywheel_testkit::bus_config(&prefix), "deployer").await?;
    for (deployment, project) in [("a-dep", "alpha"), ("b-dep", "beta")] {
        for i in 0..20 {
            let log = Event::PredictionLogged(PredictionLogged {
                deployment: deployment.into(),
                model: format!("{deployment}-model"),
                version: 1,
                request_id: format!("{deployment}-{i}"),
                inputs: [("x".to_owned(), json!(f64::from(i)))]
                    .into_iter()
                    .collect(),
                outputs: [("prediction".to_owned(), json!("0"))]
                    .into_iter()
                    .collect(),
                latency_us: 100,
                shadow: false,
                error: None,
            });
            bus.publish(&Envelope::new("deployer", project, log))
                .await?;
        }
    }
    let reports_of = |who: String| {
        let url = monitor.url("/api/v1/reports");
        async move {
            let (status, reports) = call(Method::GET, &url, Some(&who), None).await?;
            anyhow::ensure!(status == 200, "reports: {status} {reports}");
            let mut deployments: Vec<String> = reports
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["deployment"].as_str().map(str::to_owned))
                .collect();
            deployments.sort();
            anyhow::Ok((deployments, reports))
        }
    };
    flywheel_testkit::wait_for(
        "a report per deployment",
        Duration::from_secs(20),
        async || Ok(reports_of(BOOTSTRAP.to_owned()).await?.0.len() >= 2),
    )
    .await?;
    assert_eq!(reports_of(alpha.clone()).await?.0, ["a-dep"]);
    let (beta_sees, _) = reports_of(beta.clone()).await?;
    assert_eq!(beta_sees, ["b-dep"]);
    let (_, alpha_reports) = reports_of(alpha.clone()).await?;
    let alpha_report = alpha_reports[0]["report_id"]
        .as_str()
        .context("report id")?
        .to_owned();
    let (status, _) = call(
        Method::GET,
        &monitor.url(&format!("/api/v1/reports/{alpha_report}")),
        Some(&beta),
        None,
    )
    .await?;
    assert_eq!(status, 404);
    let (status, _) = call(
        Method::GET,
        &monitor.url(&format!("/api/v1/reports/{alpha_report}")),
        Some(&alpha),
        None,
    )
    .await?;
    assert_eq!(status, 200);

    // Settings need the role in the deployment's project; webhooks an admin of every project.
    let (status, _) = call(
        Method::GET,
        &monitor.url("/api/v1/monitoring/a-dep"),
        Some(&beta),
        None,
    )
    .await?;
    assert_eq!(status, 403);
    let (status, _) = call(
        Method::GET,
        &monitor.url("/api/v1/monitoring/a-dep"),
        Some(&alpha),
        None,
    )
    .await?;
    assert_eq!(status, 200);
    let (status, _) = call(
        Method::GET,
        &monitor.url("/api/v1/webhooks"),
        Some(&beta),
        None,
    )
    .await?;
    assert_eq!(
        status, 403,
        "a project's admin does not see every project's webhooks"
    );
    let (status, _) = call(
        Method::GET,
        &monitor.url("/api/v1/webhooks"),
        Some(BOOTSTRAP),
        None,
    )
    .await?;
    assert_eq!(status, 200);

    // Retraining policies belong to the project that set them.
    let policy =
        json!({"trainer": {"kind": "builtin", "name": "logistic_regression", "params": {}}});
    let (status, body) = call(
        Method::PUT,
        &monitor.url("/api/v1/policies/a-dep-model"),
        Some(&alpha),
        Some(policy.clone()),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(
        Method::GET,
        &monitor.url("/api/v1/policies/a-dep-model"),
        Some(&beta),
        None,
    )
    .await?;
    assert_eq!(status, 404);
    let (status, _) = call(
        Method::PUT,
        &monitor.url("/api/v1/policies/a-dep-model"),
        Some(&beta),
        Some(policy),
    )
    .await?;
    assert_eq!(status, 409);

    // The monitor's events are in the deployment's project: the registry's event log shows
    // each project its own reports.
    let mut projects = Vec::new();
    flywheel_testkit::wait_for(
        "both reports in the event log",
        Duration::from_secs(10),
        async || {
            let (_, events) = call(
                Method::GET,
                &registry.url("/api/v1/events/recent?limit=1000"),
                Some(BOOTSTRAP),
                None,
            )
            .await?;
            projects = events
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["type"] == "monitor.report.created")
                .map(|e| {
                    format!(
                        "{}:{}",
                        e["payload"]["deployment"].as_str().unwrap_or_default(),
                        e["project"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            projects.sort();
            Ok(projects.len() >= 2)
        },
    )
    .await?;
    assert_eq!(projects, ["a-dep:alpha", "b-dep:beta"]);
    Ok(())
}
