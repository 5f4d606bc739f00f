//! `flywheel up --demo`: the whole loop on generated data, through the public interfaces only.
//! A churn dataset (seeded generator below) is registered; a model is trained, auto-promoted
//! to `production` and rolled out; steady traffic flows with ground truth arriving seconds
//! later; then the customers change (newer, pricier, more support calls, and churning for
//! other reasons), the monitor raises drift, retraining runs on the labelled production rows,
//! and the new version goes out as a canary and is promoted.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flywheel_bus::Bus;
use flywheel_events::payloads::FeedbackReceived;
use flywheel_events::{Envelope, Event};
use flywheel_runtime::CancellationToken;
use serde_json::{Value, json};

use crate::up::Running;

/// The demo's seed: same data every run.
const SEED: u64 = 0x00f1_7e1e_5eed_0001;

/// Requests per second of synthetic traffic.
const REQUESTS_PER_SECOND: u64 = 40;

/// How long ground truth takes to arrive.
const FEEDBACK_DELAY: Duration = Duration::from_secs(2);

/// The longest the loop may take before the demo gives up.
const LOOP_LIMIT: Duration = Duration::from_secs(600);

/// Deterministic draws (xorshift64*).
pub(crate) struct Draws(u64);

impl Draws {
    /// A generator with a seed.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self, mean: f64, std: f64) -> f64 {
        let (u, v) = (self.uniform().max(1e-12), self.uniform());
        mean + std * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// A customer as the model sees them, and whether they churned.
    pub(crate) fn customer(&mut self, shifted: bool) -> (Value, bool) {
        let tenure = if shifted {
            1.0 + (self.uniform() * 24.0).floor()
        } else {
            1.0 + (self.uniform() * 72.0).floor()
        };
        let charges = self
            .normal(if shifted { 88.0 } else { 65.0 }, 18.0)
            .max(15.0);
        let calls = (-(self.uniform().max(1e-12)).ln() * if shifted { 4.0 } else { 1.5 }).floor();
        let u = self.uniform();
        let cuts = if shifted { [0.2, 0.6] } else { [0.5, 0.85] };
        let plan = if u < cuts[0] {
            "basic"
        } else if u < cuts[1] {
            "pro"
        } else {
            "team"
        };
        // Before the change, short tenure and basic plans churn; after it, support calls and
        // price drive churn, and team plans churn most.
        let logit = if shifted {
            -4.0 + 0.6 * calls + 0.03 * (charges - 65.0) + if plan == "team" { 1.0 } else { 0.0 }
        } else {
            -0.5 - 0.05 * tenure
                + 0.02 * (charges - 65.0)
                + 0.3 * calls
                + match plan {
                    "basic" => 0.8,
                    "pro" => 0.0,
                    _ => -0.8,
                }
        };
        let churned = self.uniform() < 1.0 / (1.0 + (-logit).exp());
        (
            json!({
                "tenure_months": tenure,
                "monthly_charges": (charges * 100.0).round() / 100.0,
                "support_calls": calls,
                "plan": plan,
            }),
            churned,
        )
    }
}

/// The training dataset: `rows` customers before the change, as CSV.
pub(crate) fn dataset(rows: usize, seed: u64) -> String {
    let mut draws = Draws::new(seed);
    let mut csv = String::from("tenure_months,monthly_charges,support_calls,plan,churned\n");
    for _ in 0..rows {
        let (c, churned) = draws.customer(false);
        csv.push_str(&format!(
            "{},{},{},{},{}\n",
            c["tenure_months"],
            c["monthly_charges"],
            c["support_calls"],
            c["plan"].as_str().unwrap_or_default(),
            u8::from(churned)
        ));
    }
    csv
}

async fn call(request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
    let response = request.send().await.with_context(|| what.to_owned())?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{what}: HTTP {status}: {body}");
    }
    Ok(body)
}

fn say(message: &str) {
    eprintln!("demo: {message}");
}

/// Plays the loop; returns once a retrained version serves after drift.
pub(crate) async fn run(running: &Running, shutdown: CancellationToken) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(running.credentials.clone())
        .build()?;
    let (registry, scheduler, monitor, deployer) = (
        running.url("registry"),
        running.url("scheduler"),
        running.url("monitor"),
        running.url("deployer"),
    );
    for (name, url) in &running.urls {
        let ready = async {
            loop {
                if http
                    .get(format!("{url}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), ready)
            .await
            .with_context(|| format!("the {name} did not become ready"))?;
    }
    let bus = Bus::connect(&running.bus, "demo").await?;

    say("registering the customers dataset (3000 rows, fixed seed)");
    let pushed = call(
        http.post(format!(
            "{registry}/api/v1/datasets/customers/versions?format=csv"
        ))
        .header("x-flywheel-actor", "demo")
        .body(dataset(3000, SEED)),
        "pushing the dataset",
    )
    .await?;
    let version = pushed["version"].as_str().context("dataset version")?;
    let trainer =
        json!({"kind": "builtin", "name": "logistic_regression", "params": {"target": "churned"}});
    // The model exists before its policy does; a second demo run finds it there.
    let created = http
        .post(format!(
            "{registry}/api/2.0/mlflow/registered-models/create"
        ))
        .json(&json!({"name": "churn"}))
        .send()
        .await
        .context("creating the model")?;
    if !(created.status().is_success() || created.status().as_u16() == 400) {
        bail!("creating the model: HTTP {}", created.status());
    }
    call(
        http.put(format!("{registry}/api/v1/models/churn/policy"))
            .header("x-flywheel-actor", "demo")
            .json(&json!({"auto_promote_to": "production"})),
        "setting the model's policy",
    )
    .await?;
    call(
        http.put(format!("{deployer}/api/v1/deployments/churn"))
            .json(&json!({
                "model": "churn", "alias": "production",
                "strategy": {"kind": "canary", "steps": [25, 100], "step_seconds": 15},
                "slo": {"min_requests": 20},
            })),
        "creating the deployment",
    )
    .await?;
    call(
        http.put(format!("{monitor}/api/v1/policies/churn"))
            .json(&json!({"trainer": trainer, "cooldown_seconds": 600, "daily_budget": 3})),
        "setting the retraining policy",
    )
    .await?;
    say("training the first model");
    call(
        http.post(format!("{scheduler}/api/v1/jobs")).json(&json!({
            "request_id": "demo-initial", "model": "churn",
            "dataset": {"name": "customers", "version": version},
            "trainer": trainer, "resources": {"cpu": 1.0, "memory_mb": 512},
            "reason": "manual",
        })),
        "submitting the training",
    )
    .await?;

    let started = Instant::now();
    let mut draws = Draws::new(SEED ^ 0xdead_beef);
    let mut feedback: VecDeque<(Instant, String, bool)> = VecDeque::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / REQUESTS_PER_SECOND));
    let mut serving = 0u64;
    let mut shifted_at: Option<Instant> = None;
    let mut answered = 0u64;
    let mut last_status = Instant::now();
    let mut alerted = false;
    loop {
        if started.elapsed() > LOOP_LIMIT {
            bail!("the loop did not close within {LOOP_LIMIT:?}");
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        if last_status.elapsed() >= Duration::from_secs(2) {
            last_status = Instant::now();
            let deployment = call(
                http.get(format!("{deployer}/api/v1/deployments/churn")),
                "reading the deployment",
            )
            .await
            .unwrap_or(Value::Null);
            let now_serving = deployment["serving_version"].as_u64().unwrap_or(0);
            if now_serving != serving {
                say(&format!(
                    "version {now_serving} serves ({:.0} s in)",
                    started.elapsed().as_secs_f64()
                ));
                serving = now_serving;
            }
            if !alerted
                && let Ok(alerts) = call(
                    http.get(format!("{monitor}/api/v1/alerts?deployment=churn")),
                    "alerts",
                )
                .await
                && let Some(alert) = alerts
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["rule"] == "data_drift")
            {
                alerted = true;
                say(&format!(
                    "drift alert: {}",
                    alert["message"].as_str().unwrap_or_default()
                ));
            }
            if serving >= 2 && deployment["status"] == "serving" {
                say(&format!(
                    "the loop is closed: drift → retraining → canary → version {serving} promoted \
                     ({:.0} s after the traffic changed)",
                    shifted_at.map_or(0.0, |t| t.elapsed().as_secs_f64())
                ));
                return Ok(());
            }
        }
        // Ground truth that is due.
        while feedback
            .front()
            .is_some_and(|(due, _, _)| *due <= Instant::now())
        {
            if let Some((_, request_id, churned)) = feedback.pop_front() {
                // As any outside system would: a JSON envelope on the feedback subject, with a
                // plain JetStream publish (no Flywheel client library, no headers).
                let envelope = Envelope::new(
                    "demo",
                    "default",
                    Event::FeedbackReceived(FeedbackReceived {
                        deployment: "churn".into(),
                        request_id,
                        ground_truth: json!(u8::from(churned)),
                    }),
                );
                let body = flywheel_events::encode(&envelope, flywheel_events::ContentType::Json)?;
                bus.jetstream()
                    .publish(bus.subjects().feedback("churn")?, body.into())
                    .await?
                    .await?;
            }
        }
        if serving == 0 {
            continue;
        }
        // 1500 answered requests as the training data looked, then the change.
        if shifted_at.is_none() && answered >= 1500 {
            shifted_at = Some(Instant::now());
            say("the customers change: newer, pricier, more support calls");
        }
        let (customer, churned) = draws.customer(shifted_at.is_some());
        let Ok(answer) = call(
            http.post(format!("{deployer}/v1/deployments/churn/predict"))
                .json(&json!([customer])),
            "predicting",
        )
        .await
        else {
            continue;
        };
        answered += 1;
        if let Some(id) = answer["id"].as_str() {
            feedback.push_back((Instant::now() + FEEDBACK_DELAY, id.to_owned(), churned));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_seeded_and_the_change_is_real() {
        assert_eq!(dataset(50, 7), dataset(50, 7));
        assert_ne!(dataset(50, 7), dataset(50, 8));
        let mut draws = Draws::new(1);
        let mean_calls = |draws: &mut Draws, shifted: bool| {
            (0..5000)
                .map(|_| {
                    draws.customer(shifted).0["support_calls"]
                        .as_f64()
                        .unwrap_or(0.0)
                })
                .sum::<f64>()
                / 5000.0
        };
        let (before, after) = (mean_calls(&mut draws, false), mean_calls(&mut draws, true));
        assert!(before < 1.5 && after > 3.0, "{before} {after}");
    }
}
