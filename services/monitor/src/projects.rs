//! Which project each monitored deployment belongs to, learned from its prediction logs'
//! envelopes (the deployer stamps them with the deployment's project), kept in
//! `monitor_deployments` and in memory. Reports, alerts and settings follow their deployment;
//! what the monitor announces is stamped with it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use flywheel_runtime::scope::DEFAULT_PROJECT;
use sea_orm::sea_query::{
    ColumnDef, Expr, ExprTrait, IntoColumnRef, OnConflict, Query, SelectStatement, Table,
};
use sea_orm::{ConnectionTrait, DbErr, DeriveIden};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager, async_trait};

use crate::Result;

/// Deployments and their projects.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Deployments {
    #[sea_orm(iden = "monitor_deployments")]
    Table,
    Deployment,
    Project,
}

/// The deployments' projects, in memory (the reader asks for every log).
#[derive(Debug, Clone, Default)]
pub(crate) struct DeploymentProjects(Arc<RwLock<HashMap<String, String>>>);

impl DeploymentProjects {
    /// Loads what is stored.
    pub(crate) async fn load<C: ConnectionTrait>(db: &C) -> Result<Self> {
        let rows = db
            .query_all(
                &Query::select()
                    .columns([Deployments::Deployment, Deployments::Project])
                    .from(Deployments::Table)
                    .to_owned(),
            )
            .await?;
        let mut known = HashMap::new();
        for row in rows {
            known.insert(row.try_get("", "deployment")?, row.try_get("", "project")?);
        }
        Ok(Self(Arc::new(RwLock::new(known))))
    }

    /// The project of `deployment` (`default` until a log says otherwise).
    pub(crate) fn of(&self, deployment: &str) -> String {
        self.known(deployment)
            .unwrap_or_else(|| DEFAULT_PROJECT.to_owned())
    }

    fn known(&self, deployment: &str) -> Option<String> {
        self.0.read().ok()?.get(deployment).cloned()
    }

    /// Records that `deployment` is in `project` (a database write only when that is news).
    pub(crate) async fn learn<C: ConnectionTrait>(
        &self,
        db: &C,
        deployment: &str,
        project: &str,
    ) -> Result<()> {
        let already = self
            .0
            .read()
            .is_ok_and(|known| known.get(deployment).is_some_and(|p| p == project));
        if already {
            return Ok(());
        }
        db.execute(
            &Query::insert()
                .into_table(Deployments::Table)
                .columns([Deployments::Deployment, Deployments::Project])
                .values_panic([deployment.into(), project.into()])
                .on_conflict(
                    OnConflict::column(Deployments::Deployment)
                        .update_column(Deployments::Project)
                        .to_owned(),
                )
                .to_owned(),
        )
        .await?;
        if let Ok(mut known) = self.0.write() {
            known.insert(deployment.to_owned(), project.to_owned());
        }
        Ok(())
    }
}

/// Keeps rows whose `column` names a deployment of the running work's project (all when the
/// scope is every project). Deployments never learned count as `default`.
pub(crate) fn confine(select: &mut SelectStatement, column: impl IntoColumnRef + Copy) {
    let Some(project) = flywheel_runtime::scope::current().only().map(str::to_owned) else {
        return;
    };
    let elsewhere = Query::select()
        .column(Deployments::Deployment)
        .from(Deployments::Table)
        .and_where(Expr::col(Deployments::Project).ne(project.as_str()))
        .to_owned();
    let inside = Query::select()
        .column(Deployments::Deployment)
        .from(Deployments::Table)
        .and_where(Expr::col(Deployments::Project).eq(project.as_str()))
        .to_owned();
    if project == DEFAULT_PROJECT {
        select.and_where(Expr::col(column).not_in_subquery(elsewhere));
    } else {
        select.and_where(Expr::col(column).in_subquery(inside));
    }
}

/// Creates `monitor_deployments` and gives retraining policies a project.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateDeploymentProjects;

impl MigrationName for CreateDeploymentProjects {
    fn name(&self) -> &str {
        "m0009_monitor_create_deployment_projects"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateDeploymentProjects {
    async fn up(&self, manager: &SchemaManager) -> std::result::Result<(), DbErr> {
        use crate::schema::{Datasets, Policies};
        use sea_orm::sea_query::IntoIden;
        manager
            .create_table(
                Table::create()
                    .table(Deployments::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Deployments::Deployment)
                            .string_len(250)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Deployments::Project)
                            .string_len(64)
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        for (table, name) in [
            (Policies::Table.into_iden(), "monitor_policies"),
            (Datasets::Table.into_iden(), "monitor_datasets"),
        ] {
            if manager.has_column(name, "project").await? {
                continue;
            }
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(
                            ColumnDef::new(Policies::Project)
                                .string_len(64)
                                .not_null()
                                .default(DEFAULT_PROJECT),
                        )
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
