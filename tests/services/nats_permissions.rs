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

    // Every service starts and turns ready with its own user.
    let mut started = Vec::new();
    for service in ["registry", "scheduler", "monitor", "deployer"] {
        let mut settings = ServiceSettings::defaults_for(service, 0);
        settings.bus = bus_as(service);
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
    for running in started {
        running.stop().await?;
    }
    Ok(())
}
