//! External trainers: a user command run in a fresh work directory.
//!
//! The contract (docs/trainers.md): the command runs under `sh -c` with the working directory
//! set to the attempt's directory and these variables: `FLYWHEEL_DATASET_PATH` (the dataset
//! file), `FLYWHEEL_DATASET_FORMAT` (`csv`/`parquet`), `FLYWHEEL_DATASET` (`name@version`),
//! `FLYWHEEL_PARAMS` (JSON object), `FLYWHEEL_SEED`, `FLYWHEEL_OUTPUT_DIR` (write the model
//! here), `FLYWHEEL_JOB_ID`, `FLYWHEEL_ATTEMPT`, `FLYWHEEL_MODEL_NAME`, and
//! `MLFLOW_TRACKING_URI` (the registry, for trainers that log through MLflow). Lines on stdout
//! of the form `FLYWHEEL_METRIC <name> <value>` report metrics and `FLYWHEEL_PROGRESS
//! <fraction> [message]` progress; every other line is logged. The output directory must hold
//! `model.onnx` (flavor `onnx`) or other model files (flavor `external`, the first file by
//! name is the model), optionally `signature.json`. A non-zero exit fails the attempt (and is
//! retried); an empty output directory fails the job.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use bytes::Bytes;
use flywheel_artifacts::package::PackageLineage;
use flywheel_events::payloads::{Signature, TrainingJobDispatched, TrainingRequested};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::work::{Output, Progress};
use crate::{TrainFailure, Workshop};

/// Parses one stdout line of the metric/progress protocol.
fn protocol_line(line: &str) -> Option<ProtocolLine> {
    let mut words = line.split_whitespace();
    match words.next()? {
        "FLYWHEEL_METRIC" => {
            let name = words.next()?.to_owned();
            let value = words.next()?.parse::<f64>().ok()?;
            Some(ProtocolLine::Metric(name, value))
        }
        "FLYWHEEL_PROGRESS" => {
            let fraction = words.next()?.parse::<f64>().ok()?;
            Some(ProtocolLine::Progress(
                fraction,
                words.collect::<Vec<_>>().join(" "),
            ))
        }
        _ => None,
    }
}

enum ProtocolLine {
    Metric(String, f64),
    Progress(f64, String),
}

/// Kills the trainer's whole process group when dropped: whether the attempt ends, times out,
/// is cancelled or its future is abandoned, nothing the trainer started outlives it.
struct ProcessGroup {
    pid: Option<u32>,
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

async fn read_outputs(dir: &Path) -> Result<Vec<(String, Bytes)>, TrainFailure> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let mut entries = tokio::fs::read_dir(&current)
            .await
            .map_err(|e| TrainFailure::retryable(format!("reading the output: {e}")))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| TrainFailure::retryable(format!("reading the output: {e}")))?
        {
            let path = entry.path();
            let kind = entry
                .file_type()
                .await
                .map_err(|e| TrainFailure::retryable(e.to_string()))?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let relative = path
                    .strip_prefix(dir)
                    .map_err(|e| TrainFailure::retryable(e.to_string()))?
                    .to_string_lossy()
                    .replace('\\', "/");
                let bytes = tokio::fs::read(&path)
                    .await
                    .map_err(|e| TrainFailure::retryable(e.to_string()))?;
                files.push((relative, Bytes::from(bytes)));
            }
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// Runs the command and packages what it wrote.
#[allow(clippy::too_many_lines)]
pub(crate) async fn train(
    workshop: &Workshop,
    dispatched: &TrainingJobDispatched,
    request: &TrainingRequested,
    dataset: Bytes,
    format: &str,
    progress: &Progress,
    stop: CancellationToken,
) -> Result<Output, TrainFailure> {
    let dir = workshop
        .config
        .work_dir
        .join(format!("{}-{}", dispatched.job_id, dispatched.attempt));
    let io = |e: std::io::Error| TrainFailure::retryable(format!("work directory: {e}"));
    if tokio::fs::try_exists(&dir).await.unwrap_or(false) {
        tokio::fs::remove_dir_all(&dir).await.map_err(io)?;
    }
    let output_dir = dir.join("output");
    tokio::fs::create_dir_all(&output_dir).await.map_err(io)?;
    let extension = if format == "parquet" {
        "parquet"
    } else {
        "csv"
    };
    let data_path = dir.join(format!("data.{extension}"));
    tokio::fs::write(&data_path, &dataset).await.map_err(io)?;
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let seed = request
        .trainer
        .params
        .get("seed")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(42);
    let params = serde_json::to_string(&request.trainer.params)
        .map_err(|e| TrainFailure::invalid(e.to_string()))?;
    let script = if workshop.config.limit_memory {
        format!(
            "ulimit -v {} 2>/dev/null; {}",
            request.resources.memory_mb.saturating_mul(1024),
            request.trainer.name
        )
    } else {
        request.trainer.name.clone()
    };
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(&script)
        .current_dir(absolute(&dir))
        .env("FLYWHEEL_DATASET_PATH", absolute(&data_path))
        .env("FLYWHEEL_DATASET_FORMAT", extension)
        .env(
            "FLYWHEEL_DATASET",
            format!("{}@{}", request.dataset.name, request.dataset.version),
        )
        .env("FLYWHEEL_PARAMS", &params)
        .env("FLYWHEEL_SEED", seed.to_string())
        .env("FLYWHEEL_OUTPUT_DIR", absolute(&output_dir))
        .env("FLYWHEEL_JOB_ID", &dispatched.job_id)
        .env("FLYWHEEL_ATTEMPT", dispatched.attempt.to_string())
        .env("FLYWHEEL_MODEL_NAME", &request.model)
        .env("MLFLOW_TRACKING_URI", &workshop.config.registry_url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(token) = &workshop.config.registry_token {
        command.env("MLFLOW_TRACKING_TOKEN", token);
    }
    let mut child = command
        .spawn()
        .map_err(|e| TrainFailure::retryable(format!("cannot start `sh`: {e}")))?;
    let group = ProcessGroup { pid: child.id() };
    let job = dispatched.job_id.clone();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let reporter = progress.clone();
    let stdout_task = tokio::spawn(async move {
        let mut metrics = BTreeMap::new();
        let (mut fraction_so_far, mut message_so_far) = (0.0, String::new());
        if let Some(stdout) = stdout {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match protocol_line(&line) {
                    Some(ProtocolLine::Metric(name, value)) => {
                        metrics.insert(name, value);
                        reporter.report_metrics(
                            fraction_so_far,
                            &message_so_far,
                            metrics.clone(),
                            false,
                        );
                    }
                    Some(ProtocolLine::Progress(fraction, message)) => {
                        reporter.report_metrics(fraction, &message, metrics.clone(), false);
                        (fraction_so_far, message_so_far) = (fraction, message);
                    }
                    None => tracing::info!(job = %job, stream = "stdout", "{line}"),
                }
            }
        }
        metrics
    });
    let job = dispatched.job_id.clone();
    let stderr_task = tokio::spawn(async move {
        let mut tail: Vec<String> = Vec::new();
        if let Some(stderr) = stderr {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(job = %job, stream = "stderr", "{line}");
                tail.push(line);
                if tail.len() > 5 {
                    tail.remove(0);
                }
            }
        }
        tail
    });
    let status = tokio::select! {
        status = child.wait() => status.map_err(|e| TrainFailure::retryable(e.to_string()))?,
        () = stop.cancelled() => {
            drop(group);
            let _ = child.wait().await;
            return Err(TrainFailure::retryable("stopped".to_owned()));
        }
    };
    // The trainer may have left children holding the pipes; end them with it.
    drop(group);
    let metrics = stdout_task.await.unwrap_or_default();
    let tail = stderr_task.await.unwrap_or_default();
    if !status.success() {
        return Err(TrainFailure::retryable(format!(
            "trainer exited with {status}: {}",
            tail.join(" | ")
        )));
    }
    let mut files = read_outputs(&output_dir).await?;
    let signature: Signature = match files.iter().position(|(p, _)| p == "signature.json") {
        Some(i) => {
            let (_, bytes) = files.remove(i);
            serde_json::from_slice(&bytes)
                .map_err(|e| TrainFailure::invalid(format!("signature.json: {e}")))?
        }
        None => Signature::default(),
    };
    let (flavor, model_file) = if files.iter().any(|(p, _)| p == "model.onnx") {
        ("onnx", "model.onnx".to_owned())
    } else {
        match files.first() {
            Some((path, _)) => ("external", path.clone()),
            None => {
                return Err(TrainFailure::invalid(
                    "the trainer exited successfully but wrote no model to FLYWHEEL_OUTPUT_DIR"
                        .to_owned(),
                ));
            }
        }
    };
    let _ = tokio::fs::remove_dir_all(&dir).await;
    Ok(Output {
        flavor: flavor.into(),
        model_file,
        files,
        metrics,
        signature,
        lineage: PackageLineage {
            dataset: Some(request.dataset.clone()),
            trainer: "external".into(),
            params: request.trainer.params.clone(),
            seed,
            code_ref: None,
        },
    })
}
