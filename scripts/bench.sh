#!/usr/bin/env bash
# make bench: runs every bench/*.sh in order. Each prints its own lines of
# the table, always as a ratio against a baseline run in the same script.
set -euo pipefail
cd "$(dirname "$0")/.."
export OTAD_BIN=$PWD/bin/otad
for b in bench/*.sh; do
  echo "== $b"
  bash "$b"
done
