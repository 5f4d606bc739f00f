//! Project isolation of the registry's rows: every query on a table with a `project` column
//! (or hanging off one: versions off models, runs off experiments) is confined to the
//! [`Scope`](flywheel_runtime::scope::Scope) of the work running it, and new top-level rows take
//! the scope's project.

use sea_orm::sea_query::{Expr, ExprTrait, IntoColumnRef, IntoIden, Query, SelectStatement};

use crate::schema::{Datasets, Experiments, Models};

/// The project new resources of the running work belong to.
pub(crate) fn home() -> String {
    flywheel_runtime::scope::current().home().to_owned()
}

/// Whether rows of `project` are visible to the running work.
pub(crate) fn sees(project: &str) -> bool {
    flywheel_runtime::scope::current().sees(project)
}

/// Keeps rows whose `column` (a project column) is visible.
pub(crate) fn confine(select: &mut SelectStatement, column: impl IntoColumnRef) {
    flywheel_runtime::scope::confine(select, column);
}

/// Keeps rows whose `column` names a model of a visible project.
pub(crate) fn confine_to_models(select: &mut SelectStatement, column: impl IntoColumnRef) {
    if let Some(inside) = owned_by_visible(Models::Table, Models::Name, Models::Project) {
        select.and_where(Expr::col(column).in_subquery(inside));
    }
}

/// Keeps rows whose `column` names a dataset of a visible project.
pub(crate) fn confine_to_datasets(select: &mut SelectStatement, column: impl IntoColumnRef) {
    if let Some(inside) = owned_by_visible(Datasets::Table, Datasets::Name, Datasets::Project) {
        select.and_where(Expr::col(column).in_subquery(inside));
    }
}

/// Keeps rows whose `column` names an experiment of a visible project.
pub(crate) fn confine_to_experiments(select: &mut SelectStatement, column: impl IntoColumnRef) {
    if let Some(inside) = owned_by_visible(
        Experiments::Table,
        Experiments::ExperimentId,
        Experiments::Project,
    ) {
        select.and_where(Expr::col(column).in_subquery(inside));
    }
}

/// `SELECT key FROM table WHERE project = <the visible one>`, or `None` when all are visible.
fn owned_by_visible<T: IntoIden + Copy + 'static>(
    table: T,
    key: T,
    project: T,
) -> Option<SelectStatement> {
    let only = flywheel_runtime::scope::current().only()?.to_owned();
    Some(
        Query::select()
            .column(key)
            .from(table)
            .and_where(Expr::col(project).eq(only))
            .to_owned(),
    )
}
