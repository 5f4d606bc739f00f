//! The `kubernetes` backend against a scripted Kubernetes API server (HTTP, the paths and
//! bodies kube sends), with real NATS, PostgreSQL and S3 behind the scheduler, registry and
//! runner. The scripted server plays kubelet too: a created Job's pod really runs this build's
//! `flywheel-trainer-runner attempt` with the environment Kubernetes would give it (its `env`,
//! Secret keys and ConfigMaps resolved), and its output is the pod's log. Per model it can
//! also keep a pod unschedulable, OOM-kill it, or refuse the Job at admission.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use support::{Stack, binary_csv, request};

const MINUTE: Duration = Duration::from_secs(60);
const NAMESPACE: &str = "ml-training";

/// One request the runner made.
#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    body: Value,
}

/// How a Job's pod behaves, chosen by the Job's model.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    /// Runs the command for real.
    Run,
    /// Never scheduled: no node has the GPUs.
    Unschedulable,
    /// Runs a moment, then the kernel kills it for memory.
    OomKilled,
    /// Refused at admission (422), as a LimitRange would.
    Refused,
    /// Its image cannot be pulled.
    BadImage,
}

#[derive(Debug)]
struct FakePod {
    name: String,
    behaviour: Behaviour,
    started: Instant,
    log: Arc<Mutex<String>>,
    exit: Arc<Mutex<Option<i32>>>,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
}

#[derive(Debug)]
struct FakeJob {
    manifest: Value,
    pod: FakePod,
}

#[derive(Debug)]
struct FakeCluster {
    binary: String,
    behaviours: HashMap<String, Behaviour>,
    config_maps: HashMap<String, Vec<(String, String)>>,
    secrets: HashMap<String, HashMap<String, String>>,
    jobs: Mutex<HashMap<String, FakeJob>>,
    recorded: Mutex<Vec<Recorded>>,
}

type Shared = Arc<FakeCluster>;

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

impl FakeCluster {
    fn record(&self, method: Method, uri: &Uri, query: &HashMap<String, String>, body: Value) {
        if let Ok(mut recorded) = self.recorded.lock() {
            recorded.push(Recorded {
                method,
                path: uri.path().to_owned(),
                query: query.clone(),
                body,
            });
        }
    }

    fn recorded(&self) -> Vec<Recorded> {
        self.recorded.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The container's environment as the kubelet builds it: envFrom first, env over it.
    fn environment(&self, container: &Value) -> Result<Vec<(String, String)>, String> {
        let mut env = Vec::new();
        for source in container["envFrom"].as_array().into_iter().flatten() {
            if let Some(name) = source["configMapRef"]["name"].as_str() {
                let map = self
                    .config_maps
                    .get(name)
                    .ok_or(format!("configmap \"{name}\" not found"))?;
                env.extend(map.iter().cloned());
            }
            if let Some(name) = source["secretRef"]["name"].as_str() {
                let secret = self
                    .secrets
                    .get(name)
                    .ok_or(format!("secret \"{name}\" not found"))?;
                env.extend(secret.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        for variable in container["env"].as_array().into_iter().flatten() {
            let name = variable["name"].as_str().unwrap_or_default().to_owned();
            let value = if let Some(value) = variable["value"].as_str() {
                value.to_owned()
            } else {
                let reference = &variable["valueFrom"]["secretKeyRef"];
                let (secret, key) = (
                    reference["name"].as_str().unwrap_or_default(),
                    reference["key"].as_str().unwrap_or_default(),
                );
                self.secrets
                    .get(secret)
                    .and_then(|s| s.get(key))
                    .cloned()
                    .ok_or(format!("couldn't find key {key} in Secret {secret}"))?
            };
            env.push((name, value));
        }
        Ok(env)
    }

    /// Starts the pod's container: this build's binary stands for the image.
    fn start_container(&self, manifest: &Value, pod: &mut FakePod) -> Result<(), String> {
        let container = &manifest["spec"]["template"]["spec"]["containers"][0];
        let env = self.environment(container)?;
        let command: Vec<&str> = container["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if command.first() != Some(&"flywheel-trainer-runner") {
            return Err(format!("unexpected command {command:?}"));
        }
        let mut process = tokio::process::Command::new(&self.binary);
        process
            .args(&command[1..])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = process.spawn().map_err(|e| e.to_string())?;
        let mut readers = Vec::new();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let log = pod.log.clone();
            readers.push(tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                let mut lines = tokio::io::BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut log) = log.lock() {
                        log.push_str(&line);
                        log.push('\n');
                    }
                }
            }));
        }
        // The exit is recorded once both streams are drained: a finished pod's log is whole.
        // Dropping the sender (the Job deleted) kills the process.
        let (kill, mut killed) = tokio::sync::oneshot::channel::<()>();
        let exit = pod.exit.clone();
        tokio::spawn(async move {
            let code = tokio::select! {
                status = child.wait() => status.ok().and_then(|s| s.code()).unwrap_or(-1),
                _ = &mut killed => {
                    let _ = child.kill().await;
                    return;
                }
            };
            for reader in readers {
                let _ = reader.await;
            }
            if let Ok(mut exit) = exit.lock() {
                *exit = Some(code);
            }
        });
        pod.kill = Some(kill);
        Ok(())
    }

    /// The pod's status now.
    fn pod_status(pod: &FakePod) -> Value {
        let container = |state: Value| {
            json!([{"name": "train", "ready": false, "restartCount": 0, "image": "flywheel:test",
                "imageID": "", "state": state}])
        };
        match pod.behaviour {
            Behaviour::Unschedulable | Behaviour::Refused => json!({"phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}),
            Behaviour::BadImage => json!({"phase": "Pending", "containerStatuses": container(
                json!({"waiting": {"reason": "ImagePullBackOff",
                    "message": "Back-off pulling image \"flywheel:test\""}}))}),
            Behaviour::OomKilled if pod.started.elapsed() < Duration::from_secs(1) => {
                json!({"phase": "Running", "containerStatuses": container(json!({"running": {}}))})
            }
            Behaviour::OomKilled => json!({"phase": "Failed", "containerStatuses":
                container(json!({"terminated": {"reason": "OOMKilled", "exitCode": 137}}))}),
            Behaviour::Run => match pod.exit.lock().ok().and_then(|e| *e) {
                None => json!({"phase": "Running", "containerStatuses":
                        container(json!({"running": {}}))}),
                Some(0) => json!({"phase": "Succeeded", "containerStatuses":
                        container(json!({"terminated": {"reason": "Completed", "exitCode": 0}}))}),
                Some(code) => json!({"phase": "Failed", "containerStatuses":
                        container(json!({"terminated": {"reason": "Error", "exitCode": code}}))}),
            },
        }
    }

    fn job_status(pod_status: &Value) -> Value {
        match pod_status["phase"].as_str() {
            Some("Succeeded") => json!({"succeeded": 1,
                "conditions": [{"type": "Complete", "status": "True"}]}),
            Some("Failed") => json!({"failed": 1, "conditions": [{"type": "Failed",
                "status": "True", "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit"}]}),
            _ => json!({"active": 1}),
        }
    }
}

async fn create_job(
    State(cluster): State<Shared>,
    Path(namespace): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    axum::Json(manifest): axum::Json<Value>,
) -> Response {
    cluster.record(Method::POST, &uri, &query, manifest.clone());
    let name = manifest["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let model = manifest["metadata"]["annotations"]["flywheel.dev/model"]
        .as_str()
        .unwrap_or_default();
    let behaviour = cluster
        .behaviours
        .get(model)
        .copied()
        .unwrap_or(Behaviour::Run);
    if behaviour == Behaviour::Refused {
        return status(
            422,
            "Invalid",
            format!(
                "Job.batch \"{name}\" is invalid: spec.template.spec.containers[0].resources.requests: Invalid value: \"512Mi\": exceeds the namespace's LimitRange"
            ),
        );
    }
    let mut jobs = match cluster.jobs.lock() {
        Ok(jobs) => jobs,
        Err(_) => return status(500, "InternalError", "poisoned".into()),
    };
    if jobs.contains_key(&name) {
        return status(
            409,
            "AlreadyExists",
            format!("jobs.batch \"{name}\" already exists"),
        );
    }
    let mut stored = manifest.clone();
    stored["metadata"]["namespace"] = json!(namespace);
    stored["metadata"]["uid"] = json!(uuid::Uuid::now_v7().to_string());
    let mut pod = FakePod {
        name: format!("{name}-x7k2p"),
        behaviour,
        started: Instant::now(),
        log: Arc::default(),
        exit: Arc::default(),
        kill: None,
    };
    if behaviour == Behaviour::Run
        && let Err(e) = cluster.start_container(&stored, &mut pod)
    {
        return status(500, "InternalError", e);
    }
    jobs.insert(
        name,
        FakeJob {
            manifest: stored.clone(),
            pod,
        },
    );
    (StatusCode::CREATED, axum::Json(stored)).into_response()
}

async fn job(
    State(cluster): State<Shared>,
    Path((_, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    body: axum::body::Bytes,
) -> Response {
    // kube sends DeleteOptions as the body.
    let options = serde_json::from_slice(&body).unwrap_or(Value::Null);
    cluster.record(method.clone(), &uri, &query, options);
    let Ok(mut jobs) = cluster.jobs.lock() else {
        return status(500, "InternalError", "poisoned".into());
    };
    if method == Method::DELETE {
        return match jobs.remove(&name) {
            // Background propagation: the pod goes too (dropping the child kills it).
            Some(mut job) => {
                job.manifest["metadata"]["deletionTimestamp"] = json!("2026-11-28T00:00:00Z");
                axum::Json(job.manifest).into_response()
            }
            None => status(404, "NotFound", format!("jobs.batch \"{name}\" not found")),
        };
    }
    match jobs.get_mut(&name) {
        Some(job) => {
            let pod_status = FakeCluster::pod_status(&job.pod);
            let mut body = job.manifest.clone();
            body["status"] = FakeCluster::job_status(&pod_status);
            axum::Json(body).into_response()
        }
        None => status(404, "NotFound", format!("jobs.batch \"{name}\" not found")),
    }
}

async fn list_jobs(
    State(cluster): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
) -> Response {
    cluster.record(Method::GET, &uri, &query, Value::Null);
    let selector = query.get("labelSelector").cloned().unwrap_or_default();
    let Some((label, value)) = selector.split_once('=') else {
        return status(400, "BadRequest", format!("unexpected selector {selector}"));
    };
    let Ok(jobs) = cluster.jobs.lock() else {
        return status(500, "InternalError", "poisoned".into());
    };
    let items: Vec<Value> = jobs
        .values()
        .filter(|job| job.manifest["metadata"]["labels"][label] == value)
        .map(|job| {
            let mut body = job.manifest.clone();
            body["status"] = FakeCluster::job_status(&FakeCluster::pod_status(&job.pod));
            body
        })
        .collect();
    axum::Json(json!({"apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": items}))
        .into_response()
}

async fn pods(
    State(cluster): State<Shared>,
    Path(namespace): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
) -> Response {
    cluster.record(Method::GET, &uri, &query, Value::Null);
    let selector = query.get("labelSelector").cloned().unwrap_or_default();
    let Some(job_name) = selector.strip_prefix("job-name=") else {
        return status(400, "BadRequest", format!("unexpected selector {selector}"));
    };
    let Ok(mut jobs) = cluster.jobs.lock() else {
        return status(500, "InternalError", "poisoned".into());
    };
    let items: Vec<Value> = jobs
        .get_mut(job_name)
        .map(|job| {
            let status = FakeCluster::pod_status(&job.pod);
            json!({"metadata": {"name": job.pod.name, "namespace": namespace,
                "creationTimestamp": "2026-11-28T00:00:00Z",
                "labels": {"job-name": job_name, "batch.kubernetes.io/job-name": job_name}},
                "status": status})
        })
        .into_iter()
        .collect();
    axum::Json(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}))
        .into_response()
}

async fn pod_log(
    State(cluster): State<Shared>,
    Path((_, pod)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
) -> Response {
    cluster.record(Method::GET, &uri, &query, Value::Null);
    let found = cluster.jobs.lock().ok().and_then(|jobs| {
        jobs.values()
            .find(|j| j.pod.name == pod)
            .map(|j| (j.pod.log.clone(), j.pod.exit.clone()))
    });
    let Some((log, exit)) = found else {
        return status(404, "NotFound", format!("pods \"{pod}\" not found"));
    };
    if query.get("follow").map(String::as_str) != Some("true") {
        return log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
            .into_response();
    }
    // Following: what is there, then what comes, until the container exited.
    let stream = futures::stream::unfold(0usize, move |sent| {
        let (log, exit) = (log.clone(), exit.clone());
        async move {
            loop {
                let (text, ended) = (
                    log.lock().map(|l| l.clone()).unwrap_or_default(),
                    exit.lock().map(|e| e.is_some()).unwrap_or(true),
                );
                if text.len() > sent {
                    let chunk = text[sent..].to_owned();
                    return Some((Ok::<_, std::io::Error>(chunk), text.len()));
                }
                if ended {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    Body::from_stream(stream).into_response()
}

async fn start_fake(cluster: Shared) -> anyhow::Result<String> {
    let app = Router::new()
        .route(
            "/apis/batch/v1/namespaces/{namespace}/jobs",
            axum::routing::post(create_job).get(list_jobs),
        )
        .route(
            "/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
            axum::routing::get(job).delete(job),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods",
            axum::routing::get(pods),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{pod}/log",
            axum::routing::get(pod_log),
        )
        .with_state(cluster);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(base)
}

const RUNNER_POD: &str = "trainer-runner-jobs-7d9f8-x2x4q";
const RUNNER_POD_UID: &str = "0c6e8f3a-5b1d-4e47-9a53-0f3f5ad1b6c2";

/// A runner running attempts as Jobs on the scripted cluster at `api`.
fn runner_options(api: &str) -> Vec<(&'static str, String)> {
    [
        ("backend", "kubernetes"),
        ("k8s_api_url", api),
        ("k8s_namespace", NAMESPACE),
        ("k8s_image", "flywheel:test"),
        ("k8s_poll_ms", "200"),
        ("k8s_stuck_after_secs", "1"),
        (
            "k8s_secret_env",
            "FLYWHEEL__ARTIFACTS__S3__ACCESS_KEY_ID=flywheel/s3-access-key-id,\
             FLYWHEEL__ARTIFACTS__S3__SECRET_ACCESS_KEY=flywheel/s3-secret-access-key",
        ),
        ("k8s_runner_pod", RUNNER_POD),
        ("k8s_runner_pod_uid", RUNNER_POD_UID),
        ("gpu", "2"),
        ("slots", "4"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect()
}

fn pairs<'a>(options: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    options.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A stack and the scripted cluster; the runner is started too when `runner`.
async fn kubernetes_stack(
    behaviours: &[(&str, Behaviour)],
    runner: bool,
) -> anyhow::Result<(Stack, Shared, Vec<(&'static str, String)>)> {
    let mut stack = Stack::start(true, &[]).await?;
    // What the cluster holds for the pods: the shared ConfigMap (artifact store, telemetry)
    // and the Secret with the S3 keys, as deploy/kubernetes has them.
    let settings_env = flywheel_testkit::service::settings_env(&stack.runner_settings)?;
    let secret_names = [
        ("FLYWHEEL__ARTIFACTS__S3__ACCESS_KEY_ID", "s3-access-key-id"),
        (
            "FLYWHEEL__ARTIFACTS__S3__SECRET_ACCESS_KEY",
            "s3-secret-access-key",
        ),
    ];
    let config_map: Vec<(String, String)> = settings_env
        .iter()
        .filter(|(k, _)| {
            k.starts_with("FLYWHEEL__ARTIFACTS__") || k.starts_with("FLYWHEEL__TELEMETRY__")
        })
        .filter(|(k, _)| !secret_names.iter().any(|(name, _)| name == k))
        .cloned()
        .collect();
    let secret: HashMap<String, String> = secret_names
        .iter()
        .filter_map(|(variable, key)| {
            settings_env
                .iter()
                .find(|(k, _)| k == variable)
                .map(|(_, v)| ((*key).to_owned(), v.clone()))
        })
        .collect();
    anyhow::ensure!(secret.len() == 2, "the test S3 settings have keys");
    let cluster = Arc::new(FakeCluster {
        binary: env!("CARGO_BIN_EXE_flywheel-trainer-runner").to_owned(),
        behaviours: behaviours
            .iter()
            .map(|(m, b)| ((*m).to_owned(), *b))
            .collect(),
        config_maps: HashMap::from([("flywheel".to_owned(), config_map)]),
        secrets: HashMap::from([("flywheel".to_owned(), secret)]),
        jobs: Mutex::default(),
        recorded: Mutex::default(),
    });
    let api = start_fake(cluster.clone()).await?;
    let options = runner_options(&api);
    if runner {
        stack.start_runner(&pairs(&options)).await?;
    }
    Ok((stack, cluster, options))
}

fn posts_of(cluster: &FakeCluster, model: &str) -> Vec<Value> {
    cluster
        .recorded()
        .into_iter()
        .filter(|r| r.method == Method::POST)
        .map(|r| r.body)
        .filter(|b| b["metadata"]["annotations"]["flywheel.dev/model"] == model)
        .collect()
}

#[tokio::test]
async fn an_attempt_runs_as_a_kubernetes_job_and_registers_its_version() -> anyhow::Result<()> {
    let (stack, cluster, _) = kubernetes_stack(&[], true).await?;
    let dataset = stack.push_dataset("customers", &binary_csv()).await?;
    let mut req = request(
        "k8s-1",
        "churn",
        ("customers", &dataset),
        json!({"kind": "builtin", "name": "logistic_regression", "params": {"target": "label", "seed": 7}}),
    );
    req["resources"] = json!({"cpu": 1.5, "memory_mb": 512, "gpu": 1});
    req["timeout_seconds"] = json!(120);
    let job = stack.submit(req, "default").await?;
    let id = job["job_id"].as_str().unwrap_or_default().to_owned();
    let done = stack.wait_job(&id, None, MINUTE).await?;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1);

    // The version the pod trained, packaged and uploaded is registered and verifies.
    let versions = stack
        .wait_versions("churn", 1, Duration::from_secs(20))
        .await?;
    let source = versions[0]["source"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let store = flywheel_artifacts::ArtifactStore::from_config(&stack.runner_settings.artifacts)?;
    let (manifest, _) = flywheel_artifacts::package::download(&store, &source).await?;
    assert!(manifest.metrics["accuracy"] > 0.7, "{:?}", manifest.metrics);
    assert_eq!(manifest.lineage.trainer, "builtin:logistic_regression");

    // The Job the runner asked for.
    let posts = posts_of(&cluster, "churn");
    assert_eq!(posts.len(), 1, "one Job per attempt");
    let recorded = cluster.recorded();
    let post = recorded
        .iter()
        .find(|r| r.method == Method::POST)
        .context("a POST")?;
    assert_eq!(
        post.path,
        format!("/apis/batch/v1/namespaces/{NAMESPACE}/jobs")
    );
    let body = &post.body;
    assert_eq!(body["kind"], "Job");
    assert_eq!(body["metadata"]["name"], format!("flywheel-train-{id}-1"));
    assert_eq!(
        body["metadata"]["labels"]["flywheel.dev/job-id"],
        id.as_str()
    );
    assert_eq!(body["spec"]["backoffLimit"], 0);
    assert_eq!(
        body["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Pod", "name": RUNNER_POD, "uid": RUNNER_POD_UID}]),
        "the Job goes when the runner's pod goes"
    );
    assert_eq!(body["spec"]["activeDeadlineSeconds"], 120);
    let pod = &body["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "flywheel:test");
    assert_eq!(
        container["command"],
        json!(["flywheel-trainer-runner", "attempt"])
    );
    assert_eq!(
        container["resources"],
        json!({"requests": {"cpu": "1500m", "memory": "512Mi", "nvidia.com/gpu": "1"},
               "limits": {"memory": "512Mi", "nvidia.com/gpu": "1"}})
    );
    assert_eq!(
        container["envFrom"],
        json!([{"configMapRef": {"name": "flywheel"}}])
    );
    let env = container["env"].as_array().context("env")?;
    let spec = env
        .iter()
        .find(|v| v["name"] == "FLYWHEEL_ATTEMPT_SPEC")
        .and_then(|v| v["value"].as_str())
        .context("the attempt's spec")?;
    let spec: Value = serde_json::from_str(spec)?;
    assert_eq!(spec["job_id"], id.as_str());
    assert_eq!(spec["request"]["model"], "churn");
    assert!(
        env.iter().any(
            |v| v["name"] == "FLYWHEEL__ARTIFACTS__S3__SECRET_ACCESS_KEY"
                && v["valueFrom"]["secretKeyRef"]
                    == json!({"name": "flywheel", "key": "s3-secret-access-key"})
        ),
        "secrets by reference, never by value: {env:?}"
    );
    assert!(
        !body.to_string().contains("\"testing\""),
        "no secret value in the Job"
    );
    // It followed the pod's log, read it whole at the end, and left the Job for `kubectl logs`.
    assert!(
        recorded.iter().any(|r| r.path.ends_with("/log")
            && r.query.get("follow").map(String::as_str) == Some("true"))
    );
    assert!(recorded.iter().any(|r| r.path.ends_with("/log")
        && r.query.get("container").map(String::as_str) == Some("train")));
    assert!(
        !recorded.iter().any(|r| r.method == Method::DELETE),
        "a finished Job is kept"
    );
    // The pod's progress reached the bus through the runner.
    let progress: Vec<String> = flywheel_testkit::events(&stack.bus)
        .await?
        .into_iter()
        .filter_map(|e| match e {
            flywheel_events::Event::TrainingJobProgress(p) if p.job_id == id => Some(p.message),
            _ => None,
        })
        .collect();
    assert!(
        progress
            .iter()
            .any(|m| m.starts_with("Kubernetes Job ml-training/flywheel-train-")),
        "{progress:?}"
    );
    assert!(
        progress.iter().any(|m| m == "fetching the dataset"),
        "relayed from the pod: {progress:?}"
    );
    stack.stop().await
}

#[tokio::test]
async fn kubernetes_failures_become_training_events() -> anyhow::Result<()> {
    let (stack, cluster, _) = kubernetes_stack(
        &[
            ("oom", Behaviour::OomKilled),
            ("huge", Behaviour::Refused),
            ("stuck", Behaviour::Unschedulable),
            ("pull", Behaviour::BadImage),
        ],
        true,
    )
    .await?;
    let dataset = stack.push_dataset("customers", &binary_csv()).await?;
    let builtin = |target: &str| json!({"kind": "builtin", "name": "logistic_regression", "params": {"target": target}});
    let submit = |request_id: &str, model: &str, target: &str| {
        let mut req = request(request_id, model, ("customers", &dataset), builtin(target));
        req["resources"] = json!({"cpu": 1.0, "memory_mb": 512, "gpu": 1});
        req
    };
    let oom = stack
        .submit(submit("k8s-oom", "oom", "label"), "default")
        .await?;
    let huge = stack
        .submit(submit("k8s-huge", "huge", "label"), "default")
        .await?;
    let bad = stack
        .submit(submit("k8s-bad", "bad", "no_such_column"), "default")
        .await?;
    let pull = stack
        .submit(submit("k8s-pull", "pull", "label"), "default")
        .await?;
    let stuck = stack
        .submit(submit("k8s-stuck", "stuck", "label"), "default")
        .await?;
    let id = |job: &Value| job["job_id"].as_str().unwrap_or_default().to_owned();

    // OOM-killed: retried as new attempts (each its own Job), then failed with the reason.
    let done = stack.wait_job(&id(&oom), None, MINUTE).await?;
    assert_eq!(done["status"], "failed", "{done}");
    let attempts = done["attempts"].as_u64().unwrap_or_default();
    assert!(attempts >= 2, "an OOM kill is retried: {done}");
    assert!(
        done["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("OOMKilled, exit code 137"),
        "{done}"
    );
    let names: Vec<Value> = posts_of(&cluster, "oom")
        .iter()
        .map(|b| b["metadata"]["name"].clone())
        .collect();
    assert_eq!(
        names.len() as u64,
        attempts,
        "one Job per attempt: {names:?}"
    );
    assert_eq!(names[1], json!(format!("flywheel-train-{}-2", id(&oom))));

    // Refused by the API server: invalid, not retried.
    let done = stack.wait_job(&id(&huge), None, MINUTE).await?;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["attempts"], 1, "{done}");
    assert!(
        done["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("LimitRange"),
        "{done}"
    );

    // The pod's own verdict (bad input, printed as its result) wins: invalid, not retried.
    let done = stack.wait_job(&id(&bad), None, MINUTE).await?;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["attempts"], 1, "{done}");
    assert!(
        done["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("no_such_column"),
        "{done}"
    );

    // An image that cannot be pulled needs a person: each attempt gives up after
    // k8s_stuck_after_secs and deletes its Job (unschedulable pods, below, wait on).
    let done = stack.wait_job(&id(&pull), None, MINUTE).await?;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("could not start for 1 s: ImagePullBackOff: Back-off pulling image"),
        "{done}"
    );
    let attempts = done["attempts"].as_u64().unwrap_or_default();
    let pull_jobs: Vec<String> = posts_of(&cluster, "pull")
        .iter()
        .filter_map(|b| b["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(pull_jobs.len() as u64, attempts);
    for name in &pull_jobs {
        let path = format!("/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}");
        assert!(
            cluster
                .recorded()
                .iter()
                .any(|r| r.method == Method::DELETE && r.path == path),
            "{name} deleted"
        );
    }

    // Unschedulable: the reason shows as progress; cancelling deletes the Job.
    let stuck_id = id(&stuck);
    let deadline = Instant::now() + MINUTE;
    loop {
        let waiting = flywheel_testkit::events(&stack.bus).await?.into_iter().any(|e| {
            matches!(e, flywheel_events::Event::TrainingJobProgress(p)
                if p.job_id == stuck_id && p.message.contains("Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."))
        });
        if waiting {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no pending reason reported");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cancelled: Value = stack
        .http
        .post(stack.scheduler_url(&format!("/api/v1/jobs/{stuck_id}/cancel")))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(cancelled["status"], "cancelled");
    let job_path =
        format!("/apis/batch/v1/namespaces/{NAMESPACE}/jobs/flywheel-train-{stuck_id}-1");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster
        .recorded()
        .iter()
        .any(|r| r.method == Method::DELETE && r.path == job_path)
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the cancelled attempt's Job was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delete = cluster
        .recorded()
        .into_iter()
        .find(|r| r.method == Method::DELETE && r.path == job_path)
        .context("delete")?;
    assert_eq!(
        delete.body["propagationPolicy"], "Background",
        "the pod goes with it"
    );
    assert!(
        cluster
            .jobs
            .lock()
            .map(|j| !j.contains_key(&format!("flywheel-train-{stuck_id}-1")))
            .unwrap_or(false),
        "gone from the cluster"
    );
    stack.stop().await
}

#[tokio::test]
async fn a_restarted_runner_deletes_the_jobs_its_killed_process_left() -> anyhow::Result<()> {
    let (mut stack, cluster, options) = kubernetes_stack(&[], false).await?;
    let dataset = stack.push_dataset("events", b"a,b\n1,2\n3,4\n").await?;
    // The first attempt trains "forever"; the retry finds the marker and finishes at once.
    let marker = stack.dir.path().join("first-attempt-started");
    let trainer = json!({"kind": "external", "name": format!(
        "if [ -e {m} ]; then echo w > \"$FLYWHEEL_OUTPUT_DIR/model.bin\"; echo FLYWHEEL_METRIC accuracy 0.9; \
         else touch {m}; sleep 120; fi", m = marker.display())});
    let mut runner = stack.spawn_runner_process(&pairs(&options))?;
    let job = stack
        .submit(
            request("k8s-orphan", "orphan", ("events", &dataset), trainer),
            "default",
        )
        .await?;
    let id = job["job_id"].as_str().unwrap_or_default().to_owned();
    let first = format!("flywheel-train-{id}-1");
    let deadline = Instant::now() + MINUTE;
    while !marker.exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the first attempt's pod never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The runner process dies; its pod (and the Job it created) stay.
    runner.kill()?;
    runner.wait()?;
    assert!(
        cluster
            .jobs
            .lock()
            .map(|j| j.contains_key(&first))
            .unwrap_or(false)
    );
    assert!(
        !cluster
            .recorded()
            .iter()
            .any(|r| r.method == Method::DELETE)
    );
    // Restarted in the same pod: it deletes the left-over Job before taking work.
    stack.start_runner(&pairs(&options)).await?;
    let deletes: Vec<String> = cluster
        .recorded()
        .into_iter()
        .filter(|r| r.method == Method::DELETE)
        .map(|r| r.path)
        .collect();
    assert_eq!(
        deletes,
        vec![format!(
            "/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{first}"
        )],
        "exactly the orphan, at start"
    );
    // The scheduler retries the lost attempt as attempt 2, in its own Job.
    let done = stack.wait_job(&id, None, MINUTE).await?;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    let names: Vec<Value> = posts_of(&cluster, "orphan")
        .iter()
        .map(|b| b["metadata"]["name"].clone())
        .collect();
    assert_eq!(
        names,
        vec![json!(first), json!(format!("flywheel-train-{id}-2"))]
    );
    assert_eq!(
        stack
            .wait_versions("orphan", 1, Duration::from_secs(20))
            .await?
            .len(),
        1
    );
    stack.stop().await
}
