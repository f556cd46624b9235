#!/usr/bin/env bash
# Writes deploy/joule.example.toml from `joule config` (every key with its default) with
# each key commented out, so that the example is exactly what the binary takes.
#
#   scripts/gen-example-config.sh [JOULE_BINARY] > deploy/joule.example.toml
#
# JOULE_BINARY defaults to build/release/src/app/joule. No JOULE_* variable of the caller
# reaches it (they would change the defaults shown). integration_cli
# (DeployFilesTest) checks that the checked-in file equals this script's output.
set -euo pipefail

joule=${1:-build/release/src/app/joule}
defaults=$(env -i PATH="$PATH" "$joule" config)

cat <<'HEADER'
# Joule configuration: every key with its default, commented out (CONTRACT §5; the same
# keys as `joule config` prints, generated from it by scripts/gen-example-config.sh).
# Uncomment and change what you need; JOULE_<SECTION>_<KEY> environment variables win over
# this file. With deploy/systemd/joule.service it is /etc/joule/joule.toml, and the data
# dir "./data" is /var/lib/joule/data (the service's working directory).
HEADER
# `joule config`'s own header (up to the first blank line) is replaced by the one above.
printf '%s\n' "$defaults" | sed -e '1,/^$/d' -e 's/^\([a-z0-9_]* = \)/# \1/' | sed -e '1i\\'
