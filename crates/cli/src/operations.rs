//! The everyday subcommands: datasets, jobs, predictions and the live event stream. Each talks
//! to one service's HTTP API, prints a table (or the JSON with `--json`) and fails in one line.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::{Failure, Urls, print_table, request};

/// Datasets in the registry.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum DatasetCommand {
    /// Push a CSV or Parquet file as a new version of a dataset.
    Push {
        /// The file.
        file: String,
        /// The dataset's name.
        #[arg(long)]
        name: String,
    },
    /// Every dataset with its version count.
    List,
    /// A dataset's versions.
    Show {
        /// The dataset's name.
        name: String,
    },
}

/// Training jobs in the scheduler.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum JobsCommand {
    /// The latest jobs.
    List {
        /// Only jobs in this state (`queued`, `running`, `succeeded`, ...).
        #[arg(long)]
        status: Option<String>,
    },
    /// Cancel a job.
    Cancel {
        /// The job id.
        id: String,
    },
}

pub(crate) fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn rows(items: &Value, keys: &[&str]) -> Vec<Vec<String>> {
    items
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| keys.iter().map(|k| cell(&item[*k])).collect())
        .collect()
}

pub(crate) fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// `flywheel dataset ...`.
pub(crate) async fn dataset(
    http: &reqwest::Client,
    urls: &Urls,
    json_out: bool,
    command: DatasetCommand,
) -> Result<bool, Failure> {
    match command {
        DatasetCommand::Push { file, name } => {
            let bytes = tokio::fs::read(&file)
                .await
                .map_err(|e| Failure(format!("cannot read {file}: {e} (a CSV or Parquet file)")))?;
            let format = if file.ends_with(".parquet") {
                "parquet"
            } else {
                "csv"
            };
            let url = format!(
                "{}/api/v1/datasets/{name}/versions?format={format}",
                base(&urls.registry_url)
            );
            let version = request("registry", http.post(url).body(bytes)).await?;
            if json_out {
                println!("{version}");
            } else {
                print_table(
                    &["dataset", "version", "rows", "columns", "sha256"],
                    vec![vec![
                        cell(&version["dataset"]),
                        cell(&version["version"]),
                        cell(&version["row_count"]),
                        version["columns"]
                            .as_array()
                            .map_or(0, Vec::len)
                            .to_string(),
                        cell(&version["sha256"]),
                    ]],
                );
            }
            Ok(true)
        }
        DatasetCommand::List => {
            let url = format!("{}/api/v1/datasets", base(&urls.registry_url));
            let datasets = request("registry", http.get(url)).await?;
            if json_out {
                println!("{datasets}");
            } else {
                print_table(
                    &["dataset", "versions", "latest version", "rows"],
                    rows(
                        &datasets,
                        &["name", "versions", "latest_version", "latest_rows"],
                    ),
                );
            }
            Ok(true)
        }
        DatasetCommand::Show { name } => {
            let url = format!(
                "{}/api/v1/datasets/{name}/versions",
                base(&urls.registry_url)
            );
            let versions = request("registry", http.get(url)).await?;
            if json_out {
                println!("{versions}");
            } else {
                print_table(
                    &["seq", "version", "rows", "format", "bytes"],
                    rows(
                        &versions,
                        &["seq", "version", "row_count", "format", "size_bytes"],
                    ),
                );
            }
            Ok(true)
        }
    }
}

/// `flywheel jobs ...`.
pub(crate) async fn jobs(
    http: &reqwest::Client,
    urls: &Urls,
    json_out: bool,
    command: JobsCommand,
) -> Result<bool, Failure> {
    match command {
        JobsCommand::List { status } => {
            let mut url = format!("{}/api/v1/jobs?limit=50", base(&urls.scheduler_url));
            if let Some(status) = status {
                url.push_str(&format!("&status={status}"));
            }
            let jobs = request("scheduler", http.get(url)).await?;
            if json_out {
                println!("{jobs}");
            } else {
                print_table(
                    &[
                        "job", "model", "status", "priority", "attempts", "runner", "detail",
                    ],
                    rows(
                        &jobs,
                        &[
                            "job_id", "model", "status", "priority", "attempts", "runner", "detail",
                        ],
                    ),
                );
            }
            Ok(true)
        }
        JobsCommand::Cancel { id } => {
            let url = format!("{}/api/v1/jobs/{id}/cancel", base(&urls.scheduler_url));
            let job = request("scheduler", http.post(url)).await?;
            if json_out {
                println!("{job}");
            } else {
                println!("job {id}: {}", cell(&job["status"]));
            }
            Ok(true)
        }
    }
}

/// Records from a JSON file (a list of objects, or `{"instances": [...]}`) or a CSV file
/// (numbers where the text is one).
fn records(file: &str, text: &str) -> Result<Value, Failure> {
    if !file.ends_with(".csv") {
        return serde_json::from_str(text)
            .map_err(|e| Failure(format!("{file} is not JSON records: {e}")));
    }
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| Failure(format!("{file} is empty")))?
        .split(',')
        .map(str::trim)
        .collect();
    let records: Vec<Value> = lines
        .map(|line| {
            let object: serde_json::Map<String, Value> = header
                .iter()
                .zip(line.split(','))
                .map(|(name, raw)| {
                    let raw = raw.trim();
                    let value = match raw.parse::<f64>() {
                        _ if raw.is_empty() => Value::Null,
                        Ok(number) => json!(number),
                        Err(_) => json!(raw),
                    };
                    ((*name).to_owned(), value)
                })
                .collect();
            Value::Object(object)
        })
        .collect();
    Ok(Value::Array(records))
}

/// `flywheel predict DEPLOYMENT FILE`.
pub(crate) async fn predict(
    http: &reqwest::Client,
    urls: &Urls,
    json_out: bool,
    deployment: &str,
    file: &str,
) -> Result<bool, Failure> {
    let text = tokio::fs::read_to_string(file).await.map_err(|e| {
        Failure(format!(
            "cannot read {file}: {e} (a CSV or JSON file of records)"
        ))
    })?;
    let body = records(file, &text)?;
    let url = format!(
        "{}/v1/deployments/{deployment}/predict",
        base(&urls.deployer_url)
    );
    let answer = request("deployer", http.post(url).json(&body)).await?;
    if json_out {
        println!("{answer}");
        return Ok(true);
    }
    let table = answer["predictions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| {
            let probabilities = p["probabilities"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(class, share)| {
                            format!("{class}: {:.3}", share.as_f64().unwrap_or(0.0))
                        })
                        .collect::<Vec<_>>()
                        .join("  ")
                })
                .unwrap_or_default();
            vec![i.to_string(), cell(&p["prediction"]), probabilities]
        })
        .collect();
    print_table(&["row", "prediction", "probabilities"], table);
    println!(
        "{} version {} answered (request {})",
        cell(&answer["model"]),
        cell(&answer["version"]),
        cell(&answer["id"])
    );
    Ok(true)
}

/// The registry's live event stream, envelope by envelope.
pub(crate) struct EventStream {
    chunks: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl EventStream {
    /// Connects to `GET /api/v1/events/stream`.
    pub(crate) async fn open(urls: &Urls) -> Result<Self, Failure> {
        // No overall timeout: the stream lasts as long as it is wanted.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .default_headers(urls.credentials())
            .build()?;
        let url = format!("{}/api/v1/events/stream", base(&urls.registry_url));
        let response = http.get(&url).send().await.map_err(|e| {
            Failure(format!(
                "cannot reach the registry: {e} (is it running? `flywheel up` starts Flywheel; --registry-url points elsewhere)"
            ))
        })?;
        if !response.status().is_success() {
            return Err(Failure(format!(
                "the registry refused the event stream (HTTP {})",
                response.status()
            )));
        }
        Ok(Self {
            chunks: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        })
    }

    /// The next event's envelope (JSON), as text and parsed.
    pub(crate) async fn next(&mut self) -> Result<(String, Value), Failure> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                // Keep-alive comments carry no data.
                if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: "))
                    && let Ok(envelope) = serde_json::from_str::<Value>(data)
                {
                    return Ok((data.to_owned(), envelope));
                }
            }
            match self.chunks.next().await {
                Some(chunk) => self.buffer.push_str(&String::from_utf8_lossy(&chunk?)),
                None => {
                    return Err(Failure(
                        "the event stream ended (the registry stopped?)".into(),
                    ));
                }
            }
        }
    }
}

/// `flywheel events tail`: the live event stream, one line per event, until Ctrl-C (or
/// `count` events).
pub(crate) async fn tail(
    urls: &Urls,
    json_out: bool,
    filter: Option<&str>,
    count: Option<u64>,
) -> Result<bool, Failure> {
    let mut events = EventStream::open(urls).await?;
    eprintln!("listening to {} (Ctrl-C stops)", base(&urls.registry_url));
    let mut shown = 0u64;
    loop {
        let (data, envelope) = events.next().await?;
        let kind = envelope["type"].as_str().unwrap_or_default();
        if filter.is_some_and(|f| !kind.starts_with(f)) {
            continue;
        }
        if json_out {
            println!("{data}");
        } else {
            let payload = &envelope["payload"];
            let subject = ["model", "deployment", "dataset", "job_id"]
                .iter()
                .find_map(|k| payload[*k].as_str())
                .unwrap_or_default();
            let version = payload["version"]
                .as_u64()
                .map(|v| format!(" v{v}"))
                .unwrap_or_default();
            println!(
                "{}  {kind:<32} {subject}{version}",
                envelope["time"].as_str().unwrap_or_default()
            );
        }
        shown += 1;
        if count.is_some_and(|c| shown >= c) {
            return Ok(true);
        }
    }
}
