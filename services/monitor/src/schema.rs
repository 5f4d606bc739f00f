//! The monitor's tables (prefixed `monitor_`).

use sea_orm::DeriveIden;

/// Dataset versions the monitor has heard of (from `dataset.version.created`): where their
/// bytes and profiles are.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Datasets {
    #[sea_orm(iden = "monitor_datasets")]
    Table,
    Dataset,
    Version,
    Uri,
    Format,
    Sha256,
    ProfileUri,
}
