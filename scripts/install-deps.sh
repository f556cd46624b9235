#!/usr/bin/env bash
# Installs every Debian package Joule needs to build, run and test. Idempotent:
# packages already present are skipped, so a second run takes a second.
set -euo pipefail

BUILD_PKGS=(build-essential cmake ninja-build ccache pkg-config git
  libboost-dev libssl-dev libsimdjson-dev librocksdb-dev libhiredis-dev libpq-dev
  libsqlite3-dev libzstd-dev libtomlplusplus-dev libcli11-dev libspdlog-dev libfmt-dev
  libhowardhinnant-date-dev libxxhash-dev libmosquitto-dev libgtest-dev libgmock-dev
  libbenchmark-dev tzdata nodejs)
# What the demo (scripts/demo.sh: curl) and the README's first commands use (curl, python3
# to read a JSON answer, mosquitto_pub): a minimal Debian 12 has none of them (found by a
# black-box test: the demo blamed the server for a missing curl).
BUILD_PKGS+=(curl python3 mosquitto-clients)
# npm builds the dashboard (web/) when its sources changed; without it the committed
# web/dist is embedded. Debian's nodejs lacks npm; NodeSource's bundles it (and conflicts
# with Debian's npm package), so npm is added only when missing.
if ! command -v npm >/dev/null 2>&1; then BUILD_PKGS+=(npm); fi
# chromium: the dashboard's browser test (tests/e2e, through playwright-core).
# clang-14 + libclang-rt-14-dev: the libFuzzer targets under ASan/UBSan (fuzz/, scripts/fuzz.sh).
# python3-yaml + python3-jsonschema: tests/integration/test_openapi.py checks answers against
# docs/openapi.yaml. faketime: tests/integration/test_clock_steps.py steps the server's clock.
# prometheus (with promtool): tests/integration/test_ops_rules.py checks deploy/prometheus.
TEST_PKGS=(postgresql redis-server mosquitto mosquitto-clients curl openssl python3 chromium
  clang-14 libclang-rt-14-dev python3-yaml python3-jsonschema faketime prometheus)

want=("${BUILD_PKGS[@]}")
if [[ "${1:-}" == "--test" ]]; then want+=("${TEST_PKGS[@]}"); fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "joule: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
