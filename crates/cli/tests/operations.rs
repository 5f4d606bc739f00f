//! The everyday subcommands against a running `flywheel up` (the binary, on free ports and a
//! temporary directory, against the test NATS): datasets pushed and shown, jobs listed and a
//! missing one refused, predictions refused for an unknown deployment, the live event stream
//! tailed — tables by default, JSON on request, exit 2 with one line on failure.

mod support;

use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A `flywheel up` child and its services' URLs.
struct Platform {
    child: tokio::process::Child,
    urls: Vec<(String, String)>,
    bus: flywheel_bus::BusConfig,
    _dir: tempfile::TempDir,
}

impl Platform {
    async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let bus = flywheel_testkit::bus_config(&flywheel_testkit::unique_name());
        let mut child = support::up(&[], dir.path(), &bus)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let mut urls = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                let mut words = line.split_whitespace();
                if let (Some(name), Some(url)) = (words.next(), words.next()) {
                    if name == "dashboard" {
                        return anyhow::Ok(());
                    }
                    urls.push((name.to_owned(), url.to_owned()));
                }
            }
            anyhow::bail!("flywheel up ended before printing its URLs")
        })
        .await
        .context("flywheel up printed no URLs within a minute")??;
        let platform = Self {
            child,
            urls,
            bus,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        for (name, url) in &platform.urls {
            flywheel_testkit::wait_for(
                &format!("the {name}"),
                Duration::from_secs(60),
                async || {
                    Ok(http
                        .get(format!("{url}/readyz"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success()))
                },
            )
            .await?;
        }
        Ok(platform)
    }

    /// Runs `flywheel` with the platform's URLs.
    async fn flywheel(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_flywheel"));
        for (name, url) in &self.urls {
            let flag = match name.as_str() {
                "trainer-runner" => "--runner-url".to_owned(),
                other => format!("--{other}-url"),
            };
            command.args([flag.as_str(), url.as_str()]);
        }
        Ok(command.args(args).output().await?)
    }

    async fn stop(self) -> anyhow::Result<()> {
        support::stop(self.child).await?;
        let bus = flywheel_bus::Bus::connect(&self.bus, "test").await?;
        flywheel_testkit::cleanup_bus(&bus).await;
        Ok(())
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn datasets_jobs_predictions_and_events_from_the_command_line() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("customers.csv");
    std::fs::write(&csv, "age,plan,churned\n31,pro,0\n45,basic,1\n52,team,0\n")?;
    let csv = csv.display().to_string();

    // The event stream, tailed while a dataset is pushed.
    let tail = {
        let urls = platform.urls.clone();
        tokio::spawn(async move {
            let registry = &urls
                .iter()
                .find(|(n, _)| n == "registry")
                .context("registry")?
                .1;
            let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_flywheel"))
                .args([
                    "--registry-url",
                    registry,
                    "events",
                    "tail",
                    "--type",
                    "dataset.",
                    "--count",
                    "1",
                ])
                .output();
            anyhow::Ok(tokio::time::timeout(Duration::from_secs(30), output).await??)
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let pushed = platform
        .flywheel(&["dataset", "push", &csv, "--name", "customers"])
        .await?;
    assert!(pushed.status.success(), "{}", text(&pushed));
    let table = text(&pushed);
    assert!(
        table.contains("customers") && table.contains("sha256"),
        "{table}"
    );
    let tailed = tail.await??;
    assert!(tailed.status.success(), "{}", text(&tailed));
    let line = String::from_utf8(tailed.stdout)?;
    assert!(
        line.contains("dataset.version.created") && line.contains("customers"),
        "{line}"
    );

    let shown = platform
        .flywheel(&["--json", "dataset", "show", "customers"])
        .await?;
    assert!(shown.status.success(), "{}", text(&shown));
    let versions: Value = serde_json::from_slice(&shown.stdout)?;
    assert_eq!(versions[0]["row_count"], 3, "{versions}");

    let jobs = platform.flywheel(&["jobs", "list"]).await?;
    assert!(jobs.status.success(), "{}", text(&jobs));
    assert!(
        text(&jobs).contains("status"),
        "a table header: {}",
        text(&jobs)
    );

    // Training, followed to the end: the metrics as a table.
    let mut rows = String::from("x,plan,churned\n");
    for i in 0..200 {
        let x = (i % 17) as f64 - 8.0;
        let plan = ["basic", "pro", "team"][i % 3];
        rows.push_str(&format!("{x},{plan},{}\n", u8::from(x > 0.5)));
    }
    let data = dir.path().join("train.csv");
    std::fs::write(&data, rows)?;
    let data = data.display().to_string();
    let pushed = platform
        .flywheel(&["dataset", "push", &data, "--name", "accounts"])
        .await?;
    assert!(pushed.status.success(), "{}", text(&pushed));
    let trained = platform
        .flywheel(&[
            "train",
            "--model",
            "churn",
            "--dataset",
            "accounts",
            "--param",
            "target=churned",
        ])
        .await?;
    assert!(trained.status.success(), "{}", text(&trained));
    let report = text(&trained);
    assert!(
        report.contains("accuracy") && report.contains("completed"),
        "{report}"
    );
    let detached = platform
        .flywheel(&[
            "train",
            "--detach",
            "--model",
            "churn",
            "--dataset",
            "accounts",
            "--param",
            "target=churned",
        ])
        .await?;
    assert!(detached.status.success(), "{}", text(&detached));
    let job_id = String::from_utf8(detached.stdout)?.trim().to_owned();
    let listed = platform.flywheel(&["--json", "jobs", "list"]).await?;
    let jobs: Value = serde_json::from_slice(&listed.stdout)?;
    assert!(
        jobs.as_array()
            .into_iter()
            .flatten()
            .any(|j| j["job_id"] == job_id.as_str()),
        "{job_id} in {jobs}"
    );
    let nothing = platform
        .flywheel(&["train", "--model", "churn", "--dataset", "nothing-here"])
        .await?;
    assert_eq!(nothing.status.code(), Some(2), "{}", text(&nothing));

    // Datasets and models: lists, a model's versions, aliases and promotions.
    let datasets = platform.flywheel(&["dataset", "list"]).await?;
    assert!(datasets.status.success(), "{}", text(&datasets));
    assert!(
        text(&datasets).contains("accounts") && text(&datasets).contains("customers"),
        "{}",
        text(&datasets)
    );
    let mut models = String::new();
    flywheel_testkit::wait_for("churn v1 registered", Duration::from_secs(20), async || {
        models = text(&platform.flywheel(&["models", "list"]).await?);
        Ok(models.contains("churn"))
    })
    .await?;
    let aliased = platform
        .flywheel(&["models", "alias", "churn", "staging", "1"])
        .await?;
    assert!(aliased.status.success(), "{}", text(&aliased));
    let shown = platform
        .flywheel(&["--json", "models", "show", "churn"])
        .await?;
    let model: Value = serde_json::from_slice(&shown.stdout)?;
    assert_eq!(model["aliases"]["staging"], 1, "{model}");
    assert_eq!(
        model["versions"][0]["dataset"]["name"], "accounts",
        "{model}"
    );
    let table = text(&platform.flywheel(&["models", "show", "churn"]).await?);
    assert!(
        table.contains("staging") && table.contains("accuracy"),
        "{table}"
    );
    let promoted = platform
        .flywheel(&["models", "promote", "churn", "1", "--alias", "production"])
        .await?;
    assert!(promoted.status.success(), "{}", text(&promoted));
    assert!(
        text(&promoted).contains("to `production`"),
        "{}",
        text(&promoted)
    );
    let unknown = platform
        .flywheel(&["models", "promote", "churn", "99"])
        .await?;
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    assert!(
        text(&unknown).starts_with("flywheel: the registry refused"),
        "{}",
        text(&unknown)
    );

    // A deployment following `production`, and one that names nothing to serve.
    let deployed = platform
        .flywheel(&[
            "deploy",
            "churn-api",
            "--model",
            "churn",
            "--alias",
            "production",
        ])
        .await?;
    assert!(deployed.status.success(), "{}", text(&deployed));
    assert!(text(&deployed).contains("churn-api"), "{}", text(&deployed));
    let vague = platform
        .flywheel(&["deploy", "x", "--model", "churn"])
        .await?;
    assert_eq!(vague.status.code(), Some(2));
    assert!(text(&vague).contains("--alias"), "{}", text(&vague));

    // Runs logged through the tracking API.
    let registry = &platform
        .urls
        .iter()
        .find(|(n, _)| n == "registry")
        .context("registry")?
        .1;
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{registry}/api/2.0/mlflow/runs/create"))
        .json(&serde_json::json!({"experiment_id": "0", "run_name": "cli-run"}))
        .send()
        .await?
        .json()
        .await?;
    let run_id = created["run"]["info"]["run_id"]
        .as_str()
        .context("run id")?
        .to_owned();
    let logged = http
        .post(format!("{registry}/api/2.0/mlflow/runs/log-batch"))
        .json(&serde_json::json!({
            "run_id": run_id,
            "params": [{"key": "depth", "value": "7"}],
            "metrics": [{"key": "rmse", "value": 0.25, "timestamp": 1, "step": 0}],
        }))
        .send()
        .await?;
    assert!(logged.status().is_success());
    let runs = text(&platform.flywheel(&["runs", "list"]).await?);
    assert!(runs.contains(&run_id) && runs.contains("rmse"), "{runs}");
    let run = platform.flywheel(&["runs", "show", &run_id]).await?;
    assert!(run.status.success(), "{}", text(&run));
    assert!(
        text(&run).contains("depth") && text(&run).contains("0.25"),
        "{}",
        text(&run)
    );
    let no_run = platform.flywheel(&["runs", "show", "nope"]).await?;
    assert_eq!(no_run.status.code(), Some(2), "{}", text(&no_run));

    // Predictions from a CSV once churn-api serves version 1.
    let rows = dir.path().join("rows.csv");
    std::fs::write(&rows, "x,plan\n-3,basic\n6,pro\n")?;
    let rows = rows.display().to_string();
    let mut predicted = String::new();
    flywheel_testkit::wait_for("churn-api to answer", Duration::from_secs(30), async || {
        let out = platform
            .flywheel(&["--json", "predict", "churn-api", &rows])
            .await?;
        predicted = text(&out);
        Ok(out.status.success())
    })
    .await?;
    let answers: Value = serde_json::from_str(predicted.trim())?;
    assert_eq!(
        answers["predictions"].as_array().map(Vec::len),
        Some(2),
        "{answers}"
    );

    // Failures: one line, exit 2, saying what went wrong.
    let cancel = platform
        .flywheel(&["jobs", "cancel", "no-such-job"])
        .await?;
    assert_eq!(cancel.status.code(), Some(2), "{}", text(&cancel));
    assert!(
        text(&cancel).starts_with("flywheel: the scheduler refused"),
        "{}",
        text(&cancel)
    );
    let predict = platform.flywheel(&["predict", "nowhere", &csv]).await?;
    assert_eq!(predict.status.code(), Some(2), "{}", text(&predict));
    assert!(text(&predict).contains("nowhere"), "{}", text(&predict));
    let missing = platform
        .flywheel(&["dataset", "push", "/no/such.csv", "--name", "x"])
        .await?;
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing).contains("cannot read /no/such.csv"),
        "{}",
        text(&missing)
    );
    platform.stop().await
}
