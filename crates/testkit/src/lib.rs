//! Test support shared by every crate's integration tests: isolated subject prefixes, fresh
//! PostgreSQL databases, S3 bucket prefixes and private `nats-server` processes.
//!
//! Tests talk to real servers. Where a server is missing, the helpers fail loudly with what to
//! run (`scripts/test.sh` starts everything).

mod nats;
mod postgres;
pub mod service;

use std::time::Duration;

use anyhow::{Context, bail};
use flywheel_artifacts::{ArtifactStore, ArtifactsConfig, S3Config};
use flywheel_bus::{Bus, BusConfig};
use flywheel_db::DbConfig;
pub use nats::{NatsCluster, NatsServer, binary as nats_server_binary};
pub use postgres::PostgresServer;
use sea_orm::{ConnectionTrait, Database};

/// A short unique name for one test's resources, e.g. `t0193a2b4c5d6e7f8`.
pub fn unique_name() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    // Time-ordered prefix plus random tail keeps names unique across parallel processes.
    format!("t{}{}", &id[4..12], &id[20..32])
}

/// The shared NATS server tests use (`FLYWHEEL_TEST_NATS_URL`, default the local one).
pub fn nats_url() -> String {
    std::env::var("FLYWHEEL_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Bus settings for a fresh prefix on the shared server.
pub fn bus_config(prefix: &str) -> BusConfig {
    BusConfig {
        url: nats_url(),
        prefix: prefix.to_owned(),
        // Short ages keep a shared test server from filling up.
        events_max_age_secs: 3600,
        predictions_max_age_secs: 3600,
        dlq_max_age_secs: 3600,
        jobs_max_age_secs: 3600,
        connect_timeout_secs: 5,
        ..BusConfig::default()
    }
}

/// A connected, provisioned bus on a fresh prefix; streams are deleted by [`cleanup_bus`].
pub async fn test_bus(source: &str) -> anyhow::Result<Bus> {
    let config = bus_config(&unique_name());
    let bus = Bus::connect(&config, source).await.with_context(|| {
        format!(
            "NATS with JetStream must run at {} (scripts/test.sh starts it)",
            config.url
        )
    })?;
    bus.provision().await?;
    Ok(bus)
}

/// Deletes a test prefix's streams.
pub async fn cleanup_bus(bus: &Bus) {
    for kind in flywheel_bus::StreamKind::ALL {
        let _ = bus
            .jetstream()
            .delete_stream(bus.subjects().stream(kind))
            .await;
    }
}

/// The PostgreSQL server URL without a database (`FLYWHEEL_TEST_DATABASE_URL`).
pub fn postgres_server_url() -> String {
    std::env::var("FLYWHEEL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Creates a fresh PostgreSQL database and returns its settings.
pub async fn fresh_postgres() -> anyhow::Result<DbConfig> {
    fresh_postgres_on(&postgres_server_url()).await
}

/// Creates a fresh database on the PostgreSQL server at `server` (a URL without a database).
pub async fn fresh_postgres_on(server: &str) -> anyhow::Result<DbConfig> {
    let name = format!("flywheel_{}", unique_name());
    let admin = tokio::time::timeout(
        Duration::from_secs(10),
        Database::connect(format!("{server}/postgres")),
    )
    .await
    .context("PostgreSQL did not answer within 10s")?
    .with_context(|| format!("PostgreSQL must run at {server} (scripts/test.sh starts it)"))?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    admin.close().await?;
    Ok(DbConfig {
        url: format!("{server}/{name}"),
        max_connections: 5,
        min_connections: 0,
        ..DbConfig::default()
    })
}

/// Settings for a fresh SQLite file in `dir`.
pub fn fresh_sqlite(dir: &std::path::Path) -> DbConfig {
    DbConfig {
        url: format!("sqlite://{}/{}.db", dir.display(), unique_name()),
        ..DbConfig::default()
    }
}

/// The S3 server tests use: `FLYWHEEL_TEST_S3_ENDPOINT` and `FLYWHEEL_TEST_S3_BUCKET`.
pub fn s3_config(prefix: &str) -> anyhow::Result<ArtifactsConfig> {
    let Ok(endpoint) = std::env::var("FLYWHEEL_TEST_S3_ENDPOINT") else {
        bail!(
            "FLYWHEEL_TEST_S3_ENDPOINT is not set: run the tests with scripts/test.sh, which starts an S3 server"
        );
    };
    let bucket =
        std::env::var("FLYWHEEL_TEST_S3_BUCKET").unwrap_or_else(|_| "flywheel-test".into());
    Ok(ArtifactsConfig {
        url: format!("s3://{bucket}/{prefix}"),
        s3: S3Config {
            endpoint: Some(endpoint),
            region: "us-east-1".into(),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            allow_http: true,
            path_style: true,
        },
        ..ArtifactsConfig::default()
    })
}

/// An artifact store on the test S3 server under a fresh prefix.
pub fn s3_store() -> anyhow::Result<ArtifactStore> {
    Ok(ArtifactStore::from_config(&s3_config(&unique_name())?)?)
}

/// Polls `check` every 100 ms until it says yes; fails after `within` naming `what`.
pub async fn wait_for(
    what: &str,
    within: std::time::Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + within;
    while !check().await? {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Every event on a bus prefix's EVENTS stream, oldest first.
pub async fn events(bus: &flywheel_bus::Bus) -> anyhow::Result<Vec<flywheel_events::Event>> {
    Ok(envelopes(bus, flywheel_bus::StreamKind::Events)
        .await?
        .into_iter()
        .map(|e| e.event)
        .collect())
}

/// Every envelope in one of the test's streams, in stream order.
pub async fn envelopes(
    bus: &flywheel_bus::Bus,
    kind: flywheel_bus::StreamKind,
) -> anyhow::Result<Vec<flywheel_events::Envelope>> {
    let mut stream = bus
        .jetstream()
        .get_stream(bus.subjects().stream(kind))
        .await?;
    let state = stream.info().await?.state.clone();
    let mut envelopes = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        if let Ok(message) = stream.get_raw_message(seq).await {
            envelopes.push(flywheel_events::decode_with_header(
                &message.payload,
                message.headers.get("Content-Type").map(|v| v.as_str()),
            )?);
        }
    }
    Ok(envelopes)
}

/// Stops a child process as Ctrl-C or an orchestrator would (SIGTERM) and requires a clean
/// exit within 30 s; `what` names it in the error.
pub async fn terminate(mut child: tokio::process::Child, what: &str) -> anyhow::Result<()> {
    let pid = child
        .id()
        .with_context(|| format!("{what} has already exited"))?;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .with_context(|| format!("{what} did not stop within 30 s of SIGTERM"))??;
    anyhow::ensure!(status.success(), "{what} exited with {status}");
    Ok(())
}
