#!/usr/bin/env bash
# Brings Flywheel up on this machine without Docker: NATS with JetStream (started, or installed
# with apt, when missing), then `flywheel up --demo` — the five services in one process with the
# embedded defaults (SQLite files and artifacts under ./.flywheel/) and the demo loop: data,
# training, deployment, traffic, drift, retraining, canary, promotion. Ctrl-C stops everything.
#
#   scripts/up.sh                        release build (the first takes a few minutes)
#   FLYWHEEL_DEMO=0 scripts/up.sh        the services without the demo
#   FLYWHEEL_PROFILE=dev scripts/up.sh   faster build, slower services
set -euo pipefail
cd "$(dirname "$0")/.."
export FLYWHEEL_STATE_DIR="$PWD/.flywheel"
source scripts/lib.sh

command -v cargo >/dev/null || die "cargo is missing: install Rust with https://rustup.rs, then run this again"
profile="${FLYWHEEL_PROFILE:-release}"
for port in 8080 8081 8082 8083 8084; do
  if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
    die "port $port is already in use (is Flywheel already running?)"
  fi
done

ensure_nats
trap stop_started_servers EXIT
say "building flywheel ($profile profile)"
cargo build --locked --profile "$profile" --bin flywheel
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
bin="$target_dir/$([ "$profile" = dev ] && echo debug || echo "$profile")/flywheel"

demo=(--demo)
[ "${FLYWHEEL_DEMO:-1}" = 0 ] && demo=()
say "starting Flywheel (NATS $FLYWHEEL_NATS_URL, state in ./.flywheel/)"
FLYWHEEL__BUS__URL="$FLYWHEEL_NATS_URL" "$bin" up --dir .flywheel "${demo[@]}"
