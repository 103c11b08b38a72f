#!/usr/bin/env bash
# Memory and size of the daemon, measured on a real `otad serve` (private
# bus, file slots) installing a 256 MiB image (zstd bundle) via otactl:
#  - peak RSS (VmHWM) during the install; goal <= 32 MB
#  - idle RSS after start; goal <= 12 MB
#  - baseline in the same run: peak RSS of sha256sum over the same bundle
#    (about the least any verifying reader of the bundle needs)
#  - `make cross` device binary sizes; goal <= 8 MiB each
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${OTAD_BIN:-$PWD/bin/otad}
tmp=$(mktemp -d)
spid= buspid=
trap 'board_stop; rm -rf "$tmp"' EXIT
. bench/lib/board.sh

board_setup 256 zstd
board_serve
sleep 1
idle=$(awk '/^VmRSS:/ {print $2}' /proc/$spid/status)
"$bin" install --no-reboot "$tmp/update.otab" >/dev/null
peak=$(awk '/^VmHWM:/ {print $2}' /proc/$spid/status)
board_stop
sha=$(/usr/bin/time -f %M sha256sum "$tmp/update.otab" 2>&1 >/dev/null | tail -1)
bsize=$(stat -c %s "$tmp/update.otab")

awk -v i="$idle" -v p="$peak" -v s="$sha" -v b="$bsize" 'BEGIN {
  printf "rss: otad serve over D-Bus installing a 256 MiB image (%.0f MiB zstd bundle) via otactl\n", b/1048576
  printf "  install peak RSS (VmHWM)   %6.1f MB   goal <= 32 MB  %s\n", p/1024, (p/1024 <= 32 ? "ok" : "OVER")
  printf "  idle RSS after start       %6.1f MB   goal <= 12 MB  %s\n", i/1024, (i/1024 <= 12 ? "ok" : "OVER")
  printf "  sha256sum peak RSS         %6.1f MB   (baseline)\n", s/1024
  printf "  ratio install peak / sha256sum: %.1fx\n", p/s
}'

echo "size: make cross (device build, -tags otad_device, stripped)"
make -s cross | while read -r f s _ mib _; do
  printf '  %-26s %5.2f MiB   goal <= 8 MiB  %s\n' "$f" "${mib#(}" "$(awk -v m="${mib#(}" 'BEGIN{print (m <= 8 ? "ok" : "OVER")}')"
done
