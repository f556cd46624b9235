#!/usr/bin/env bash
# Quick start, command 2: install what is missing, build (warnings are errors), start
# the services the tests use, and run the whole suite with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
scripts/build.sh ci
cd build/ci
ctest --output-on-failure --timeout 900 -j"${JOULE_TEST_JOBS:-2}" "$@"
