//! Alert webhooks: every `monitor.alert.raised` / `resolved` is POSTed as JSON to each
//! registered webhook (`PUT /api/v1/webhooks/{name}` with a URL). A failed delivery is retried
//! with the bus's redelivery (2 s apart, then to the DLQ after 10 tries); deliveries already
//! made are remembered, so a retry reaches only the webhooks that missed the event.

use std::time::Duration;

use flywheel_bus::{ConsumerSpec, Delivery, Outcome, StreamKind};
use flywheel_events::Event;
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};

use crate::schema::{Deliveries, Webhooks};
use crate::{AppState, MonitorError, Result};

/// The durable consumer of the monitor's own alert events.
pub(crate) fn consumer_spec(state: &AppState) -> ConsumerSpec {
    let prefix = state.bus.subjects().prefix().to_owned();
    let mut spec = ConsumerSpec::new(
        StreamKind::Events,
        "monitor-webhooks",
        format!("{prefix}.events.monitor.alert.>"),
    );
    spec.concurrency = 4;
    // A delivery held by a monitor that died is handed on after this, not the default 30 s.
    spec.ack_wait = Duration::from_secs(10);
    spec
}

/// Registered webhooks: (name, url).
pub(crate) async fn list<C: ConnectionTrait>(conn: &C) -> Result<Vec<(String, String)>> {
    let rows = conn
        .query_all(
            &Query::select()
                .columns([Webhooks::Name, Webhooks::Url])
                .from(Webhooks::Table)
                .to_owned(),
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("", "name")?, r.try_get("", "url")?)))
        .collect()
}

/// The hosts webhooks may point at (`service.webhook_allowed_hosts`, comma-separated): `*`
/// for any, `host` for exactly it, `.example.com` for its subdomains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    /// Parses the option's value.
    pub(crate) fn parse(raw: &str) -> Self {
        Self(
            raw.split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        )
    }

    /// Whether `url` may receive alerts; the reason when not.
    pub(crate) fn check(&self, url: &str) -> std::result::Result<(), String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("url: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("url: an http:// or https:// URL".into());
        }
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        let allowed = self.0.iter().any(|entry| {
            entry == "*"
                || *entry == host
                || (entry.starts_with('.') && host.ends_with(entry.as_str()))
        });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "webhook host `{host}` is not allowed (service.webhook_allowed_hosts)"
            ))
        }
    }
}

/// Registers (or replaces) a webhook.
pub(crate) async fn put(state: &AppState, name: &str, url: &str) -> Result<()> {
    state
        .webhook_hosts
        .check(url)
        .map_err(MonitorError::Invalid)?;
    flywheel_events::subjects::check_token(name).map_err(|_| {
        MonitorError::Invalid(format!(
            "invalid webhook name `{name}`: letters, digits, `_` or `-`"
        ))
    })?;
    let mut upsert = Query::insert();
    upsert
        .into_table(Webhooks::Table)
        .columns([Webhooks::Name, Webhooks::Url])
        .values([name.into(), url.into()])
        .map_err(|e| MonitorError::Invalid(e.to_string()))?
        .on_conflict(
            OnConflict::column(Webhooks::Name)
                .update_column(Webhooks::Url)
                .to_owned(),
        );
    state.db.execute(&upsert).await?;
    Ok(())
}

/// Delivers one alert event to every webhook that has not had it yet.
pub(crate) async fn handle(state: AppState, http: reqwest::Client, delivery: Delivery) -> Outcome {
    let envelope = &delivery.envelope;
    if !matches!(
        envelope.event,
        Event::MonitorAlertRaised(_) | Event::MonitorAlertResolved(_)
    ) {
        return Outcome::Ack;
    }
    match deliver(&state, &http, envelope).await {
        Ok(()) => Outcome::Ack,
        Err(e) => Outcome::retry(Duration::from_secs(2), e.to_string()),
    }
}

async fn deliver(
    state: &AppState,
    http: &reqwest::Client,
    envelope: &flywheel_events::Envelope,
) -> Result<()> {
    let event_id = envelope.id.to_string();
    let data = match &envelope.event {
        Event::MonitorAlertRaised(e) => serde_json::to_value(e),
        Event::MonitorAlertResolved(e) => serde_json::to_value(e),
        _ => return Ok(()),
    }
    .map_err(|e| MonitorError::Invalid(e.to_string()))?;
    let body = serde_json::json!({
        "type": envelope.event_type(),
        "id": event_id,
        "time": envelope.time,
        "data": data,
    });
    let mut failures = Vec::new();
    for (name, url) in list(&state.db).await? {
        let done = state
            .db
            .query_one(
                &Query::select()
                    .column(Deliveries::EventId)
                    .from(Deliveries::Table)
                    .and_where(Expr::col(Deliveries::EventId).eq(event_id.as_str()))
                    .and_where(Expr::col(Deliveries::Webhook).eq(name.as_str()))
                    .to_owned(),
            )
            .await?
            .is_some();
        if done {
            continue;
        }
        // The allowlist may have narrowed since the webhook was registered.
        if let Err(reason) = state.webhook_hosts.check(&url) {
            tracing::warn!(webhook = name, reason, "webhook skipped");
            continue;
        }
        let sent = http
            .post(&url)
            .header("X-Flywheel-Event", envelope.event_type())
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                let mut insert = Query::insert();
                insert
                    .into_table(Deliveries::Table)
                    .columns([
                        Deliveries::EventId,
                        Deliveries::Webhook,
                        Deliveries::DeliveredAt,
                    ])
                    .values([
                        event_id.clone().into(),
                        name.clone().into(),
                        chrono::Utc::now().timestamp_millis().into(),
                    ])
                    .map_err(|e| MonitorError::Invalid(e.to_string()))?
                    .on_conflict(
                        OnConflict::columns([Deliveries::EventId, Deliveries::Webhook])
                            .do_nothing()
                            .to_owned(),
                    );
                state.db.execute(&insert).await?;
                metrics::counter!("flywheel_monitor_webhook_deliveries_total", "outcome" => "ok")
                    .increment(1);
            }
            Ok(response) => {
                failures.push(format!("{name}: HTTP {}", response.status()));
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    if failures.is_empty() {
        return Ok(());
    }
    metrics::counter!("flywheel_monitor_webhook_deliveries_total", "outcome" => "failed")
        .increment(failures.len() as u64);
    tracing::warn!(failures = ?failures, "webhook delivery failed; retrying");
    Err(MonitorError::Delivery(format!(
        "webhook delivery failed: {}",
        failures.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::AllowedHosts;

    #[test]
    fn webhooks_reach_only_allowed_hosts() {
        let any = AllowedHosts::parse("*");
        assert!(any.check("https://hooks.slack.com/x").is_ok());
        assert!(any.check("ftp://files.example.com/x").is_err());
        let listed = AllowedHosts::parse("hooks.slack.com, .example.com");
        assert!(listed.check("https://hooks.slack.com/services/T/B").is_ok());
        assert!(listed.check("https://alerts.example.com/in").is_ok());
        assert!(
            listed
                .check("http://169.254.169.254/latest/meta-data")
                .is_err()
        );
        assert!(listed.check("https://example.com.evil.io/").is_err());
        assert!(listed.check("not a url").is_err());
        assert!(
            AllowedHosts::parse("")
                .check("https://hooks.slack.com/")
                .is_err()
        );
    }
}
