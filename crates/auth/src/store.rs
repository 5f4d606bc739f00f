//! Tokens in the TOKENS stream: one subject per token, the stream keeps the last record of each.
//! Every service keeps a copy fed by an ordered consumer, so checking a token costs no round
//! trip; a token the copy does not know yet is read from the stream directly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use chrono::Utc;
use flywheel_bus::{Bus, StreamKind};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::token::{self, IssuedToken, NewToken, TokenRecord};
use crate::{AuthConfig, AuthError, Principal, Role};

/// Checks, creates, lists and revokes tokens.
#[derive(Debug, Clone)]
pub struct TokenStore {
    bus: Bus,
    known: Arc<RwLock<HashMap<String, TokenRecord>>>,
    /// Ids just looked up and not found, and when: a flood of made-up tokens costs a map
    /// lookup each, not a stream read. A token created meanwhile arrives through the follower,
    /// which clears its id here.
    unknown: Arc<Mutex<HashMap<String, Instant>>>,
    bootstrap_sha256: Option<String>,
}

/// How long an id stays known-unknown.
const UNKNOWN_FOR: Duration = Duration::from_secs(2);
/// At most this many remembered unknown ids (then the memory starts over).
const UNKNOWN_MAX: usize = 10_000;

impl TokenStore {
    /// Opens the store and keeps its copy current until `shutdown`.
    pub fn open(bus: Bus, config: &AuthConfig, shutdown: CancellationToken) -> Self {
        let store = Self {
            bus,
            known: Arc::default(),
            unknown: Arc::default(),
            bootstrap_sha256: config.bootstrap_admin_token.as_deref().map(token::digest),
        };
        let follower = store.clone();
        tokio::spawn(async move { follower.follow(shutdown).await });
        store
    }

    /// The principal a bearer token proves.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal, AuthError> {
        if let Some(bootstrap) = &self.bootstrap_sha256
            && token::same(&token::digest(bearer), bootstrap)
        {
            return Ok(Principal {
                name: "bootstrap-admin".into(),
                token_id: "bootstrap".into(),
                project: crate::ALL_PROJECTS.into(),
                role: Role::Admin,
            });
        }
        let (id, secret) = token::parse(bearer)?;
        let unknown = || AuthError::Unauthenticated("unknown token".into());
        let record = match self.cached(id) {
            Some(record) => record,
            None if self.recently_unknown(id) => return Err(unknown()),
            None => match self.read(id).await? {
                Some(record) => record,
                None => {
                    self.mark_unknown(id);
                    return Err(unknown());
                }
            },
        };
        record.check(secret, Utc::now())
    }

    /// Creates a token; the returned value is the only copy of its secret.
    pub async fn create(&self, new: &NewToken, by: &Principal) -> Result<IssuedToken, AuthError> {
        if !by.can(Role::Admin, &new.project) {
            return Err(AuthError::Forbidden(format!(
                "creating a token for project {} needs the admin role there",
                new.project
            )));
        }
        let issued = token::issue(new, &by.name)?;
        self.write(&issued.record).await?;
        Ok(issued)
    }

    /// Revokes a token: from now on every service refuses it.
    pub async fn revoke(&self, id: &str, by: &Principal) -> Result<TokenRecord, AuthError> {
        let mut record = self
            .read(id)
            .await?
            .ok_or_else(|| AuthError::Invalid(format!("no token {id}")))?;
        if !by.can(Role::Admin, &record.project) {
            return Err(AuthError::Forbidden(format!(
                "revoking a token of project {} needs the admin role there",
                record.project
            )));
        }
        if record.revoked_at.is_none() {
            record.revoked_at = Some(Utc::now());
            self.write(&record).await?;
        }
        Ok(record)
    }

    /// The tokens `by` may see (its project's, or all for an admin of every project).
    pub async fn list(&self, by: &Principal) -> Result<Vec<TokenRecord>, AuthError> {
        let consumer = self.latest_records().await?;
        let mut records = Vec::new();
        if consumer.cached_info().num_pending > 0 {
            let mut messages = consumer.messages().await.map_err(store_error)?;
            while let Some(message) = messages.next().await {
                let message = message.map_err(store_error)?;
                if let Ok(record) = serde_json::from_slice::<TokenRecord>(&message.payload) {
                    records.push(record);
                }
                if message.info().map_err(store_error)?.pending == 0 {
                    break;
                }
            }
        }
        records.retain(|r| by.has(Role::Admin) && by.sees(&r.project));
        records.sort_by_key(|r| r.created_at);
        Ok(records)
    }

    fn cached(&self, id: &str) -> Option<TokenRecord> {
        self.known.read().ok()?.get(id).cloned()
    }

    fn recently_unknown(&self, id: &str) -> bool {
        self.unknown
            .lock()
            .ok()
            .and_then(|unknown| unknown.get(id).map(|at| at.elapsed() < UNKNOWN_FOR))
            .unwrap_or(false)
    }

    fn mark_unknown(&self, id: &str) {
        if let Ok(mut unknown) = self.unknown.lock() {
            if unknown.len() >= UNKNOWN_MAX {
                unknown.clear();
            }
            unknown.insert(id.to_owned(), Instant::now());
        }
    }

    fn remember(&self, record: TokenRecord) {
        if let Ok(mut unknown) = self.unknown.lock() {
            unknown.remove(&record.id);
        }
        if let Ok(mut known) = self.known.write() {
            known.insert(record.id.clone(), record);
        }
    }

    async fn stream(&self) -> Result<async_nats::jetstream::stream::Stream, AuthError> {
        self.bus
            .jetstream()
            .get_stream(self.bus.subjects().stream(StreamKind::Tokens))
            .await
            .map_err(store_error)
    }

    /// An ordered consumer over each token's last record, then every change.
    async fn latest_records(
        &self,
    ) -> Result<async_nats::jetstream::consumer::Consumer<OrderedConfig>, AuthError> {
        self.stream()
            .await?
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::LastPerSubject,
                filter_subject: format!("{}.tokens.>", self.bus.subjects().prefix()),
                ..Default::default()
            })
            .await
            .map_err(store_error)
    }

    async fn read(&self, id: &str) -> Result<Option<TokenRecord>, AuthError> {
        let subject = self
            .bus
            .subjects()
            .token(id)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        match self
            .stream()
            .await?
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(message) => {
                let record: TokenRecord =
                    serde_json::from_slice(&message.payload).map_err(store_error)?;
                self.remember(record.clone());
                Ok(Some(record))
            }
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                Ok(None)
            }
            Err(e) => Err(store_error(e)),
        }
    }

    async fn write(&self, record: &TokenRecord) -> Result<(), AuthError> {
        let subject = self
            .bus
            .subjects()
            .token(&record.id)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let body = serde_json::to_vec(record).map_err(store_error)?;
        self.bus
            .jetstream()
            .publish(subject, body.into())
            .await
            .map_err(store_error)?
            .await
            .map_err(store_error)?;
        self.remember(record.clone());
        Ok(())
    }

    /// Keeps the copy current: every record stored, then every change, until shutdown.
    async fn follow(&self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            if let Err(e) = self.follow_once(&shutdown).await {
                tracing::warn!(error = %e, "token store: following the TOKENS stream failed; retrying");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn follow_once(&self, shutdown: &CancellationToken) -> Result<(), AuthError> {
        let consumer = self.latest_records().await?;
        let mut messages = consumer.messages().await.map_err(store_error)?;
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            let Some(message) = message else {
                return Err(AuthError::Store("the token stream ended".into()));
            };
            let message = message.map_err(store_error)?;
            match serde_json::from_slice::<TokenRecord>(&message.payload) {
                Ok(record) => self.remember(record),
                Err(e) => tracing::warn!(error = %e, "token store: a record that does not parse"),
            }
        }
    }
}

fn store_error(e: impl std::fmt::Display) -> AuthError {
    AuthError::Store(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_id_just_found_unknown_works_as_soon_as_its_token_arrives() -> anyhow::Result<()> {
        let prefix = flywheel_testkit::unique_name();
        let bus = Bus::connect(&flywheel_testkit::bus_config(&prefix), "test").await?;
        bus.provision().await?;
        let shutdown = CancellationToken::new();
        let here = TokenStore::open(bus.clone(), &AuthConfig::default(), shutdown.clone());
        let there = TokenStore::open(bus.clone(), &AuthConfig::default(), shutdown.clone());
        let issued = token::issue(
            &NewToken {
                name: "vera".into(),
                project: "default".into(),
                role: Role::Viewer,
                expires_at: None,
            },
            "root",
        )?;
        // Asked before it exists: unknown, and remembered as such.
        assert!(matches!(
            here.authenticate(&issued.token).await,
            Err(AuthError::Unauthenticated(_))
        ));
        assert!(here.recently_unknown(&issued.record.id));
        // Stored by another service: this one's follower brings it well before the memory of
        // its absence would have run out.
        there.write(&issued.record).await?;
        let started = Instant::now();
        let principal = loop {
            match here.authenticate(&issued.token).await {
                Ok(principal) => break principal,
                Err(_) if started.elapsed() < UNKNOWN_FOR / 2 => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => anyhow::bail!("still refused after {:?}: {e}", started.elapsed()),
            }
        };
        assert_eq!(principal.name, "vera");
        assert!(!here.recently_unknown(&issued.record.id));
        shutdown.cancel();
        flywheel_testkit::cleanup_bus(&bus).await;
        Ok(())
    }
}
