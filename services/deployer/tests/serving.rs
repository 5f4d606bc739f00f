//! The deployer serving a built-in model over the Open Inference Protocol and the records
//! endpoint, on real NATS, SQLite and S3: deployments follow alias events, answers equal the
//! model's own predictions, bad requests get `{"error"}`, a corrupt package never serves, every
//! prediction is logged, and a restart serves again.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use flywheel_artifacts::ArtifactStore;
use flywheel_artifacts::package::{self, Manifest, PackageLineage};
use flywheel_bus::{Bus, StreamKind};
use flywheel_events::payloads::{Lineage, ModelVersionAliasChanged, ModelVersionRegistered};
use flywheel_events::{Envelope, Event};
use flywheel_runtime::ServiceSettings;
use flywheel_testkit::service::InProcess;
use serde_json::{Value, json};

fn fixture(name: &str) -> flywheel_data::Table {
    let path = format!(
        "{}/../../crates/train/tests/reference/{name}.csv",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(path).expect("fixture");
    flywheel_data::read(bytes.into(), flywheel_data::Format::Csv).expect("csv")
}

/// Uploads a package and announces it as `model` version `version`; returns its URI.
async fn publish_package(
    bus: &Bus,
    store: &ArtifactStore,
    (model, version, flavor): (&str, u32, &str),
    files: Vec<(String, Bytes)>,
    signature: flywheel_events::payloads::Signature,
    metrics: std::collections::BTreeMap<String, f64>,
) -> anyhow::Result<String> {
    let model_file = files.first().map(|(p, _)| p.clone()).context("a file")?;
    let manifest = Manifest::describe(
        flavor,
        &model_file,
        signature.clone(),
        metrics.clone(),
        PackageLineage {
            trainer: "test".into(),
            ..PackageLineage::default()
        },
        &files,
    )?;
    let stored = package::upload(store, &manifest, &files).await?;
    bus.publish(&Envelope::new(
        "registry",
        "default",
        Event::ModelVersionRegistered(ModelVersionRegistered {
            model: model.into(),
            version,
            package_uri: stored.uri.clone(),
            flavor: flavor.into(),
            metrics,
            signature,
            lineage: Lineage::default(),
        }),
    ))
    .await?;
    Ok(stored.uri)
}

async fn registered(
    bus: &Bus,
    store: &ArtifactStore,
    trained: &flywheel_train::Trained,
    version: u32,
) -> anyhow::Result<String> {
    let files = vec![("model.json".to_owned(), Bytes::from(trained.model_bytes()))];
    publish_package(
        bus,
        store,
        ("churn", version, "flywheel"),
        files,
        trained.signature.clone(),
        trained.metrics.clone(),
    )
    .await
}

async fn alias(bus: &Bus, version: u32) -> anyhow::Result<()> {
    bus.publish(&Envelope::new(
        "registry",
        "default",
        Event::ModelVersionAliasChanged(ModelVersionAliasChanged {
            model: "churn".into(),
            alias: "production".into(),
            version: Some(version),
            previous_version: None,
            changed_by: "test".into(),
        }),
    ))
    .await?;
    Ok(())
}

async fn wait_for(
    what: &str,
    check: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    flywheel_testkit::wait_for(what, Duration::from_secs(30), check).await
}

/// A deployer on a fresh database and artifact prefix, and a bus client on its prefix.
async fn start(
    postgres: bool,
    dir: &std::path::Path,
) -> anyhow::Result<(InProcess, ServiceSettings, ArtifactStore, Bus)> {
    start_with(postgres, dir, &[]).await
}

/// [`start`] with `[service]` options.
async fn start_with(
    postgres: bool,
    dir: &std::path::Path,
    options: &[(&str, &str)],
) -> anyhow::Result<(InProcess, ServiceSettings, ArtifactStore, Bus)> {
    let prefix = flywheel_testkit::unique_name();
    let mut settings = ServiceSettings::defaults_for("deployer", 0);
    for (key, value) in options {
        settings
            .service
            .insert((*key).to_owned(), (*value).to_owned());
    }
    settings.bus = flywheel_testkit::bus_config(&prefix);
    settings.db = if postgres {
        flywheel_testkit::fresh_postgres().await?
    } else {
        flywheel_testkit::fresh_sqlite(dir)
    };
    settings.artifacts = flywheel_testkit::s3_config(&flywheel_testkit::unique_name())?;
    settings.http.shutdown_grace_secs = 2;
    let store = ArtifactStore::from_config(&settings.artifacts)?;
    let deployer = InProcess::start(settings.clone(), flywheel_deployer::run).await?;
    let bus = Bus::connect(&flywheel_testkit::bus_config(&prefix), "test").await?;
    Ok((deployer, settings, store, bus))
}

#[tokio::test]
async fn serves_a_built_in_model_over_v2_and_records() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (deployer, settings, store, bus) = start(false, dir.path()).await?;
    let http = reqwest::Client::new();

    // The deployment exists before the model does: it waits.
    let put: Value = http
        .put(deployer.url("/api/v1/deployments/churn-prod"))
        .json(&json!({"model": "churn", "alias": "production"}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(put["status"], "waiting", "{put}");
    let not_yet = http
        .get(deployer.url("/v2/models/churn-prod/ready"))
        .send()
        .await?;
    assert_eq!(not_yet.status(), 404);
    assert!(not_yet.json::<Value>().await?["error"].as_str().is_some());

    let train = fixture("binary_train");
    let trained = flywheel_train::train(
        &train,
        "logistic_regression",
        &serde_json::from_value(json!({"target": "label"}))?,
        &mut |_, _| {},
    )?;
    registered(&bus, &store, &trained, 1).await?;
    alias(&bus, 1).await?;
    wait_for("the deployment to serve", async || {
        Ok(status(&http, deployer.url("/v2/models/churn-prod/ready")).await? == 200)
    })
    .await?;

    let meta = get_json(&http, deployer.url("/v2/models/churn-prod")).await?;
    assert_eq!(meta["versions"], json!(["1"]));
    let names: Vec<&str> = meta["inputs"]
        .as_array()
        .context("inputs")?
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["f0", "f1", "f2", "f3", "f4", "f5"]);
    assert_eq!(
        http.get(deployer.url("/v2/models/churn-prod/versions/1/ready"))
            .send()
            .await?
            .status(),
        200
    );
    assert_eq!(
        http.get(deployer.url("/v2/models/churn-prod/versions/7/ready"))
            .send()
            .await?
            .status(),
        404
    );
    assert_eq!(
        http.get(deployer.url("/v2/health/live"))
            .send()
            .await?
            .status(),
        200
    );
    assert_eq!(
        http.get(deployer.url("/v2/health/ready"))
            .send()
            .await?
            .status(),
        200
    );

    // Five test rows, one tensor per column, no Content-Type (as tritonclient sends).
    let test = fixture("binary_test");
    let columns: Vec<Vec<f64>> = (0..6)
        .map(|c| {
            test.f64_column(&format!("f{c}"))
                .map(|v| v.into_iter().take(5).map(|x| x.unwrap_or(0.0)).collect())
        })
        .collect::<Result<_, _>>()?;
    let inputs: Vec<Value> = (0..6)
        .map(|c| json!({"name": format!("f{c}"), "shape": [5], "datatype": "FP64", "data": columns[c]}))
        .collect();
    let body = serde_json::to_vec(&json!({"id": "req-42", "inputs": inputs}))?;
    let answer: Value = http
        .post(deployer.url("/v2/models/churn-prod/infer"))
        .body(body)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(answer["id"], "req-42");
    assert_eq!(answer["model_version"], "1");
    let expected: Vec<flywheel_model::Prediction> = (0..5)
        .map(|r| {
            let row: Vec<flywheel_model::Value> = (0..6)
                .map(|c| flywheel_model::Value::Number(columns[c][r]))
                .collect();
            trained.model.predict(&row)
        })
        .collect::<Result<_, _>>()?;
    let labels: Vec<String> = expected
        .iter()
        .map(|p| p.label.clone().unwrap_or_default())
        .collect();
    assert_eq!(answer["outputs"][0]["name"], "prediction");
    assert_eq!(answer["outputs"][0]["data"], json!(labels));
    let probabilities: Vec<f64> = expected
        .iter()
        .flat_map(|p| p.probabilities.clone())
        .collect();
    assert_eq!(answer["outputs"][1]["shape"], json!([5, 2]));
    assert_eq!(answer["outputs"][1]["data"], json!(probabilities));

    // One [n, k] FP32 matrix, nested data, only the probabilities asked for.
    let matrix: Vec<Vec<f32>> = (0..5)
        .map(|r| (0..6).map(|c| columns[c][r] as f32).collect())
        .collect();
    let answer: Value = http
        .post(deployer.url("/v2/models/churn-prod/versions/1/infer"))
        .header("Content-Type", "application/octet-stream")
        .json(&json!({"inputs": [{"name": "X", "shape": [5, 6], "datatype": "FP32", "data": matrix}], "outputs": [{"name": "prediction"}]}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(answer["outputs"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        answer["outputs"][0]["data"],
        json!(labels),
        "FP32 rounding does not flip these labels"
    );

    // tritonclient's default: a binary FP32 tensor after a JSON header, binary output asked
    // for, no Content-Type; the answer comes back binary too.
    let header = serde_json::to_vec(&json!({
        "inputs": [{"name": "X", "shape": [5, 6], "datatype": "FP32", "parameters": {"binary_data_size": 120}}],
        "parameters": {"binary_data_output": true},
    }))?;
    let mut body = header.clone();
    for row in &matrix {
        for value in row {
            body.extend_from_slice(&value.to_le_bytes());
        }
    }
    let response = http
        .post(deployer.url("/v2/models/churn-prod/infer"))
        .header("Inference-Header-Content-Length", header.len().to_string())
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let json_length: usize = response
        .headers()
        .get("inference-header-content-length")
        .context("binary answer")?
        .to_str()?
        .parse()?;
    let bytes = response.bytes().await?;
    let answer: Value = serde_json::from_slice(&bytes[..json_length])?;
    let (mut tail, mut decoded) = (&bytes[json_length..], Vec::new());
    for output in answer["outputs"].as_array().context("outputs")? {
        assert!(output.get("data").is_none(), "{output}");
        let size = output["parameters"]["binary_data_size"]
            .as_u64()
            .context("size")? as usize;
        let (chunk, rest) = tail.split_at(size);
        tail = rest;
        decoded.push(chunk.to_vec());
    }
    assert!(tail.is_empty(), "every byte belongs to an output");
    assert_eq!(answer["outputs"][0]["datatype"], "BYTES", "{answer}");
    let mut words = Vec::new();
    let mut rest = decoded[0].as_slice();
    while rest.len() >= 4 {
        let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        words.push(String::from_utf8(rest[4..4 + n].to_vec())?);
        rest = &rest[4 + n..];
    }
    assert_eq!(words, labels, "labels, length-prefixed");
    assert_eq!(answer["outputs"][1]["datatype"], "FP64", "{answer}");
    let sent_back: Vec<f64> = decoded[1]
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    assert_eq!(sent_back.len(), probabilities.len());
    for (ours, theirs) in sent_back.iter().zip(&probabilities) {
        // The rows went as FP32, the expectation used the f64 values.
        assert!(
            (ours - theirs).abs() < 1e-6,
            "{ours} vs {theirs}: little-endian FP64"
        );
    }
    let short = http
        .post(deployer.url("/v2/models/churn-prod/infer"))
        .header("Inference-Header-Content-Length", header.len().to_string())
        .body(body[..body.len() - 4].to_vec())
        .send()
        .await?;
    assert_eq!(short.status(), 400);
    assert!(
        short.json::<Value>().await?["error"]
            .as_str()
            .is_some_and(|e| e.contains("binary_data_size 120 exceeds"))
    );

    // The stock tritonclient, defaults and JSON.
    tritonclient_check(&deployer, "churn-prod", &matrix, &labels, "prediction").await?;

    // Records.
    let records: Vec<Value> = (0..2)
        .map(|r| json!({"f0": columns[0][r], "f1": columns[1][r], "f2": columns[2][r], "f3": columns[3][r], "f4": columns[4][r], "f5": columns[5][r]}))
        .collect();
    let answer: Value = http
        .post(deployer.url("/v1/deployments/churn-prod/predict"))
        .json(&records)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(answer["predictions"][0]["prediction"], json!(labels[0]));
    assert_eq!(answer["version"], 1);

    // Bad requests: {"error": ...} with 4xx.
    for (path, body, status, needle) in [
        (
            "/v2/models/nope/infer",
            json!({"inputs": []}),
            404,
            "not found",
        ),
        (
            "/v2/models/churn-prod/infer",
            json!({"inputs": [{"name": "X", "shape": [2, 6], "datatype": "FP64", "data": [1, 2, 3]}]}),
            400,
            "holds 12 elements",
        ),
        (
            "/v2/models/churn-prod/infer",
            json!({"inputs": [{"name": "f0", "shape": [1], "datatype": "FP64", "data": [1]}]}),
            400,
            "missing input f1",
        ),
        (
            "/v2/models/churn-prod/infer",
            json!({"inputs": [{"name": "X", "shape": [1, 6], "datatype": "FP64", "data": ["a", 1, 2, 3, 4, 5]}]}),
            400,
            "not a FP64 element",
        ),
        (
            "/v2/models/churn-prod/infer",
            json!("not a request"),
            400,
            "invalid inference request",
        ),
        (
            "/v2/models/churn-prod/versions/9/infer",
            json!({"inputs": []}),
            404,
            "version 9",
        ),
        (
            "/v2/models/churn-prod/infer",
            json!({"inputs": [{"name": "X", "shape": [1, 6], "datatype": "BYTES", "data": ["a", "b", "c", "d", "e", "f"]}]}),
            400,
            "",
        ),
    ] {
        let response = http.post(deployer.url(path)).json(&body).send().await?;
        assert_eq!(response.status(), status, "{path} {body}");
        let error: Value = response.json().await?;
        assert!(
            error["error"].as_str().is_some_and(|e| e.contains(needle)),
            "{error}"
        );
    }

    // A body over the limit (16 MiB by default): 413, still in the protocol's error shape.
    let huge = vec![b' '; 17 * 1024 * 1024];
    let response = http
        .post(deployer.url("/v2/models/churn-prod/infer"))
        .body(huge)
        .send()
        .await?;
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await?;
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("too large")),
        "{error}"
    );

    // Every answered row is logged on the PREDICTIONS stream.
    let stream = bus
        .jetstream()
        .get_stream(bus.subjects().stream(StreamKind::Predictions))
        .await?;
    let mut stream = stream;
    wait_for("12 prediction logs", async || {
        Ok(stream.info().await?.state.messages >= 12)
    })
    .await?;

    // A corrupt version 2 (a file that does not match its manifest) never serves; version 1 stays.
    let uri = registered(
        &bus,
        &store,
        &flywheel_train::train(
            &train,
            "logistic_regression",
            &serde_json::from_value(json!({"target": "label", "alpha": 5.0}))?,
            &mut |_, _| {},
        )?,
        2,
    )
    .await?;
    let key = store.key_of(&uri).context("key")?.to_owned();
    store
        .put(
            &format!("{key}/model.json"),
            Bytes::from_static(b"{\"tampered\": true}"),
        )
        .await?;
    alias(&bus, 2).await?;
    wait_for("the failed load to be recorded", async || {
        let d = get_json(&http, deployer.url("/api/v1/deployments/churn-prod")).await?;
        Ok(d["detail"]
            .as_str()
            .is_some_and(|s| s.contains("corrupted")))
    })
    .await?;
    let meta = get_json(&http, deployer.url("/v2/models/churn-prod")).await?;
    assert_eq!(meta["versions"], json!(["1"]), "still serving version 1");

    // After a restart it serves again.
    deployer.stop().await?;
    let deployer = InProcess::start(settings, flywheel_deployer::run).await?;
    assert_eq!(
        http.get(deployer.url("/v2/models/churn-prod/ready"))
            .send()
            .await?
            .status(),
        200
    );
    deployer.stop().await?;
    flywheel_testkit::cleanup_bus(&bus).await;
    Ok(())
}

/// Sends `n` records requests; returns how many each version answered.
async fn spread(
    http: &reqwest::Client,
    url: &str,
    n: usize,
) -> anyhow::Result<std::collections::BTreeMap<u64, usize>> {
    let mut answered = std::collections::BTreeMap::new();
    for _ in 0..n {
        let answer: Value = http
            .post(url)
            .json(&json!([{"f0": 0.3, "f1": -0.2, "f2": 1.0, "f3": 0.0, "f4": 0.5, "f5": -1.0}]))
            .send()
            .await?
            .json()
            .await?;
        *answered
            .entry(answer["version"].as_u64().context("version")?)
            .or_default() += 1;
    }
    Ok(answered)
}

async fn status(http: &reqwest::Client, url: String) -> anyhow::Result<u16> {
    Ok(http.get(url).send().await?.status().as_u16())
}

async fn get_json(http: &reqwest::Client, url: String) -> anyhow::Result<Value> {
    Ok(http.get(url).send().await?.json().await?)
}

async fn deployment(http: &reqwest::Client, deployer: &InProcess) -> anyhow::Result<Value> {
    Ok(http
        .get(deployer.url("/api/v1/deployments/churn"))
        .send()
        .await?
        .json()
        .await?)
}

async fn events_of(bus: &Bus) -> anyhow::Result<Vec<Event>> {
    flywheel_testkit::events(bus).await
}

/// Sends `n` records requests; returns how many got each status.
async fn statuses(
    http: &reqwest::Client,
    url: &str,
    n: usize,
) -> anyhow::Result<std::collections::BTreeMap<u16, usize>> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..n {
        let response = http
            .post(url)
            .json(&json!([{"f0": 0.3, "f1": -0.2, "f2": 1.0, "f3": 0.0, "f4": 0.5, "f5": -1.0}]))
            .send()
            .await?;
        *seen.entry(response.status().as_u16()).or_default() += 1;
    }
    Ok(seen)
}

/// Waits for a rollout of `version` to reach its first step (stats start afresh there).
async fn first_step(
    http: &reqwest::Client,
    deployer: &InProcess,
    version: u32,
) -> anyhow::Result<()> {
    let step = format!("v{version} takes");
    wait_for("the first canary step", async || {
        let d = deployment(http, deployer).await?;
        Ok(d["status"] == "rolling_out"
            && d["detail"].as_str().is_some_and(|s| s.starts_with(&step)))
    })
    .await
}

async fn inject(
    http: &reqwest::Client,
    deployer: &InProcess,
    version: u32,
    fault: Value,
) -> anyhow::Result<reqwest::Response> {
    Ok(http
        .put(deployer.url(&format!(
            "/api/v1/deployments/churn/versions/{version}/fault"
        )))
        .json(&fault)
        .send()
        .await?)
}

async fn rolled_back(
    bus: &Bus,
    version: u32,
) -> anyhow::Result<flywheel_events::payloads::DeploymentRolledBack> {
    let mut found = None;
    wait_for("deployment.rolled_back", async || {
        found = events_of(bus).await?.into_iter().find_map(|e| match e {
            Event::DeploymentRolledBack(e)
                if e.candidate.as_ref().is_some_and(|c| c.version == version) =>
            {
                Some(e)
            }
            _ => None,
        });
        Ok(found.is_some())
    })
    .await?;
    found.context("rolled back")
}

fn logistic(alpha: f64) -> anyhow::Result<flywheel_train::Trained> {
    Ok(flywheel_train::train(
        &fixture("binary_train"),
        "logistic_regression",
        &serde_json::from_value(json!({"target": "label", "alpha": alpha}))?,
        &mut |_, _| {},
    )?)
}

#[tokio::test]
async fn canary_rollouts_promote_healthy_versions_and_roll_back_failing_or_slow_ones()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (deployer, _, store, bus) =
        start_with(true, dir.path(), &[("fault_injection", "true")]).await?;
    let http = reqwest::Client::new();
    let canary = json!({"kind": "canary", "steps": [50, 100], "step_seconds": 2});
    let put = http
        .put(deployer.url("/api/v1/deployments/churn"))
        .json(&json!({"model": "churn", "alias": "production", "strategy": canary, "slo": {"min_requests": 5}}))
        .send()
        .await?;
    assert_eq!(put.status(), 200, "{}", put.text().await?);
    registered(&bus, &store, &logistic(1.0)?, 1).await?;
    alias(&bus, 1).await?;
    let predict = deployer.url("/v1/deployments/churn/predict");
    wait_for("version 1 to serve", async || {
        Ok(spread(&http, &predict, 1)
            .await
            .is_ok_and(|s| s.contains_key(&1)))
    })
    .await?;

    // Version 2: half the requests during the first step, then all.
    registered(&bus, &store, &logistic(2.0)?, 2).await?;
    alias(&bus, 2).await?;
    first_step(&http, &deployer, 2).await?;
    let during = spread(&http, &predict, 20).await?;
    assert_eq!(
        during.get(&2).copied().unwrap_or(0),
        10,
        "half of the requests: {during:?}"
    );
    wait_for("version 2 to be promoted", async || {
        let d = deployment(&http, &deployer).await?;
        Ok(d["status"] == "serving" && d["serving_version"] == 2)
    })
    .await?;
    assert_eq!(
        spread(&http, &predict, 5).await?,
        [(2u64, 5usize)].into_iter().collect()
    );

    // Version 3 starts failing during its first step: rolled back, with the numbers.
    registered(&bus, &store, &logistic(3.0)?, 3).await?;
    alias(&bus, 3).await?;
    first_step(&http, &deployer, 3).await?;
    let injected = inject(&http, &deployer, 3, json!({"error_percent": 100})).await?;
    assert_eq!(injected.status(), 200, "{}", injected.text().await?);
    let seen = statuses(&http, &predict, 20).await?;
    assert_eq!(
        seen,
        [(200, 10), (500, 10)].into_iter().collect(),
        "{seen:?}"
    );
    let back = rolled_back(&bus, 3).await?;
    assert_eq!(back.to_version, Some(2));
    let (candidate, stable) = (
        back.candidate.context("candidate")?,
        back.stable.context("stable")?,
    );
    assert_eq!(
        (candidate.requests, candidate.error_rate),
        (10, 1.0),
        "{candidate:?}"
    );
    assert_eq!(
        (stable.version, stable.requests, stable.error_rate),
        (2, 10, 0.0),
        "{stable:?}"
    );
    assert!(
        back.reason
            .starts_with("error rate 1.0000 above the serving version's 0.0000"),
        "{}",
        back.reason
    );
    assert_eq!(
        spread(&http, &predict, 5).await?,
        [(2u64, 5usize)].into_iter().collect(),
        "version 2 serves again"
    );
    // The failures were logged too (with why), so the monitor sees the error rate.
    let mut logs = bus
        .jetstream()
        .get_stream(bus.subjects().stream(StreamKind::Predictions))
        .await?;
    let mut failed = Vec::new();
    wait_for("10 failure logs of version 3", async || {
        let state = logs.info().await?.state.clone();
        failed.clear();
        for seq in state.first_sequence..=state.last_sequence {
            let message = logs.get_raw_message(seq).await?;
            if let Event::PredictionLogged(p) = flywheel_events::decode_with_header(
                &message.payload,
                message.headers.get("Content-Type").map(|v| v.as_str()),
            )?
            .event
                && let Some(error) = p.error
            {
                failed.push((p.version, error));
            }
        }
        Ok(failed.len() >= 10)
    })
    .await?;
    assert_eq!(failed.len(), 10, "{failed:?}");
    assert!(
        failed
            .iter()
            .all(|(v, e)| *v == 3 && e.contains("injected fault")),
        "{failed:?}"
    );

    // Version 4 answers but slowly (40 ms more): rolled back on latency against version 2's.
    registered(&bus, &store, &logistic(4.0)?, 4).await?;
    alias(&bus, 4).await?;
    first_step(&http, &deployer, 4).await?;
    inject(&http, &deployer, 4, json!({"delay_ms": 40}))
        .await?
        .error_for_status()?;
    assert_eq!(
        statuses(&http, &predict, 20).await?,
        [(200, 20)].into_iter().collect()
    );
    let back = rolled_back(&bus, 4).await?;
    let (candidate, stable) = (
        back.candidate.context("candidate")?,
        back.stable.context("stable")?,
    );
    assert!(candidate.p99_latency_ms >= 40.0, "{candidate:?}");
    assert!(stable.p99_latency_ms < 40.0 - 5.0, "{stable:?}");
    assert!(back.reason.starts_with("p99 latency"), "{}", back.reason);

    // Without fault injection switched on, the API refuses.
    let (plain, _, _, plain_bus) = start(false, dir.path()).await?;
    let refused = http
        .put(plain.url("/api/v1/deployments/churn/versions/1/fault"))
        .json(&json!({"error_percent": 100}))
        .send()
        .await?;
    assert_eq!(refused.status(), 403);
    plain.stop().await?;
    flywheel_testkit::cleanup_bus(&plain_bus).await;

    let kinds: Vec<String> = events_of(&bus)
        .await?
        .iter()
        .filter_map(|e| match e {
            Event::DeploymentRolloutStarted(e) => Some(format!("started {}", e.to_version)),
            Event::DeploymentTrafficShifted(e) => Some(format!("shifted {}", e.splits[1].percent)),
            Event::DeploymentRolledOut(e) => Some(format!("rolled_out {}", e.version)),
            Event::DeploymentRolledBack(e) => Some(format!("rolled_back to {:?}", e.to_version)),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "rolled_out 1",
            "started 2",
            "shifted 50",
            "shifted 100",
            "rolled_out 2",
            "started 3",
            "shifted 50",
            "rolled_back to Some(2)",
            "started 4",
            "shifted 50",
            "rolled_back to Some(2)",
        ],
    );
    deployer.stop().await?;
    flywheel_testkit::cleanup_bus(&bus).await;
    Ok(())
}

/// The labels a records request gets for the binary test rows, and the version that answered.
async fn labels_of(
    http: &reqwest::Client,
    url: &str,
    records: &[Value],
) -> anyhow::Result<(u64, Vec<Value>)> {
    let answer: Value = http
        .post(url)
        .json(&records)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let labels = answer["predictions"]
        .as_array()
        .context("predictions")?
        .iter()
        .map(|p| p["prediction"].clone())
        .collect();
    Ok((answer["version"].as_u64().context("version")?, labels))
}

#[tokio::test]
async fn shadow_rollouts_compare_without_changing_answers_and_blue_green_switches()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (deployer, _, store, bus) = start(false, dir.path()).await?;
    let http = reqwest::Client::new();
    let test = fixture("binary_test");
    let names: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
    let columns = names
        .iter()
        .map(|n| test.f64_column(n))
        .collect::<Result<Vec<_>, _>>()?;
    let records: Vec<Value> = (0..40)
        .map(|i| {
            let record: serde_json::Map<String, Value> = names
                .iter()
                .zip(&columns)
                .map(|(n, c)| (n.clone(), json!(c[i])))
                .collect();
            Value::Object(record)
        })
        .collect();
    let shadow = json!({"kind": "shadow", "duration_seconds": 2});
    http.put(deployer.url("/api/v1/deployments/churn"))
        .json(&json!({"model": "churn", "alias": "production", "strategy": shadow, "slo": {"min_requests": 3}}))
        .send()
        .await?
        .error_for_status()?;
    registered(&bus, &store, &logistic(1.0)?, 1).await?;
    alias(&bus, 1).await?;
    let predict = deployer.url("/v1/deployments/churn/predict");
    wait_for("version 1 to serve", async || {
        Ok(status(&http, deployer.url("/v2/models/churn/ready")).await? == 200)
    })
    .await?;
    let (_, before) = labels_of(&http, &predict, &records).await?;

    // Version 2 is a shallow tree: it disagrees on some rows, yet every answer stays version 1's.
    let tree = flywheel_train::train(
        &fixture("binary_train"),
        "decision_tree",
        &serde_json::from_value(json!({"target": "label", "max_depth": 1}))?,
        &mut |_, _| {},
    )?;
    registered(&bus, &store, &tree, 2).await?;
    alias(&bus, 2).await?;
    wait_for("the shadow run", async || {
        Ok(deployment(&http, &deployer).await?["status"] == "rolling_out")
    })
    .await?;
    for _ in 0..3 {
        let (version, during) = labels_of(&http, &predict, &records).await?;
        assert_eq!((version, &during), (1, &before), "the shadow never answers");
    }
    wait_for("the shadow run to end in promotion", async || {
        let d = deployment(&http, &deployer).await?;
        Ok(d["serving_version"] == 2)
    })
    .await?;
    let d = deployment(&http, &deployer).await?;
    let detail = d["detail"].as_str().context("detail")?.to_owned();
    assert!(
        detail.contains("of 120 mirrored answers differed"),
        "{detail}"
    );
    let (version, after) = labels_of(&http, &predict, &records).await?;
    let differing = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert_eq!(version, 2);
    assert!(differing > 0, "the tree answers differently on some rows");
    let percent = 100.0 * differing as f64 / 40.0;
    assert!(
        detail.starts_with(&format!("promoted after shadow: {percent:.1}%")),
        "{detail} vs {percent}"
    );

    // A shadow that may not disagree at all is rolled back, with the disagreement measured.
    http.put(deployer.url("/api/v1/deployments/churn"))
        .json(&json!({"model": "churn", "alias": "production", "strategy": shadow, "slo": {"min_requests": 3, "max_disagreement_rate": 0.0}}))
        .send()
        .await?
        .error_for_status()?;
    registered(&bus, &store, &logistic(1.0)?, 3).await?;
    alias(&bus, 3).await?;
    wait_for("the shadow run", async || {
        Ok(deployment(&http, &deployer).await?["status"] == "rolling_out")
    })
    .await?;
    for _ in 0..3 {
        assert_eq!(labels_of(&http, &predict, &records).await?.0, 2);
    }
    let back = rolled_back(&bus, 3).await?;
    let rate = back
        .candidate
        .context("candidate")?
        .disagreement_rate
        .context("rate")?;
    assert!((rate - differing as f64 / 40.0).abs() < 1e-9, "{rate}");

    // Blue-green: version 1 loads beside 2, then takes every request at once.
    http.put(deployer.url("/api/v1/deployments/churn"))
        .json(&json!({"model": "churn", "alias": "production", "strategy": {"kind": "blue_green"}}))
        .send()
        .await?
        .error_for_status()?;
    alias(&bus, 1).await?;
    wait_for("the switch", async || {
        let d = deployment(&http, &deployer).await?;
        Ok(d["serving_version"] == 1 && d["status"] == "serving")
    })
    .await?;
    assert_eq!(labels_of(&http, &predict, &records).await?, (1, before));
    deployer.stop().await?;
    flywheel_testkit::cleanup_bus(&bus).await;
    Ok(())
}

/// Deploys `churn` (alias production) and serves a logistic regression as version 1.
async fn serve_churn(
    http: &reqwest::Client,
    deployer: &InProcess,
    bus: &Bus,
    store: &ArtifactStore,
) -> anyhow::Result<()> {
    http.put(deployer.url("/api/v1/deployments/churn"))
        .json(&json!({"model": "churn", "alias": "production"}))
        .send()
        .await?
        .error_for_status()?;
    registered(bus, store, &logistic(1.0)?, 1).await?;
    alias(bus, 1).await?;
    wait_for("version 1 to serve", async || {
        Ok(status(http, deployer.url("/v2/models/churn/ready")).await? == 200)
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn prediction_logs_are_sampled_and_overload_drops_are_counted() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // A one-slot buffer: a 500-row request outruns the publisher.
    let (deployer, _, store, bus) = start_with(
        false,
        dir.path(),
        &[
            ("prediction_log_buffer", "1"),
            ("prediction_log_sample_rate", "1"),
        ],
    )
    .await?;
    let http = reqwest::Client::new();
    serve_churn(&http, &deployer, &bus, &store).await?;
    let row = json!({"f0": 0.3, "f1": -0.2, "f2": 1.0, "f3": 0.0, "f4": 0.5, "f5": -1.0});
    let records: Vec<Value> = vec![row; 500];
    let answer: Value = http
        .post(deployer.url("/v1/deployments/churn/predict"))
        .json(&records)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(
        answer["predictions"].as_array().map(Vec::len),
        Some(500),
        "every row is answered"
    );
    let dropped = |text: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with("flywheel_deployer_prediction_logs_dropped_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let metrics = http
        .get(deployer.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let count = dropped(&metrics);
    assert!(count >= 1.0, "drops are counted: {count}");
    assert!(count < 500.0, "some logs got through: {count}");
    let mut stream = bus
        .jetstream()
        .get_stream(bus.subjects().stream(StreamKind::Predictions))
        .await?;
    let logged = 500 - count as u64;
    wait_for("the logs that were queued", async || {
        Ok(stream.info().await?.state.messages == logged)
    })
    .await?;
    deployer.stop().await?;
    flywheel_testkit::cleanup_bus(&bus).await;

    // A sample rate of 0.25 logs about a quarter of 400 requests.
    let (deployer, _, store, bus) =
        start_with(false, dir.path(), &[("prediction_log_sample_rate", "0.25")]).await?;
    serve_churn(&http, &deployer, &bus, &store).await?;
    statuses(&http, &deployer.url("/v1/deployments/churn/predict"), 400).await?;
    let bad = http
        .post(deployer.url("/v1/deployments/churn/predict"))
        .body("[1]")
        .send()
        .await?;
    assert_eq!(bad.status(), 400);
    // Per deployment and version: requests by outcome, and a latency histogram (the recorder
    // is the process's, so the 500-row request of the first deployer counts too).
    let metrics = http
        .get(deployer.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let sample = |name: &str, labels: &[&str]| -> Option<f64> {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && labels.iter().all(|p| l.contains(p)))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
    };
    let churn = ["deployment=\"churn\"", "version=\"1\""];
    let ok = [churn[0], churn[1], "outcome=\"ok\""];
    let client = [churn[0], churn[1], "outcome=\"client_error\""];
    assert_eq!(
        sample("flywheel_deployer_requests_total", &ok),
        Some(401.0),
        "{metrics}"
    );
    assert_eq!(
        sample("flywheel_deployer_requests_total", &client),
        Some(1.0)
    );
    assert_eq!(
        sample("flywheel_deployer_request_duration_seconds_count", &churn),
        Some(402.0)
    );
    deployer.stop().await?;
    let mut stream = bus
        .jetstream()
        .get_stream(bus.subjects().stream(StreamKind::Predictions))
        .await?;
    let logged = stream.info().await?.state.messages;
    // Binomial(400, 0.25): mean 100, sd 8.7; 60..140 is more than 4.5 sd either side.
    assert!((60..=140).contains(&logged), "{logged} of 400 logged");
    flywheel_testkit::cleanup_bus(&bus).await;
    let bad = flywheel_testkit::service::InProcess::start(
        {
            let mut s = ServiceSettings::defaults_for("deployer", 0);
            s.service
                .insert("prediction_log_sample_rate".into(), "2".into());
            s
        },
        flywheel_deployer::run,
    )
    .await;
    assert!(bad.is_err(), "a sample rate above 1 is refused");
    Ok(())
}

/// Acked mode: the answer comes only after its log is stored, and a client retrying a request
/// with the same id (as after a deployer crash) leaves one log.
#[tokio::test]
async fn acked_logs_are_stored_before_the_answer_and_a_retry_is_logged_once() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let (deployer, _, store, bus) =
        start_with(false, dir.path(), &[("prediction_log_mode", "acked")]).await?;
    let http = reqwest::Client::new();
    serve_churn(&http, &deployer, &bus, &store).await?;
    let mut stream = bus
        .jetstream()
        .get_stream(bus.subjects().stream(StreamKind::Predictions))
        .await?;
    let infer = |id: String| {
        http.post(deployer.url("/v2/models/churn/infer"))
            .json(&json!({"id": id, "inputs": [
                {"name": "f0", "shape": [2], "datatype": "FP64", "data": [0.3, -1.0]},
                {"name": "f1", "shape": [2], "datatype": "FP64", "data": [-0.2, 0.4]},
                {"name": "f2", "shape": [2], "datatype": "FP64", "data": [1.0, 0.0]},
                {"name": "f3", "shape": [2], "datatype": "FP64", "data": [0.0, 2.0]},
                {"name": "f4", "shape": [2], "datatype": "FP64", "data": [0.5, 0.1]},
                {"name": "f5", "shape": [2], "datatype": "FP64", "data": [-1.0, 0.7]},
            ]}))
            .send()
    };
    for i in 0..20u64 {
        infer(format!("acked-{i}")).await?.error_for_status()?;
        // No waiting: both rows' logs are in the stream when the answer is.
        assert_eq!(stream.info().await?.state.messages, 2 * (i + 1));
    }
    for _ in 0..3 {
        infer("acked-7".to_owned()).await?.error_for_status()?;
    }
    let records = http
        .post(deployer.url("/v1/deployments/churn/predict"))
        .json(&json!([{"f0": 0.3, "f1": -0.2, "f2": 1.0, "f3": 0.0, "f4": 0.5, "f5": -1.0}]))
        .send()
        .await?;
    assert_eq!(records.status(), 200);
    assert_eq!(
        stream.info().await?.state.messages,
        41,
        "retries of acked-7 stored nothing new; the records request one log"
    );
    deployer.stop().await?;
    flywheel_testkit::cleanup_bus(&bus).await;
    let refused = flywheel_testkit::service::InProcess::start(
        {
            let mut s = ServiceSettings::defaults_for("deployer", 0);
            s.service
                .insert("prediction_log_mode".into(), "eventually".into());
            s
        },
        flywheel_deployer::run,
    )
    .await;
    assert!(refused.is_err(), "an unknown log mode is refused");
    Ok(())
}

async fn register_onnx(
    bus: &Bus,
    store: &ArtifactStore,
    model: &str,
    file: &str,
    version: u32,
) -> anyhow::Result<()> {
    let path = format!(
        "{}/../../crates/inference/tests/reference/{file}.onnx",
        env!("CARGO_MANIFEST_DIR")
    );
    let files = vec![("model.onnx".to_owned(), Bytes::from(std::fs::read(path)?))];
    publish_package(
        bus,
        store,
        (model, version, "onnx"),
        files,
        Default::default(),
        Default::default(),
    )
    .await?;
    Ok(())
}

/// Runs tests/tritonclient_check.py (the stock tritonclient) against a deployment.
async fn tritonclient_check(
    deployer: &InProcess,
    name: &str,
    rows: &impl serde::Serialize,
    labels: &impl serde::Serialize,
    label_output: &str,
) -> anyhow::Result<()> {
    let python = std::env::var("FLYWHEEL_TEST_PYTHON").context(
        "FLYWHEEL_TEST_PYTHON is not set: run the tests with scripts/test.sh, which installs tritonclient",
    )?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tritonclient_check.py");
    let args = [
        script.to_owned(),
        deployer.base.trim_start_matches("http://").to_owned(),
        name.to_owned(),
        serde_json::to_string(rows)?,
        serde_json::to_string(labels)?,
        label_output.to_owned(),
    ];
    let output =
        tokio::task::spawn_blocking(move || std::process::Command::new(python).args(args).output())
            .await??;
    assert!(
        output.status.success(),
        "tritonclient check failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn onnx_reference() -> anyhow::Result<Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crates/inference/tests/reference/onnx_reference.json"
    ))?)?)
}

fn flat_numbers(value: &Value, into: &mut Vec<f64>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flat_numbers(v, into)),
        other => into.push(other.as_f64().unwrap_or(f64::NAN)),
    }
}

#[tokio::test]
async fn serves_onnx_models_exported_from_scikit_learn() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (deployer, _, store, bus) = start(false, dir.path()).await?;
    let http = reqwest::Client::new();
    let reference = onnx_reference()?;
    // One deployment per family, all in this one deployer.
    let families = [
        "logistic_multiclass",
        "scaled_logistic",
        "forest_binary",
        "gradient_boosting_binary",
        "gradient_boosting_multiclass",
        "extra_trees_regression",
        "scaled_gradient_boosting_regression",
    ];
    for family in families {
        let name = family.replace('_', "-");
        register_onnx(&bus, &store, &name, family, 1).await?;
        http.put(deployer.url(&format!("/api/v1/deployments/{name}")))
            .json(&json!({"model": name, "version": 1}))
            .send()
            .await?
            .error_for_status()?;
    }
    for family in families {
        let name = family.replace('_', "-");
        wait_for("the ONNX model to serve", async || {
            Ok(status(&http, deployer.url(&format!("/v2/models/{name}/ready"))).await? == 200)
        })
        .await?;
        let meta = get_json(&http, deployer.url(&format!("/v2/models/{name}"))).await?;
        assert_eq!(meta["platform"], "onnx_onnxv1");
        let case = &reference["models"][family];
        let rows = case["rows"].as_array().context("rows")?;
        let width = rows[0].as_array().context("row")?.len();
        assert_eq!(
            meta["inputs"][0],
            json!({"name": "X", "datatype": "FP32", "shape": [-1, width]})
        );
        let answer: Value = http
            .post(deployer.url(&format!("/v2/models/{name}/infer")))
            .json(&json!({"inputs": [{"name": "X", "shape": [rows.len(), width], "datatype": "FP32", "data": rows}]}))
            .send()
            .await?
            .json()
            .await?;
        let expected = case["outputs"].as_object().context("outputs")?;
        assert_eq!(
            answer["outputs"].as_array().map(Vec::len),
            Some(expected.len()),
            "{answer}"
        );
        for output in answer["outputs"].as_array().context("outputs")? {
            let output_name = output["name"].as_str().context("name")?;
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            flat_numbers(&output["data"], &mut ours);
            flat_numbers(&expected[output_name], &mut theirs);
            assert_eq!(ours.len(), theirs.len(), "{family}.{output_name}");
            for (a, b) in ours.iter().zip(&theirs) {
                let close = if output["datatype"] == "INT64" {
                    a == b
                } else {
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0)
                };
                assert!(close, "{family}.{output_name}: {a} vs scikit-learn's {b}");
            }
        }
    }
    // The stock tritonclient against a scikit-learn export, binary tensors and JSON.
    let case = &reference["models"]["forest_binary"];
    let labels: Vec<String> = case["outputs"]["label"]
        .as_array()
        .context("labels")?
        .iter()
        .map(|l| l.to_string())
        .collect();
    tritonclient_check(&deployer, "forest-binary", &case["rows"], &labels, "label").await?;

    // No feature names in an ONNX graph: the records endpoint says where to go.
    let records = http
        .post(deployer.url("/v1/deployments/logistic-multiclass/predict"))
        .json(&json!([{"a": 1}]))
        .send()
        .await?;
    assert_eq!(records.status(), 400);
    assert!(
        records.json::<Value>().await?["error"]
            .as_str()
            .is_some_and(|e| e.contains("ONNX model"))
    );
    // A graph tract cannot run never serves; version 1 stays.
    register_onnx(&bus, &store, "logistic-multiclass", "logistic_zipmap", 2).await?;
    http.put(deployer.url("/api/v1/deployments/logistic-multiclass"))
        .json(&json!({"model": "logistic-multiclass", "version": 2}))
        .send()
        .await?
        .error_for_status()?;
    // The version may reach the deployer after the PUT: wait for the refusal.
    wait_for("the refusal to be recorded", async || {
        let d = get_json(
            &http,
            deployer.url("/api/v1/deployments/logistic-multiclass"),
        )
        .await?;
        Ok(d["detail"].as_str().is_some_and(|s| s.contains("ZipMap")))
    })
    .await?;
    let meta = get_json(&http, deployer.url("/v2/models/logistic-multiclass")).await?;
    assert_eq!(meta["versions"], json!(["1"]));
    deployer.stop().await?;
    flywheel_testkit::cleanup_bus(&bus).await;
    Ok(())
}
