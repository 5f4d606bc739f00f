//! The monitor's migrations, recorded in `monitor_migrations`.

use sea_orm::DbErr;
use sea_orm::sea_query::{ColumnDef, Index, Table};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager, async_trait};

use crate::schema::Datasets;

flywheel_db::migrator!(
    Migrator,
    "monitor",
    [
        flywheel_db::inbox::CreateInbox::new("monitor"),
        CreateDatasets,
    ]
);

/// Known dataset versions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateDatasets;

impl MigrationName for CreateDatasets {
    fn name(&self) -> &str {
        "m0002_monitor_create_datasets"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateDatasets {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Datasets::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Datasets::Dataset).string_len(250).not_null())
                    .col(ColumnDef::new(Datasets::Version).string_len(128).not_null())
                    .col(ColumnDef::new(Datasets::Uri).text().not_null())
                    .col(ColumnDef::new(Datasets::Format).string_len(32).not_null())
                    .col(ColumnDef::new(Datasets::Sha256).string_len(64).not_null())
                    .col(ColumnDef::new(Datasets::ProfileUri).text().null())
                    .primary_key(
                        Index::create()
                            .col(Datasets::Dataset)
                            .col(Datasets::Version),
                    )
                    .to_owned(),
            )
            .await
    }
}
