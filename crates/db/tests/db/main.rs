//! Migrations and the inbox on PostgreSQL and SQLite: one suite, both backends.

use std::time::Duration;

use flywheel_db::inbox::{CreateInbox, claim};
use flywheel_db::leases::{self, CreateLeases};
use flywheel_db::sea_orm::{ConnectionTrait, TransactionTrait};
use flywheel_db::{DbConfig, applied_migrations, connect, migrate};

flywheel_db::migrator!(RegistryMigrator, "registry", [CreateInbox::new("registry")]);
flywheel_db::migrator!(
    SchedulerMigrator,
    "scheduler",
    [CreateInbox::new("scheduler")]
);
flywheel_db::migrator!(LeaseMigrator, "monitor", [CreateLeases::new("monitor")]);

async fn postgres() -> anyhow::Result<(DbConfig, Option<tempfile::TempDir>)> {
    Ok((flywheel_testkit::fresh_postgres().await?, None))
}

async fn sqlite() -> anyhow::Result<(DbConfig, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir()?;
    Ok((flywheel_testkit::fresh_sqlite(dir.path()), Some(dir)))
}

macro_rules! backend_suite {
    ($($backend:ident),*) => { $(
        mod $backend {
            #[tokio::test]
            async fn two_services_migrations_coexist_in_one_database() -> anyhow::Result<()> {
                let (config, _keep) = super::$backend().await?;
                super::two_services_migrations_coexist(config).await
            }

            #[tokio::test]
            async fn the_inbox_applies_each_event_once() -> anyhow::Result<()> {
                let (config, _keep) = super::$backend().await?;
                super::inbox_applies_each_event_once(config).await
            }

            #[tokio::test]
            async fn a_lease_has_one_holder_and_fences_the_one_it_replaced() -> anyhow::Result<()> {
                let (config, _keep) = super::$backend().await?;
                super::lease_has_one_holder(config).await
            }
        }
    )* };
}

backend_suite!(postgres, sqlite);

async fn two_services_migrations_coexist(config: DbConfig) -> anyhow::Result<()> {
    let db = connect(&config).await?;
    migrate::<RegistryMigrator>(&db, "registry").await?;
    migrate::<SchedulerMigrator>(&db, "scheduler").await?;
    // Running again is a no-op, not an error.
    migrate::<RegistryMigrator>(&db, "registry").await?;
    assert_eq!(
        applied_migrations(&db, "registry_migrations").await?,
        ["m0001_registry_create_inbox"]
    );
    assert_eq!(
        applied_migrations(&db, "scheduler_migrations").await?,
        ["m0001_scheduler_create_inbox"]
    );
    // Both services' tables exist side by side.
    for table in ["registry_inbox", "scheduler_inbox"] {
        db.execute_unprepared(&format!("SELECT count(*) FROM {table}"))
            .await?;
    }
    // The default table of a lone sea-orm migrator was never created.
    assert!(
        db.execute_unprepared("SELECT count(*) FROM seaql_migrations")
            .await
            .is_err()
    );
    flywheel_db::check_ready(&db).await?;
    Ok(())
}

async fn inbox_applies_each_event_once(config: DbConfig) -> anyhow::Result<()> {
    let db = connect(&config).await?;
    migrate::<RegistryMigrator>(&db, "registry").await?;
    let event = uuid::Uuid::now_v7();
    assert!(
        claim(&db, "registry", "models", event).await?,
        "first delivery applies"
    );
    assert!(
        !claim(&db, "registry", "models", event).await?,
        "redelivery is recognised"
    );
    assert!(
        claim(&db, "registry", "audit", event).await?,
        "another consumer applies it on its own"
    );

    // A claim rolled back with its effect leaves the event unapplied.
    let other = uuid::Uuid::now_v7();
    let txn = db.begin().await?;
    assert!(claim(&txn, "registry", "models", other).await?);
    txn.rollback().await?;
    assert!(
        claim(&db, "registry", "models", other).await?,
        "rolled-back claim did not stick"
    );
    Ok(())
}

#[tokio::test]
async fn bad_urls_are_refused_with_the_key_named() {
    let config = DbConfig {
        url: "mysql://nope".into(),
        ..DbConfig::default()
    };
    let err = connect(&config)
        .await
        .expect_err("unsupported scheme")
        .to_string();
    assert!(err.contains("db.url"), "{err}");
    let config = DbConfig {
        url: "postgres://u:hunter2@127.0.0.1:1/db".into(),
        connect_timeout_secs: 1,
        acquire_timeout_secs: 1,
        ..DbConfig::default()
    };
    let err = connect(&config)
        .await
        .expect_err("nothing listens on port 1")
        .to_string();
    assert!(!err.contains("hunter2"), "password leaked: {err}");
}

/// Concurrent writers that read before they write (as most handlers do) all succeed on SQLite
/// instead of failing with "database is locked" (the registry benchmark found both the missing
/// per-connection busy timeout and SQLITE_BUSY_SNAPSHOT with a pool of connections).
#[tokio::test]
async fn concurrent_sqlite_writers_wait_instead_of_failing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = DbConfig {
        max_connections: 8,
        ..flywheel_testkit::fresh_sqlite(dir.path())
    };
    let db = connect(&config).await?;
    migrate::<RegistryMigrator>(&db, "registry").await?;
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..8 {
        let db = db.clone();
        writers.spawn(async move {
            for _ in 0..50 {
                let txn = db.begin().await?;
                claim(
                    &txn,
                    "registry",
                    &format!("writer-{writer}"),
                    uuid::Uuid::now_v7(),
                )
                .await?;
                txn.commit().await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    Ok(())
}

async fn lease_has_one_holder(config: DbConfig) -> anyhow::Result<()> {
    let db = connect(&config).await?;
    migrate::<LeaseMigrator>(&db, "monitor").await?;
    let ttl = Duration::from_millis(400);
    let a = leases::acquire(&db, "monitor", "rollouts", "a", ttl).await?;
    let a = a.ok_or_else(|| anyhow::anyhow!("a free lease is taken"))?;
    assert_eq!(a.epoch, 1);
    assert_eq!(
        leases::acquire(&db, "monitor", "rollouts", "b", ttl).await?,
        None,
        "a running lease has one holder"
    );
    // Renewing keeps the epoch.
    let renewed = leases::acquire(&db, "monitor", "rollouts", "a", ttl).await?;
    assert_eq!(renewed.as_ref().map(|h| h.epoch), Some(1));
    assert!(leases::fence(&db, "monitor", &a).await?);
    // a stops renewing: b takes over with a new epoch, and a's writes are fenced off.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = leases::acquire(&db, "monitor", "rollouts", "b", ttl)
        .await?
        .ok_or_else(|| anyhow::anyhow!("an expired lease is taken over"))?;
    assert_eq!(b.epoch, 2);
    assert!(
        !leases::fence(&db, "monitor", &a).await?,
        "the old holder is fenced"
    );
    let txn = db.begin().await?;
    assert!(leases::fence(&txn, "monitor", &b).await?);
    txn.commit().await?;
    assert_eq!(
        leases::acquire(&db, "monitor", "rollouts", "a", ttl).await?,
        None
    );
    // Members announce themselves; a release hands over at once.
    for member in ["member:x", "member:y"] {
        leases::acquire(&db, "monitor", member, member, ttl).await?;
    }
    let live = leases::live(&db, "monitor", "member:").await?;
    assert_eq!(
        live.iter().map(|h| h.holder.as_str()).collect::<Vec<_>>(),
        ["member:x", "member:y"]
    );
    leases::release(&db, "monitor", &b).await?;
    let a = leases::acquire(&db, "monitor", "rollouts", "a", ttl).await?;
    assert_eq!(a.map(|h| h.epoch), Some(3));
    Ok(())
}
