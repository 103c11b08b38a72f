#!/usr/bin/env bash
# Encrypted bundles (docs/bundle-format.md, "Encryption"):
# 1. Streaming install of the same 256 MiB image by a real `otad serve`
#    (private bus, file slots) from the plain bundle and from that bundle
#    encrypted for the device (`bundle encrypt`, [keyring] decryption-key),
#    interleaved, best of 5 each: the whole install is timed (verify, GCM
#    open, write, fsync, read-back, arm). Goal: encrypted/plain throughput
#    >= 0.9.
# 2. The same two bundles through `otad bundle verify` (verify + decrypt
#    only, no slot write), best of 3 by wall time and by CPU time: the
#    cipher's cost with no slot write to hide it.
# 3. Recipient block for 10,000 recipients: its size, and a device's lookup
#    (binary search) and lookup + unwrap (ECDH, HKDF, GCM) time, from the
#    crypt package's benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${OTAD_BIN:-$PWD/bin/otad}
tmp=$(mktemp -d)
spid= buspid=
trap 'board_stop; rm -rf "$tmp"' EXIT
. bench/lib/board.sh

mib=${ENCBENCH_MIB:-256}
board_setup "$mib" none
"$bin" bundle recipients keygen -o "$tmp/device" >/dev/null
"$bin" bundle recipients keygen --alg p256 -o "$tmp/publisher" >/dev/null
"$bin" bundle encrypt --key "$tmp/bench.key" --to "$tmp/publisher.pub" --to "$tmp/device.pub" \
  -o "$tmp/enc.otab" "$tmp/update.otab" >/dev/null
sed -i "s|^directory = $tmp/keys\$|&\ndecryption-key = $tmp/device.key|" "$tmp/system.conf"
grep -q '^decryption-key' "$tmp/system.conf"
board_serve

now() { date +%s.%N; }
plain_t=() enc_t=()
for round in 1 2 3 4 5; do
  t0=$(now); "$bin" install --no-reboot "$tmp/update.otab" >/dev/null; t1=$(now)
  plain_t+=("$(echo "$t1 - $t0" | bc -l)")
  t0=$(now); "$bin" install --no-reboot "$tmp/enc.otab" >/dev/null; t1=$(now)
  enc_t+=("$(echo "$t1 - $t0" | bc -l)")
done
board_stop
vbest() { # best wall time in s of 3 runs of "$@"
  local b=
  for _ in 1 2 3; do
    t0=$(now); "$@" >/dev/null; t1=$(now)
    b=$(printf '%s\n' ${b:+"$b"} "$(echo "$t1 - $t0" | bc -l)" | sort -n | head -1)
  done
  echo "$b"
}
vp=$(vbest "$bin" bundle verify --keyring "$tmp/keys" --compatible bench-board "$tmp/update.otab")
ve=$(vbest "$bin" bundle verify --keyring "$tmp/keys" --compatible bench-board --decryption-key "$tmp/device.key" "$tmp/enc.otab")
cpubest() { # least user+sys CPU seconds of 3 runs of "$@" (steadier than wall time on a busy host)
  local b= t
  for _ in 1 2 3; do
    t=$( { TIMEFORMAT='%3U %3S'; time "$@" >/dev/null; } 2>&1 | awk '{print $1 + $2}')
    b=$(printf '%s\n' ${b:+"$b"} "$t" | sort -n | head -1)
  done
  echo "$b"
}
cp_=$(cpubest "$bin" bundle verify --keyring "$tmp/keys" --compatible bench-board "$tmp/update.otab")
ce=$(cpubest "$bin" bundle verify --keyring "$tmp/keys" --compatible bench-board --decryption-key "$tmp/device.key" "$tmp/enc.otab")
best() { printf '%s\n' "$@" | sort -n | head -1; }
bp=$(best "${plain_t[@]}") be=$(best "${enc_t[@]}")
size=$(stat -c %s "$tmp/update.otab") esize=$(stat -c %s "$tmp/enc.otab")
awk -v p="$bp" -v e="$be" -v vp="$vp" -v ve="$ve" -v cp="$cp_" -v ce="$ce" -v s="$size" -v es="$esize" -v l="$(cut -d' ' -f1-3 /proc/loadavg)" 'BEGIN {
  printf "encrypted install: %.0f MiB bundle (raw; encrypted copy +%d bytes), otad serve + otactl, best of 5 interleaved (load %s)\n", s/1048576, es-s, l
  printf "  plain bundle (baseline)        %6.3f s  %7.1f MB/s\n", p, s/p/1e6
  printf "  encrypted bundle               %6.3f s  %7.1f MB/s\n", e, s/e/1e6
  printf "  ratio encrypted/plain install  %6.2f   (goal >= 0.90)\n", p/e
  printf "  verify only: plain %.1f MB/s, verify+decrypt %.1f MB/s, ratio %.2f\n", s/vp/1e6, s/ve/1e6, vp/ve
  printf "  verify only, CPU: plain %.3f s, verify+decrypt %.3f s, ratio %.2f\n", cp, ce, cp/ce
}'
go test -run '^$' -bench 'Lookup10k|Open10k' -benchtime 20000x ./internal/crypt/ | awk '
  /^BenchmarkLookup10k/ { for (i = 1; i <= NF; i++) { if ($i == "ns/op") ns = $(i-1); if ($i == "block-bytes") bb = $(i-1) } lk = ns }
  /^BenchmarkOpen10k/   { for (i = 1; i <= NF; i++) if ($i == "ns/op") op = $(i-1) }
  END {
    printf "recipients: 10000 in one block: %d bytes (%.1f bytes each)\n", bb, bb/10000
    printf "  device lookup (binary search)        %8.0f ns\n", lk
    printf "  lookup + unwrap (ECDH, HKDF, GCM)    %8.0f ns\n", op
  }'
