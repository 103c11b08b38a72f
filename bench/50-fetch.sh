#!/usr/bin/env bash
# Download throughput: a 256 MiB bundle streamed through fetch.Open over
# loopback HTTP vs the same bytes through fetch.Open as a local file, both
# into SHA-256, interleaved in one run. Goal: ratio >= 0.9.
# (Measures the transport + hashing only; bench/55 times the whole install
# from URL vs from file.)
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/fetchbench" ./internal/fetch/cmd/fetchbench
"$tmp/fetchbench" -size "${FETCHBENCH_MIB:-256}" -rounds "${FETCHBENCH_ROUNDS:-7}" -dir "$tmp"
