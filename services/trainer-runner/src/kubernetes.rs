//! The `kubernetes` backend: each attempt runs as a Kubernetes `Job` whose one pod runs this
//! image's `flywheel-trainer-runner attempt`, with the requested CPU, memory and GPUs. The
//! runner keeps claiming, heartbeating and reporting as for local attempts; here it creates the
//! Job, follows its status (pending reasons become progress), relays the progress lines of the
//! pod's log, and reads the pod's result line once the Job finished. A stopped, timed-out or
//! abandoned attempt's Job is deleted; finished Jobs stay `k8s_keep_finished_secs` for
//! `kubectl logs`.

mod manifest;

use std::time::Duration;

use flywheel_events::Event;
use flywheel_events::payloads::{TrainingJobDispatched, TrainingJobProgress};
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::{Api, Client, Config};

use crate::TrainFailure;
use crate::attempt::{PROGRESS_LINE, PodResult};
use crate::config::KubernetesOptions;
use crate::work::Progress;

pub(crate) use manifest::job_name;
use manifest::{RUNNER_POD_LABEL, label_value};

/// The training container's name in every Job.
const CONTAINER: &str = "train";

/// How long start-up waits to list the Jobs a previous process left.
const ORPHAN_LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// Waiting reasons that only a person can clear (a wrong image, a missing Secret key), unlike
/// `Unschedulable`, which a node freeing up or an autoscaler may clear.
const STUCK_REASONS: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

fn needs_a_person(reason: &str) -> bool {
    STUCK_REASONS
        .iter()
        .any(|stuck| reason.split(':').next() == Some(stuck))
}

/// A Kubernetes namespace the runner creates training Jobs in.
#[derive(Clone)]
pub(crate) struct Cluster {
    options: KubernetesOptions,
    namespace: String,
    jobs: Api<Job>,
    pods: Api<Pod>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// What a Job and its pod show at one look.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Look {
    /// No such Job (deleted from outside).
    Gone,
    /// Not running yet, and why.
    Pending(String),
    /// The pod's container runs.
    Running(String),
    /// Over: the pod (if any) whose log holds the result, and the failure Kubernetes reports.
    Finished {
        pod: Option<String>,
        failure: Option<TrainFailure>,
    },
}

impl Cluster {
    /// A client for the configured API server (`k8s_api_url`), else in-cluster or kubeconfig.
    pub(crate) async fn connect(
        options: KubernetesOptions,
    ) -> Result<Self, flywheel_runtime::ServiceError> {
        let config_error = |e: String| flywheel_runtime::ServiceError::Config(e);
        let config = match &options.api_url {
            Some(url) => Config::new(
                url.parse()
                    .map_err(|e| config_error(format!("service.k8s_api_url `{url}`: {e}")))?,
            ),
            None => Config::infer().await.map_err(|e| {
                config_error(format!(
                    "service.backend = kubernetes: no in-cluster service account or kubeconfig \
                     found ({e}); set service.k8s_api_url"
                ))
            })?,
        };
        let namespace = options
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config)
            .map_err(|e| config_error(format!("Kubernetes client: {e}")))?;
        tracing::info!(%namespace, image = %options.image, "training attempts run as Kubernetes Jobs");
        Ok(Self {
            jobs: Api::namespaced(client.clone(), &namespace),
            pods: Api::namespaced(client, &namespace),
            options,
            namespace,
        })
    }

    /// Runs the attempt as a Job and waits for its result.
    pub(crate) async fn run(
        &self,
        dispatched: &TrainingJobDispatched,
        progress: &Progress,
    ) -> Result<Event, TrainFailure> {
        let name = job_name(&dispatched.job_id, dispatched.attempt);
        let job = manifest::job(&self.options, dispatched, &name)?;
        match self.jobs.create(&PostParams::default(), &job).await {
            Ok(_) => {
                tracing::info!(job = %dispatched.job_id, attempt = dispatched.attempt, k8s_job = %name, "Kubernetes Job created")
            }
            // The same attempt again (a redelivered work message): follow the Job already there.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::info!(k8s_job = %name, "Kubernetes Job exists; following it");
            }
            Err(e) => return Err(create_failure(&name, &e)),
        }
        progress.report(
            0.0,
            &format!("Kubernetes Job {}/{name} created", self.namespace),
            true,
        );
        let mut follower: Option<tokio::task::JoinHandle<()>> = None;
        let mut waiting_for = String::new();
        let mut stuck_since: Option<std::time::Instant> = None;
        let mut failed_looks = 0u32;
        let outcome = loop {
            match self.look(&name).await {
                Err(e) => {
                    // The API server may be restarting: keep looking (the attempt's timeout
                    // bounds this), and say so now and then.
                    failed_looks += 1;
                    tracing::warn!(k8s_job = %name, error = %e, "cannot read the Job's status");
                    if failed_looks % 10 == 1 {
                        progress.report(0.0, &format!("Kubernetes API unreachable: {e}"), true);
                    }
                }
                Ok(Look::Gone) => {
                    break Err(TrainFailure::retryable(format!(
                        "the Kubernetes Job {name} was deleted before it finished"
                    )));
                }
                Ok(Look::Pending(reason)) => {
                    failed_looks = 0;
                    if !needs_a_person(&reason) {
                        stuck_since = None;
                    } else if stuck_since
                        .get_or_insert_with(std::time::Instant::now)
                        .elapsed()
                        >= self.options.stuck_after
                    {
                        self.delete(dispatched).await;
                        break Err(TrainFailure::retryable(format!(
                            "the pod of Kubernetes Job {name} could not start for {} s: {reason}",
                            self.options.stuck_after.as_secs()
                        )));
                    }
                    if reason != waiting_for {
                        progress.report(0.0, &format!("waiting for Kubernetes: {reason}"), true);
                        waiting_for = reason;
                    }
                }
                Ok(Look::Running(pod)) => {
                    failed_looks = 0;
                    if follower.is_none() {
                        follower = Some(tokio::spawn(relay_progress(
                            self.pods.clone(),
                            pod,
                            progress.clone(),
                        )));
                    }
                }
                Ok(Look::Finished { pod, failure }) => {
                    let log = match pod {
                        Some(pod) => self.final_log(&pod).await,
                        None => String::new(),
                    };
                    break match PodResult::find_in(&log) {
                        Some(result) => result.into_event(),
                        None => Err(failure.unwrap_or_else(|| {
                            TrainFailure::retryable(format!(
                                "the pod of Kubernetes Job {name} ended without printing its result"
                            ))
                        })),
                    };
                }
            }
            tokio::time::sleep(self.options.poll).await;
        };
        if let Some(follower) = follower {
            follower.abort();
        }
        outcome
    }

    /// Deletes the unfinished Jobs an earlier process in this runner's pod created: that process
    /// is gone, so the scheduler retries their attempts, and they would only train twice.
    pub(crate) async fn remove_orphans(&self) {
        let Some((pod, _)) = &self.options.runner_pod else {
            return;
        };
        let selector = format!("{RUNNER_POD_LABEL}={}", label_value(pod));
        // At start-up: an unreachable API server must not hold the runner back for kube's
        // minutes-long timeouts (the orphans' deadlines bound them anyway).
        let listed = tokio::time::timeout(
            ORPHAN_LIST_TIMEOUT,
            self.jobs.list(&ListParams::default().labels(&selector)),
        )
        .await;
        let jobs = match listed {
            Ok(Ok(jobs)) => jobs.items,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot list this pod's earlier Kubernetes Jobs");
                return;
            }
            Err(_) => {
                tracing::warn!("the Kubernetes API did not answer; earlier Jobs left as they are");
                return;
            }
        };
        for job in jobs {
            let status = job.status.unwrap_or_default();
            let finished = status.succeeded.unwrap_or(0) > 0 || status.failed.unwrap_or(0) > 0;
            let Some(name) = job.metadata.name else {
                continue;
            };
            if finished {
                continue;
            }
            match self.jobs.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {
                    tracing::info!(k8s_job = %name, "deleted a Job left by this pod's previous runner process")
                }
                Err(e) => {
                    tracing::warn!(k8s_job = %name, error = %e, "cannot delete a left-over Job")
                }
            }
        }
    }

    /// Deletes the attempt's Job and its pod (stopped, timed out, or the runner shuts down).
    pub(crate) async fn delete(&self, dispatched: &TrainingJobDispatched) {
        let name = job_name(&dispatched.job_id, dispatched.attempt);
        match self.jobs.delete(&name, &DeleteParams::background()).await {
            Ok(_) => tracing::info!(k8s_job = %name, "Kubernetes Job deleted"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => {
                tracing::warn!(k8s_job = %name, error = %e, "cannot delete the Kubernetes Job")
            }
        }
    }

    async fn look(&self, name: &str) -> Result<Look, kube::Error> {
        let Some(job) = self.jobs.get_opt(name).await? else {
            return Ok(Look::Gone);
        };
        let pods = self
            .pods
            .list(&ListParams::default().labels(&format!("job-name={name}")))
            .await?;
        // With backoffLimit 0 there is one pod; should Kubernetes have replaced one, the
        // newest is the one that counts.
        let pod = pods.items.into_iter().max_by(|a, b| {
            a.metadata
                .creation_timestamp
                .cmp(&b.metadata.creation_timestamp)
        });
        Ok(look_at(&job, pod.as_ref()))
    }

    /// The whole log of a finished pod (a few tries: it may lag the Job's status a moment).
    async fn final_log(&self, pod: &str) -> String {
        let params = LogParams {
            container: Some(CONTAINER.into()),
            ..LogParams::default()
        };
        for _ in 0..5 {
            match self.pods.logs(pod, &params).await {
                Ok(log) if log.contains(crate::attempt::RESULT_LINE) => return log,
                Ok(_) => {}
                Err(e) => tracing::warn!(%pod, error = %e, "cannot read the pod's log"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.pods.logs(pod, &params).await.unwrap_or_default()
    }
}

fn create_failure(name: &str, error: &kube::Error) -> TrainFailure {
    let message = format!("creating the Kubernetes Job {name}: {error}");
    match error {
        // The API server refused the Job itself: running it again cannot help.
        kube::Error::Api(status) if matches!(status.code, 400 | 422) => {
            TrainFailure::invalid(message)
        }
        _ => TrainFailure::retryable(message),
    }
}

/// Follows the pod's log and passes its progress lines on (best effort: the result is read
/// from the whole log once the Job finished).
async fn relay_progress(pods: Api<Pod>, pod: String, progress: Progress) {
    let params = LogParams {
        container: Some(CONTAINER.into()),
        follow: true,
        ..LogParams::default()
    };
    let stream = match pods.log_stream(&pod, &params).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(%pod, error = %e, "cannot follow the pod's log");
            return;
        }
    };
    let mut lines = stream.lines();
    while let Some(Ok(line)) = lines.next().await {
        let Some(json) = line.strip_prefix(PROGRESS_LINE) else {
            continue;
        };
        if let Ok(reported) = serde_json::from_str::<TrainingJobProgress>(json) {
            progress.report_metrics(reported.fraction, &reported.message, reported.metrics, true);
        }
    }
}

/// Maps a Job and its newest pod to what the attempt is doing.
pub(crate) fn look_at(job: &Job, pod: Option<&Pod>) -> Look {
    let status = job.status.clone().unwrap_or_default();
    let failed_condition = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.status == "True" && (c.type_ == "Failed" || c.type_ == "FailureTarget"));
    let pod_name = pod.and_then(|p| p.metadata.name.clone());
    if status.succeeded.unwrap_or(0) > 0 {
        return Look::Finished {
            pod: pod_name,
            failure: None,
        };
    }
    let terminated = pod.and_then(terminated_container);
    if let Some(condition) = failed_condition {
        let reason = condition.reason.clone().unwrap_or_default();
        let message = condition.message.clone().unwrap_or_default();
        let failure = if reason == "DeadlineExceeded" {
            TrainFailure {
                kind: "timed_out",
                message: format!("the Kubernetes Job ran past its deadline: {message}"),
            }
        } else {
            TrainFailure::retryable(format!(
                "the Kubernetes Job failed ({reason}: {message}){}",
                terminated.map(|t| format!("; {t}")).unwrap_or_default()
            ))
        };
        return Look::Finished {
            pod: pod_name,
            failure: Some(failure),
        };
    }
    let Some(pod) = pod else {
        return Look::Pending("no pod yet".into());
    };
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    match phase.as_str() {
        // The Job's own status lags its pod's a moment.
        "Succeeded" => Look::Finished {
            pod: pod_name,
            failure: None,
        },
        "Failed" => Look::Finished {
            pod: pod_name,
            failure: Some(TrainFailure::retryable(format!(
                "the training pod failed{}",
                terminated.map(|t| format!(": {t}")).unwrap_or_default()
            ))),
        },
        "Running" => Look::Running(pod_name.unwrap_or_default()),
        _ => Look::Pending(pending_reason(pod)),
    }
}

/// "container train: OOMKilled, exit code 137" for a terminated training container.
fn terminated_container(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let status = statuses.iter().find(|s| s.name == CONTAINER)?;
    let terminated = status.state.as_ref()?.terminated.as_ref()?;
    let reason = terminated
        .reason
        .clone()
        .unwrap_or_else(|| "terminated".into());
    let detail = terminated
        .message
        .as_deref()
        .map(|m| format!(" ({})", m.trim()))
        .unwrap_or_default();
    Some(format!(
        "container {CONTAINER}: {reason}, exit code {}{detail}",
        terminated.exit_code
    ))
}

/// Why a pod is not running yet: unschedulable (no node has the GPUs or memory), pulling its
/// image, or created but waiting.
fn pending_reason(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    if let Some(condition) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        return format!(
            "{}: {}",
            condition.reason.as_deref().unwrap_or("not scheduled"),
            condition.message.as_deref().unwrap_or_default()
        );
    }
    let waiting = status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|s| s.state.as_ref()?.waiting.clone());
    match waiting {
        Some(waiting) => format!(
            "{}{}",
            waiting.reason.unwrap_or_else(|| "waiting".into()),
            waiting
                .message
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ),
        None => "pod pending".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: serde_json::Value) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j"},
            "status": status,
        }))
        .expect("job")
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j-abcde"},
            "status": status,
        }))
        .expect("pod")
    }

    #[test]
    fn job_and_pod_states_map_to_attempt_states() {
        assert_eq!(
            look_at(&job(serde_json::json!({})), None),
            Look::Pending("no pod yet".into())
        );
        let unschedulable = pod(serde_json::json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}));
        assert_eq!(
            look_at(&job(serde_json::json!({"active": 1})), Some(&unschedulable)),
            Look::Pending(
                "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.".into()
            )
        );
        let pulling = pod(
            serde_json::json!({"phase": "Pending", "containerStatuses": [{
            "name": "train", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}}}]}),
        );
        assert_eq!(
            look_at(&job(serde_json::json!({"active": 1})), Some(&pulling)),
            Look::Pending("ImagePullBackOff: Back-off pulling image \"x\"".into())
        );
        assert!(needs_a_person(
            "ImagePullBackOff: Back-off pulling image \"x\""
        ));
        assert!(!needs_a_person("Unschedulable: 0/3 nodes are available"));
        let running = pod(serde_json::json!({"phase": "Running"}));
        assert_eq!(
            look_at(&job(serde_json::json!({"active": 1})), Some(&running)),
            Look::Running("j-abcde".into())
        );
        assert_eq!(
            look_at(&job(serde_json::json!({"succeeded": 1})), Some(&running)),
            Look::Finished {
                pod: Some("j-abcde".into()),
                failure: None
            }
        );
        let oom = pod(
            serde_json::json!({"phase": "Failed", "containerStatuses": [{
            "name": "train", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}),
        );
        let failed = job(serde_json::json!({"failed": 1, "conditions": [{
            "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit"}]}));
        let Look::Finished {
            failure: Some(failure),
            ..
        } = look_at(&failed, Some(&oom))
        else {
            panic!("finished expected");
        };
        assert_eq!(failure.kind, "error");
        assert!(
            failure.message.contains("OOMKilled, exit code 137"),
            "{}",
            failure.message
        );
        let deadline = job(serde_json::json!({"failed": 1, "conditions": [{
            "type": "Failed", "status": "True", "reason": "DeadlineExceeded",
            "message": "Job was active longer than specified deadline"}]}));
        let Look::Finished {
            failure: Some(failure),
            ..
        } = look_at(&deadline, None)
        else {
            panic!("finished expected");
        };
        assert_eq!(failure.kind, "timed_out");
    }
}
