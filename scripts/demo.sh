#!/usr/bin/env bash
# make demo: the whole update loop on file-backed slots, no hardware.
# Runs bin/otad demo in ./demo-work (removed and recreated): a private
# dbus-daemon, `otad serve` as a child process on it, installs over D-Bus,
# reboots through the bootloader model. Nothing is written outside that
# directory and no process outlives the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${OTAD_BIN:-$PWD/bin/otad}
[[ -x $bin ]] || { echo "demo: $bin missing; run 'make build' first" >&2; exit 1; }
command -v dbus-daemon >/dev/null || { echo "demo: dbus-daemon missing; run 'make deps' (package dbus)" >&2; exit 1; }
"$bin" demo -dir "$PWD/demo-work"
