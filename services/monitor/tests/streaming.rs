//! The streaming monitor on real NATS, PostgreSQL and S3: prediction logs published to
//! JetStream are counted into windows judged against the training dataset's profile; traffic
//! like the training data raises nothing, shifted traffic raises a drift alert naming the
//! shifted features and exactly one `training.requested` inside the policy's cooldown even as
//! drift continues; a monitor killed mid-window loses no window and counts nothing twice; the
//! alert reaches a webhook once, after a failed first attempt; a slow window against the learned
//! latency baseline raises a latency alert.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use flywheel_artifacts::ArtifactStore;
use flywheel_bus::Bus;
use flywheel_events::payloads::{
    DatasetRef, DatasetVersionCreated, Lineage, ModelVersionRegistered, PredictionLogged,
    TrainingReason,
};
use flywheel_events::{Envelope, Event};
use flywheel_runtime::ServiceSettings;
use flywheel_testkit::service::Isolated;
use serde_json::{Value, json};

/// Deterministic pseudo-random numbers (xorshift) and normal draws (Box–Muller).
struct Draws(u64);

impl Draws {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self, mean: f64, std: f64) -> f64 {
        let (u, v) = (self.uniform().max(1e-12), self.uniform());
        mean + std * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    fn plan(&mut self, shifted: bool) -> &'static str {
        let u = self.uniform();
        let cut = if shifted { [0.2, 0.4] } else { [0.5, 0.8] };
        if u < cut[0] {
            "basic"
        } else if u < cut[1] {
            "pro"
        } else {
            "team"
        }
    }
}

async fn wait_for(
    what: &str,
    check: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    flywheel_testkit::wait_for(what, Duration::from_secs(60), check).await
}

struct Setup {
    settings: ServiceSettings,
    bus: Bus,
    http: reqwest::Client,
}

impl Setup {
    /// A monitor with windows of `window` predictions on a fresh bus prefix, PostgreSQL database
    /// and S3 prefix, knowing a training dataset's profile and a model version trained on it.
    async fn start(
        window: u64,
        options: &[(&str, &str)],
    ) -> anyhow::Result<(Self, Isolated, Draws)> {
        let prefix = flywheel_testkit::unique_name();
        let mut settings = ServiceSettings::defaults_for("monitor", 0);
        settings.bus = flywheel_testkit::bus_config(&prefix);
        settings.db = flywheel_testkit::fresh_postgres().await?;
        settings.artifacts = flywheel_testkit::s3_config(&flywheel_testkit::unique_name())?;
        for (key, value) in [
            ("window_size", window.to_string()),
            ("window_seconds", "600".to_owned()),
            ("checkpoint_every", "200".to_owned()),
        ] {
            settings.service.insert(key.into(), value);
        }
        for (key, value) in options {
            settings
                .service
                .insert((*key).to_owned(), (*value).to_owned());
        }
        let store = ArtifactStore::from_config(&settings.artifacts)?;
        let bus = Bus::connect(&flywheel_testkit::bus_config(&prefix), "test").await?;
        let setup = Setup {
            settings,
            bus,
            http: reqwest::Client::new(),
        };
        let monitor = Isolated::start(setup.settings.clone(), flywheel_monitor::run).await?;
        let mut draws = Draws(0x5eed_1234_abcd_0001);
        setup.register_training_data(&store, &mut draws).await?;
        Ok((setup, monitor, draws))
    }

    /// The training data, its profile in S3, and the model version trained on it.
    async fn register_training_data(
        &self,
        store: &ArtifactStore,
        draws: &mut Draws,
    ) -> anyhow::Result<()> {
        let mut csv = String::from("x1,x2,plan,label\n");
        for _ in 0..2000 {
            let (x1, x2, plan) = (
                draws.normal(0.0, 1.0),
                draws.normal(5.0, 2.0),
                draws.plan(false),
            );
            csv.push_str(&format!("{x1},{x2},{plan},{}\n", u8::from(x1 > 0.0)));
        }
        let bytes = Bytes::from(csv.into_bytes());
        let table = flywheel_data::read(bytes.clone(), flywheel_data::Format::Csv)?;
        let profile = flywheel_data::profile(&table);
        store.put("datasets/training.csv", bytes.clone()).await?;
        store
            .put(
                "profiles/training.json",
                Bytes::from(serde_json::to_vec(&profile)?),
            )
            .await?;
        for event in [
            Event::DatasetVersionCreated(DatasetVersionCreated {
                dataset: "training".into(),
                version: "t1".into(),
                sha256: String::new(),
                uri: store.uri("datasets/training.csv"),
                format: "csv".into(),
                size_bytes: bytes.len() as u64,
                row_count: 2000,
                columns: Vec::new(),
                profile_uri: Some(store.uri("profiles/training.json")),
                previous_version: None,
            }),
            Event::ModelVersionRegistered(ModelVersionRegistered {
                model: "churn".into(),
                version: 1,
                package_uri: "s3://x/p".into(),
                flavor: "flywheel".into(),
                metrics: [("accuracy".to_owned(), 0.95)].into_iter().collect(),
                signature: Default::default(),
                lineage: Lineage {
                    dataset: Some(DatasetRef {
                        name: "training".into(),
                        version: "t1".into(),
                    }),
                    params: [("target".to_owned(), json!("label"))]
                        .into_iter()
                        .collect(),
                    ..Lineage::default()
                },
            }),
        ] {
            self.bus
                .publish(&Envelope::new("registry", "default", event))
                .await?;
        }
        Ok(())
    }

    async fn publish_predictions(
        &self,
        draws: &mut Draws,
        n: usize,
        shifted: bool,
        first: usize,
        latency_us: u64,
    ) -> anyhow::Result<Vec<(String, bool)>> {
        let mut published = Vec::with_capacity(n);
        for i in 0..n {
            let x1 = draws.normal(if shifted { 2.5 } else { 0.0 }, 1.0);
            let x2 = draws.normal(5.0, 2.0);
            let plan = draws.plan(shifted);
            let inputs: BTreeMap<String, Value> = [
                ("x1".to_owned(), json!(x1)),
                ("x2".to_owned(), json!(x2)),
                ("plan".to_owned(), json!(plan)),
            ]
            .into_iter()
            .collect();
            self.bus
                .publish(&Envelope::new(
                    "deployer",
                    "default",
                    Event::PredictionLogged(PredictionLogged {
                        deployment: "churn-prod".into(),
                        model: "churn".into(),
                        version: 1,
                        request_id: format!("r{}", first + i),
                        inputs,
                        // A model that learnt the target (x1 > 0), answering labels as text
                        // and class probabilities.
                        outputs: [
                            (
                                "prediction".to_owned(),
                                json!(if x1 > 0.0 { "1" } else { "0" }),
                            ),
                            (
                                "probabilities".to_owned(),
                                json!([
                                    1.0 - 1.0 / (1.0 + (-3.0 * x1).exp()),
                                    1.0 / (1.0 + (-3.0 * x1).exp())
                                ]),
                            ),
                        ]
                        .into_iter()
                        .collect(),
                        latency_us,
                        shadow: false,
                        error: None,
                    }),
                ))
                .await?;
            published.push((format!("r{}", first + i), x1 > 0.0));
        }
        Ok(published)
    }

    async fn wait_reports(&self, monitor: &Isolated, n: usize) -> anyhow::Result<()> {
        wait_for(&format!("{n} reports"), async || {
            Ok(self.reports(monitor).await?.len() >= n)
        })
        .await
    }

    async fn reports(&self, monitor: &Isolated) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .http
            .get(monitor.url("/api/v1/reports?deployment=churn-prod"))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn training_requests(
        &self,
    ) -> anyhow::Result<Vec<flywheel_events::payloads::TrainingRequested>> {
        Ok(flywheel_testkit::events(&self.bus)
            .await?
            .into_iter()
            .filter_map(|e| match e {
                Event::TrainingRequested(request) => Some(request),
                _ => None,
            })
            .collect())
    }

    async fn alerts(&self, monitor: &Isolated) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .http
            .get(monitor.url("/api/v1/alerts?deployment=churn-prod"))
            .send()
            .await?
            .json()
            .await?)
    }
}

/// A webhook receiver that fails its first request (to make the monitor retry) and records
/// the bodies it accepted.
async fn webhook_receiver() -> anyhow::Result<(String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>)>
{
    use std::sync::{Arc, Mutex};
    let accepted: Arc<Mutex<Vec<Value>>> = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (store, count) = (accepted.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let (store, count) = (store.clone(), count.clone());
            async move {
                if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                if let Ok(mut bodies) = store.lock() {
                    bodies.push(body);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, accepted))
}

#[tokio::test]
async fn drift_raises_one_retraining_and_a_crash_counts_nothing_twice() -> anyhow::Result<()> {
    let (setup, mut monitor, mut draws) = Setup::start(1000, &[]).await?;
    let policy = setup
        .http
        .put(monitor.url("/api/v1/policies/churn"))
        .json(&json!({
            "trainer": {"kind": "builtin", "name": "logistic_regression", "params": {"target": "label"}},
            "cooldown_seconds": 3600, "daily_budget": 3,
        }))
        .send()
        .await?;
    assert_eq!(policy.status(), 200, "{}", policy.text().await?);
    let (hook, delivered) = webhook_receiver().await?;
    let registered = setup
        .http
        .put(monitor.url("/api/v1/webhooks/ops"))
        .json(&json!({"url": hook}))
        .send()
        .await?;
    assert_eq!(registered.status(), 200, "{}", registered.text().await?);
    // Let the catalog learn the reference before traffic arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Two windows like the training data: reports without drift, no alert. (Windows of 1000:
    // PSI over 20 bins carries sampling noise of about 19/n, well under its 0.1 threshold.)
    setup
        .publish_predictions(&mut draws, 2000, false, 0, 150)
        .await?;
    setup.wait_reports(&monitor, 2).await?;
    let calm = setup.reports(&monitor).await?;
    for report in &calm {
        assert_eq!(report["dataset_drift"], false, "{report}");
        assert_eq!(report["prediction_drift"]["drifted"], false, "{report}");
        assert_eq!(report["count"], 1000);
        assert_eq!(
            report["columns"].as_array().map(Vec::len),
            Some(3),
            "x1, x2, plan: {report}"
        );
    }

    // Shifted traffic; the monitor is killed in the middle of the fourth window.
    setup
        .publish_predictions(&mut draws, 1500, true, 2000, 150)
        .await?;
    setup.wait_reports(&monitor, 3).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await; // a checkpoint mid-window
    monitor.kill();
    setup
        .publish_predictions(&mut draws, 500, true, 3500, 150)
        .await?;
    monitor = Isolated::start(setup.settings.clone(), flywheel_monitor::run).await?;
    setup.wait_reports(&monitor, 4).await?;
    // And drift goes on for a fifth window.
    setup
        .publish_predictions(&mut draws, 1000, true, 4000, 150)
        .await?;
    setup.wait_reports(&monitor, 5).await?;
    let reports = setup.reports(&monitor).await?;
    assert_eq!(reports.len(), 5, "no window lost, none twice");
    let counted: u64 = reports
        .iter()
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(counted, 5000, "every published prediction counted once");
    // Each report event carries, per feature, the window's counts beside the reference's.
    let events = flywheel_testkit::events(&setup.bus).await?;
    let first = events
        .iter()
        .find_map(|e| match e {
            Event::MonitorReportCreated(r) => Some(r),
            _ => None,
        })
        .context("a report event")?;
    let mut columns: Vec<&str> = first.histograms.iter().map(|h| h.column.as_str()).collect();
    columns.sort_unstable();
    assert_eq!(
        columns,
        ["plan", "prediction", "x1", "x2"],
        "features and the prediction"
    );
    for histogram in &first.histograms {
        assert_eq!(histogram.labels.len(), histogram.current.len());
        assert_eq!(histogram.reference.len(), histogram.current.len());
        assert_eq!(
            histogram.current.iter().sum::<f64>(),
            1000.0,
            "{histogram:?}"
        );
        assert!(histogram.reference.iter().sum::<f64>() > 0.0);
    }
    for report in &reports[..3] {
        assert_eq!(report["dataset_drift"], true, "{report}");
        let drifted: Vec<&str> = report["columns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["drifted"] == true)
            .filter_map(|c| c["column"].as_str())
            .collect();
        assert!(
            drifted.contains(&"x1") && drifted.contains(&"plan"),
            "{report}"
        );
        assert!(!drifted.contains(&"x2"), "x2 did not move: {report}");
        assert_eq!(
            report["prediction_drift"]["drifted"], true,
            "more 1s than the training labels: {report}"
        );
    }

    // One alert naming the drifted features; one retraining despite three drifted windows.
    let alerts = setup.alerts(&monitor).await?;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let message = alerts[0]["message"].as_str().context("message")?;
    assert!(
        message.contains("x1") && message.contains("plan"),
        "{message}"
    );
    assert_eq!(alerts[0]["status"], "raised");
    let mut requests = Vec::new();
    wait_for("training.requested", async || {
        requests = setup.training_requests().await?;
        Ok(!requests.is_empty())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests = setup.training_requests().await?;
    assert_eq!(
        requests.len(),
        1,
        "exactly one retraining inside the cooldown"
    );
    assert_eq!(requests[0].reason, TrainingReason::Drift);
    assert_eq!(requests[0].model, "churn");
    assert_eq!(requests[0].dataset.name, "training");

    // A window like the training data again resolves the alert.
    setup
        .publish_predictions(&mut draws, 1000, false, 5000, 10_000)
        .await?;
    wait_for("the alert to resolve", async || {
        let alerts = setup.alerts(&monitor).await?;
        Ok(alerts
            .iter()
            .any(|a| a["rule"] == "data_drift" && a["status"] == "resolved"))
    })
    .await?;
    // That window was 66× slower than the learned baseline: a latency alert.
    let alerts = setup.alerts(&monitor).await?;
    let latency: Vec<&Value> = alerts.iter().filter(|a| a["rule"] == "latency").collect();
    assert_eq!(latency.len(), 1, "{alerts:?}");
    assert_eq!(
        alerts.len(),
        2,
        "one drift alert, one latency alert: {alerts:?}"
    );
    assert!(
        latency[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("learned baseline of 150 µs")),
        "{alerts:?}"
    );

    // The webhook got the drift raise (after one failed attempt), its resolve and the latency
    // alert, each once (a retried delivery may arrive after later ones; each carries its time).
    wait_for("the webhook deliveries", async || {
        Ok(delivered.lock().map(|d| d.len()).unwrap_or(0) >= 3)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bodies = delivered.lock().map(|d| d.clone()).unwrap_or_default();
    let mut seen: Vec<(String, String)> = bodies
        .iter()
        .filter_map(|b| {
            Some((
                b["type"].as_str()?.to_owned(),
                b["data"]["rule"].as_str()?.to_owned(),
            ))
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("monitor.alert.raised".to_owned(), "data_drift".to_owned()),
            ("monitor.alert.raised".to_owned(), "latency".to_owned()),
            ("monitor.alert.resolved".to_owned(), "data_drift".to_owned()),
        ],
        "{bodies:?}"
    );
    assert!(
        bodies[0]["data"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("x1")),
        "{bodies:?}"
    );
    monitor.stop().await?;
    flywheel_testkit::cleanup_bus(&setup.bus).await;
    Ok(())
}

fn logged(deployment: &str, model: &str, i: usize, inputs: Value) -> Event {
    Event::PredictionLogged(PredictionLogged {
        deployment: deployment.into(),
        model: model.into(),
        version: 1,
        request_id: format!("{deployment}-{i}"),
        inputs: serde_json::from_value(inputs).unwrap_or_default(),
        outputs: [("prediction".to_owned(), json!("0"))]
            .into_iter()
            .collect(),
        latency_us: 100,
        shadow: false,
        error: None,
    })
}

#[tokio::test]
async fn bad_prediction_logs_become_findings_or_dead_letters() -> anyhow::Result<()> {
    let (setup, monitor, mut draws) = Setup::start(50, &[]).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Not an event at all, on the predictions subject: dead-lettered with the reason.
    let prefix = setup.settings.bus.prefix.clone();
    setup
        .bus
        .jetstream()
        .publish(
            format!("{prefix}.predictions.churn-prod"),
            Bytes::from_static(b"\xff not an event"),
        )
        .await?
        .await?;
    // Extra features, wrong types and missing values; and a deployment nobody registered.
    for i in 0..50 {
        let x2 = if i < 10 {
            json!("abc")
        } else {
            json!(draws.normal(5.0, 2.0))
        };
        let plan = if i < 5 { Value::Null } else { json!("pro") };
        let inputs = json!({"x1": draws.normal(0.0, 1.0), "x2": x2, "plan": plan, "surprise": 1});
        for event in [
            logged("churn-prod", "churn", i, inputs.clone()),
            logged("ghost", "ghost-model", i, inputs),
        ] {
            setup
                .bus
                .publish(&Envelope::new("deployer", "default", event))
                .await?;
        }
    }
    let mut reports: Vec<Value> = Vec::new();
    wait_for("a report per deployment", async || {
        reports = setup
            .http
            .get(monitor.url("/api/v1/reports"))
            .send()
            .await?
            .json()
            .await?;
        Ok(reports.len() >= 2)
    })
    .await?;
    let findings = |deployment: &str| -> Vec<String> {
        reports
            .iter()
            .filter(|r| r["deployment"] == deployment)
            .flat_map(|r| r["findings"].as_array().cloned().unwrap_or_default())
            .filter_map(|f| f.as_str().map(str::to_owned))
            .collect()
    };
    let known = findings("churn-prod");
    for expected in [
        "surprise: not in the reference (50 values)",
        "x2: 10 values that are not numbers",
        "plan: 5 missing values",
    ] {
        assert!(
            known.iter().any(|f| f == expected),
            "{expected} in {known:?}"
        );
    }
    let ghost = findings("ghost");
    assert!(
        ghost
            .iter()
            .any(|f| f.starts_with("no reference profile for ghost-model")),
        "{ghost:?}"
    );
    // The garbage is in the DLQ with the reason; the monitor went on counting.
    let mut dlq = setup
        .bus
        .jetstream()
        .get_stream(setup.bus.subjects().stream(flywheel_bus::StreamKind::Dlq))
        .await?;
    let state = dlq.info().await?.state.clone();
    assert_eq!(state.messages, 1);
    let parked = dlq.get_raw_message(state.first_sequence).await?;
    assert_eq!(
        parked.subject.as_str(),
        format!("{prefix}.dlq.predictions.monitor-reader")
    );
    assert!(
        parked
            .headers
            .get("Flywheel-Dlq-Error")
            .is_some_and(|v| !v.as_str().is_empty()),
        "{:?}",
        parked.headers
    );
    let counted: u64 = reports.iter().filter_map(|r| r["count"].as_u64()).sum();
    assert_eq!(counted, 100);
    monitor.stop().await?;
    flywheel_testkit::cleanup_bus(&setup.bus).await;
    Ok(())
}

#[tokio::test]
async fn feedback_joins_predictions_and_a_shortfall_raises_a_performance_alert()
-> anyhow::Result<()> {
    let (setup, mut monitor, mut draws) =
        Setup::start(1000, &[("performance_window", "100")]).await?;
    // A rule of the operator's own on a report metric, besides the built-in performance rule.
    let rule = setup
        .http
        .put(monitor.url("/api/v1/rules/low-accuracy"))
        .json(&json!({"deployment": "churn-prod", "metric": "accuracy", "op": "<", "threshold": 0.9, "severity": "info"}))
        .send()
        .await?;
    assert_eq!(rule.status(), 200, "{}", rule.text().await?);
    let refused = setup
        .http
        .put(monitor.url("/api/v1/rules/bad"))
        .json(&json!({"metric": "accuracy", "op": "!=", "threshold": 0.9}))
        .send()
        .await?;
    assert_eq!(refused.status(), 400);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let predicted = setup
        .publish_predictions(&mut draws, 200, false, 0, 150)
        .await?;
    // Killed after a checkpoint: the predictions awaiting feedback are rebuilt from the stream.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    monitor.kill();
    monitor = Isolated::start(setup.settings.clone(), flywheel_monitor::run).await?;
    // The first hundred were right: accuracy 1, no alert.
    setup.publish_feedback(&predicted[..100], true).await?;
    let performance = async |monitor: &Isolated| -> anyhow::Result<Vec<Value>> {
        Ok(setup
            .reports(monitor)
            .await?
            .into_iter()
            .filter(|r| r["kind"] == "performance")
            .collect())
    };
    wait_for("a performance report", async || {
        Ok(!performance(&monitor).await?.is_empty())
    })
    .await?;
    let first = performance(&monitor).await?;
    assert_eq!(first[0]["count"], 100, "{first:?}");
    assert_eq!(first[0]["performance"]["accuracy"], 1.0, "{first:?}");
    assert_eq!(first[0]["performance"]["f1_macro"], 1.0, "{first:?}");
    assert_eq!(first[0]["performance"]["auc"], 1.0, "{first:?}");
    assert_eq!(first[0]["training"]["accuracy"], 0.95, "{first:?}");
    assert!(setup.alerts(&monitor).await?.is_empty());
    // The next hundred were all wrong: a critical performance alert.
    setup.publish_feedback(&predicted[100..], false).await?;
    wait_for("the performance alert", async || {
        Ok(setup
            .alerts(&monitor)
            .await?
            .iter()
            .any(|a| a["rule"] == "performance"))
    })
    .await?;
    wait_for("the rule's alert", async || {
        Ok(setup.alerts(&monitor).await?.len() >= 2)
    })
    .await?;
    let alerts = setup.alerts(&monitor).await?;
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let custom = alerts
        .iter()
        .find(|a| a["rule"] == "rule:low-accuracy")
        .context("the operator's rule fired")?;
    assert_eq!(custom["severity"], "info");
    let alerts: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule"] == "performance")
        .collect();
    assert_eq!(alerts[0]["severity"], "critical");
    assert!(
        alerts[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("accuracy 0.000 in production against 0.950 at training")),
        "{alerts:?}"
    );
    let reports = performance(&monitor).await?;
    assert_eq!(reports.len(), 2, "every outcome counted once: {reports:?}");
    let worst = reports
        .iter()
        .find(|r| r["performance"]["accuracy"] == 0.0)
        .context("the wrong window")?;
    assert_eq!(worst["performance"]["auc"], 0.0, "{worst}");
    monitor.stop().await?;
    flywheel_testkit::cleanup_bus(&setup.bus).await;
    Ok(())
}

impl Setup {
    /// Requests to churn-prod that failed on the server's side.
    async fn publish_failures(&self, n: usize, first: usize) -> anyhow::Result<()> {
        for i in 0..n {
            let event = Event::PredictionLogged(PredictionLogged {
                deployment: "churn-prod".into(),
                model: "churn".into(),
                version: 1,
                request_id: format!("failed-{}", first + i),
                inputs: BTreeMap::new(),
                outputs: BTreeMap::new(),
                latency_us: 150,
                shadow: false,
                error: Some("model crashed".into()),
            });
            self.bus
                .publish(&Envelope::new("deployer", "default", event))
                .await?;
        }
        Ok(())
    }

    /// Ground truth for predictions; `right` says whether the model got them right.
    async fn publish_feedback(
        &self,
        outcomes: &[(String, bool)],
        right: bool,
    ) -> anyhow::Result<()> {
        for (request_id, positive) in outcomes {
            let truth = if *positive == right { 1 } else { 0 };
            self.bus
                .publish(&Envelope::new(
                    "crm",
                    "default",
                    Event::FeedbackReceived(flywheel_events::payloads::FeedbackReceived {
                        deployment: "churn-prod".into(),
                        request_id: request_id.clone(),
                        ground_truth: json!(truth),
                    }),
                ))
                .await?;
        }
        Ok(())
    }
}

fn column<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["columns"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["column"] == name))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn a_production_baseline_and_per_column_methods_replace_the_defaults() -> anyhow::Result<()> {
    let (setup, monitor, mut draws) = Setup::start(1000, &[]).await?;
    let url = monitor.url("/api/v1/monitoring/churn-prod");
    let refused = setup
        .http
        .put(&url)
        .json(&json!({"columns": {"x1": {"method": "ks"}}}))
        .send()
        .await?;
    assert_eq!(refused.status(), 400);
    let message = refused.json::<Value>().await?["message"].clone();
    assert!(
        message
            .as_str()
            .is_some_and(|m| m.contains("needs the raw values")),
        "{message}"
    );
    let settings = json!({
        "reference": {"kind": "baseline", "rows": 2000},
        "columns": {
            "x2": {"method": "hellinger", "threshold": 0.2},
            "plan": {"method": "chisquare", "threshold": 0.01},
        },
    });
    let put = setup.http.put(&url).json(&settings).send().await?;
    assert_eq!(put.status(), 200, "{}", put.text().await?);
    let stored: Value = setup.http.get(&url).send().await?.json().await?;
    assert_eq!(stored, settings);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Production starts shifted (x1 around 2.5, other plans): that is the baseline. Against
    // the training data it would drift; against itself it does not.
    setup
        .publish_predictions(&mut draws, 3000, true, 0, 150)
        .await?;
    setup.wait_reports(&monitor, 3).await?;
    // Then traffic moves back to the training distribution: drift against the baseline.
    setup
        .publish_predictions(&mut draws, 1000, false, 3000, 150)
        .await?;
    setup.wait_reports(&monitor, 4).await?;
    let mut reports = setup.reports(&monitor).await?;
    reports.sort_by_key(|r| r["window_start"].as_i64());
    let findings = reports[0]["findings"].to_string();
    assert!(
        findings.contains("gathering a baseline of its first 2000 predictions"),
        "{findings}"
    );
    let (same, moved) = (&reports[2], &reports[3]);
    assert_eq!(same["dataset_drift"], false, "{same}");
    assert_eq!(column(same, "x1")["drifted"], false, "{same}");
    assert_eq!(moved["dataset_drift"], true, "{moved}");
    assert_eq!(column(moved, "x1")["drifted"], true, "{moved}");
    assert_eq!(column(moved, "plan")["drifted"], true, "{moved}");
    assert_eq!(column(moved, "x2")["drifted"], false, "{moved}");
    // The methods and thresholds asked for; PSI where nothing was said.
    for report in [same, moved] {
        assert_eq!(column(report, "x1")["method"], "psi");
        assert_eq!(column(report, "x1")["threshold"], 0.1);
        assert_eq!(column(report, "x2")["method"], "hellinger");
        assert_eq!(column(report, "x2")["threshold"], 0.2);
        assert_eq!(column(report, "plan")["method"], "chisquare");
        assert!(column(report, "plan")["p_value"].is_f64(), "{report}");
    }
    // Quantile sketches: x1's median near 0 (back to the training distribution), x2's near 5.
    let median = |name: &str| moved["quantiles"][name][1].as_f64().unwrap_or(f64::NAN);
    assert!(median("x1").abs() < 0.2, "{moved}");
    assert!((median("x2") - 5.0).abs() < 0.4, "{moved}");
    assert_eq!(
        moved["latency_us_p50"].as_f64().map(f64::round),
        Some(150.0)
    );
    monitor.stop().await?;
    flywheel_testkit::cleanup_bus(&setup.bus).await;
    Ok(())
}

#[tokio::test]
async fn failing_requests_raise_an_error_rate_alert_against_the_learned_rate() -> anyhow::Result<()>
{
    let (setup, monitor, mut draws) = Setup::start(1000, &[]).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Three windows with 1 % failures teach the rate; the fourth has 30 %.
    for w in 0..3 {
        setup
            .publish_predictions(&mut draws, 990, false, w * 1000, 150)
            .await?;
        setup.publish_failures(10, w * 1000).await?;
    }
    setup.wait_reports(&monitor, 3).await?;
    assert!(setup.alerts(&monitor).await?.is_empty());
    setup
        .publish_predictions(&mut draws, 700, false, 3000, 150)
        .await?;
    setup.publish_failures(300, 3000).await?;
    wait_for("the error-rate alert", async || {
        Ok(setup
            .alerts(&monitor)
            .await?
            .iter()
            .any(|a| a["rule"] == "error_rate"))
    })
    .await?;
    let alerts = setup.alerts(&monitor).await?;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["severity"], "critical");
    assert!(
        alerts[0]["message"].as_str().is_some_and(
            |m| m.contains("30.0 % of requests") && m.contains("learned error rate is 1.0 %")
        ),
        "{alerts:?}"
    );
    let reports = setup.reports(&monitor).await?;
    let worst = reports
        .iter()
        .find(|r| r["errors"] == 300)
        .context("the failing window")?;
    assert_eq!(worst["error_rate"], 0.3);
    assert_eq!(worst["count"], 1000);
    assert!(
        worst["findings"]
            .to_string()
            .contains("300 of 1000 requests failed"),
        "{worst}"
    );
    monitor.stop().await?;
    flywheel_testkit::cleanup_bus(&setup.bus).await;
    Ok(())
}

#[tokio::test]
async fn late_feedback_joins_from_the_store_and_retraining_exports_production_rows()
-> anyhow::Result<()> {
    // A registry on the same bus and bucket, for the export.
    let registry_settings = {
        let mut settings = ServiceSettings::defaults_for("registry", 0);
        settings.db = flywheel_testkit::fresh_postgres().await?;
        settings
    };
    let (setup, mut monitor, mut draws) = Setup::start(
        300,
        &[
            ("performance_window", "300"),
            // Memory holds 50 predictions awaiting feedback; the store keeps the rest.
            ("feedback_pending_max", "50"),
            ("join_store_per_second", "100000"),
            ("export_min_rows", "100"),
        ],
    )
    .await?;
    let registry = {
        let mut settings = registry_settings;
        settings.bus = setup.settings.bus.clone();
        settings.artifacts = setup.settings.artifacts.clone();
        flywheel_testkit::service::InProcess::start(settings, flywheel_registry::run).await?
    };
    // The monitor must know where the registry is: restart it with the address.
    monitor.kill();
    let mut settings = setup.settings.clone();
    settings
        .service
        .insert("registry_url".into(), registry.url(""));
    monitor = Isolated::start(settings, flywheel_monitor::run).await?;
    let policy = setup
        .http
        .put(monitor.url("/api/v1/policies/churn"))
        .json(&json!({"trainer": {"kind": "builtin", "name": "logistic_regression", "params": {"target": "label"}}}))
        .send()
        .await?;
    assert_eq!(policy.status(), 200, "{}", policy.text().await?);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let predicted = setup
        .publish_predictions(&mut draws, 300, false, 0, 150)
        .await?;
    setup.wait_reports(&monitor, 1).await?;
    // All 300 labels come after their predictions left memory (all but the last 50).
    setup.publish_feedback(&predicted, true).await?;
    let performance = async || -> anyhow::Result<Vec<Value>> {
        Ok(setup
            .reports(&monitor)
            .await?
            .into_iter()
            .filter(|r| r["kind"] == "performance")
            .collect())
    };
    wait_for("a performance report", async || {
        Ok(!performance().await?.is_empty())
    })
    .await?;
    let report = &performance().await?[0];
    assert_eq!(report["count"], 300, "every label joined once: {report}");
    assert_eq!(report["performance"]["accuracy"], 1.0, "{report}");

    // Drift: the retraining trains on the labelled production rows.
    setup
        .publish_predictions(&mut draws, 300, true, 300, 150)
        .await?;
    let mut requests = Vec::new();
    wait_for("training.requested", async || {
        requests = setup.training_requests().await?;
        Ok(!requests.is_empty())
    })
    .await?;
    let dataset = &requests[0].dataset;
    assert_eq!(dataset.name, "training-production");
    let version: Value = setup
        .http
        .get(registry.url(&format!(
            "/api/v1/datasets/training-production/versions/{}",
            dataset.version
        )))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(version["row_count"], 300, "{version}");
    let columns: Vec<&str> = version["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(columns, ["plan", "x1", "x2", "label"], "{version}");
    monitor.stop().await?;
    registry.stop().await?;
    flywheel_testkit::cleanup_bus(&setup.bus).await;
    Ok(())
}
