#!/usr/bin/env bash
# The comparison harness: Joule against VictoriaMetrics, PostgreSQL, a simdjson parse-only
# loop, h2o and Mosquitto, on this machine, with one generated data set.
#
#   bench/run.sh [--quick] [--runs N] [--only ingest,fsync,postgres,fio,core,api,history,mqtt,state] [--no-build] [--publish]
#
# Installs what it needs from Debian (victoria-metrics, h2o, wrk, fio, gnuplot, PostgreSQL
# 15, Mosquitto, python3-psycopg2), builds the release preset's joule and bench programs,
# generates the data once (kept in $JOULE_BENCH_DATA, default /var/tmp/joule-bench-data-MODE),
# runs every comparison (median of N runs, default 3), writes bench/results/<date>.json and
# bench/results/latest.json, and regenerates the generated part of docs/BENCHMARKS.md and
# docs/benchmarks.png. See bench/README.md. Full mode: 10k devices × 60 s; --quick: 1k × 60 s.
# --quick and --only write only their own results file (published nowhere); --quick
# --publish replaces latest.json and the generated part as a full run does.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=full runs=3 only="" build=1 publish=0
valid_only=(ingest fsync postgres fio core api history mqtt state)
usage() { echo "bench/run.sh: $*; see bench/run.sh --help" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) mode=quick ;;
    --runs|--only)
      [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || usage "$1 needs a value"
      if [[ $1 == --runs ]]; then runs="$2"; else only="$2"; fi
      shift ;;
    --no-build) build=0 ;;   # measure the binaries already in build/release
    --publish) publish=1 ;;  # --quick: publish it like a full run
    -h|--help) sed -n 2,14p "$0"; exit 0 ;;
    *) usage "unknown argument $1" ;;
  esac
  shift
done
[[ $runs =~ ^[0-9]{1,3}$ ]] && (( 10#$runs >= 1 )) ||
  usage "--runs must be a whole number within 1..999, got '$runs'"
runs=$((10#$runs))
if [[ -n $only ]]; then
  [[ $only != ,* && $only != *, && $only != *,,* ]] ||
    usage "--only: an empty name in '$only'; valid: $(IFS=,; echo "${valid_only[*]}")"
  IFS=, read -ra names <<< "$only"
  [[ ${#names[@]} -gt 0 ]] || usage "--only needs names"
  for n in "${names[@]}"; do
    [[ " ${valid_only[*]} " == *" $n "* ]] ||
      usage "--only: unknown comparison '$n'; valid: $(IFS=,; echo "${valid_only[*]}")"
  done
fi
[[ $publish == 1 && -n $only ]] && usage "--publish is for a whole run, not --only"
# What this run replaces: a full run always, a quick one only with --publish.
published=0
[[ -z $only && ( $mode == full || $publish == 1 ) ]] && published=1

# 1. Peers and tools, from Debian.
pkgs=(victoria-metrics h2o wrk fio gnuplot-nox postgresql-15 mosquitto libmosquitto-dev
      libsimdjson-dev python3-psycopg2)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null ||
    { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null; }
fi
PY=/usr/bin/python3   # Debian's interpreter: python3-psycopg2 lives there

# 2. Binaries (release preset: RelWithDebInfo -O2).
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true
if [[ $build == 1 ]]; then
  [[ -f build/release/build.ninja ]] || cmake --preset release >/dev/null
  nice -n 5 cmake --build build/release -j"${JOULE_BUILD_JOBS:-2}" \
    --target joule core_throughput simdjson_limit mqtt_load engine_digest >&2
fi

# 3. Data, generated once per mode and regenerated unless it lies in the current hour with at
#    least 5 minutes of that hour left (gen_data.py --reuse-if-fresh; within the last 5
#    minutes of an hour it waits for the next): Joule finalizes a silent device's 1h and 1d
#    windows once they have ended in processing time (CONTRACT §2), so with data whose hour
#    has ended it writes a device-hour's final record per device into the measured minute,
#    and the ingest comparison would measure the data's age (session 17: 16-hour-old data,
#    30k history writes instead of 10k; session 18: 42-minute-old data whose hour had
#    ended, 20k).
if [[ $mode == quick ]]; then gen=(--devices 1000 --seconds 60 --history-devices 2)
else gen=(--devices 10000 --seconds 60 --history-devices 4); fi
data="${JOULE_BENCH_DATA:-/var/tmp/joule-bench-data-$mode}"
"$PY" bench/harness/gen_data.py --out "$data" "${gen[@]}" --history-days 31 --reuse-if-fresh \
  >/dev/null

# 4. Run, record, render.
if [[ $mode == quick ]]; then extra=(--wrk-seconds 5 --queries 100 --mqtt-devices 200)
else extra=(--wrk-seconds 10 --queries 300 --mqtt-devices 1000); fi
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p bench/results
out="bench/results/$stamp-$mode.json"
# A subset (and a quick run unless --publish) is recorded on its own and published nowhere:
# it must not replace the full run in latest.json and the generated section of
# docs/BENCHMARKS.md.
[[ -n $only ]] && out="bench/results/$stamp-$mode-only-${only//,/-}.json"
"$PY" bench/harness/bench.py --data "$data" --bin-dir build/release/bench \
  --joule build/release/src/app/joule --out "$out" --runs "$runs" --mode "$mode" \
  ${only:+--only "$only"} "${extra[@]}"
if [[ $published == 1 ]]; then
  cp "$out" bench/results/latest.json
  "$PY" bench/harness/report.py bench/results/latest.json docs/BENCHMARKS.md docs/benchmarks.png
fi
"$PY" - "$out" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({"ratios": r["ratios"], "api_p99_ms_half_load": r.get("api_p99_ms_half_load"),
                  "errors": r["errors"]}, indent=1))
PYEOF
if [[ $published == 1 ]]; then
  echo "wrote $out, bench/results/latest.json, docs/BENCHMARKS.md, docs/benchmarks.png" >&2
elif [[ -n $only ]]; then
  echo "wrote $out (a subset: latest.json and docs/BENCHMARKS.md left as they were)" >&2
else
  echo "wrote $out (a quick run: latest.json and docs/BENCHMARKS.md left as they were;" \
    "--publish replaces them)" >&2
fi
