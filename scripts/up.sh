#!/usr/bin/env bash
# Brings Flywheel up on this machine without Docker: NATS with JetStream (started, or installed
# with apt, when missing) and the five services on their default ports with the embedded
# defaults (SQLite files and artifacts under ./.flywheel/). Ctrl-C stops everything.
#
#   scripts/up.sh                 release build (first build takes a few minutes)
#   FLYWHEEL_PROFILE=dev scripts/up.sh   faster build, slower services
set -euo pipefail
cd "$(dirname "$0")/.."
export FLYWHEEL_STATE_DIR="$PWD/.flywheel"
source scripts/lib.sh

command -v cargo >/dev/null || die "cargo is missing: install Rust with https://rustup.rs, then run this again"
command -v curl >/dev/null || apt_install curl || die "curl is missing"
profile="${FLYWHEEL_PROFILE:-release}"
services=(registry:8080 scheduler:8081 trainer-runner:8082 monitor:8083 deployer:8084)

for entry in "${services[@]}"; do
  port=${entry#*:}
  if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
    die "port $port is already in use (is Flywheel already running?)"
  fi
done

ensure_nats
say "building the services ($profile profile)"
bins=()
for entry in "${services[@]}"; do bins+=(--bin "flywheel-${entry%%:*}"); done
cargo build --locked --profile "$profile" "${bins[@]}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
bin_dir="$target_dir/$([ "$profile" = dev ] && echo debug || echo "$profile")"

mkdir -p .flywheel/logs
pids=()
stop() {
  trap - INT TERM EXIT
  say "stopping Flywheel"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  stop_started_servers
  exit 0
}
trap stop INT TERM EXIT

for entry in "${services[@]}"; do
  name=${entry%%:*}
  FLYWHEEL__BUS__URL="$FLYWHEEL_NATS_URL" FLYWHEEL__HTTP__PORT="${entry#*:}" \
    "$bin_dir/flywheel-$name" > ".flywheel/logs/$name.log" 2>&1 &
  pids+=($!)
done

say "waiting for the services to be ready"
for entry in "${services[@]}"; do
  name=${entry%%:*}
  port=${entry#*:}
  for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.5
  done
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || die "$name did not become ready; see .flywheel/logs/$name.log"
done

cat <<TXT

  Flywheel is up (NATS $FLYWHEEL_NATS_URL, state in ./.flywheel/)

  service          URL                      health
  registry         http://localhost:8080    /healthz  /readyz  /metrics
  scheduler        http://localhost:8081    /healthz  /readyz  /metrics
  trainer-runner   http://localhost:8082    /healthz  /readyz  /metrics
  monitor          http://localhost:8083    /healthz  /readyz  /metrics
  deployer         http://localhost:8084    /healthz  /readyz  /metrics

  Logs: .flywheel/logs/<service>.log    Stop: Ctrl-C

TXT
# Stay in the foreground until a service exits or the user stops us.
wait -n "${pids[@]}" || true
say "a service exited; see .flywheel/logs/"
