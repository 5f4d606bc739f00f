//! Relational storage for Flywheel services: a sea-orm connection from a URL (`postgres://` or
//! `sqlite://`) with pool settings, and a migration runner in which each service keeps its own
//! migrations and its own migration table, so all five can share one database.

mod config;
mod error;
pub mod inbox;
pub mod leases;
mod migrate;

pub use config::DbConfig;
pub use error::{DbError, Result};
pub use migrate::{NoMigrations, applied_migrations, migrate, migration_table};
pub use sea_orm::{self, DatabaseConnection};
pub use sea_orm_migration::{self, MigrationTrait, MigratorTrait};

use std::time::Duration;

use sea_orm::{ConnectOptions, Database};

/// Opens a connection pool; SQLite files and their folders are created when missing.
pub async fn connect(config: &DbConfig) -> Result<DatabaseConnection> {
    config.validate().map_err(DbError::Config)?;
    let url = prepare_url(&config.url)?;
    let mut options = ConnectOptions::new(url.clone());
    options
        .max_connections(config.max_connections)
        .min_connections(config.min_connections)
        .connect_timeout(Duration::from_secs(config.connect_timeout_secs))
        .acquire_timeout(Duration::from_secs(config.acquire_timeout_secs))
        .idle_timeout(Duration::from_secs(config.idle_timeout_secs))
        .sqlx_logging(config.log_statements);
    if let Some(schema) = &config.schema {
        options.set_schema_search_path(schema.clone());
    }
    if url.starts_with("sqlite:") {
        // SQLite has one writer at a time. With several pooled connections a transaction that
        // read before writing fails with SQLITE_BUSY_SNAPSHOT (517) when another connection
        // committed meanwhile, which no busy timeout cures; one connection serialises instead.
        options.max_connections(1).min_connections(1);
    }
    // Per connection, not once: a pragma run once reaches only one pooled connection.
    options.map_sqlx_sqlite_opts(|opts| {
        opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
    });
    let db = Database::connect(options)
        .await
        .map_err(|e| DbError::Connect(redact(&config.url), e.to_string()))?;
    if db.get_database_backend() == sea_orm::DbBackend::Sqlite {
        use sea_orm::ConnectionTrait;
        // WAL lets readers and the single writer work at once; the busy timeout rides out short locks.
        db.execute_unprepared(
            "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON;",
        )
        .await?;
    }
    Ok(db)
}

/// Readiness: one round trip to the database.
pub async fn check_ready(db: &DatabaseConnection) -> Result<()> {
    db.ping().await.map_err(DbError::from)
}

fn prepare_url(url: &str) -> Result<String> {
    let Some(rest) = url.strip_prefix("sqlite://") else {
        return Ok(url.to_owned());
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" {
        return Ok(url.to_owned());
    }
    if let Some(parent) = std::path::Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|e| {
            DbError::Config(format!(
                "db.url: cannot create folder {}: {e}",
                parent.display()
            ))
        })?;
    }
    let query = if query.contains("mode=") {
        query.to_owned()
    } else if query.is_empty() {
        "mode=rwc".into()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

/// Hides a password in a database URL before it reaches logs or errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                url.to_owned()
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn sqlite_urls_get_create_mode() {
        let dir = std::env::temp_dir().join(format!("fw-db-{}", uuid::Uuid::now_v7()));
        let url = format!("sqlite://{}/a.db", dir.display());
        assert_eq!(prepare_url(&url).expect("url"), format!("{url}?mode=rwc"));
        assert!(dir.exists(), "parent folder created");
        assert_eq!(
            prepare_url("sqlite::memory:").expect("url"),
            "sqlite::memory:"
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
