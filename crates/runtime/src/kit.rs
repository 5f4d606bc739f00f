//! The service kit: what every service does at start and stop, written once.
//!
//! `start` serves `/healthz` at once, then connects NATS (and provisions the streams), the
//! database (and runs the service's migrations) and artifact storage; `/readyz` turns ready
//! when they answer and the service mounted its routes. `run_until_shutdown` waits for the
//! token, stops the HTTP server and every spawned task, then drains NATS.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use flywheel_artifacts::ArtifactStore;
use flywheel_bus::Bus;
use flywheel_db::{DatabaseConnection, MigratorTrait};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::{self, Mount};
use crate::{Readiness, ServiceError, ServiceResult, ServiceSettings};

/// Whether a service keeps relational state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// It has tables: connect and migrate.
    Database,
    /// It is stateless (no database connection at all).
    Stateless,
}

/// A started service's shared handles.
#[derive(Debug)]
pub struct ServiceKit {
    /// Service name, e.g. `registry`.
    pub name: &'static str,
    /// Its settings.
    pub settings: ServiceSettings,
    /// NATS JetStream, streams provisioned.
    pub bus: Bus,
    /// The database, migrated; `None` for stateless services.
    pub db: Option<DatabaseConnection>,
    /// Artifact storage.
    pub artifacts: ArtifactStore,
    /// Cancelled when the service should stop.
    pub shutdown: CancellationToken,
    readiness: Readiness,
    mount: Mount,
    tokens: Option<flywheel_auth::TokenStore>,
    tasks: TaskTracker,
    server: JoinHandle<std::io::Result<()>>,
}

impl ServiceKit {
    /// Starts serving health on `listener` and connects every dependency.
    pub async fn start<M: MigratorTrait>(
        name: &'static str,
        settings: ServiceSettings,
        listener: TcpListener,
        shutdown: CancellationToken,
        storage: Storage,
    ) -> ServiceResult<Self> {
        settings.validate()?;
        let readiness = Readiness::new(storage == Storage::Database);
        let mount = Mount::default();
        let router = http::app(name, readiness.clone(), mount.clone(), &settings.http);
        let grace = Duration::from_secs(settings.http.shutdown_grace_secs);
        let server = tokio::spawn(http::serve(listener, router, shutdown.clone(), grace));

        // Boxed: sea-orm's and async-nats' connect futures are large.
        let connected = Box::pin(async {
            let bus = tokio::select! {
                bus = Bus::connect(&settings.bus, name) => bus?,
                _ = shutdown.cancelled() => return Err(ServiceError::Config("shut down while connecting".into())),
            };
            bus.provision().await?;
            readiness.set_bus(bus.clone());
            let db = match storage {
                Storage::Database => {
                    let db = flywheel_db::connect(&settings.db).await?;
                    flywheel_db::migrate::<M>(&db, name).await?;
                    readiness.set_db(db.clone());
                    Some(db)
                }
                Storage::Stateless => None,
            };
            let artifacts = ArtifactStore::from_config(&settings.artifacts)?;
            Ok((bus, db, artifacts))
        })
        .await;
        let (bus, db, artifacts) = match connected {
            Ok(handles) => handles,
            Err(e) => {
                shutdown.cancel();
                let _ = server.await;
                return Err(e);
            }
        };
        tracing::info!(service = name, "dependencies connected");
        let tokens = settings.auth.enabled.then(|| {
            flywheel_auth::TokenStore::open(bus.clone(), &settings.auth, shutdown.clone())
        });
        if tokens.is_none() {
            tracing::warn!(
                service = name,
                "authentication is off (auth.enabled = false): every caller may do everything"
            );
        }
        Ok(Self {
            name,
            settings,
            bus,
            db,
            artifacts,
            shutdown,
            readiness,
            mount,
            tokens,
            tasks: TaskTracker::new(),
            server,
        })
    }

    /// The database of a service started with [`Storage::Database`].
    pub fn database(&self) -> ServiceResult<&DatabaseConnection> {
        self.db.as_ref().ok_or_else(|| {
            ServiceError::Config(format!("{} was started without a database", self.name))
        })
    }

    /// Mounts the service's own routes behind the default access rule (reads need a viewer,
    /// changes an operator) and marks the service ready.
    pub fn mount(&self, routes: Router) {
        self.mount_with_access(routes, std::sync::Arc::new(crate::access::default_access));
    }

    /// Mounts the service's own routes behind its own access rule and marks it ready.
    pub fn mount_with_access(&self, routes: Router, rule: crate::access::AccessRule) {
        let gate = crate::access::Gate::new(self.name, self.tokens.clone(), rule, self.bus.clone());
        self.mount_gated(routes, gate);
    }

    /// Like [`Self::mount_with_access`], for a service whose data carry their project: tokens
    /// of any project get in, and each request runs in its [`crate::scope::Scope`].
    pub fn mount_scoped(&self, routes: Router, rule: crate::access::AccessRule) {
        let gate = crate::access::Gate::new(self.name, self.tokens.clone(), rule, self.bus.clone())
            .with_projects();
        self.mount_gated(routes, gate);
    }

    fn mount_gated(&self, routes: Router, gate: crate::access::Gate) {
        // A service with no routes of its own (the runner) has nothing to guard.
        let routes = if routes.has_routes() {
            routes.route_layer(axum::middleware::from_fn_with_state(
                gate,
                crate::access::check,
            ))
        } else {
            routes
        };
        self.mount.set(routes);
        self.readiness.set_started();
    }

    /// The token store, when authentication is on.
    pub fn tokens(&self) -> Option<&flywheel_auth::TokenStore> {
        self.tokens.as_ref()
    }

    /// Runs a long-lived task (a consumer loop, a ticker) that must stop on shutdown.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ServiceResult> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        let name = self.name;
        self.tasks.spawn(async move {
            if let Err(e) = task.await {
                // A failed background task leaves the service unfit: stop it so an orchestrator
                // restarts it, instead of limping on half-alive.
                tracing::error!(service = name, error = %e, "background task failed; shutting down");
                shutdown.cancel();
            }
        });
    }

    /// Runs a durable consumer until shutdown (a failure stops the service, see [`Self::spawn`]).
    pub fn spawn_consumer<H: flywheel_bus::Handler>(
        &self,
        spec: flywheel_bus::ConsumerSpec,
        handler: H,
    ) {
        let consumer =
            flywheel_bus::run_consumer(self.bus.clone(), spec, handler, self.shutdown.clone());
        self.spawn(async move { consumer.await.map_err(ServiceError::from) });
    }

    /// Starts publishing this service's outbox (see [`crate::outbox`]).
    pub fn start_outbox(&self) -> ServiceResult {
        let db = self.database()?.clone();
        let task = crate::outbox::run_publisher(
            self.bus.clone(),
            db,
            self.name.to_owned(),
            Duration::from_millis(200),
            self.shutdown.clone(),
        );
        self.spawn(task);
        Ok(())
    }

    /// Waits for shutdown, then stops the server and tasks and drains NATS.
    pub async fn run_until_shutdown(self) -> ServiceResult {
        self.shutdown.cancelled().await;
        tracing::info!(service = self.name, "stopping");
        self.tasks.close();
        let grace = Duration::from_secs(self.settings.http.shutdown_grace_secs);
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                service = self.name,
                "background tasks did not stop within the grace period"
            );
        }
        let served = self.server.await;
        self.bus.drain().await;
        if let Some(db) = self.db {
            let _ = db.close().await;
        }
        tracing::info!(service = self.name, "stopped");
        match served {
            Ok(result) => result.map_err(ServiceError::from),
            Err(join) => Err(ServiceError::Io(std::io::Error::other(join.to_string()))),
        }
    }
}
