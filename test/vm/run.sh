#!/usr/bin/env bash
# make vmtest / vmtest-quick: test/vm/run.sh all|quick|NAME[,NAME...]
# Builds (or reuses) the cached VM inputs, the static arm64 otad and the
# harness, then runs the scenarios sequentially and prints a table.
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-all}
cache=$(test/vm/setup.sh | tail -1)
bin=$(dirname "$cache")/bin
mkdir -p "$bin"
GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build -trimpath -o "$bin/otad-arm64" ./cmd/otad
[[ -x bin/otad ]] || go build -trimpath -o bin/otad ./cmd/otad
go build -o "$bin/vmtest" ./test/vm
# The harness owns its QEMU processes: it kills them by PID on every exit
# path, and the kernel kills them (PR_SET_PDEATHSIG) if the harness dies.
exec "$bin/vmtest" -cache "$cache" -repo . -otad-arm64 "$bin/otad-arm64" -otad bin/otad -mode "$mode" "${@:2}"
