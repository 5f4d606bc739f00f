#!/usr/bin/env bash
# Flywheel's one test command: makes sure NATS (JetStream) and PostgreSQL run, starts an S3
# server on loopback, then runs the format check, clippy -D warnings, the compose and
# Kubernetes manifest checks and the whole test suite against those real servers.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

command -v cargo >/dev/null || die "cargo is missing: install Rust with https://rustup.rs"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flywheel-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-always}"

trap stop_started_servers EXIT
CARGO_DENY_VERSION=0.20.2

say "cargo fmt --check"
cargo fmt --all -- --check

ensure_nats
ensure_postgres
start_s3 flywheel-test
ensure_test_python
ensure_browser
export FLYWHEEL_TEST_NATS_URL="$FLYWHEEL_NATS_URL"
export FLYWHEEL_TEST_DATABASE_URL="$FLYWHEEL_PG_URL"
export FLYWHEEL_TEST_S3_ENDPOINT="$FLYWHEEL_S3_ENDPOINT"
export FLYWHEEL_TEST_S3_BUCKET=flywheel-test
say "NATS $FLYWHEEL_TEST_NATS_URL · PostgreSQL $FLYWHEEL_TEST_DATABASE_URL · S3 $FLYWHEEL_TEST_S3_ENDPOINT"

# Databases left by earlier runs (tests create one each).
psql "$FLYWHEEL_TEST_DATABASE_URL/postgres" -Atqc "select datname from pg_database where datname like 'flywheel_t%'" 2>/dev/null |
  while read -r db; do psql "$FLYWHEEL_TEST_DATABASE_URL/postgres" -qc "drop database if exists \"$db\"" >/dev/null 2>&1 || true; done

say "removing test streams older than an hour from NATS"
cargo run -q --locked -p flywheel-testkit --bin flywheel-test-cleanup

say "one TLS crypto backend: ring must not be compiled"
if cargo tree --workspace -e normal -i ring 2>/dev/null | grep -q "^ring v"; then die "ring is in the dependency tree (see docs/architecture.md)"; fi

say "dependency policy: cargo deny check licenses bans sources (deny.toml)"
if ! cargo deny --version 2>/dev/null | grep -q "^cargo-deny $CARGO_DENY_VERSION"; then
  say "installing cargo-deny $CARGO_DENY_VERSION (once; about 2 minutes)"
  env -u CARGO_TARGET_DIR cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION"
fi
cargo deny --log-level error check licenses bans sources

say "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "docker compose file check"
python3 scripts/check_compose.py
say "Kubernetes manifests (deploy/kubernetes): the Kubernetes schemas, offline, and Flywheel's rules"
python3 scripts/check_kubernetes.py
say "event contract check (proto/)"
python3 scripts/check_proto.py
say "NATS users and permissions (deploy/nats/nats.conf): generated, and nats-server accepts it"
cargo run -q --locked -p flywheel-bus --bin flywheel-nats-config -- --check deploy/nats/nats.conf
(
  for user in REGISTRY SCHEDULER TRAINER_RUNNER MONITOR DEPLOYER EXTERNAL; do export "FLYWHEEL_NATS_PASSWORD_$user=check"; done
  bin=$(nats_server_bin)
  [ -n "$bin" ] || die "nats-server is needed to check deploy/nats/nats.conf (and by the e2e tests)"
  "$bin" -t -c deploy/nats/nats.conf >/dev/null
)

say "tests"
# The end-to-end suite runs the service binaries as separate processes: build them all first.
cargo build --workspace --bins --locked
failed=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast -E 'not binary(e2e)' || failed=1
  say "end-to-end and chaos suite (tests/e2e): five service processes per test; counts and timings below"
  cargo nextest run -p flywheel-tests --test e2e --locked --no-fail-fast --success-output final || failed=1
  cargo test --workspace --locked --doc || failed=1
else
  cargo test --workspace --locked --no-fail-fast || failed=1
fi
[ "$failed" = 0 ] || die "tests failed"
say "all checks passed"
