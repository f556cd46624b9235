#!/usr/bin/env bash
# Configures and builds one CMake preset (default: release). Quick when nothing changed
# (Ninja + ccache).
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"
shift || true
# Further arguments: targets to build (default: everything).
targets=()
for t in "$@"; do targets+=(--target "$t"); done
# Paths relative to the checkout in ccache's keys, so a fresh clone in another folder
# (CI) reuses what earlier builds on this machine compiled.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true
if [[ ! -f "build/$preset/build.ninja" ]]; then
  cmake --preset "$preset" >/dev/null
fi
cmake --build --preset "$preset" "${targets[@]}" -- -j"${JOULE_BUILD_JOBS:-$(nproc)}"
