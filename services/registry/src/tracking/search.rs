//! MLflow's run search grammar: `AND`-joined comparisons on metrics, params, tags and
//! attributes, plus `order_by` clauses; compiled to SQL conditions on `registry_runs`.

use sea_orm::sea_query::{Cond, Expr, ExprTrait, Func, Order, Query, SelectStatement};

use crate::schema::{LatestMetrics, Params, RunTags, Runs};
use crate::{RegistryError, Result};

/// A run attribute that can be filtered or ordered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attribute {
    Status,
    RunName,
    RunId,
    UserId,
    ArtifactUri,
    StartTime,
    EndTime,
}

impl Attribute {
    fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "status" => Attribute::Status,
            "run_name" | "runName" => Attribute::RunName,
            "run_id" | "run_uuid" => Attribute::RunId,
            "user_id" => Attribute::UserId,
            "artifact_uri" => Attribute::ArtifactUri,
            "start_time" | "created" | "Created" => Attribute::StartTime,
            "end_time" => Attribute::EndTime,
            other => return Err(invalid(format!("unknown run attribute `{other}`"))),
        })
    }

    fn column(self) -> Runs {
        match self {
            Attribute::Status => Runs::Status,
            Attribute::RunName => Runs::RunName,
            Attribute::RunId => Runs::RunId,
            Attribute::UserId => Runs::UserId,
            Attribute::ArtifactUri => Runs::ArtifactUri,
            Attribute::StartTime => Runs::StartTime,
            Attribute::EndTime => Runs::EndTime,
        }
    }

    fn is_numeric(self) -> bool {
        matches!(self, Attribute::StartTime | Attribute::EndTime)
    }
}

/// What a clause is about.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entity {
    Metric(String),
    Param(String),
    Tag(String),
    Attribute(Attribute),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
    ILike,
    In,
    NotIn,
    IsNull,
    IsNotNull,
}

/// A literal on the right of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Number(f64),
    Text(String),
    List(Vec<String>),
    Nothing,
}

/// One `entity op literal` comparison.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Clause {
    pub(crate) entity: Entity,
    pub(crate) op: Op,
    pub(crate) literal: Literal,
}

fn invalid(message: impl Into<String>) -> RegistryError {
    RegistryError::InvalidParameter(message.into())
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Number(f64),
    Op(&'static str),
    Open,
    Close,
    Comma,
}

fn tokenize(input: &str) -> Result<Vec<Token>> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            '\'' | '"' | '`' => {
                let quote = c;
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(invalid(format!("unterminated {quote} in filter"))),
                        Some(&ch) if ch == quote => {
                            // A doubled quote inside a string is a literal quote.
                            if chars.get(i + 1) == Some(&quote) {
                                text.push(quote);
                                i += 2;
                            } else {
                                i += 1;
                                break;
                            }
                        }
                        Some(&ch) => {
                            text.push(ch);
                            i += 1;
                        }
                    }
                }
                // Backticked and double-quoted names are identifiers; single quotes are strings.
                tokens.push(if quote == '\'' {
                    Token::Quoted(text)
                } else {
                    Token::Word(text)
                });
            }
            '!' | '<' | '>' | '=' => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                let op = match two.as_str() {
                    "!=" => "!=",
                    "<=" => "<=",
                    ">=" => ">=",
                    "==" => "=",
                    _ => match c {
                        '<' => "<",
                        '>' => ">",
                        '=' => "=",
                        _ => return Err(invalid("unexpected `!` in filter")),
                    },
                };
                i += if op.len() == 2 || two == "==" { 2 } else { 1 };
                tokens.push(Token::Op(op));
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !"()=!<>,'\"`".contains(chars[i])
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                // A dotted prefix followed by a quoted name: metrics.`my metric`.
                if word.ends_with('.') && matches!(chars.get(i), Some('`' | '"')) {
                    let quote = chars[i];
                    let end = chars[i + 1..]
                        .iter()
                        .position(|&ch| ch == quote)
                        .ok_or_else(|| invalid("unterminated name"))?;
                    let name: String = chars[i + 1..i + 1 + end].iter().collect();
                    i += end + 2;
                    tokens.push(Token::Word(format!("{word}{name}")));
                } else if let Ok(number) = word.parse::<f64>() {
                    tokens.push(Token::Number(number));
                } else {
                    tokens.push(Token::Word(word));
                }
            }
        }
    }
    Ok(tokens)
}

/// Parses an identifier such as `metrics.rmse`, `params.lr`, `tags."a b"`, `attributes.status`.
pub(crate) fn parse_entity(word: &str) -> Result<Entity> {
    let (kind, key) = word.split_once('.').ok_or_else(|| {
        invalid(format!(
            "`{word}`: expected metrics.<key>, params.<key>, tags.<key> or attributes.<name>"
        ))
    })?;
    if key.is_empty() {
        return Err(invalid(format!("`{word}` has no key")));
    }
    Ok(match kind.to_ascii_lowercase().as_str() {
        "metric" | "metrics" => Entity::Metric(key.to_owned()),
        "param" | "params" | "parameter" | "parameters" => Entity::Param(key.to_owned()),
        "tag" | "tags" => Entity::Tag(key.to_owned()),
        "attribute" | "attributes" | "attr" | "run" => Entity::Attribute(Attribute::parse(key)?),
        other => return Err(invalid(format!("unknown entity `{other}` in `{word}`"))),
    })
}

/// A comparison before its identifier is interpreted: `ident op literal`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawClause {
    pub(crate) ident: String,
    pub(crate) op: Op,
    pub(crate) literal: Literal,
}

/// Parses a run filter string; empty means no condition.
pub(crate) fn parse_filter(filter: &str) -> Result<Vec<Clause>> {
    parse_raw(filter)?
        .into_iter()
        .map(|raw| {
            check(Clause {
                entity: parse_entity(&raw.ident)?,
                op: raw.op,
                literal: raw.literal,
            })
        })
        .collect()
}

/// Parses `ident op literal [AND ...]` without interpreting identifiers (shared by the run,
/// registered-model and model-version searches).
pub(crate) fn parse_raw(filter: &str) -> Result<Vec<RawClause>> {
    let tokens = tokenize(filter)?;
    let mut clauses = Vec::new();
    let mut pos = 0;
    while pos < tokens.len() {
        if !clauses.is_empty() {
            match tokens.get(pos) {
                Some(Token::Word(w)) if w.eq_ignore_ascii_case("and") => pos += 1,
                other => {
                    return Err(invalid(format!(
                        "expected AND between comparisons, found {other:?} (OR is not supported)"
                    )));
                }
            }
        }
        let Some(Token::Word(word)) = tokens.get(pos) else {
            return Err(invalid("expected an identifier such as metrics.accuracy"));
        };
        let ident = word.clone();
        pos += 1;
        let (op, consumed) = match (tokens.get(pos), tokens.get(pos + 1), tokens.get(pos + 2)) {
            (Some(Token::Op(o)), _, _) => (
                match *o {
                    "=" => Op::Eq,
                    "!=" => Op::Ne,
                    "<" => Op::Lt,
                    "<=" => Op::Le,
                    ">" => Op::Gt,
                    _ => Op::Ge,
                },
                1,
            ),
            (Some(Token::Word(a)), Some(Token::Word(b)), Some(Token::Word(c)))
                if a.eq_ignore_ascii_case("is")
                    && b.eq_ignore_ascii_case("not")
                    && c.eq_ignore_ascii_case("null") =>
            {
                (Op::IsNotNull, 3)
            }
            (Some(Token::Word(a)), Some(Token::Word(b)), _)
                if a.eq_ignore_ascii_case("is") && b.eq_ignore_ascii_case("null") =>
            {
                (Op::IsNull, 2)
            }
            (Some(Token::Word(a)), Some(Token::Word(b)), _)
                if a.eq_ignore_ascii_case("not") && b.eq_ignore_ascii_case("in") =>
            {
                (Op::NotIn, 2)
            }
            (Some(Token::Word(a)), _, _) if a.eq_ignore_ascii_case("like") => (Op::Like, 1),
            (Some(Token::Word(a)), _, _) if a.eq_ignore_ascii_case("ilike") => (Op::ILike, 1),
            (Some(Token::Word(a)), _, _) if a.eq_ignore_ascii_case("in") => (Op::In, 1),
            other => {
                return Err(invalid(format!(
                    "expected a comparison after `{word}`, found {:?}",
                    other.0
                )));
            }
        };
        pos += consumed;
        let literal = match op {
            Op::IsNull | Op::IsNotNull => Literal::Nothing,
            Op::In | Op::NotIn => {
                if tokens.get(pos) != Some(&Token::Open) {
                    return Err(invalid("IN needs a parenthesised list of strings"));
                }
                pos += 1;
                let mut items = Vec::new();
                loop {
                    match tokens.get(pos) {
                        Some(Token::Quoted(s) | Token::Word(s)) => items.push(s.clone()),
                        other => {
                            return Err(invalid(format!(
                                "expected a string in the IN list, found {other:?}"
                            )));
                        }
                    }
                    pos += 1;
                    match tokens.get(pos) {
                        Some(Token::Comma) => pos += 1,
                        Some(Token::Close) => {
                            pos += 1;
                            break;
                        }
                        other => {
                            return Err(invalid(format!(
                                "expected `,` or `)` in the IN list, found {other:?}"
                            )));
                        }
                    }
                }
                Literal::List(items)
            }
            _ => {
                let literal = match tokens.get(pos) {
                    Some(Token::Number(n)) => Literal::Number(*n),
                    Some(Token::Quoted(s)) => Literal::Text(s.clone()),
                    other => {
                        return Err(invalid(format!(
                            "expected a value after the comparison, found {other:?}"
                        )));
                    }
                };
                pos += 1;
                literal
            }
        };
        clauses.push(RawClause { ident, op, literal });
    }
    Ok(clauses)
}

/// Rejects combinations MLflow rejects (e.g. `LIKE` on a metric, a string compared to a metric).
pub(crate) fn check(clause: Clause) -> Result<Clause> {
    let numeric_ops = [Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge];
    let string_ops = [
        Op::Eq,
        Op::Ne,
        Op::Like,
        Op::ILike,
        Op::IsNull,
        Op::IsNotNull,
    ];
    let ok = match &clause.entity {
        Entity::Metric(_) => {
            numeric_ops.contains(&clause.op) && matches!(clause.literal, Literal::Number(_))
        }
        Entity::Param(_) | Entity::Tag(_) => {
            string_ops.contains(&clause.op)
                && matches!(clause.literal, Literal::Text(_) | Literal::Nothing)
        }
        Entity::Attribute(a) if a.is_numeric() => {
            numeric_ops.contains(&clause.op) && matches!(clause.literal, Literal::Number(_))
        }
        Entity::Attribute(_) => {
            [Op::Eq, Op::Ne, Op::Like, Op::ILike, Op::In, Op::NotIn].contains(&clause.op)
                && matches!(clause.literal, Literal::Text(_) | Literal::List(_))
        }
    };
    if ok {
        Ok(clause)
    } else {
        Err(invalid(format!(
            "invalid comparison {:?} {:?} {:?}",
            clause.entity, clause.op, clause.literal
        )))
    }
}

pub(crate) fn compare(column: Expr, op: Op, literal: &Literal) -> Expr {
    let lower = |e: Expr| Expr::expr(Func::lower(e));
    match (op, literal) {
        (Op::Eq, Literal::Number(n)) => column.eq(*n),
        (Op::Ne, Literal::Number(n)) => column.ne(*n),
        (Op::Lt, Literal::Number(n)) => column.lt(*n),
        (Op::Le, Literal::Number(n)) => column.lte(*n),
        (Op::Gt, Literal::Number(n)) => column.gt(*n),
        (Op::Ge, Literal::Number(n)) => column.gte(*n),
        (Op::Eq, Literal::Text(s)) => column.eq(s.as_str()),
        (Op::Ne, Literal::Text(s)) => column.ne(s.as_str()),
        (Op::Like, Literal::Text(s)) => column.like(s.as_str()),
        (Op::ILike, Literal::Text(s)) => lower(column).like(s.to_lowercase()),
        (Op::In, Literal::List(items)) => column.is_in(items.iter().map(String::as_str)),
        (Op::NotIn, Literal::List(items)) => column.is_not_in(items.iter().map(String::as_str)),
        // Unreachable after `check`; a condition that matches nothing is the safe answer.
        _ => Expr::val(1).eq(0),
    }
}

fn run_id_matches<T: sea_orm::sea_query::Iden + Copy + 'static>(table: T, column: T) -> Expr {
    Expr::col((table, column)).equals((Runs::Table, Runs::RunId))
}

fn key_value_exists<T: sea_orm::sea_query::Iden + Copy + 'static>(
    table: T,
    run_id: T,
    key_col: T,
    value_col: T,
    key: &str,
    value: Option<(Op, &Literal)>,
) -> Expr {
    let mut select = Query::select();
    select
        .expr(Expr::val(1))
        .from(table)
        .and_where(run_id_matches(table, run_id))
        .and_where(Expr::col((table, key_col)).eq(key));
    if let Some((op, literal)) = value {
        select.and_where(compare(Expr::col((table, value_col)), op, literal));
    }
    Expr::exists(select.to_owned())
}

/// A param or tag clause: `IS NULL` means the run lacks the key.
fn key_value_condition<T: sea_orm::sea_query::Iden + Copy + 'static>(
    table: T,
    run_id: T,
    key_col: T,
    value_col: T,
    key: &str,
    clause: &Clause,
) -> Expr {
    match clause.op {
        Op::IsNull => key_value_exists(table, run_id, key_col, value_col, key, None).not(),
        Op::IsNotNull => key_value_exists(table, run_id, key_col, value_col, key, None),
        op => key_value_exists(
            table,
            run_id,
            key_col,
            value_col,
            key,
            Some((op, &clause.literal)),
        ),
    }
}

/// The SQL condition for a list of clauses.
pub(crate) fn condition(clauses: &[Clause]) -> Cond {
    let mut all = Cond::all();
    for clause in clauses {
        let expr = match &clause.entity {
            Entity::Metric(key) => {
                let mut select = Query::select();
                select
                    .expr(Expr::val(1))
                    .from(LatestMetrics::Table)
                    .and_where(run_id_matches(LatestMetrics::Table, LatestMetrics::RunId))
                    .and_where(
                        Expr::col((LatestMetrics::Table, LatestMetrics::Key)).eq(key.as_str()),
                    )
                    .and_where(Expr::col((LatestMetrics::Table, LatestMetrics::IsNan)).eq(false))
                    .and_where(compare(
                        Expr::col((LatestMetrics::Table, LatestMetrics::Value)),
                        clause.op,
                        &clause.literal,
                    ));
                Expr::exists(select.to_owned())
            }
            Entity::Param(key) => key_value_condition(
                Params::Table,
                Params::RunId,
                Params::Key,
                Params::Value,
                key,
                clause,
            ),
            Entity::Tag(key) => key_value_condition(
                RunTags::Table,
                RunTags::RunId,
                RunTags::Key,
                RunTags::Value,
                key,
                clause,
            ),
            Entity::Attribute(attribute) => compare(
                Expr::col((Runs::Table, attribute.column())),
                clause.op,
                &clause.literal,
            ),
        };
        all = all.add(expr);
    }
    all
}

/// Applies `order_by` clauses (`metrics.rmse ASC`, `attributes.start_time DESC`, ...), then
/// MLflow's default order (newest first, then run id).
pub(crate) fn apply_order(select: &mut SelectStatement, order_by: &[String]) -> Result<()> {
    for (index, spec) in order_by.iter().enumerate() {
        let spec = spec.trim();
        if spec.is_empty() {
            continue;
        }
        let (name, direction) = match spec.rsplit_once(char::is_whitespace) {
            Some((name, dir)) if dir.eq_ignore_ascii_case("asc") => (name.trim(), Order::Asc),
            Some((name, dir)) if dir.eq_ignore_ascii_case("desc") => (name.trim(), Order::Desc),
            _ => (spec, Order::Asc),
        };
        let name = name.replace(['`', '"'], "");
        let entity = if name.contains('.') {
            parse_entity(&name)?
        } else {
            Entity::Attribute(Attribute::parse(&name)?)
        };
        // Metrics, params and tags are LEFT JOINed under an alias (one per order clause): a
        // join lets the database hash-join instead of running a sub-query per run.
        let alias = sea_orm::sea_query::Alias::new(format!("order_{index}"));
        let mut join =
            |table: sea_orm::sea_query::DynIden, run_id: &str, key_col: &str, key: &str| {
                let run_col = sea_orm::sea_query::Alias::new(run_id);
                let key_column = sea_orm::sea_query::Alias::new(key_col);
                select.join_as(
                    sea_orm::sea_query::JoinType::LeftJoin,
                    table,
                    alias.clone(),
                    Cond::all()
                        .add(Expr::col((alias.clone(), run_col)).equals((Runs::Table, Runs::RunId)))
                        .add(Expr::col((alias.clone(), key_column)).eq(key)),
                );
                Expr::col((alias.clone(), sea_orm::sea_query::Alias::new("value")))
            };
        use sea_orm::sea_query::IntoIden;
        let expr = match &entity {
            Entity::Metric(key) => join(LatestMetrics::Table.into_iden(), "run_id", "key", key),
            Entity::Param(key) => join(Params::Table.into_iden(), "run_id", "key", key),
            Entity::Tag(key) => join(RunTags::Table.into_iden(), "run_id", "key", key),
            Entity::Attribute(attribute) => Expr::col((Runs::Table, attribute.column())),
        };
        select.order_by_expr_with_nulls(expr, direction, sea_orm::sea_query::NullOrdering::Last);
    }
    select
        .order_by((Runs::Table, Runs::StartTime), Order::Desc)
        .order_by((Runs::Table, Runs::RunId), Order::Asc);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mlflow_filters() {
        let clauses = parse_filter(
            "metrics.rmse < 0.5 and params.lr = '0.01' AND tags.`mlflow.user` != 'bob' and attributes.status IN ('FINISHED', 'RUNNING') and tags.x IS NULL",
        )
        .expect("parse");
        assert_eq!(clauses.len(), 5);
        assert_eq!(
            clauses[0],
            Clause {
                entity: Entity::Metric("rmse".into()),
                op: Op::Lt,
                literal: Literal::Number(0.5)
            }
        );
        assert_eq!(clauses[1].literal, Literal::Text("0.01".into()));
        assert_eq!(clauses[2].entity, Entity::Tag("mlflow.user".into()));
        assert_eq!(
            clauses[3].literal,
            Literal::List(vec!["FINISHED".into(), "RUNNING".into()])
        );
        assert_eq!(clauses[4].op, Op::IsNull);
        assert!(parse_filter("").expect("empty").is_empty());
        assert_eq!(
            parse_filter("params.name = 'it''s'").expect("quote")[0].literal,
            Literal::Text("it's".into())
        );
    }

    #[test]
    fn rejects_what_mlflow_rejects() {
        for bad in [
            "metrics.rmse LIKE 'x'",
            "metrics.rmse = 'high'",
            "params.lr > 0.1",
            "rmse < 1",
            "metrics.rmse < 1 OR metrics.rmse > 2",
            "attributes.color = 'red'",
            "params.lr = 'unterminated",
            "metrics.",
        ] {
            assert!(parse_filter(bad).is_err(), "accepted {bad:?}");
        }
    }
}
