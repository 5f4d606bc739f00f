//! The `Job` an attempt runs as.

use flywheel_events::payloads::{Resources, TrainingJobDispatched};
use k8s_openapi::api::batch::v1::Job;
use serde_json::{Value, json};

use crate::TrainFailure;
use crate::attempt::SPEC_VARIABLE;
use crate::config::{EnvSource, KubernetesOptions};

use super::CONTAINER;

/// Where the pod's external trainers get their work directory (an `emptyDir`).
const SCRATCH: &str = "/scratch";

/// The label naming the runner pod that created a Job.
pub(crate) const RUNNER_POD_LABEL: &str = "flywheel.dev/runner-pod";

/// `flywheel-train-<job id>-<attempt>`: one Job per attempt, a valid DNS label (≤ 63
/// characters) that the same attempt always maps to.
pub(crate) fn job_name(job_id: &str, attempt: u32) -> String {
    let mut id: String = job_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(36)
        .collect();
    id = id.trim_matches('-').to_owned();
    format!("flywheel-train-{id}-{attempt}")
}

/// Kubernetes quantities: whole or milli CPUs, memory in MiB.
fn quantities(resources: &Resources, gpu_resource: &str) -> (Value, Value) {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let millis = (resources.cpu.max(0.001) * 1000.0).round() as u64;
    let cpu = if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    };
    let memory = format!("{}Mi", resources.memory_mb.max(1));
    let mut requests = json!({"cpu": cpu, "memory": memory});
    // Memory is a hard limit (the scheduler placed the job by it); CPU is not capped, so a
    // trainer may use idle cores.
    let mut limits = json!({"memory": memory});
    if resources.gpu > 0 {
        // Extended resources are requested as limits (requests must equal them).
        requests[gpu_resource] = json!(resources.gpu.to_string());
        limits[gpu_resource] = json!(resources.gpu.to_string());
    }
    (requests, limits)
}

/// A label value: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
pub(crate) fn label_value(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// The Job of one attempt.
pub(crate) fn job(
    options: &KubernetesOptions,
    dispatched: &TrainingJobDispatched,
    name: &str,
) -> Result<Job, TrainFailure> {
    let request = dispatched
        .request
        .as_ref()
        .ok_or_else(|| TrainFailure::invalid("a work message without the training request"))?;
    let spec = serde_json::to_string(dispatched)
        .map_err(|e| TrainFailure::invalid(format!("encoding the attempt: {e}")))?;
    let (requests, limits) = quantities(&request.resources, &options.gpu_resource);
    let mut labels = json!({
        "app.kubernetes.io/name": "flywheel-training",
        "app.kubernetes.io/managed-by": "flywheel-trainer-runner",
        "flywheel.dev/job-id": label_value(&dispatched.job_id),
        "flywheel.dev/attempt": dispatched.attempt.to_string(),
        "flywheel.dev/pool": label_value(&dispatched.pool),
    });
    let mut owners = Vec::new();
    if let Some((pod, uid)) = &options.runner_pod {
        labels[RUNNER_POD_LABEL] = json!(label_value(pod));
        if let Some(uid) = uid {
            owners.push(json!({"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}));
        }
    }
    let mut env = vec![
        json!({"name": SPEC_VARIABLE, "value": spec}),
        // Explicit variables win over envFrom: the pod trains itself, wherever the runner's
        // shared configuration points.
        json!({"name": "FLYWHEEL__SERVICE__BACKEND", "value": "process"}),
        json!({"name": "FLYWHEEL__SERVICE__REGISTRY_URL", "value": options.registry_url}),
        json!({"name": "FLYWHEEL__SERVICE__WORK_DIR", "value": SCRATCH}),
    ];
    env.extend(options.secret_env.iter().map(|v| {
        json!({"name": v.name, "valueFrom": {"secretKeyRef": {"name": v.secret, "key": v.key}}})
    }));
    let env_from: Vec<Value> = options
        .env_from
        .iter()
        .map(|source| match source {
            EnvSource::ConfigMap(name) => json!({"configMapRef": {"name": name}}),
            EnvSource::Secret(name) => json!({"secretRef": {"name": name}}),
        })
        .collect();
    let mut container = json!({
        "name": CONTAINER,
        "image": options.image,
        "command": ["flywheel-trainer-runner", "attempt"],
        "env": env,
        "envFrom": env_from,
        "resources": {"requests": requests, "limits": limits},
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}],
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
        },
    });
    if let Some(policy) = &options.image_pull_policy {
        container["imagePullPolicy"] = json!(policy);
    }
    let mut pod_spec = json!({
        // One try per attempt: retries are the scheduler's, as attempts with their own Jobs.
        "restartPolicy": "Never",
        // The pod needs the registry and the artifact store, not the Kubernetes API.
        "automountServiceAccountToken": false,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
    });
    if let Some(account) = &options.service_account {
        pod_spec["serviceAccountName"] = json!(account);
    }
    let manifest = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": labels,
            "ownerReferences": owners,
            "annotations": {
                "flywheel.dev/model": request.model,
                "flywheel.dev/request-id": request.request_id,
            },
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": dispatched.timeout_seconds.max(1),
            "ttlSecondsAfterFinished": options.keep_finished_secs,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    });
    serde_json::from_value(manifest)
        .map_err(|e| TrainFailure::invalid(format!("building the Kubernetes Job: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels_and_stable() {
        let name = job_name("0192F3A4-7B8C-7D9E-8F01-23456789ABCD", 4_294_967_295);
        assert_eq!(
            name,
            "flywheel-train-0192f3a4-7b8c-7d9e-8f01-23456789abcd-4294967295"
        );
        assert!(name.len() <= 63, "{}", name.len());
        assert_eq!(job_name("a/b", 2), "flywheel-train-a-b-2");
    }

    #[test]
    fn quantities_are_kubernetes_quantities() {
        let resources = |cpu, memory_mb, gpu| Resources {
            cpu,
            memory_mb,
            gpu,
        };
        let (requests, limits) = quantities(&resources(1.5, 512, 0), "nvidia.com/gpu");
        assert_eq!(requests, json!({"cpu": "1500m", "memory": "512Mi"}));
        assert_eq!(limits, json!({"memory": "512Mi"}));
        let (requests, limits) = quantities(&resources(2.0, 4096, 2), "nvidia.com/gpu");
        assert_eq!(
            requests,
            json!({"cpu": "2", "memory": "4096Mi", "nvidia.com/gpu": "2"})
        );
        assert_eq!(limits, json!({"memory": "4096Mi", "nvidia.com/gpu": "2"}));
    }

    #[test]
    fn label_values_are_valid() {
        assert_eq!(label_value("-a b/c-"), "a_b_c");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
    }
}
