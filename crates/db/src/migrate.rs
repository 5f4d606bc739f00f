//! Per-service migrations: each service's `MigratorTrait` names its own migration table
//! (`<service>_migrations`), so services sharing a database never see each other's history.

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use sea_orm_migration::MigratorTrait;

use crate::{DbError, Result};

/// Applies every pending migration of `M`.
pub async fn migrate<M: MigratorTrait>(db: &DatabaseConnection, service: &str) -> Result<()> {
    Box::pin(M::up(db, None))
        .await
        .map_err(|e| DbError::Migration {
            service: service.to_owned(),
            reason: e.to_string(),
        })?;
    tracing::info!(service, "migrations applied");
    Ok(())
}

/// Names of the migrations recorded in a migration table, in order of application.
pub async fn applied_migrations(db: &DatabaseConnection, table: &str) -> Result<Vec<String>> {
    let backend = db.get_database_backend();
    let quoted = format!("\"{}\"", table.replace('"', ""));
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            format!("SELECT version FROM {quoted} ORDER BY applied_at, version"),
        ))
        .await?;
    rows.iter()
        .map(|row| row.try_get::<String>("", "version").map_err(DbError::from))
        .collect()
}

/// Builds a migration table identifier for [`MigratorTrait::migration_table_name`].
pub fn migration_table(service: &str) -> sea_orm_migration::sea_orm::sea_query::DynIden {
    use sea_orm_migration::sea_orm::sea_query::{Alias, IntoIden};
    Alias::new(format!("{service}_migrations")).into_iden()
}

/// Declares a service's migrator with its own migration table, `<service>_migrations`.
///
/// ```
/// flywheel_db::migrator!(Migrator, "registry", [flywheel_db::inbox::CreateInbox::new("registry")]);
/// ```
#[macro_export]
macro_rules! migrator {
    ($name:ident, $service:literal, [$($migration:expr),* $(,)?]) => {
        /// This service's migrations, recorded in its own migration table.
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;

        #[$crate::sea_orm_migration::async_trait::async_trait]
        impl $crate::sea_orm_migration::MigratorTrait for $name {
            fn migrations() -> Vec<Box<dyn $crate::sea_orm_migration::MigrationTrait>> {
                vec![$(Box::new($migration)),*]
            }

            fn migration_table_name() -> $crate::sea_orm_migration::sea_orm::sea_query::DynIden {
                $crate::migration_table($service)
            }
        }
    };
}

migrator!(NoMigrations, "none", []);
