#!/usr/bin/env bash
# Download + install throughput: the same 256 MiB bundle installed by a real
# `otad serve` (private bus, file slots) from a loopback HTTP URL and from a
# local file, interleaved, best of 7 each. Goal: URL/file ratio >= 0.9.
# The whole install is timed: fetch, verify, write, fsync, read-back, arm.
# The server is Go's http.ServeFile (sendfile, Range, ETag), a plain static
# file server; fetch receives on its own goroutine (2 x 1 MiB read-ahead).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${OTAD_BIN:-$PWD/bin/otad}
tmp=$(mktemp -d)
spid= buspid= hpid=
trap 'board_stop; [[ -n $hpid ]] && { kill $hpid 2>/dev/null || true; }; rm -rf "$tmp"' EXIT
. bench/lib/board.sh

mib=${INSTALLBENCH_MIB:-256}
board_setup "$mib" none
go build -o "$tmp/fetchbench" ./internal/fetch/cmd/fetchbench
mkfifo "$tmp/hold"
"$tmp/fetchbench" -serve "$tmp/update.otab" <"$tmp/hold" >"$tmp/url" &
hpid=$!
exec 9>"$tmp/hold" # the server runs until this descriptor closes
for _ in $(seq 50); do [[ -s $tmp/url ]] && break; sleep 0.1; done
url=$(cat "$tmp/url")
board_serve

now() { date +%s.%N; }
file_t=() url_t=()
for round in 1 2 3 4 5 6 7; do
  t0=$(now); "$bin" install --no-reboot "$tmp/update.otab" >/dev/null; t1=$(now)
  file_t+=("$(echo "$t1 - $t0" | bc -l)")
  t0=$(now); "$bin" install --no-reboot "$url" >/dev/null; t1=$(now)
  url_t+=("$(echo "$t1 - $t0" | bc -l)")
done
exec 9>&-
hwm=$(awk '/^VmHWM:/ {print $2}' /proc/$spid/status) # peak RSS of otad serve over all 14 installs
size=$(stat -c %s "$tmp/update.otab")
best() { printf '%s\n' "$@" | sort -n | head -1; }
bf=$(best "${file_t[@]}") bu=$(best "${url_t[@]}")
awk -v f="$bf" -v u="$bu" -v s="$size" -v h="$hwm" -v l="$(cut -d' ' -f1-3 /proc/loadavg)" 'BEGIN {
  printf "install: %.0f MiB bundle (raw), otad serve + otactl, best of 7 interleaved (load %s)\n", s/1048576, l
  printf "  from local file (baseline)  %6.3f s  %7.1f MB/s\n", f, s/f/1e6
  printf "  from http://127.0.0.1       %6.3f s  %7.1f MB/s\n", u, s/u/1e6
  printf "  ratio url/file throughput   %6.2f   (goal >= 0.90)\n", f/u
  printf "  otad serve peak RSS         %6.1f MB (goal <= 32 MB)\n", h/1024
}'
