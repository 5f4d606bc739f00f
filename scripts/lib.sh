# Shared by scripts/test.sh and scripts/up.sh: find or start the servers Flywheel needs.
# Sourced, not run. Functions print what they do and export the URLs they settle on.

STATE_DIR="${FLYWHEEL_STATE_DIR:-$PWD/.test-services}"
mkdir -p "$STATE_DIR"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

apt_install() {
  command -v apt-get >/dev/null || return 1
  say "installing $* with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 || {
    as_root apt-get update -q >/dev/null 2>&1 && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
  }
}

# The first line a NATS server sends is its INFO; it says whether JetStream is on.
nats_has_jetstream() { # host port
  timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2 && head -n1 <&3" 2>/dev/null | grep -q '"jetstream":true'
}

nats_server_bin() {
  command -v nats-server 2>/dev/null || { [ -x /usr/sbin/nats-server ] && echo /usr/sbin/nats-server; } || true
}

# Exports FLYWHEEL_NATS_URL: the local server at 4222 if it has JetStream, else a private one.
ensure_nats() {
  if nats_has_jetstream 127.0.0.1 4222; then
    export FLYWHEEL_NATS_URL=nats://127.0.0.1:4222
    return
  fi
  local bin
  bin=$(nats_server_bin)
  if [ -z "$bin" ]; then
    apt_install nats-server || die "nats-server is missing and could not be installed; install NATS 2.9+ (https://nats.io)"
    bin=$(nats_server_bin)
  fi
  export FLYWHEEL_NATS_SERVER_BIN="$bin"
  local port=4222
  # Port 4222 taken by a server without JetStream: run ours beside it.
  if timeout 1 bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222' 2>/dev/null; then port=$(free_port); fi
  say "starting nats-server -js on 127.0.0.1:$port (store in $STATE_DIR/nats)"
  mkdir -p "$STATE_DIR/nats"
  setsid "$bin" -a 127.0.0.1 -p "$port" -js -sd "$STATE_DIR/nats" -l "$STATE_DIR/nats.log" >/dev/null 2>&1 < /dev/null &
  NATS_PID=$!
  for _ in $(seq 1 100); do nats_has_jetstream 127.0.0.1 "$port" && break; sleep 0.1; done
  nats_has_jetstream 127.0.0.1 "$port" || die "nats-server did not start; see $STATE_DIR/nats.log"
  export FLYWHEEL_NATS_URL="nats://127.0.0.1:$port"
}

pg_answers() { # url
  psql "$1/postgres" -Atqc 'select 1' >/dev/null 2>&1
}

# Exports FLYWHEEL_PG_URL (no database part): the local server with trust auth, else a private cluster.
ensure_postgres() {
  command -v psql >/dev/null || apt_install postgresql-client postgresql || die "PostgreSQL is missing and could not be installed"
  local url=postgres://postgres@127.0.0.1:5432
  if ! pg_answers "$url" && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    say "starting the local PostgreSQL cluster"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start >/dev/null 2>&1 || true
    for _ in $(seq 1 50); do pg_answers "$url" && break; sleep 0.2; done
  fi
  if pg_answers "$url"; then export FLYWHEEL_PG_URL="$url"; return; fi

  # No usable server (missing, stopped for good, or password-only): run a private trust cluster.
  local bindir
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  if [ -z "$bindir" ]; then
    apt_install postgresql || die "PostgreSQL is missing and could not be installed"
    bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
  fi
  local port dir run=()
  port=$(free_port)
  dir=$(mktemp -d /tmp/flywheel-pg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system postgres
    chown postgres "$dir"
    run=(runuser -u postgres --)
  fi
  say "starting a private PostgreSQL cluster on 127.0.0.1:$port ($dir)"
  "${run[@]}" "$bindir/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >/dev/null
  "${run[@]}" "$bindir/pg_ctl" -D "$dir" -l "$dir/log" -w -o "-p $port -k /tmp -c listen_addresses=127.0.0.1" start >/dev/null
  PG_STOP="${run[*]} $bindir/pg_ctl -D $dir -m fast stop"
  url="postgres://postgres@127.0.0.1:$port"
  pg_answers "$url" || die "private PostgreSQL did not start; see $dir/log"
  export FLYWHEEL_PG_URL="$url"
}

# Stops what this script started (servers that were already running are left alone).
stop_started_servers() {
  [ -n "${S3_PID:-}" ] && kill "$S3_PID" 2>/dev/null
  [ -n "${NATS_PID:-}" ] && kill "$NATS_PID" 2>/dev/null
  [ -n "${PG_STOP:-}" ] && $PG_STOP >/dev/null 2>&1
  return 0
}

# Starts moto's S3 server on a free loopback port; exports FLYWHEEL_S3_ENDPOINT and creates $1.
start_s3() { # bucket
  python3 -c 'import moto.server, flask, flask_cors' 2>/dev/null || {
    say "installing moto[server] from PyPI"
    python3 -m pip install -q 'moto[server]>=5,<6' || die "cannot install moto[server]"
  }
  local port
  port=$(free_port)
  say "starting an S3 server (moto) on 127.0.0.1:$port"
  setsid python3 -m moto.server -H 127.0.0.1 -p "$port" > "$STATE_DIR/s3.log" 2>&1 < /dev/null &
  S3_PID=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  curl -sf -X PUT "http://127.0.0.1:$port/$1" -o /dev/null || die "S3 server did not start; see $STATE_DIR/s3.log"
  export FLYWHEEL_S3_ENDPOINT="http://127.0.0.1:$port"
}

# A virtualenv with the stock mlflow client and what `mlflow.sklearn.log_model` needs
# (MLflow-compatibility tests), openapi-spec-validator (the registry's OpenAPI document) and
# tritonclient (the deployer's Open Inference Protocol).
# Exports FLYWHEEL_TEST_PYTHON.
MLFLOW_VERSION=3.17.2
OPENAPI_VALIDATOR_VERSION=0.9.0
SCHEMATHESIS_VERSION=4.32.5
TRITONCLIENT_VERSION=2.73.0
PY_TEST_PACKAGES=("mlflow-skinny==$MLFLOW_VERSION" "scikit-learn>=1.5,<2" "pandas>=2,<3" "skops<1" "openapi-spec-validator==$OPENAPI_VALIDATOR_VERSION" "tritonclient[http]==$TRITONCLIENT_VERSION" "schemathesis==$SCHEMATHESIS_VERSION")
ensure_test_python() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/flywheel-tools/py-mlflow-$MLFLOW_VERSION-sklearn-oasv-$OPENAPI_VALIDATOR_VERSION"
  if ! "$venv/bin/python" -c "import mlflow, sklearn, pandas, skops, openapi_spec_validator, tritonclient.http, schemathesis" 2>/dev/null; then
    say "installing ${PY_TEST_PACKAGES[*]} into $venv"
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; } || die "cannot create a virtualenv"
    "$venv/bin/pip" install -q "${PY_TEST_PACKAGES[@]}" || die "cannot install the Python test tools from PyPI"
  fi
  export FLYWHEEL_TEST_PYTHON="$venv/bin/python"
}

# Headless Chromium and playwright-core for the dashboard's browser test; exports
# FLYWHEEL_TEST_CHROMIUM.
ensure_browser() {
  local chromium
  chromium=$(command -v chromium || command -v chromium-browser || true)
  if [ -z "$chromium" ]; then
    apt_install chromium || die "Chromium is missing and could not be installed (Debian: apt install chromium)"
    chromium=$(command -v chromium)
  fi
  command -v npm >/dev/null || apt_install nodejs npm || die "Node.js is missing and could not be installed (Debian: apt install nodejs npm)"
  if [ ! -d tests/browser/node_modules/playwright-core ]; then
    say "installing playwright-core for the browser test (npm ci in tests/browser)"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
  export FLYWHEEL_TEST_CHROMIUM="$chromium"
}
