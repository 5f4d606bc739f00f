#!/usr/bin/env python3
"""Checks the Kubernetes manifests (deploy/kubernetes) offline: every resource the
kustomization lists validates strictly against the Kubernetes schemas (kubernetes-validate from
PyPI, which carries them), and Flywheel's own rules hold (each service has a Deployment with
/healthz and /readyz probes and resource requests, a Service on its port and a
PodDisruptionBudget; the deployer has a HorizontalPodAutoscaler). Proves it can fail by feeding
it a broken copy first.

kubernetes-validate lives in its own virtualenv under ~/.cache/flywheel-tools; the script
re-runs itself with that interpreter.
"""
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
VALIDATOR = "1.34.1"
KUBERNETES_VERSIONS = ["1.30.0", "1.34.0"]
SERVICES = {"registry": 8080, "scheduler": 8081, "trainer-runner": 8082, "monitor": 8083, "deployer": 8084}


def venv_python():
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "flywheel-tools"
    venv = cache / f"kubernetes-validate-{VALIDATOR}"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import kubernetes_validate, yaml"]
    if not python.exists() or subprocess.run(probe, capture_output=True).returncode != 0:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"kubernetes-validate=={VALIDATOR}"], check=True)
    return python


def validate(paths, version):
    return subprocess.run([str(pathlib.Path(sys.executable).parent / "kubernetes-validate"), "--strict",
                           "--quiet", "-k", version, *map(str, paths)], capture_output=True, text=True)


def main():
    import yaml

    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    listed = [MANIFESTS / name for name in kustomization["resources"]]
    errors = []
    on_disk = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    for name in sorted(on_disk - {p.name for p in listed}):
        errors.append(f"{name} is not listed in kustomization.yaml")

    # The check must be able to fail: a broken copy has to be rejected.
    broken = (MANIFESTS / "deployer.yaml").read_text().replace("containerPort: 8084", 'containerPort: "8084x"', 1)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as tmp:
        tmp.write(broken)
    try:
        if validate([tmp.name], KUBERNETES_VERSIONS[-1]).returncode == 0:
            sys.exit("kubernetes check is broken: it accepted a string container port")
    finally:
        os.unlink(tmp.name)

    for version in KUBERNETES_VERSIONS:
        result = validate(listed, version)
        if result.returncode != 0:
            errors.append(f"schemas of Kubernetes {version}:\n{result.stdout}{result.stderr}")

    resources = {}
    for path in listed:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                resources[(doc["kind"], doc["metadata"]["name"])] = doc
    for name, port in SERVICES.items():
        deployment = resources.get(("Deployment", name))
        if deployment is None:
            errors.append(f"{name}: no Deployment")
            continue
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        if container.get("command") != [f"flywheel-{name}"]:
            errors.append(f"{name}: runs {container.get('command')}, not flywheel-{name}")
        if [p["containerPort"] for p in container.get("ports", [])] != [port]:
            errors.append(f"{name}: container port is not {port}")
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if env.get("FLYWHEEL__HTTP__PORT") != str(port):
            errors.append(f"{name}: FLYWHEEL__HTTP__PORT is not {port}")
        if env.get("FLYWHEEL__BUS__USER") != name:
            errors.append(f"{name}: does not log in to NATS as its own user")
        for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
            if container.get(probe, {}).get("httpGet", {}).get("path") != path:
                errors.append(f"{name}: {probe} does not ask {path}")
        requests = container.get("resources", {}).get("requests", {})
        if not {"cpu", "memory"} <= requests.keys():
            errors.append(f"{name}: no cpu and memory requests")
        service = resources.get(("Service", name))
        if service is None or [p["port"] for p in service["spec"]["ports"]] != [port]:
            errors.append(f"{name}: no Service on port {port}")
        if ("PodDisruptionBudget", name) not in resources:
            errors.append(f"{name}: no PodDisruptionBudget")
        if deployment["spec"].get("replicas", 1) < 2 and name != "trainer-runner":
            errors.append(f"{name}: fewer than 2 replicas")
    # The Kubernetes training backend: its pods run the image the kustomization deploys, and
    # its service account may do what the runner does with Jobs.
    jobs_runner = resources.get(("Deployment", "trainer-runner-jobs"))
    if jobs_runner is None:
        errors.append("trainer-runner-jobs: no Deployment")
    else:
        spec = jobs_runner["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in spec["containers"][0].get("env", [])}
        image = kustomization["images"][0]
        if env.get("FLYWHEEL__SERVICE__BACKEND") != "kubernetes":
            errors.append("trainer-runner-jobs: backend is not kubernetes")
        if env.get("FLYWHEEL__SERVICE__K8S_IMAGE") != f"{image['newName']}:{image['newTag']}":
            errors.append("trainer-runner-jobs: k8s_image differs from the kustomization's image")
        role = resources.get(("Role", spec.get("serviceAccountName")))
        granted = {(g, r, v) for rule in (role or {}).get("rules", []) for g in rule["apiGroups"]
                   for r in rule["resources"] for v in rule["verbs"]}
        needed = {("batch", "jobs", v) for v in ["create", "get", "list", "delete"]} | \
            {("", "pods", "get"), ("", "pods", "list"), ("", "pods/log", "get")}
        if not needed <= granted:
            errors.append(f"trainer-runner-jobs: its Role lacks {sorted(needed - granted)}")
    hpa = resources.get(("HorizontalPodAutoscaler", "deployer"))
    if hpa is None or hpa["spec"]["scaleTargetRef"]["name"] != "deployer":
        errors.append("deployer: no HorizontalPodAutoscaler")
    if errors:
        sys.exit("deploy/kubernetes:\n  " + "\n  ".join(errors))
    print(f"deploy/kubernetes: {len(resources)} resources valid against Kubernetes "
          f"{', '.join(KUBERNETES_VERSIONS)}; {len(SERVICES)} services with probes, requests, Service and PDB")


if __name__ == "__main__":
    if os.environ.get("FLYWHEEL_K8S_CHECK_VENV") != "1":
        python = venv_python()
        os.environ["FLYWHEEL_K8S_CHECK_VENV"] = "1"
        os.execv(str(python), [str(python), __file__, *sys.argv[1:]])
    main()
