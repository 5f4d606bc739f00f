//! Tokens in the TOKENS stream: one subject per token, the stream keeps the last record of each.
//! Every service keeps a copy fed by an ordered consumer, so checking a token costs no round
//! trip; a token the copy does not know yet is read from the stream directly.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

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
    bootstrap_sha256: Option<String>,
}

impl TokenStore {
    /// Opens the store and keeps its copy current until `shutdown`.
    pub fn open(bus: Bus, config: &AuthConfig, shutdown: CancellationToken) -> Self {
        let store = Self {
            bus,
            known: Arc::default(),
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
        let cached = self.cached(id);
        let record = match cached {
            Some(record) => record,
            None => self
                .read(id)
                .await?
                .ok_or_else(|| AuthError::Unauthenticated("unknown token".into()))?,
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

    fn remember(&self, record: TokenRecord) {
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
