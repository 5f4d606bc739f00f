//! `flywheel train`: submits a training to the scheduler and follows it on the event stream
//! with a progress bar (hidden when stderr is not a terminal) until it completes or fails; then
//! the evaluation metrics as a table. `--detach` returns the job id at once.

use std::time::{SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::operations::EventStream;
use crate::{Failure, Urls, print_table, request};

/// What to train.
#[derive(Debug, clap::Args)]
pub(crate) struct TrainArgs {
    /// The registered model the result belongs to.
    #[arg(long)]
    model: String,
    /// `name@version` of a dataset, or `name` for its latest version.
    #[arg(long)]
    dataset: String,
    /// A built-in trainer (`logistic_regression`, `random_forest`, ...).
    #[arg(long, default_value = "logistic_regression")]
    trainer: String,
    /// Trainer parameters, `key=value` (numbers are read as numbers), e.g. `target=churned`.
    #[arg(long = "param")]
    params: Vec<String>,
    /// Return once the job is queued.
    #[arg(long)]
    detach: bool,
}

fn params(pairs: &[String]) -> Result<Value, Failure> {
    let mut params = serde_json::Map::new();
    for pair in pairs {
        let (key, raw) = pair
            .split_once('=')
            .ok_or_else(|| Failure(format!("--param {pair}: expected key=value")))?;
        let value = raw
            .parse::<f64>()
            .map(|n| json!(n))
            .unwrap_or_else(|_| json!(raw));
        params.insert(key.to_owned(), value);
    }
    Ok(Value::Object(params))
}

/// The dataset version: given, or the latest.
async fn dataset_version(
    http: &reqwest::Client,
    urls: &Urls,
    dataset: &str,
) -> Result<(String, String), Failure> {
    if let Some((name, version)) = dataset.split_once('@') {
        return Ok((name.to_owned(), version.to_owned()));
    }
    let url = format!(
        "{}/api/v1/datasets/{dataset}/versions",
        urls.registry_url.trim_end_matches('/')
    );
    let versions = request("registry", http.get(url)).await?;
    let latest = versions
        .as_array()
        .and_then(|v| v.iter().max_by_key(|v| v["seq"].as_i64()))
        .and_then(|v| v["version"].as_str())
        .ok_or_else(|| {
            Failure(format!(
                "dataset {dataset} has no versions (push one with `flywheel dataset push FILE --name {dataset}`)"
            ))
        })?;
    Ok((dataset.to_owned(), latest.to_owned()))
}

/// `flywheel train`.
pub(crate) async fn train(
    http: &reqwest::Client,
    urls: &Urls,
    json_out: bool,
    args: TrainArgs,
) -> Result<bool, Failure> {
    let (dataset, version) = dataset_version(http, urls, &args.dataset).await?;
    // Listen before submitting, so no event of the job is missed.
    let mut events = if args.detach {
        None
    } else {
        Some(EventStream::open(urls).await?)
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let body = json!({
        "request_id": format!("cli-{nanos}"),
        "model": args.model,
        "dataset": {"name": dataset, "version": version},
        "trainer": {"kind": "builtin", "name": args.trainer, "params": params(&args.params)?},
        "resources": {"cpu": 1.0, "memory_mb": 1024},
        "reason": "manual",
    });
    let url = format!("{}/api/v1/jobs", urls.scheduler_url.trim_end_matches('/'));
    let job = request("scheduler", http.post(url).json(&body)).await?;
    let job_id = job["job_id"].as_str().unwrap_or_default().to_owned();
    let Some(events) = events.as_mut() else {
        if json_out {
            println!("{job}");
        } else {
            println!("{job_id}");
        }
        return Ok(true);
    };
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bar:30} {percent:>3}% {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("job {job_id} queued"));
    loop {
        let (_, envelope) = events.next().await?;
        let payload = &envelope["payload"];
        if payload["job_id"].as_str() != Some(job_id.as_str()) {
            continue;
        }
        match envelope["type"].as_str().unwrap_or_default() {
            "training.job.started" => bar.set_message(format!(
                "attempt {} running on {}",
                payload["attempt"],
                payload["runner"].as_str().unwrap_or("a runner")
            )),
            "training.job.progress" => {
                let fraction = payload["fraction"].as_f64().unwrap_or(0.0).clamp(0.0, 1.0);
                bar.set_position((fraction * 1000.0) as u64);
                // Live metrics: what the trainer has measured so far, beside its message.
                let live: Vec<String> = payload["metrics"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .take(4)
                    .filter_map(|(k, v)| Some(format!("{k} {:.4}", v.as_f64()?)))
                    .collect();
                let message = payload["message"].as_str().unwrap_or_default();
                bar.set_message(if live.is_empty() {
                    message.to_owned()
                } else {
                    format!("{message} · {}", live.join(", "))
                });
            }
            "training.job.failed" => {
                let error = payload["error"].as_str().unwrap_or_default();
                if payload["will_retry"] == true {
                    bar.set_message(format!("attempt failed ({error}); retrying"));
                    continue;
                }
                bar.abandon();
                return Err(Failure(format!("job {job_id} failed: {error}")));
            }
            "training.job.cancelled" => {
                bar.abandon();
                return Err(Failure(format!("job {job_id} was cancelled")));
            }
            "training.job.completed" => {
                bar.finish_and_clear();
                if json_out {
                    println!("{payload}");
                } else {
                    let metrics: Vec<Vec<String>> = payload["metrics"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(name, value)| vec![name.clone(), crate::number(value)])
                        .collect();
                    print_table(&["metric", "value"], metrics);
                    println!(
                        "job {job_id} completed; gates {}; package {}",
                        if payload["gates_passed"] == true {
                            "passed"
                        } else {
                            "FAILED"
                        },
                        payload["package_uri"].as_str().unwrap_or_default()
                    );
                }
                return Ok(payload["gates_passed"] != false);
            }
            _ => {}
        }
    }
}
