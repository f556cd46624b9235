#!/usr/bin/env bash
# Quick start, command 1: install what is missing, build, run Joule with embedded
# defaults (auth disabled for the local demo) while simulated devices feed it.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release joule  # the binary only (the tests and benchmarks: scripts/test.sh)
bin=build/release/src/app/joule

port="${JOULE_DEMO_PORT:-8080}"
data="${JOULE_DEMO_DATA:-./data/demo}"
mkdir -p "$data"
export JOULE_SERVER_HTTP_LISTEN="127.0.0.1:$port"
export JOULE_SERVER_MQTT_LISTEN=""
export JOULE_STORAGE_DATA_DIR="$data"
export JOULE_AUTH_MODE=disabled

"$bin" serve 2> >(tee "$data/joule.log" >&2) &
server=$!
trap 'kill $server $sim 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { echo "joule exited; see $data/joule.log" >&2; exit 1; }
  sleep 0.1
done
# With auth disabled every request acts as admin: the simulator registers its homes'
# devices (owners, names, timezones) so the dashboard's fleet shows them, then ingests.
"$bin" simulate --url "http://127.0.0.1:$port" --devices "${JOULE_DEMO_DEVICES:-50}" --rate 1 \
  --admin-token demo --quiet &
sim=$!
cat <<MSG

  Joule is running with 50 simulated devices (auth disabled: local demo only).
  Dashboard: http://127.0.0.1:$port/
  Realtime:  http://127.0.0.1:$port/v1/devices/sim-0000/metrics/realtime?windows=5
  History:   http://127.0.0.1:$port/v1/devices/sim-0000/metrics/history?resolution=1m&format=csv
  Health:    http://127.0.0.1:$port/v1/devices/sim-0000/health
  Metrics:   http://127.0.0.1:$port/metrics
  Ctrl-C to stop.

MSG
wait $server
