#!/usr/bin/env bash
# Quick start, command 2: install what is missing, build (warnings are errors), start
# the real services the tests use (PostgreSQL, Redis) on free ports with temporary data
# dirs, and run the whole suite with CTest. Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
scripts/install-deps.sh --test
scripts/build.sh ci
eval "$(scripts/test-services.sh start)"
cd build/ci
status=0
ctest --output-on-failure --timeout 900 -j"${JOULE_TEST_JOBS:-2}" "$@" || status=$?
"$root/scripts/test-services.sh" stop "$JOULE_TEST_SERVICES_DIR" || true
exit "$status"
