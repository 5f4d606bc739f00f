//! `/readyz`: a service is ready when the dependencies it uses answer.

use std::sync::{Arc, OnceLock};

use flywheel_bus::Bus;
use flywheel_db::DatabaseConnection;
use serde::Serialize;

/// The dependencies a service checks; filled in as they connect.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    bus: OnceLock<Bus>,
    db: OnceLock<DatabaseConnection>,
    needs_db: OnceLock<bool>,
    started: OnceLock<()>,
}

/// What `/readyz` reports.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReadinessReport {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// Each dependency: `ok`, `connecting` or the error.
    pub checks: std::collections::BTreeMap<&'static str, String>,
}

impl Readiness {
    /// Readiness for a service that does (or does not) use a database.
    pub fn new(needs_db: bool) -> Self {
        let readiness = Self::default();
        let _ = readiness.inner.needs_db.set(needs_db);
        readiness
    }

    /// Records the connected bus.
    pub fn set_bus(&self, bus: Bus) {
        let _ = self.inner.bus.set(bus);
    }

    /// Records the connected database.
    pub fn set_db(&self, db: DatabaseConnection) {
        let _ = self.inner.db.set(db);
    }

    /// Records that the service finished starting (consumers running, routes mounted).
    pub fn set_started(&self) {
        let _ = self.inner.started.set(());
    }

    /// Checks every dependency now.
    pub async fn check(&self) -> ReadinessReport {
        let mut checks = std::collections::BTreeMap::new();
        let nats = match self.inner.bus.get() {
            Some(bus) => bus
                .check_ready()
                .await
                .map(|_| "ok".to_owned())
                .unwrap_or_else(|e| e.to_string()),
            None => "connecting".into(),
        };
        checks.insert("nats", nats);
        if self.inner.needs_db.get().copied().unwrap_or(false) {
            let db = match self.inner.db.get() {
                Some(db) => flywheel_db::check_ready(db)
                    .await
                    .map(|_| "ok".to_owned())
                    .unwrap_or_else(|e| e.to_string()),
                None => "connecting".into(),
            };
            checks.insert("database", db);
        }
        checks.insert(
            "service",
            if self.inner.started.get().is_some() {
                "ok".into()
            } else {
                "starting".into()
            },
        );
        let ready = checks.values().all(|v| v == "ok");
        ReadinessReport {
            status: if ready { "ready" } else { "not_ready" },
            checks,
        }
    }
}
