//! What the registry and the deployer hold: runs, models (versions, aliases, promotions) and
//! deployments. Tables by default, the JSON with `--json`, one-line failures.

use serde_json::{Value, json};

use crate::operations::{base, cell};
use crate::{Failure, Urls, print_table, request};

/// Runs logged through the tracking API.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum RunsCommand {
    /// The latest runs of an experiment.
    List {
        /// The experiment's name.
        #[arg(long, default_value = "Default")]
        experiment: String,
    },
    /// A run's parameters and metrics.
    Show {
        /// The run id.
        id: String,
    },
}

/// Registered models.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ModelsCommand {
    /// Every model with its aliases.
    List,
    /// A model's versions, gates, aliases and deployments.
    Show {
        /// The model.
        name: String,
    },
    /// Ask to point an alias at a version, under the model's gates and approvals.
    Promote {
        /// The model.
        name: String,
        /// The version.
        version: u32,
        /// The alias.
        #[arg(long, default_value = "production")]
        alias: String,
    },
    /// Set an alias directly (refused for aliases the model's policy protects).
    Alias {
        /// The model.
        name: String,
        /// The alias.
        alias: String,
        /// The version.
        version: u32,
    },
}

/// `flywheel deploy` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct DeployArgs {
    /// The deployment's name.
    name: String,
    /// The registered model.
    #[arg(long)]
    model: String,
    /// Follow this alias (new versions roll out as it moves).
    #[arg(long, conflicts_with = "version")]
    alias: Option<String>,
    /// Or serve this version.
    #[arg(long)]
    version: Option<u32>,
    /// Canary steps in percent, e.g. `10,50,100` (default: switch at once).
    #[arg(long, value_delimiter = ',')]
    canary: Vec<u8>,
    /// Seconds to watch each canary step.
    #[arg(long, default_value_t = 60)]
    step_seconds: u64,
}

/// `flywheel runs ...`.
pub(crate) async fn runs(
    http: &reqwest::Client,
    urls: &Urls,
    json_out: bool,
    command: RunsCommand,
) -> Result<bool, Failure> {
    let registry = base(&urls.registry_url);
    match command {
        RunsCommand::List { experiment } => {
            let found = request(
                "registry",
                http.get(reqwest::Url::parse_with_params(
                    &format!("{registry}/api/2.0/mlflow/experiments/get-by-name"),
                    [("experiment_name", &experiment)],
                )?),
            )
            .await?;
            let id = cell(&found["experiment"]["experiment_id"]);
            let runs = request(
                "registry",
                http.post(format!("{registry}/api/2.0/mlflow/runs/search"))
                    .json(&json!({"experiment_ids": [id], "max_results": 50})),
            )
            .await?;
            if json_out {
                println!("{runs}");
                return Ok(true);
            }
            let rows = runs["runs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|run| {
                    let metrics = run["data"]["metrics"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .take(4)
                        .map(|m| {
                            format!(
                                "{} {:.4}",
                                cell(&m["key"]),
                                m["value"].as_f64().unwrap_or(f64::NAN)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    vec![
                        cell(&run["info"]["run_id"]),
                        cell(&run["info"]["run_name"]),
                        cell(&run["info"]["status"]),
                        metrics,
                    ]
                })
                .collect();
            print_table(&["run", "name", "status", "metrics"], rows);
            Ok(true)
        }
        RunsCommand::Show { id } => {
            let run = request(
                "registry",
                http.get(format!("{registry}/api/v1/dashboard/runs/{id}")),
            )
            .await?;
            if json_out {
                println!("{run}");
                return Ok(true);
            }
            println!(
                "run {} ({}) {}",
                cell(&run["run_id"]),
                cell(&run["name"]),
                cell(&run["status"])
            );
            let pairs = |object: &Value| -> Vec<Vec<String>> {
                object
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| vec![k.clone(), cell(v)])
                    .collect()
            };
            print_table(&["param", "value"], pairs(&run["params"]));
            print_table(&["metric", "latest"], pairs(&run["metrics"]));
            Ok(true)
        }
    }
}

/// `flywheel models ...`.
pub(crate) async fn models(
    http: &reqwest::Client,
    urls: &Urls,
    json_out: bool,
    command: ModelsCommand,
) -> Result<bool, Failure> {
    let registry = base(&urls.registry_url);
    match command {
        ModelsCommand::List => {
            let found = request(
                "registry",
                http.get(format!(
                    "{registry}/api/2.0/mlflow/registered-models/search?max_results=1000"
                )),
            )
            .await?;
            if json_out {
                println!("{found}");
                return Ok(true);
            }
            let rows = found["registered_models"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    let aliases = m["aliases"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| format!("{} → v{}", cell(&a["alias"]), cell(&a["version"])))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let latest = m["latest_versions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v["version"].as_str().map(str::to_owned))
                        .max_by_key(|v| v.parse::<u64>().unwrap_or(0))
                        .unwrap_or_default();
                    vec![cell(&m["name"]), aliases, latest]
                })
                .collect();
            print_table(&["model", "aliases", "latest version"], rows);
            Ok(true)
        }
        ModelsCommand::Show { name } => {
            let model = request(
                "registry",
                http.get(format!("{registry}/api/v1/dashboard/models/{name}")),
            )
            .await?;
            if json_out {
                println!("{model}");
                return Ok(true);
            }
            let aliases = model["aliases"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(a, v)| format!("{a} → v{v}"))
                .collect::<Vec<_>>()
                .join(", ");
            println!(
                "model {} · aliases: {}",
                cell(&model["name"]),
                if aliases.is_empty() { "none" } else { &aliases }
            );
            let rows = model["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    let metrics = v["metrics"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .take(4)
                        .map(|(k, x)| format!("{k} {:.3}", x.as_f64().unwrap_or(f64::NAN)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let dataset = if v["dataset"].is_object() {
                        format!(
                            "{}@{}",
                            cell(&v["dataset"]["name"]),
                            cell(&v["dataset"]["version"])
                        )
                    } else {
                        "-".into()
                    };
                    vec![
                        format!("v{}", cell(&v["version"])),
                        v["aliases"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(cell)
                            .collect::<Vec<_>>()
                            .join(", "),
                        metrics,
                        if v["gates_passed"] == true {
                            "pass"
                        } else {
                            "FAIL"
                        }
                        .into(),
                        dataset,
                    ]
                })
                .collect();
            print_table(&["version", "aliases", "metrics", "gates", "dataset"], rows);
            let deployments: Vec<Vec<String>> = model["deployments"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    vec![
                        cell(&d["deployment"]),
                        cell(&d["version"]),
                        cell(&d["status"]),
                    ]
                })
                .collect();
            if !deployments.is_empty() {
                print_table(&["deployment", "version", "status"], deployments);
            }
            Ok(true)
        }
        ModelsCommand::Promote {
            name,
            version,
            alias,
        } => {
            let promotion = request(
                "registry",
                http.post(format!(
                    "{registry}/api/v1/models/{name}/versions/{version}/promotions"
                ))
                .header("x-flywheel-actor", actor())
                .json(&json!({"alias": alias})),
            )
            .await?;
            if json_out {
                println!("{promotion}");
            } else {
                let status = cell(&promotion["status"]);
                println!(
                    "promotion {} of {name} v{version} to `{alias}`: {status}{}",
                    cell(&promotion["id"]),
                    if status == "pending" {
                        " (waiting for an approver)"
                    } else {
                        ""
                    }
                );
            }
            Ok(true)
        }
        ModelsCommand::Alias {
            name,
            alias,
            version,
        } => {
            request(
                "registry",
                http.post(format!("{registry}/api/2.0/mlflow/registered-models/alias"))
                    .header("x-flywheel-actor", actor())
                    .json(&json!({"name": name, "alias": alias, "version": version.to_string()})),
            )
            .await?;
            if json_out {
                println!(
                    "{}",
                    json!({"name": name, "alias": alias, "version": version})
                );
            } else {
                println!("{name}: `{alias}` → v{version}");
            }
            Ok(true)
        }
    }
}

/// Who the CLI acts as in audit logs: `$FLYWHEEL_ACTOR`, else `$USER`.
fn actor() -> String {
    std::env::var("FLYWHEEL_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "cli".into())
}

/// `flywheel deploy`.
pub(crate) async fn deploy(
    http: &reqwest::Client,
    urls: &Urls,
    json_out: bool,
    args: DeployArgs,
) -> Result<bool, Failure> {
    if args.alias.is_none() && args.version.is_none() {
        return Err(Failure(
            "say what to serve: --alias production or --version N".into(),
        ));
    }
    let strategy = if args.canary.is_empty() {
        json!({"kind": "direct"})
    } else {
        json!({"kind": "canary", "steps": args.canary, "step_seconds": args.step_seconds})
    };
    let deployment = request(
        "deployer",
        http.put(format!(
            "{}/api/v1/deployments/{}",
            base(&urls.deployer_url),
            args.name
        ))
        .header("x-flywheel-actor", actor())
        .json(&json!({
            "model": args.model,
            "alias": args.alias,
            "version": args.version,
            "strategy": strategy,
        })),
    )
    .await?;
    if json_out {
        println!("{deployment}");
    } else {
        print_table(
            &["deployment", "model", "follows", "serving", "status"],
            vec![vec![
                cell(&deployment["name"]),
                cell(&deployment["model"]),
                deployment["alias"].as_str().map_or_else(
                    || format!("v{}", cell(&deployment["version"])),
                    str::to_owned,
                ),
                cell(&deployment["serving_version"]),
                cell(&deployment["status"]),
            ]],
        );
    }
    Ok(true)
}
