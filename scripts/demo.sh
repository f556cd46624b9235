#!/usr/bin/env bash
# Quick start, command 1: install what is missing, build, run Joule with embedded
# defaults (auth disabled for the local demo) while simulated devices feed it.
# Ctrl-C stops both: the simulator first, then the server.
# Knobs: JOULE_DEMO_PORT (8080), JOULE_DEMO_DATA (./data/demo), JOULE_DEMO_DEVICES (50);
# read here and not passed on (joule warns about any JOULE_* that is no config key).
set -euo pipefail
cd "$(dirname "$0")/.."
port="${JOULE_DEMO_PORT:-8080}"
data="${JOULE_DEMO_DATA:-./data/demo}"
devices="${JOULE_DEMO_DEVICES:-50}"
# The simulator runs whole homes of 5 devices (a meter and four appliances): say how many.
[[ "$devices" =~ ^[0-9]+$ ]] && ((devices > 0)) ||
  { echo "demo: JOULE_DEMO_DEVICES must be a positive number" >&2; exit 2; }
devices=$(((devices + 4) / 5 * 5))
unset JOULE_DEMO_PORT JOULE_DEMO_DATA JOULE_DEMO_DEVICES
scripts/install-deps.sh
command -v curl >/dev/null 2>&1 || { echo "demo: needs curl (apt-get install curl)" >&2; exit 1; }
scripts/build.sh release joule  # the binary only (the tests and benchmarks: scripts/test.sh)
bin=build/release/src/app/joule

# Something already listening there (another Joule, an earlier demo) would answer the
# readiness check below while this server fails to bind (found by a black-box test).
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "demo: port $port is in use (another Joule, or an earlier demo still running?);" \
    "stop it or pick another port: JOULE_DEMO_PORT=8081 $0" >&2
  exit 1
fi
mkdir -p "$data"
export JOULE_SERVER_HTTP_LISTEN="127.0.0.1:$port"
export JOULE_SERVER_MQTT_LISTEN=""
export JOULE_STORAGE_DATA_DIR="$data"
export JOULE_AUTH_MODE=disabled

server="" sim=""
stop() {
  # The simulator first: stopped after the server, it would report its last sends refused.
  if [[ -n "$sim" ]]; then kill -TERM "$sim" 2>/dev/null || true; wait "$sim" 2>/dev/null || true; fi
  if [[ -n "$server" ]]; then kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Own sessions (setsid): a Ctrl-C on the terminal reaches this script only, which stops
# the two in order. tee -i: the log keeps its reader until the server has exited.
setsid "$bin" serve 2> >(tee -i "$data/joule.log" >&2) &
server=$!
ready=""
for _ in $(seq 100); do
  kill -0 "$server" 2>/dev/null || { echo "demo: joule exited; see $data/joule.log" >&2; exit 1; }
  # Ready, and it is this server that answers: its own log says where it listens.
  if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 &&
    grep -q "\"http listening\".*127.0.0.1:$port\"" "$data/joule.log" 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.1
done
[[ -n "$ready" ]] || { echo "demo: joule did not get ready in 10 s; see $data/joule.log" >&2; exit 1; }
# With auth disabled every request acts as admin: the simulator registers its homes'
# devices (owners, names, timezones) so the dashboard's fleet shows them, then ingests.
setsid "$bin" simulate --url "http://127.0.0.1:$port" --devices "$devices" --rate 1 \
  --admin-token demo --quiet &
sim=$!
cat <<MSG

  Joule is running with $devices simulated devices (auth disabled: local demo only).
  Dashboard: http://127.0.0.1:$port/
  Realtime:  http://127.0.0.1:$port/v1/devices/sim-0000/metrics/realtime?windows=5
  History:   http://127.0.0.1:$port/v1/devices/sim-0000/metrics/history?resolution=1m&format=csv
  Health:    http://127.0.0.1:$port/v1/devices/sim-0000/health
  Metrics:   http://127.0.0.1:$port/metrics
  Ctrl-C to stop.

MSG
wait "$server"
