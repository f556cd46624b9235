#!/usr/bin/env bash
# Copies the SQLite metadata database of a STOPPED server ({data_dir}/metadata.db) into a
# PostgreSQL metadata database that Joule has created and that holds no rows yet: every
# table — devices, device token hashes, owner keys, rules, alerts, deleted device ids — so
# device tokens and owner keys already issued keep working, and rules and alerts (acked,
# snoozed) carry over. One transaction: all or nothing. (`joule devices export/import`
# carries device rows only and issues new tokens; docs/OPERATIONS.md "Moving the
# metadata from SQLite to PostgreSQL".)
#
#   scripts/metadata-sqlite-to-postgres.sh SQLITE_FILE POSTGRES_URL
#
# Needs sqlite3 and psql. Create the PostgreSQL schema first with the binary that wrote the
# SQLite file, e.g. `JOULE_METADATA_BACKEND=postgres JOULE_METADATA_URL=… joule devices
# export` (it migrates the empty database and prints the CSV header).
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 SQLITE_FILE POSTGRES_URL" >&2
  exit 2
fi
src=$1
dst=$2
[[ -f $src ]] || { echo "$0: no such file: $src" >&2; exit 1; }

psql_q() { psql "$dst" -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }

# Each backend numbers its own migrations (PostgreSQL has more: its change notification);
# the logical tables are the same (docs/formats/metadata.md). A column this script does not
# know fails the transaction below, and nothing is written.
psql_q "SELECT 1 FROM schema_migrations LIMIT 1" >/dev/null 2>&1 || {
  echo "$0: $dst has no Joule schema: run a joule command with metadata.backend = postgres on it first" >&2
  exit 1
}
tables="devices device_tokens owner_keys rules alerts deleted_devices"
for t in $tables; do
  n=$(psql_q "SELECT count(*) FROM $t")
  if [[ $n != 0 ]]; then
    echo "$0: the PostgreSQL table $t already holds $n rows; the copy goes only into an empty database" >&2
    exit 1
  fi
done

# SQLite keeps times as INTEGER microseconds since the epoch, hashes as BLOBs and JSON as
# TEXT; PostgreSQL timestamptz, bytea and json/jsonb (docs/formats/metadata.md).
ts() { echo "ifnull('pg_temp.ts(' || $1 || ')', 'NULL')"; }
{
  echo "SET standard_conforming_strings = on;"
  echo "CREATE FUNCTION pg_temp.ts(bigint) RETURNS timestamptz LANGUAGE sql IMMUTABLE AS"
  echo "  \$\$ SELECT timestamptz 'epoch' + \$1 * interval '1 microsecond' \$\$;"
  sqlite3 -readonly "$src" <<SQL
SELECT 'INSERT INTO devices (device_id, owner_id, name, model, installed_at, timezone, location, config, created_at, updated_at) VALUES ('
  || quote(device_id) || ', ' || quote(owner_id) || ', ' || quote(name) || ', ' || quote(model) || ', '
  || $(ts installed_at) || ', ' || quote(timezone) || ', ' || quote(location) || ', '
  || ifnull(quote(config) || '::jsonb', 'NULL') || ', '
  || $(ts created_at) || ', ' || $(ts updated_at) || ');'
  FROM devices ORDER BY device_id;
SELECT 'INSERT INTO device_tokens (token_hash, device_id, created_at) VALUES (decode('
  || quote(hex(token_hash)) || ', ''hex''), ' || quote(device_id) || ', ' || $(ts created_at) || ');'
  FROM device_tokens;
SELECT 'INSERT INTO owner_keys (key_id, token_hash, owner_id, created_at) VALUES ('
  || quote(key_id) || ', decode(' || quote(hex(token_hash)) || ', ''hex''), ' || quote(owner_id)
  || ', ' || $(ts created_at) || ');'
  FROM owner_keys;
SELECT 'INSERT INTO rules (rule_id, owner_id, body, created_at, updated_at) VALUES ('
  || quote(rule_id) || ', ' || quote(owner_id) || ', ' || quote(body) || '::json, '
  || $(ts created_at) || ', ' || $(ts updated_at) || ');'
  FROM rules;
SELECT 'INSERT INTO alerts (alert_id, rule_id, device_id, owner_id, state, acked, snoozed_until, opened_at, updated_at, body) VALUES ('
  || quote(alert_id) || ', ' || quote(rule_id) || ', ' || quote(device_id) || ', ' || quote(owner_id)
  || ', ' || quote(state) || ', ' || CASE WHEN acked <> 0 THEN 'true' ELSE 'false' END || ', '
  || $(ts snoozed_until) || ', ' || $(ts opened_at) || ', ' || $(ts updated_at) || ', '
  || quote(body) || '::json);'
  FROM alerts;
SELECT 'INSERT INTO deleted_devices (device_id, owner_id, deleted_at) VALUES ('
  || quote(device_id) || ', ' || quote(owner_id) || ', ' || $(ts deleted_at) || ');'
  FROM deleted_devices;
SQL
} | psql "$dst" -X -q -v ON_ERROR_STOP=1 --single-transaction -f -

for t in $tables; do
  a=$(sqlite3 -readonly "$src" "SELECT count(*) FROM $t")
  b=$(psql_q "SELECT count(*) FROM $t")
  echo "$t: sqlite $a, postgres $b"
  if [[ $a != "$b" ]]; then
    echo "$0: $t differs" >&2
    exit 1
  fi
done
