#!/usr/bin/env bash
# The libFuzzer targets (fuzz/CMakeLists.txt): clang, ASan + UBSan, in their own build dir.
#   scripts/fuzz.sh build [BUILD_DIR]                 configure + build every target
#   scripts/fuzz.sh run NAME SECONDS [BUILD_DIR]      run one target over its seed corpus
#   scripts/fuzz.sh all SECONDS [BUILD_DIR]           build, then run every target
# BUILD_DIR defaults to build/fuzz. A run first replays every input of the seed corpus
# (src/<subsystem>/fuzz/corpus: seeds and regression inputs of fixed crashers), then
# mutates for SECONDS; new interesting inputs go to BUILD_DIR/corpus/NAME (not the source
# tree), a crasher to BUILD_DIR/artifacts/. Exit status non-zero on any crash, sanitizer
# report, leak, timeout or broken invariant. JOULE_FUZZ_SEED picks the mutation seed
# (default 1, deterministic; 0 = random — use that for long exploratory runs).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

declare -A corpus=(
  [telemetry_parser_fuzz]=src/ingest/fuzz/corpus
  [mqtt_codec_fuzz]=src/net/mqtt/fuzz/corpus
  [log_record_fuzz]=src/log/fuzz/corpus
  [checkpoint_fuzz]=src/app/fuzz/corpus
  [query_params_fuzz]=src/api/fuzz/corpus
  [window_engine_fuzz]=src/stream/fuzz/corpus
  [history_codec_fuzz]=src/store/rocksdb/fuzz/corpus
)
targets=(telemetry_parser_fuzz mqtt_codec_fuzz log_record_fuzz checkpoint_fuzz query_params_fuzz
  window_engine_fuzz history_codec_fuzz)

build() {
  local dir="$1"
  local cc=clang cxx=clang++
  command -v clang-14 >/dev/null 2>&1 && cc=clang-14 cxx=clang++-14
  if [[ ! -f "$dir/build.ninja" ]]; then
    CC=$cc CXX=$cxx cmake -S "$root/fuzz" -B "$dir" -G Ninja >/dev/null
  fi
  cmake --build "$dir" -j"${JOULE_BUILD_JOBS:-2}"
}

run() {
  local name="$1" secs="$2" dir="$3"
  local seeds="$root/${corpus[$name]:?unknown fuzz target $name}"
  mkdir -p "$dir/corpus/$name" "$dir/artifacts"
  # -max_len: large enough for the seeds; -rss_limit_mb / -malloc_limit_mb: a decoder that
  # allocates what a corrupt length field says fails the run.
  # -seed: fixed by default (JOULE_FUZZ_SEED overrides; 0 = random), so that a CI run and
  # a local run of the same tree explore the same inputs and a failure reproduces.
  "$dir/$name" -seed="${JOULE_FUZZ_SEED:-1}" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
    -max_len=16384 -print_final_stats=1 -artifact_prefix="$dir/artifacts/$name-" \
    "$dir/corpus/$name" "$seeds"
}

cmd="${1:-}"
case "$cmd" in
  build) build "${2:-$root/build/fuzz}" ;;
  run) run "${2:?name}" "${3:?seconds}" "${4:-$root/build/fuzz}" ;;
  all)
    dir="${3:-$root/build/fuzz}"
    build "$dir"
    for t in "${targets[@]}"; do run "$t" "${2:?seconds}" "$dir"; done
    ;;
  *)
    sed -n '2,10p' "$0"
    exit 2
    ;;
esac
