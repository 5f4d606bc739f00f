//! The bus's own security: a nats-server started with the generated `authorization` block lets
//! each service publish only its own subjects, and outside systems only what they may send;
//! the services start and serve with their own users.

use std::time::Duration;

use flywheel_bus::{Bus, NATS_USERS, NatsUser, Password, StreamKind};
use flywheel_runtime::ServiceSettings;
use flywheel_testkit::service::InProcess;

fn password(user: &str) -> String {
    format!("{user}-secret-for-the-test")
}

/// JetStream publish as `user`: whether the stream acknowledged it within 2 s.
async fn stored(url: &str, user: &str, subject: String) -> anyhow::Result<bool> {
    let client = async_nats::ConnectOptions::new()
        .user_and_password(user.into(), password(user))
        .connect(url)
        .await?;
    let mut jetstream = async_nats::jetstream::new(client);
    jetstream.set_timeout(Duration::from_secs(2));
    let acked = match jetstream.publish(subject, "{}".into()).await {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    Ok(acked)
}

#[tokio::test]
async fn each_nats_user_publishes_only_its_own_subjects() -> anyhow::Result<()> {
    let prefix = flywheel_testkit::unique_name();
    let users: Vec<NatsUser> = NATS_USERS
        .iter()
        .map(|name| NatsUser {
            name: (*name).into(),
            password: password(name),
        })
        .collect();
    let config = flywheel_bus::nats_config(&prefix, &users).map_err(anyhow::Error::msg)?;
    let server = flywheel_testkit::NatsServer::start_with_config(Some(&config)).await?;
    let bus_as = |user: &str| {
        let mut bus = flywheel_testkit::bus_config(&prefix);
        bus.url = server.url();
        bus.user = Some(user.into());
        bus.password = Some(Password(password(user)));
        bus
    };

    // Nobody gets in without credentials, nor with another user's password.
    let anonymous = async_nats::ConnectOptions::new()
        .connect(server.url())
        .await
        .map(|_| ());
    assert!(anonymous.is_err(), "an anonymous client was let in");
    let wrong = async_nats::ConnectOptions::new()
        .user_and_password("monitor".into(), password("registry"))
        .connect(server.url())
        .await
        .map(|_| ());
    assert!(wrong.is_err());

    // The registry's user provisions the streams through the JetStream API.
    let bus = Bus::connect(&bus_as("registry"), "test").await?;
    bus.provision().await?;
    let event = |kind: &str| format!("{prefix}.events.{kind}");
    let url = server.url();
    assert!(stored(&url, "registry", event("model.version.registered")).await?);
    assert!(stored(&url, "monitor", event("monitor.report.created")).await?);
    assert!(
        !stored(&url, "monitor", event("model.version.registered")).await?,
        "the monitor published the registry's event"
    );
    assert!(!stored(&url, "deployer", event("training.job.completed")).await?);
    assert!(stored(&url, "deployer", format!("{prefix}.predictions.churn")).await?);
    assert!(!stored(&url, "trainer-runner", format!("{prefix}.tokens.forged")).await?);
    // Outside systems: training requests, prediction logs, feedback — nothing else.
    assert!(stored(&url, "external", event("training.requested")).await?);
    assert!(stored(&url, "external", format!("{prefix}.feedback.churn")).await?);
    assert!(!stored(&url, "external", event("model.version.alias_changed")).await?);
    assert!(!stored(&url, "external", format!("{prefix}.tokens.forged")).await?);
    let outsider = async_nats::ConnectOptions::new()
        .user_and_password("external".into(), password("external"))
        .connect(server.url())
        .await?;
    let mut jetstream = async_nats::jetstream::new(outsider);
    jetstream.set_timeout(Duration::from_secs(2));
    let deleted = jetstream
        .delete_stream(bus.subjects().stream(StreamKind::Events))
        .await;
    assert!(
        deleted.is_err(),
        "an outside system deleted the EVENTS stream"
    );
    let events = bus
        .jetstream()
        .get_stream(bus.subjects().stream(StreamKind::Events))
        .await?
        .info()
        .await?
        .state
        .messages;
    assert_eq!(events, 3, "only the permitted publishes were stored");
    // A service's user manages its installation's streams, but deletes and purges nothing.
    let registry_user = async_nats::ConnectOptions::new()
        .user_and_password("registry".into(), password("registry"))
        .connect(server.url())
        .await?;
    let mut jetstream = async_nats::jetstream::new(registry_user);
    jetstream.set_timeout(Duration::from_secs(2));
    let events_stream = bus.subjects().stream(StreamKind::Events);
    assert!(jetstream.get_stream(&events_stream).await.is_ok());
    assert!(
        jetstream.delete_stream(&events_stream).await.is_err(),
        "a service deleted the EVENTS stream"
    );
    let purged = match jetstream.get_stream(&events_stream).await {
        Ok(stream) => stream.purge().await.is_ok(),
        Err(_) => false,
    };
    assert!(!purged, "a service purged the EVENTS stream");
    let other = jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: "ANOTHER_INSTALLATION_EVENTS".into(),
            subjects: vec!["another.events.>".into()],
            ..Default::default()
        })
        .await;
    assert!(
        other.is_err(),
        "a service created another installation's stream"
    );

    // Every service starts and turns ready with its own user, authentication on (tokens are read
    // from the TOKENS stream with an ordered consumer and direct gets).
    const ADMIN: &str = "bootstrap-admin-token-for-the-nats-permissions-test";
    let mut started = Vec::new();
    for service in ["registry", "scheduler", "monitor", "deployer"] {
        let mut settings = ServiceSettings::defaults_for(service, 0);
        settings.bus = bus_as(service);
        settings.auth.enabled = true;
        settings.auth.bootstrap_admin_token = Some(ADMIN.into());
        settings.db = flywheel_testkit::fresh_postgres().await?;
        settings.artifacts = flywheel_testkit::s3_config(&prefix)?;
        let running = match service {
            "registry" => InProcess::start(settings, flywheel_registry::run).await?,
            "scheduler" => InProcess::start(settings, flywheel_scheduler::run).await?,
            "monitor" => InProcess::start(settings, flywheel_monitor::run).await?,
            _ => InProcess::start(settings, flywheel_deployer::run).await?,
        };
        started.push(running);
    }
    // Work flows under these permissions: a dataset pushed at the registry reaches its event
    // log through a durable consumer; a token made at the registry opens the deployer.
    let (registry, deployer) = (&started[0], &started[3]);
    let http = reqwest::Client::new();
    let pushed = http
        .post(registry.url("/api/v1/datasets/customers/versions?format=csv"))
        .bearer_auth(ADMIN)
        .body("age,plan\n31,pro\n")
        .send()
        .await?;
    assert_eq!(pushed.status(), 201, "{}", pushed.text().await?);
    flywheel_testkit::wait_for(
        "the push in the event log",
        Duration::from_secs(15),
        async || {
            let events: serde_json::Value = http
                .get(registry.url("/api/v1/events/recent"))
                .bearer_auth(ADMIN)
                .send()
                .await?
                .json()
                .await?;
            Ok(events.to_string().contains("dataset.version.created"))
        },
    )
    .await?;
    let issued: serde_json::Value = http
        .post(registry.url("/api/v1/tokens"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"name": "vera", "project": "default", "role": "viewer"}))
        .send()
        .await?
        .json()
        .await?;
    let viewer = issued["token"].as_str().unwrap_or_default().to_owned();
    let listed = http
        .get(deployer.url("/api/v1/deployments"))
        .bearer_auth(&viewer)
        .send()
        .await?;
    assert_eq!(listed.status(), 200, "the deployer read the new token");
    for running in started {
        running.stop().await?;
    }
    Ok(())
}
