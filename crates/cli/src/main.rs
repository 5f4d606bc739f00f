//! `flywheel`: the command line. Tables by default, `--json` for scripts; exit codes: 0 done,
//! 1 the answer is bad news (a service down, a dataset drifted with `--fail-on-drift`), 2 the
//! command could not be carried out (unreachable service, bad file, refused request).

mod catalog;
mod demo;
mod operations;
mod train;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::{Value, json};

/// Flywheel: train, deploy, monitor and retrain models.
#[derive(Debug, Parser)]
#[command(name = "flywheel", version)]
struct Cli {
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Where the services are.
    #[command(flatten)]
    urls: Urls,
    #[command(subcommand)]
    command: Command,
}

/// Service URLs (defaults: the local ports of `scripts/up.sh`).
#[derive(Debug, clap::Args)]
struct Urls {
    /// The registry.
    #[arg(
        long,
        env = "FLYWHEEL_REGISTRY_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    registry_url: String,
    /// The scheduler.
    #[arg(
        long,
        env = "FLYWHEEL_SCHEDULER_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    scheduler_url: String,
    /// The trainer-runner.
    #[arg(
        long,
        env = "FLYWHEEL_RUNNER_URL",
        default_value = "http://127.0.0.1:8082",
        global = true
    )]
    runner_url: String,
    /// The monitor.
    #[arg(
        long,
        env = "FLYWHEEL_MONITOR_URL",
        default_value = "http://127.0.0.1:8083",
        global = true
    )]
    monitor_url: String,
    /// The deployer.
    #[arg(
        long,
        env = "FLYWHEEL_DEPLOYER_URL",
        default_value = "http://127.0.0.1:8084",
        global = true
    )]
    deployer_url: String,
    /// An API token, sent as `Authorization: Bearer` (needed when the services run with
    /// `auth.enabled`).
    #[arg(long, env = "FLYWHEEL_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// The project to work in, sent as `X-Flywheel-Project` (a token of one project works in
    /// that one; an all-projects token sees every project unless this narrows it).
    #[arg(long, env = "FLYWHEEL_PROJECT", global = true)]
    project: Option<String>,
}

impl Urls {
    /// The headers every request carries: the token and the project, if given.
    fn credentials(&self) -> reqwest::header::HeaderMap {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &self.token
            && let Ok(mut value) =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        {
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        if let Some(project) = &self.project
            && let Ok(value) = reqwest::header::HeaderValue::from_str(project)
        {
            headers.insert(flywheel_runtime::scope::PROJECT_HEADER, value);
        }
        headers
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run all five services in this process (SQLite and local files under --dir; NATS at
    /// FLYWHEEL__BUS__URL, started when it is the local default and not running).
    Up(up::UpArgs),
    /// Play the demo loop against services that already run (the URLs above, NATS below):
    /// what `up --demo` does in its own process.
    Demo {
        /// NATS, as the services use it.
        #[arg(
            long,
            env = "FLYWHEEL__BUS__URL",
            default_value = "nats://127.0.0.1:4222"
        )]
        nats_url: String,
        /// The services' subject prefix.
        #[arg(long, env = "FLYWHEEL__BUS__PREFIX", default_value = "flywheel")]
        prefix: String,
    },
    /// Whether every service is up and ready (exit 1 when one is not).
    Status,
    /// Compare two datasets the way Evidently does: CSV files, or `name@version` of registered
    /// dataset versions.
    Drift {
        /// The reference.
        reference: String,
        /// The data compared with it.
        current: String,
        /// Exit 1 when the dataset drifted.
        #[arg(long)]
        fail_on_drift: bool,
    },
    /// Datasets: push a file as a version, list them, show a dataset's versions.
    #[command(subcommand)]
    Dataset(operations::DatasetCommand),
    /// Train a model and follow the job (`--detach`: just queue it).
    Train(train::TrainArgs),
    /// Training jobs: list, cancel.
    #[command(subcommand)]
    Jobs(operations::JobsCommand),
    /// Tracked runs: list, show.
    #[command(subcommand)]
    Runs(catalog::RunsCommand),
    /// Registered models: list, show, promote, alias.
    #[command(subcommand)]
    Models(catalog::ModelsCommand),
    /// Create or change a deployment: serve a model's alias or version, directly or as a canary.
    Deploy(catalog::DeployArgs),
    /// Predict with a deployment from a CSV or JSON file of records.
    Predict {
        /// The deployment.
        deployment: String,
        /// The records (`.csv`, or JSON: a list of objects).
        file: String,
    },
    /// The live event stream.
    #[command(subcommand)]
    Events(EventsCommand),
    /// The monitor's alerts.
    Alerts {
        /// `list` (the default and only action).
        #[arg(value_parser = ["list"])]
        action: Option<String>,
        /// Only this deployment's.
        #[arg(long)]
        deployment: Option<String>,
    },
}

/// The event stream.
#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Print events as they are published, one line each (`--json`: the envelopes).
    Tail {
        /// Only event types starting with this, e.g. `deployment.` or `training.job`.
        #[arg(long = "type")]
        kind: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// A failure that is the user's to fix: one line, exit code 2.
#[derive(Debug)]
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

/// Sends a request to a service; a refusal or an unreachable service is a one-line failure.
async fn request(what: &str, request: reqwest::RequestBuilder) -> Result<Value, Failure> {
    let response = request.send().await.map_err(|e| {
        Failure(format!(
            "cannot reach the {what}: {e} (is it running? `scripts/up.sh` starts Flywheel; --{what}-url points elsewhere)"
        ))
    })?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["message"]
            .as_str()
            .or_else(|| body["error"].as_str())
            .unwrap_or("no details");
        return Err(Failure(format!(
            "the {what} refused: {message} (HTTP {status})"
        )));
    }
    Ok(body)
}

/// A sample for `drift`: a CSV file's text, or a registered dataset version.
async fn sample(argument: &str) -> Result<Value, Failure> {
    if let Some((dataset, version)) = argument.split_once('@')
        && !std::path::Path::new(argument).exists()
    {
        return Ok(json!({"dataset": dataset, "version": version}));
    }
    let csv = tokio::fs::read_to_string(argument).await.map_err(|e| {
        Failure(format!(
            "cannot read {argument}: {e} (a CSV file, or name@version of a registered dataset)"
        ))
    })?;
    Ok(json!({"csv": csv}))
}

fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    println!("{table}");
}

fn number(value: &Value) -> String {
    value.as_f64().map_or_else(
        || "-".into(),
        |v| {
            if v != 0.0 && v.abs() < 1e-3 {
                format!("{v:.3e}")
            } else {
                format!("{v:.4}")
            }
        },
    )
}

async fn run(cli: Cli) -> Result<bool, Failure> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .default_headers(cli.urls.credentials())
        .build()?;
    let urls = &cli.urls;
    match cli.command {
        Command::Up(args) => {
            let shutdown = flywheel_runtime::shutdown::on_signals();
            // Warnings only on the terminal, so the URLs and the demo's progress stand out
            // (`FLYWHEEL__TELEMETRY__LOG_LEVEL` or `RUST_LOG` ask for more).
            let telemetry = flywheel_runtime::telemetry::init(
                &flywheel_runtime::TelemetryConfig {
                    log_level: std::env::var("FLYWHEEL__TELEMETRY__LOG_LEVEL")
                        .unwrap_or_else(|_| "warn".into()),
                    ..flywheel_runtime::TelemetryConfig::default()
                },
                "flywheel",
            )?;
            let outcome = up::run(args, shutdown).await;
            telemetry.shutdown().await;
            outcome.map_err(|e| Failure(format!("{e:#}")))?;
            Ok(true)
        }
        Command::Demo { nats_url, prefix } => {
            let running = up::Running {
                urls: vec![
                    ("registry", urls.registry_url.clone()),
                    ("scheduler", urls.scheduler_url.clone()),
                    ("trainer-runner", urls.runner_url.clone()),
                    ("monitor", urls.monitor_url.clone()),
                    ("deployer", urls.deployer_url.clone()),
                ],
                bus: flywheel_bus::BusConfig {
                    url: nats_url,
                    prefix,
                    ..flywheel_bus::BusConfig::default()
                },
                credentials: urls.credentials(),
            };
            let shutdown = flywheel_runtime::shutdown::on_signals();
            demo::run(&running, shutdown)
                .await
                .map_err(|e| Failure(format!("the demo failed: {e:#}")))?;
            Ok(true)
        }
        Command::Status => {
            let services = [
                ("registry", &urls.registry_url),
                ("scheduler", &urls.scheduler_url),
                ("trainer-runner", &urls.runner_url),
                ("monitor", &urls.monitor_url),
                ("deployer", &urls.deployer_url),
            ];
            let mut report = Vec::new();
            for (name, url) in services {
                let state = match http
                    .get(format!("{}/readyz", url.trim_end_matches('/')))
                    .timeout(std::time::Duration::from_secs(5))
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => "ready".to_owned(),
                    Ok(r) => format!("not ready (HTTP {})", r.status().as_u16()),
                    Err(_) => "unreachable".to_owned(),
                };
                report.push(json!({"service": name, "url": url, "state": state}));
            }
            let all_ready = report.iter().all(|r| r["state"] == "ready");
            if cli.json {
                println!("{}", json!({"ready": all_ready, "services": report}));
            } else {
                print_table(
                    &["service", "url", "state"],
                    report
                        .iter()
                        .map(|r| {
                            ["service", "url", "state"]
                                .iter()
                                .map(|k| r[k].as_str().unwrap_or_default().to_owned())
                                .collect()
                        })
                        .collect(),
                );
            }
            Ok(all_ready)
        }
        Command::Drift {
            reference,
            current,
            fail_on_drift,
        } => {
            let body =
                json!({"reference": sample(&reference).await?, "current": sample(&current).await?});
            let url = format!("{}/api/v1/drift", urls.monitor_url.trim_end_matches('/'));
            let report = request("monitor", http.post(url).json(&body)).await?;
            let drifted = report["dataset_drift"].as_bool().unwrap_or(false);
            if cli.json {
                println!("{report}");
            } else {
                let rows = report["columns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        vec![
                            c["column"].as_str().unwrap_or_default().to_owned(),
                            c["method"].as_str().unwrap_or_default().to_owned(),
                            number(&c["score"]),
                            number(&c["threshold"]),
                            if c["drifted"] == true {
                                "DRIFT".into()
                            } else {
                                "ok".into()
                            },
                        ]
                    })
                    .collect();
                print_table(&["column", "method", "score", "threshold", "verdict"], rows);
                println!(
                    "dataset drift: {} ({} of {} columns, share {:.2} against {:.2})",
                    if drifted { "YES" } else { "no" },
                    report["drifted_columns"],
                    report["columns"].as_array().map_or(0, Vec::len),
                    report["share"].as_f64().unwrap_or(0.0),
                    report["drift_share"].as_f64().unwrap_or(0.5),
                );
                for finding in report["findings"].as_array().into_iter().flatten() {
                    println!(
                        "  note: {}: {}",
                        finding["column"].as_str().unwrap_or_default(),
                        finding["detail"].as_str().unwrap_or_default()
                    );
                }
            }
            Ok(!(fail_on_drift && drifted))
        }
        Command::Dataset(command) => operations::dataset(&http, urls, cli.json, command).await,
        Command::Jobs(command) => operations::jobs(&http, urls, cli.json, command).await,
        Command::Runs(command) => catalog::runs(&http, urls, cli.json, command).await,
        Command::Models(command) => catalog::models(&http, urls, cli.json, command).await,
        Command::Deploy(args) => catalog::deploy(&http, urls, cli.json, args).await,
        Command::Train(args) => train::train(&http, urls, cli.json, args).await,
        Command::Predict { deployment, file } => {
            operations::predict(&http, urls, cli.json, &deployment, &file).await
        }
        Command::Events(EventsCommand::Tail { kind, count }) => {
            operations::tail(urls, cli.json, kind.as_deref(), count).await
        }
        Command::Alerts { deployment, .. } => {
            let mut url = format!("{}/api/v1/alerts", urls.monitor_url.trim_end_matches('/'));
            if let Some(d) = &deployment {
                url.push_str(&format!("?deployment={d}"));
            }
            let alerts = request("monitor", http.get(url)).await?;
            if cli.json {
                println!("{alerts}");
            } else {
                let rows = alerts
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        ["deployment", "rule", "severity", "status", "message"]
                            .iter()
                            .map(|k| a[k].as_str().unwrap_or_default().to_owned())
                            .collect()
                    })
                    .collect();
                print_table(
                    &["deployment", "rule", "severity", "status", "message"],
                    rows,
                );
            }
            Ok(true)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // One TLS crypto provider for the process, whatever a dependency turns on.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Failure(message)) => {
            eprintln!("flywheel: {message}");
            ExitCode::from(2)
        }
    }
}
