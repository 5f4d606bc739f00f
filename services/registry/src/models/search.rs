//! Searching registered models and model versions with MLflow's filter grammar.

use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Cond, Expr, ExprTrait, Order, Query};

use super::{
    ModelVersion, RegisteredModel, attach_version_data, load_models, version_from_row,
    version_select,
};
use crate::schema::{ModelTags, Models, VersionTags, Versions};
use crate::tracking::search::{Literal, Op, RawClause, compare, parse_raw};
use crate::{RegistryError, Result};

/// A listing request.
#[derive(Debug, Clone, Default)]
pub struct SearchModels {
    /// MLflow filter.
    pub filter: String,
    /// Page size.
    pub max_results: u64,
    /// Order clauses.
    pub order_by: Vec<String>,
    /// Token from the previous page.
    pub page_token: Option<String>,
}

fn invalid(message: impl Into<String>) -> RegistryError {
    RegistryError::InvalidParameter(message.into())
}

fn tag_key(ident: &str) -> Option<&str> {
    ["tags.", "tag."]
        .iter()
        .find_map(|prefix| ident.strip_prefix(prefix))
}

/// `tags.k op v`: `!=` means "no tag k with value v" (models without the tag match), as MLflow's
/// client relies on for its prompt clause.
fn tag_condition<T: sea_orm::sea_query::Iden + Copy + 'static>(
    table: T,
    owner: &[(T, Expr)],
    key_col: T,
    value_col: T,
    key: &str,
    clause: &RawClause,
) -> Result<Expr> {
    let mut select = Query::select();
    select
        .expr(Expr::val(1))
        .from(table)
        .and_where(Expr::col((table, key_col)).eq(key));
    for (col, outer) in owner {
        select.and_where(Expr::col((table, *col)).eq(outer.clone()));
    }
    let positive = match (clause.op, &clause.literal) {
        (Op::Ne, Literal::Text(v)) => {
            select.and_where(Expr::col((table, value_col)).eq(v.as_str()));
            return Ok(Expr::exists(select.to_owned()).not());
        }
        (Op::Eq | Op::Like | Op::ILike, Literal::Text(_)) => {
            select.and_where(compare(
                Expr::col((table, value_col)),
                clause.op,
                &clause.literal,
            ));
            true
        }
        (Op::IsNull, _) => false,
        (Op::IsNotNull, _) => true,
        _ => return Err(invalid(format!("unsupported comparison on tag `{key}`"))),
    };
    let exists = Expr::exists(select.to_owned());
    Ok(if positive { exists } else { exists.not() })
}

fn string_ops(clause: &RawClause) -> Result<()> {
    if matches!(
        clause.op,
        Op::Eq | Op::Ne | Op::Like | Op::ILike | Op::In | Op::NotIn
    ) && matches!(clause.literal, Literal::Text(_) | Literal::List(_))
    {
        Ok(())
    } else {
        Err(invalid(format!(
            "unsupported comparison on `{}`",
            clause.ident
        )))
    }
}

/// Registered models by name and tags; default order by name.
pub async fn search_models<C: ConnectionTrait>(
    db: &C,
    request: &SearchModels,
) -> Result<(Vec<RegisteredModel>, Option<String>)> {
    let mut cond = Cond::all();
    for clause in parse_raw(&request.filter)? {
        let ident = clause.ident.trim_matches('`');
        cond = cond.add(if ident == "name" {
            string_ops(&clause)?;
            compare(
                Expr::col((Models::Table, Models::Name)),
                clause.op,
                &clause.literal,
            )
        } else if let Some(key) = tag_key(ident) {
            let owner = [(ModelTags::Name, Expr::col((Models::Table, Models::Name)))];
            tag_condition(
                ModelTags::Table,
                &owner,
                ModelTags::Key,
                ModelTags::Value,
                key.trim_matches('`'),
                &clause,
            )?
        } else {
            return Err(invalid(format!(
                "unsupported filter key `{ident}`: use name or tags.<key>"
            )));
        });
    }
    let offset = crate::tracking::parse_page_token(request.page_token.as_deref())?;
    let limit = request.max_results.clamp(1, 10_000);
    let mut select = Query::select();
    select
        .column((Models::Table, Models::Name))
        .from(Models::Table)
        .cond_where(cond)
        .apply(|select| crate::projects::confine(select, (Models::Table, Models::Project)))
        .limit(limit + 1)
        .offset(offset);
    for spec in &request.order_by {
        let (key, order) = split_order(spec);
        match key {
            "name" => select.order_by((Models::Table, Models::Name), order),
            "timestamp" | "creation_timestamp" => {
                select.order_by((Models::Table, Models::CreatedAt), order)
            }
            "last_updated_timestamp" => select.order_by((Models::Table, Models::UpdatedAt), order),
            other => {
                return Err(invalid(format!(
                    "cannot order registered models by `{other}`"
                )));
            }
        };
    }
    select.order_by((Models::Table, Models::Name), Order::Asc);
    let rows = db.query_all(&select).await?;
    let more = rows.len() as u64 > limit;
    let names = rows
        .iter()
        .take(limit as usize)
        .map(|r| r.try_get::<String>("", "name"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut models = load_models(db, &names).await?;
    // load_models keeps the order of `names`.
    models.truncate(limit as usize);
    Ok((models, more.then(|| (offset + limit).to_string())))
}

fn split_order(spec: &str) -> (&str, Order) {
    let spec = spec.trim();
    match spec.rsplit_once(char::is_whitespace) {
        Some((key, dir)) if dir.eq_ignore_ascii_case("desc") => (key.trim(), Order::Desc),
        Some((key, dir)) if dir.eq_ignore_ascii_case("asc") => (key.trim(), Order::Asc),
        _ => (spec, Order::Asc),
    }
}

/// Model versions by name, run, source, number and tags; default newest change first.
pub async fn search_versions<C: ConnectionTrait>(
    db: &C,
    request: &SearchModels,
) -> Result<(Vec<ModelVersion>, Option<String>)> {
    let mut cond = Cond::all();
    for clause in parse_raw(&request.filter)? {
        let ident = clause.ident.trim_matches('`');
        let column = |c: Versions| Expr::col((Versions::Table, c));
        cond = cond.add(match ident {
            "name" => {
                string_ops(&clause)?;
                compare(column(Versions::Name), clause.op, &clause.literal)
            }
            "run_id" => {
                string_ops(&clause)?;
                compare(column(Versions::RunId), clause.op, &clause.literal)
            }
            "source_path" | "source" => {
                string_ops(&clause)?;
                compare(column(Versions::Source), clause.op, &clause.literal)
            }
            "version_number" => {
                let Literal::Number(_) = clause.literal else {
                    return Err(invalid("version_number compares with a number"));
                };
                compare(column(Versions::Version), clause.op, &clause.literal)
            }
            other => match tag_key(other) {
                Some(key) => {
                    let owner = [
                        (
                            VersionTags::Name,
                            Expr::col((Versions::Table, Versions::Name)),
                        ),
                        (
                            VersionTags::Version,
                            Expr::col((Versions::Table, Versions::Version)),
                        ),
                    ];
                    tag_condition(
                        VersionTags::Table,
                        &owner,
                        VersionTags::Key,
                        VersionTags::Value,
                        key.trim_matches('`'),
                        &clause,
                    )?
                }
                None => return Err(invalid(format!("unsupported filter key `{other}`"))),
            },
        });
    }
    let offset = crate::tracking::parse_page_token(request.page_token.as_deref())?;
    let limit = request.max_results.clamp(1, 10_000);
    let mut select = version_select();
    select.cond_where(cond).limit(limit + 1).offset(offset);
    for spec in &request.order_by {
        let (key, order) = split_order(spec);
        match key {
            "name" => select.order_by((Versions::Table, Versions::Name), order),
            "version_number" => select.order_by((Versions::Table, Versions::Version), order),
            "creation_timestamp" | "timestamp" => {
                select.order_by((Versions::Table, Versions::CreatedAt), order)
            }
            "last_updated_timestamp" => {
                select.order_by((Versions::Table, Versions::UpdatedAt), order)
            }
            other => return Err(invalid(format!("cannot order model versions by `{other}`"))),
        };
    }
    select
        .order_by((Versions::Table, Versions::UpdatedAt), Order::Desc)
        .order_by((Versions::Table, Versions::Name), Order::Asc)
        .order_by((Versions::Table, Versions::Version), Order::Desc);
    let rows = db.query_all(&select).await?;
    let more = rows.len() as u64 > limit;
    let versions = rows
        .iter()
        .take(limit as usize)
        .map(version_from_row)
        .collect::<Result<Vec<_>>>()?;
    Ok((
        attach_version_data(db, versions).await?,
        more.then(|| (offset + limit).to_string()),
    ))
}
