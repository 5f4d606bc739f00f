//! A private nats-server process, for tests that restart or kill the server.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// A `nats-server -js` on a free loopback port with its own store; killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    store: tempfile::TempDir,
    config: Option<PathBuf>,
    child: Option<Child>,
}

/// The nats-server binary: `FLYWHEEL_NATS_SERVER_BIN`, then PATH, then /usr/sbin.
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("FLYWHEEL_NATS_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let candidates =
        std::env::split_paths(&path).chain(["/usr/sbin".into(), "/usr/local/bin".into()]);
    for dir in candidates {
        let candidate = dir.join("nats-server");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "nats-server not found (set FLYWHEEL_NATS_SERVER_BIN or install it; scripts/test.sh does)"
    )
}

impl NatsServer {
    /// Starts a server on a free port with a fresh store directory.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_config(None).await
    }

    /// Starts a server with this configuration text (e.g. an `authorization` block) besides
    /// the port, JetStream and store given on the command line.
    pub async fn start_with_config(config: Option<&str>) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let store = tempfile::tempdir()?;
        let config = match config {
            Some(text) => {
                let path = store.path().join("nats.conf");
                std::fs::write(&path, text)?;
                Some(path)
            }
            None => None,
        };
        let mut server = Self {
            port,
            store,
            config,
            child: None,
        };
        server.spawn().await?;
        Ok(server)
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(binary()?);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start nats-server")?;
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("nats-server did not listen on port {} within 5s", self.port)
    }

    /// Kills the server with SIGKILL (no clean shutdown), keeping its store.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts it again on the same port and store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.spawn().await
    }
}

/// A JetStream cluster of nats-server processes on loopback, each routed to the others.
#[derive(Debug)]
pub struct NatsCluster {
    /// The servers, in start order (`n0`, `n1`, …).
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` servers and waits until JetStream answers through each of them (a
    /// meta-leader is elected).
    pub async fn start(size: usize) -> anyhow::Result<Self> {
        let name = format!("fw{}", std::process::id());
        let route_ports = (0..size)
            .map(|_| Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()))
            .collect::<anyhow::Result<Vec<u16>>>()?;
        let mut nodes = Vec::new();
        for (i, port) in route_ports.iter().enumerate() {
            let routes = route_ports
                .iter()
                .filter(|p| *p != port)
                .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect::<Vec<_>>()
                .join(", ");
            let config = format!(
                "server_name: n{i}\ncluster {{\n  name: {name}\n  listen: 127.0.0.1:{port}\n  routes: [{routes}]\n}}\n"
            );
            nodes.push(NatsServer::start_with_config(Some(&config)).await?);
        }
        let cluster = Self { nodes };
        // Up when a stream replicated on every node can be made (async-nats' account query
        // misreads 2.9's answer, so a probe stream it is).
        let client = async_nats::connect(cluster.nodes[0].url()).await?;
        let mut jetstream = async_nats::jetstream::new(client);
        jetstream.set_timeout(Duration::from_secs(2));
        let probe = async_nats::jetstream::stream::Config {
            name: "FLYWHEEL_CLUSTER_PROBE".into(),
            subjects: vec!["flywheel-cluster-probe".into()],
            num_replicas: size,
            ..Default::default()
        };
        let mut ready = false;
        for _ in 0..60 {
            if jetstream.create_stream(probe.clone()).await.is_ok() {
                ready = jetstream
                    .delete_stream("FLYWHEEL_CLUSTER_PROBE")
                    .await
                    .is_ok();
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if !ready {
            bail!("the JetStream cluster did not form within 15 s");
        }
        Ok(cluster)
    }

    /// Every node's client URL, comma-separated (a `bus.url`).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}
