#!/usr/bin/env bash
# make demo: the whole update loop on file-backed slots, no hardware.
# Runs bin/otad demo in ./demo-work (removed and recreated); nothing is
# written outside that directory.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${OTAD_BIN:-$PWD/bin/otad}
[[ -x $bin ]] || { echo "demo: $bin missing; run 'make build' first" >&2; exit 1; }
"$bin" demo -dir "$PWD/demo-work"
