//! The five service binaries as separate OS processes: each its own PostgreSQL database, one
//! S3 bucket prefix and one NATS subject prefix for the test, fixed free ports (a restarted
//! process comes back where it was), logs under a temporary directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use flywheel_bus::{Bus, BusConfig};

/// The services, in start order.
pub(crate) const SERVICES: [&str; 5] = [
    "registry",
    "scheduler",
    "trainer-runner",
    "monitor",
    "deployer",
];

/// Where cargo put the workspace's binaries (beside this test's own `deps/` directory).
pub(crate) fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("the test binary's directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is not built: run `cargo build --workspace --bins` first (scripts/test.sh does)",
            path.display()
        );
    }
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Servers of the test's own, in place of the shared ones.
#[derive(Debug, Default)]
pub(crate) struct Infra {
    /// A private NATS server.
    pub(crate) nats_url: Option<String>,
    /// An S3 endpoint (e.g. a fault-injecting proxy).
    pub(crate) s3_endpoint: Option<String>,
    /// A private PostgreSQL server (URL without a database).
    pub(crate) postgres_url: Option<String>,
    /// Authentication on, with this bootstrap admin token (also the services' own token).
    pub(crate) admin_token: Option<String>,
}

/// One service process and how to start it again.
struct Service {
    env: Vec<(String, String)>,
    child: Option<tokio::process::Child>,
    url: String,
    starts: u32,
}

/// The five processes.
pub(crate) struct Cluster {
    services: BTreeMap<&'static str, Service>,
    /// The test's bus (its own prefix).
    pub(crate) bus: Bus,
    /// Its configuration, for other clients.
    pub(crate) bus_config: BusConfig,
    /// Logs and the runner's work directory.
    pub(crate) dir: tempfile::TempDir,
    /// The token the CLI sends, if any.
    pub(crate) cli_token: Option<String>,
}

impl Cluster {
    /// Starts all five and waits until each is ready. `options` add `service.*` options per
    /// service (`FLYWHEEL__SERVICE__<KEY>`).
    pub(crate) async fn start(options: &[(&str, &str, &str)]) -> anyhow::Result<Self> {
        Self::start_on(&Infra::default(), options).await
    }

    /// Like [`Cluster::start`], on a NATS server or S3 endpoint of the test's own.
    pub(crate) async fn start_on(
        infra: &Infra,
        options: &[(&str, &str, &str)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let prefix = flywheel_testkit::unique_name();
        let mut bus_config = flywheel_testkit::bus_config(&prefix);
        if let Some(url) = &infra.nats_url {
            bus_config.url = url.clone();
        }
        let mut artifacts = flywheel_testkit::s3_config(&prefix)?;
        if let Some(endpoint) = &infra.s3_endpoint {
            artifacts.s3.endpoint = Some(endpoint.clone());
        }
        let mut ports = BTreeMap::new();
        for service in SERVICES {
            ports.insert(service, free_port()?);
        }
        let url = |service: &str| format!("http://127.0.0.1:{}", ports[service]);
        let mut services = BTreeMap::new();
        for service in SERVICES {
            let mut env: Vec<(String, String)> = vec![
                ("FLYWHEEL__HTTP__HOST".into(), "127.0.0.1".into()),
                ("FLYWHEEL__HTTP__PORT".into(), ports[service].to_string()),
                ("FLYWHEEL__HTTP__SHUTDOWN_GRACE_SECS".into(), "2".into()),
                ("FLYWHEEL__BUS__URL".into(), bus_config.url.clone()),
                ("FLYWHEEL__BUS__PREFIX".into(), bus_config.prefix.clone()),
                (
                    "FLYWHEEL__DB__URL".into(),
                    match &infra.postgres_url {
                        Some(server) => flywheel_testkit::fresh_postgres_on(server).await?.url,
                        None => flywheel_testkit::fresh_postgres().await?.url,
                    },
                ),
                ("FLYWHEEL__ARTIFACTS__URL".into(), artifacts.url.clone()),
                ("FLYWHEEL__TELEMETRY__LOG_LEVEL".into(), "info".into()),
            ];
            if let Some(token) = &infra.admin_token {
                env.extend([
                    ("FLYWHEEL__AUTH__ENABLED".into(), "true".into()),
                    (
                        "FLYWHEEL__AUTH__BOOTSTRAP_ADMIN_TOKEN".into(),
                        token.clone(),
                    ),
                    ("FLYWHEEL__AUTH__SERVICE_TOKEN".into(), token.clone()),
                ]);
            }
            for kind in ["EVENTS", "PREDICTIONS", "DLQ", "JOBS"] {
                env.push((format!("FLYWHEEL__BUS__{kind}_MAX_AGE_SECS"), "3600".into()));
            }
            let s3 = &artifacts.s3;
            for (key, value) in [
                ("ENDPOINT", s3.endpoint.clone().unwrap_or_default()),
                ("REGION", s3.region.clone()),
                (
                    "ACCESS_KEY_ID",
                    s3.access_key_id.clone().unwrap_or_default(),
                ),
                (
                    "SECRET_ACCESS_KEY",
                    s3.secret_access_key.clone().unwrap_or_default(),
                ),
                ("ALLOW_HTTP", s3.allow_http.to_string()),
                ("PATH_STYLE", s3.path_style.to_string()),
            ] {
                env.push((format!("FLYWHEEL__ARTIFACTS__S3__{key}"), value));
            }
            let mut service_options: Vec<(String, String)> = match service {
                "registry" => vec![
                    ("scheduler_url".into(), url("scheduler")),
                    ("deployer_url".into(), url("deployer")),
                ],
                "trainer-runner" => vec![
                    ("registry_url".into(), url("registry")),
                    (
                        "work_dir".into(),
                        dir.path().join("work").display().to_string(),
                    ),
                    ("heartbeat_ms".into(), "300".into()),
                ],
                "monitor" => vec![("registry_url".into(), url("registry"))],
                _ => Vec::new(),
            };
            for (target, key, value) in options {
                if *target == service {
                    service_options.push(((*key).to_owned(), (*value).to_owned()));
                }
            }
            for (key, value) in service_options {
                env.push((format!("FLYWHEEL__SERVICE__{}", key.to_uppercase()), value));
            }
            services.insert(
                service,
                Service {
                    env,
                    child: None,
                    url: url(service),
                    starts: 0,
                },
            );
        }
        let bus = Bus::connect(&bus_config, "e2e-test").await?;
        let mut cluster = Self {
            services,
            bus,
            bus_config,
            dir,
            cli_token: None,
        };
        for service in SERVICES {
            cluster.spawn(service)?;
        }
        for service in SERVICES {
            cluster.wait_ready(service).await?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, service: &'static str) -> anyhow::Result<()> {
        let binary = binary(&format!("flywheel-{service}"))?;
        let entry = self.services.get_mut(service).context("no such service")?;
        entry.starts += 1;
        let log = std::fs::File::create(
            self.dir
                .path()
                .join(format!("{service}-{}.log", entry.starts)),
        )?;
        let child = tokio::process::Command::new(binary)
            .envs(entry.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        entry.child = Some(child);
        Ok(())
    }

    /// Waits until a service answers `/readyz` with 200.
    pub(crate) async fn wait_ready(&self, service: &str) -> anyhow::Result<()> {
        let url = format!("{}/readyz", self.url(service));
        let http = http();
        flywheel_testkit::wait_for(
            &format!("the {service} to be ready"),
            Duration::from_secs(90),
            async || {
                Ok(http
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()))
            },
        )
        .await
        .with_context(|| format!("see {}", self.dir.path().display()))
    }

    /// A service's base URL.
    pub(crate) fn url(&self, service: &str) -> String {
        self.services
            .get(service)
            .map(|s| s.url.clone())
            .unwrap_or_default()
    }

    /// Kills a service with SIGKILL (no shutdown, no flush) and waits for it to be gone.
    pub(crate) async fn kill(&mut self, service: &str) -> anyhow::Result<()> {
        let entry = self.services.get_mut(service).context("no such service")?;
        if let Some(mut child) = entry.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts a killed service again, on the same port, and waits until it is ready.
    pub(crate) async fn restart(&mut self, service: &'static str) -> anyhow::Result<()> {
        self.spawn(service)?;
        self.wait_ready(service).await
    }

    /// Stops every service with SIGTERM; each must exit cleanly.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        for service in SERVICES.iter().rev() {
            let Some(entry) = self.services.get_mut(service) else {
                continue;
            };
            if let Some(child) = entry.child.take() {
                flywheel_testkit::terminate(child, &format!("the {service}")).await?;
            }
        }
        flywheel_testkit::cleanup_bus(&self.bus).await;
        Ok(())
    }

    /// The `flywheel` CLI pointed at this cluster.
    pub(crate) fn cli(&self) -> anyhow::Result<tokio::process::Command> {
        let mut command = tokio::process::Command::new(binary("flywheel")?);
        for (service, flag) in [
            ("registry", "--registry-url"),
            ("scheduler", "--scheduler-url"),
            ("trainer-runner", "--runner-url"),
            ("monitor", "--monitor-url"),
            ("deployer", "--deployer-url"),
        ] {
            command.args([flag, &self.url(service)]);
        }
        command
            .env("FLYWHEEL__BUS__URL", &self.bus_config.url)
            .env("FLYWHEEL__BUS__PREFIX", &self.bus_config.prefix);
        if let Some(token) = &self.cli_token {
            command.env("FLYWHEEL_TOKEN", token);
        }
        Ok(command)
    }
}

impl Cluster {
    /// Pushes the shared binary-classification CSV as a dataset; its version.
    pub(crate) async fn push_training_data(&self, name: &str) -> anyhow::Result<String> {
        let csv = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crates/train/tests/reference/binary_train.csv"
        ))?;
        let pushed: serde_json::Value = http()
            .post(format!(
                "{}/api/v1/datasets/{name}/versions?format=csv",
                self.url("registry")
            ))
            .body(csv)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(pushed["version"].as_str().context("version")?.to_owned())
    }

    /// A model's registered versions counted per `flywheel.request_id` tag.
    pub(crate) async fn versions_per_request(
        &self,
        model: &str,
    ) -> anyhow::Result<BTreeMap<String, usize>> {
        let found: serde_json::Value = http()
            .get(format!(
                "{}/api/2.0/mlflow/model-versions/search?filter=name%3D%27{model}%27&max_results=1000",
                self.url("registry")
            ))
            .send()
            .await?
            .json()
            .await?;
        let mut per_request = BTreeMap::new();
        for version in found["model_versions"].as_array().into_iter().flatten() {
            let request = version["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["key"] == "flywheel.request_id")
                .and_then(|t| t["value"].as_str())
                .unwrap_or("?")
                .to_owned();
            *per_request.entry(request).or_default() += 1;
        }
        Ok(per_request)
    }

    /// What is wrong with a model's audit log, if anything: every registered version must have
    /// exactly one registration entry, and each alias's entries must form an unbroken chain
    /// (each move starts where the previous one ended) that ends at the alias's current version.
    pub(crate) async fn audit_gaps(&self, model: &str) -> anyhow::Result<Vec<String>> {
        let registry = self.url("registry");
        let audit = get_json(format!("{registry}/api/v1/models/{model}/audit")).await?;
        let found = get_json(format!(
            "{registry}/api/2.0/mlflow/registered-models/get?name={model}"
        ))
        .await?;
        let searched = get_json(format!(
            "{registry}/api/2.0/mlflow/model-versions/search?filter=name%3D%27{model}%27&max_results=1000"
        ))
        .await?;
        let versions: BTreeSet<u64> = searched["model_versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["version"].as_str()?.parse().ok())
            .collect();
        let mut gaps = Vec::new();
        let mut last_id = i64::MIN;
        let mut registered: BTreeMap<u64, usize> = BTreeMap::new();
        let mut aliases: BTreeMap<String, Option<u64>> = BTreeMap::new();
        for entry in audit.as_array().into_iter().flatten() {
            let id = entry["id"].as_i64().unwrap_or(i64::MIN);
            if id <= last_id {
                gaps.push(format!("entry {id} out of order"));
            }
            last_id = id;
            let version_of = |side: &str| entry[side]["version"].as_u64();
            match entry["action"].as_str().unwrap_or_default() {
                "version.registered" => {
                    *registered
                        .entry(version_of("after").unwrap_or(0))
                        .or_default() += 1;
                }
                action @ ("alias.set" | "alias.deleted") => {
                    let side = if action == "alias.set" {
                        "after"
                    } else {
                        "before"
                    };
                    let alias = entry[side]["alias"].as_str().unwrap_or("?").to_owned();
                    let previous = aliases.get(&alias).copied().flatten();
                    if version_of("before") != previous {
                        gaps.push(format!(
                            "entry {id}: `{alias}` moved from {:?} but the log last left it at {previous:?}",
                            version_of("before")
                        ));
                    }
                    let now = if action == "alias.set" {
                        version_of("after")
                    } else {
                        None
                    };
                    aliases.insert(alias, now);
                }
                _ => {}
            }
        }
        for version in &versions {
            match registered.get(version) {
                Some(1) => {}
                n => gaps.push(format!("version {version}: {n:?} registration entries")),
            }
        }
        if let Some(extra) = registered.keys().find(|v| !versions.contains(v)) {
            gaps.push(format!("registration entry for unknown version {extra}"));
        }
        let current: BTreeMap<String, Option<u64>> = found["registered_model"]["aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a["alias"].as_str().unwrap_or("?").to_owned(),
                    a["version"].as_str().and_then(|v| v.parse().ok()),
                )
            })
            .collect();
        aliases.retain(|_, v| v.is_some());
        if aliases != current {
            gaps.push(format!(
                "aliases per the log {aliases:?}, per the registry {current:?}"
            ));
        }
        Ok(gaps)
    }

    /// The monitor's reports of a deployment: predictions counted in all, and how many windows.
    pub(crate) async fn monitored(&self, deployment: &str) -> anyhow::Result<(u64, usize)> {
        let reports: Vec<serde_json::Value> = http()
            .get(format!(
                "{}/api/v1/reports?deployment={deployment}&limit=1000",
                self.url("monitor")
            ))
            .send()
            .await?
            .json()
            .await?;
        Ok((
            reports
                .iter()
                .map(|r| r["count"].as_u64().unwrap_or(0))
                .sum(),
            reports.len(),
        ))
    }
}

/// A JSON answer of a successful GET.
async fn get_json(url: String) -> anyhow::Result<serde_json::Value> {
    Ok(http()
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// An HTTP client whose requests fail after 30 s instead of waiting forever on a stuck service.
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}
