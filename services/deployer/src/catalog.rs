//! What the deployer learns from the registry's events: every version's package
//! (`model.version.registered`) and where aliases point (`model.version.alias_changed`), which
//! moves the deployments following them.

use std::time::Duration;

use flywheel_bus::{ConsumerSpec, Delivery, Outcome, StreamKind};
use flywheel_events::Event;
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};

use crate::schema::{Aliases, Versions};
use crate::{AppState, DeployerError, Result};

/// The durable consumer of `model.version.*`, shared by every deployer replica.
pub(crate) fn consumer_spec(state: &AppState) -> ConsumerSpec {
    let prefix = state.bus.subjects().prefix().to_owned();
    let mut spec = ConsumerSpec::new(
        StreamKind::Events,
        "deployer-model-versions",
        format!("{prefix}.events.model.version.>"),
    );
    // Alias moves apply in order.
    spec.concurrency = 1;
    spec
}

/// Handles one `model.version.*` event.
pub(crate) async fn handle(state: AppState, delivery: Delivery) -> Outcome {
    match apply(&state, &delivery.envelope.event).await {
        Ok(()) => Outcome::Ack,
        Err(DeployerError::Invalid(reason)) => Outcome::poison(reason),
        Err(e) => Outcome::retry(Duration::from_secs(2), e.to_string()),
    }
}

async fn apply(state: &AppState, event: &Event) -> Result<()> {
    let mut moved_alias = None;
    let model = match event {
        Event::ModelVersionRegistered(e) => {
            state
                .db
                .execute(
                    &Query::insert()
                        .into_table(Versions::Table)
                        .columns([
                            Versions::Model,
                            Versions::Version,
                            Versions::PackageUri,
                            Versions::Flavor,
                        ])
                        .values([
                            e.model.clone().into(),
                            i32::try_from(e.version).unwrap_or(i32::MAX).into(),
                            e.package_uri.clone().into(),
                            e.flavor.clone().into(),
                        ])
                        .map_err(|err| DeployerError::Invalid(err.to_string()))?
                        .on_conflict(
                            OnConflict::columns([Versions::Model, Versions::Version])
                                .do_nothing()
                                .to_owned(),
                        )
                        .to_owned(),
                )
                .await?;
            e.model.clone()
        }
        Event::ModelVersionAliasChanged(e) => {
            moved_alias = Some(e.alias.clone());
            match e.version {
                Some(version) => {
                    state
                        .db
                        .execute(
                            &Query::insert()
                                .into_table(Aliases::Table)
                                .columns([Aliases::Model, Aliases::Alias, Aliases::Version])
                                .values([
                                    e.model.clone().into(),
                                    e.alias.clone().into(),
                                    i32::try_from(version).unwrap_or(i32::MAX).into(),
                                ])
                                .map_err(|err| DeployerError::Invalid(err.to_string()))?
                                .on_conflict(
                                    OnConflict::columns([Aliases::Model, Aliases::Alias])
                                        .update_column(Aliases::Version)
                                        .to_owned(),
                                )
                                .to_owned(),
                        )
                        .await?;
                }
                None => {
                    state
                        .db
                        .execute(
                            &Query::delete()
                                .from_table(Aliases::Table)
                                .and_where(Expr::col(Aliases::Model).eq(e.model.as_str()))
                                .and_where(Expr::col(Aliases::Alias).eq(e.alias.as_str()))
                                .to_owned(),
                        )
                        .await?;
                }
            }
            e.model.clone()
        }
        _ => return Ok(()),
    };
    for deployment in crate::deployments::of_model(&state.db, &model, None).await? {
        // A moved alias is a new decision: a version rolled back before may be tried again.
        if deployment.rolled_back_version.is_some() && deployment.alias == moved_alias {
            crate::deployments::set_rolled_back(state, &deployment.name, None).await?;
        }
        crate::deployments::forget_failure(state, &deployment.name);
        // The rollout leader decides (another replica's leader does within a second).
        if !state.leadership.is_leader() {
            continue;
        }
        match crate::deployments::activate(state, &deployment.name).await {
            Ok(()) | Err(DeployerError::Load(_) | DeployerError::NotLeader) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
