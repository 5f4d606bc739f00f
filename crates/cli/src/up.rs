//! `flywheel up`: all five services in this one process on embedded defaults — SQLite files and
//! local-filesystem artifacts under `--dir` (`./.flywheel`) — connected to NATS at the
//! configured URL; when that is the default local URL and nothing answers, a `nats-server -js`
//! child is started with its store under `--dir`. `FLYWHEEL__*` settings apply to every service,
//! `FLYWHEEL_<SERVICE>__*` (e.g. `FLYWHEEL_MONITOR__DB__URL`) to one. Ctrl-C stops everything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use flywheel_runtime::{CancellationToken, ServiceResult, ServiceSettings};
use tokio::net::TcpListener;

/// The five services and their default ports.
pub(crate) const SERVICES: [(&str, u16); 5] = [
    ("registry", 8080),
    ("scheduler", 8081),
    ("trainer-runner", 8082),
    ("monitor", 8083),
    ("deployer", 8084),
];

/// The NATS URL Flywheel uses when none is configured.
const DEFAULT_NATS: &str = "nats://127.0.0.1:4222";

/// What `flywheel up` was asked for.
#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// Where SQLite files, artifacts, logs and the NATS store live.
    #[arg(long, default_value = ".flywheel")]
    pub(crate) dir: PathBuf,
    /// First port (registry; the others follow); 0 picks free ports.
    #[arg(long, default_value_t = 8080)]
    pub(crate) base_port: u16,
    /// Also run the demo: data, training, deployment, traffic, drift, retraining, canary.
    #[arg(long)]
    pub(crate) demo: bool,
}

/// Where each running service answers.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    /// Service name and base URL, in [`SERVICES`] order.
    pub(crate) urls: Vec<(&'static str, String)>,
    /// The NATS URL and subject prefix they share.
    pub(crate) bus: flywheel_bus::BusConfig,
    /// What the demo sends with every request (a token when authentication is on).
    pub(crate) credentials: reqwest::header::HeaderMap,
}

impl Running {
    /// A service's base URL.
    pub(crate) fn url(&self, service: &str) -> String {
        self.urls
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, url)| url.clone())
            .unwrap_or_default()
    }
}

/// The settings of one service: embedded defaults under `dir`, then `FLYWHEEL__*`, then
/// `FLYWHEEL_<SERVICE>__*`.
fn settings_for(service: &str, port: u16, dir: &Path) -> anyhow::Result<ServiceSettings> {
    let mut defaults = ServiceSettings::defaults_for(service, port);
    defaults.db.url = format!("sqlite://{}/{service}.db", dir.display());
    defaults.artifacts.url = format!("file://{}/artifacts", dir.display());
    let own = format!("FLYWHEEL_{}__", service.to_uppercase().replace('-', "_"));
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(key, _)| key.starts_with("FLYWHEEL__"))
        .collect();
    env.extend(std::env::vars().filter_map(|(key, value)| {
        key.strip_prefix(&own)
            .map(|rest| (format!("FLYWHEEL__{rest}"), value))
    }));
    let settings = flywheel_runtime::settings::load_settings_from(&defaults, None, env)
        .and_then(|s| s.validate().map(|()| s))
        .with_context(|| format!("settings of the {service}"))?;
    Ok(settings)
}

/// Whether something accepts TCP connections at a `nats://host:port` URL.
async fn answers(url: &str) -> bool {
    let address = url
        .split(',')
        .next()
        .unwrap_or_default()
        .trim_start_matches("nats://");
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(address)
        )
        .await,
        Ok(Ok(_))
    )
}

/// Starts `nats-server -js` on the default port with its store under `dir`.
async fn start_nats(dir: &Path) -> anyhow::Result<tokio::process::Child> {
    let store = dir.join("nats");
    std::fs::create_dir_all(&store)?;
    let log = std::fs::File::create(dir.join("logs").join("nats.log"))?;
    let child = tokio::process::Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", "4222", "-sd"])
        .arg(&store)
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "nothing answers at {DEFAULT_NATS} and nats-server is not installed: install it \
             (`sudo apt install nats-server` on Debian/Ubuntu, or a release from \
             https://github.com/nats-io/nats-server/releases), or point FLYWHEEL__BUS__URL at a \
             running NATS with JetStream"
        ),
        Err(e) => return Err(e).context("cannot start nats-server"),
    };
    for _ in 0..50 {
        if answers(DEFAULT_NATS).await {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "nats-server did not start; see {}",
        dir.join("logs/nats.log").display()
    )
}

/// Runs the five services until `shutdown` (or until one fails, which stops the others).
pub(crate) async fn run(args: UpArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(args.dir.join("logs"))
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let mut all = Vec::new();
    for (i, (service, _)) in SERVICES.iter().enumerate() {
        let port = if args.base_port == 0 {
            0
        } else {
            args.base_port.saturating_add(u16::try_from(i).unwrap_or(0))
        };
        all.push((*service, settings_for(service, port, &dir)?));
    }
    let bus = all[0].1.bus.clone();
    let _nats = if !answers(&bus.url).await {
        if bus.url != DEFAULT_NATS {
            bail!(
                "nothing answers at {} (FLYWHEEL__BUS__URL): start NATS with JetStream there",
                bus.url
            );
        }
        eprintln!("starting nats-server -js (store under {})", dir.display());
        Some(start_nats(&dir).await?)
    } else {
        None
    };
    let mut listeners = Vec::new();
    for (service, settings) in &all {
        let address = format!("{}:{}", settings.http.host, settings.http.port);
        let listener = TcpListener::bind(&address).await.with_context(|| {
            format!("the {service} cannot listen on {address} (is Flywheel already running?)")
        })?;
        listeners.push(listener);
    }
    let urls: Vec<(&'static str, String)> = SERVICES
        .iter()
        .zip(&listeners)
        .map(|((name, _), l)| {
            let port = l.local_addr().map(|a| a.port()).unwrap_or_default();
            (*name, format!("http://127.0.0.1:{port}"))
        })
        .collect();
    // With authentication on, the services call each other, and the demo plays, as the
    // bootstrap admin unless they were given tokens of their own.
    let auth = all[0].1.auth.clone();
    if auth.enabled
        && let Some(admin) = &auth.bootstrap_admin_token
    {
        for (_, settings) in &mut all {
            settings
                .auth
                .service_token
                .get_or_insert_with(|| admin.clone());
        }
    }
    let credentials = flywheel_runtime::access::service_headers(&all[0].1.auth);
    let running = Running {
        credentials,
        urls: urls.clone(),
        bus: bus.clone(),
    };
    // The services that call the registry find it where it listens.
    for (service, settings) in &mut all {
        if matches!(*service, "trainer-runner" | "monitor") {
            settings
                .service
                .entry("registry_url".into())
                .or_insert_with(|| running.url("registry"));
        }
        // The dashboard's actions reach the scheduler (cancel) and the deployer (roll back).
        if *service == "registry" {
            for peer in ["scheduler", "deployer"] {
                settings
                    .service
                    .entry(format!("{peer}_url"))
                    .or_insert_with(|| running.url(peer));
            }
        }
        // The demo's traffic is tens of requests a second: shorter windows show the loop in
        // minutes (a user's own settings still win).
        if args.demo && *service == "monitor" {
            for (key, value) in [("window_size", "400"), ("window_seconds", "30")] {
                settings
                    .service
                    .entry(key.into())
                    .or_insert_with(|| value.into());
            }
        }
    }
    let services = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for ((service, settings), listener) in all.into_iter().zip(listeners) {
        let token = services.child_token();
        tasks.spawn(async move { (service, start(service, settings, listener, token).await) });
    }
    for (name, url) in &urls {
        println!("{name:<15} {url}");
    }
    println!(
        "dashboard       {}/ · logs under {} · Ctrl-C stops",
        running.url("registry"),
        dir.join("logs").display()
    );
    let demo = args.demo.then(|| {
        let (running, token) = (running.clone(), services.child_token());
        tokio::spawn(async move { crate::demo::run(&running, token).await })
    });
    let mut failure = None;
    tokio::select! {
        () = shutdown.cancelled() => {}
        Some(done) = tasks.join_next() => {
            failure = Some(match done {
                Ok((service, Ok(()))) => format!("the {service} stopped"),
                Ok((service, Err(e))) => format!("the {service} failed: {e}"),
                Err(e) => format!("a service panicked: {e}"),
            });
        }
        Some(outcome) = async { match demo { Some(task) => Some(task.await), None => None } } => {
            match outcome {
                Ok(Ok(())) => eprintln!("demo: the loop is closed; Flywheel keeps running (Ctrl-C stops)"),
                Ok(Err(e)) => failure = Some(format!("the demo failed: {e:#}")),
                Err(e) => failure = Some(format!("the demo panicked: {e}")),
            }
            if failure.is_none() {
                shutdown.cancelled().await;
            }
        }
    }
    eprintln!("stopping Flywheel");
    services.cancel();
    while let Some(done) = tasks.join_next().await {
        if let Ok((service, Err(e))) = done {
            eprintln!("the {service} stopped with an error: {e}");
        }
    }
    match failure {
        Some(failure) => bail!(failure),
        None => Ok(()),
    }
}

async fn start(
    service: &'static str,
    settings: ServiceSettings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> ServiceResult {
    match service {
        "registry" => flywheel_registry::run(settings, listener, shutdown).await,
        "scheduler" => flywheel_scheduler::run(settings, listener, shutdown).await,
        "trainer-runner" => flywheel_trainer_runner::run(settings, listener, shutdown).await,
        "monitor" => flywheel_monitor::run(settings, listener, shutdown).await,
        _ => flywheel_deployer::run(settings, listener, shutdown).await,
    }
}
