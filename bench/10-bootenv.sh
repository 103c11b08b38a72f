#!/usr/bin/env bash
# Arm + commit of a trial boot: otad's native Go env writes versus the RAUC
# way, 4 fw_setenv processes (2 to arm, 2 to commit), on the same kind of
# redundant 16 KiB env file in the same temp directory. The trial boot in
# between (U-Boot counting bootcount) is not timed on either side.
# Goal: otad <= 5 ms per cycle.
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export TMPDIR=$tmp

go_out=$(go test -run '^$' -bench '^BenchmarkArmCommitCycle$' -benchtime 300x -count 1 ./internal/boot/)
otad_ns=$(awk '/^BenchmarkArmCommitCycle/ {print $3; exit}' <<<"$go_out")
[ -n "$otad_ns" ] || { echo "benchmark produced no result:"; echo "$go_out"; exit 1; }

printf 'otad_slot=A\notad_prev=A\nbootcmd=run distro_bootcmd\nbootdelay=2\n' >"$tmp/defaults"
mkenvimage -r -s 0x4000 -o "$tmp/copy" "$tmp/defaults"
cat "$tmp/copy" "$tmp/copy" >"$tmp/env.img"
printf '%s 0x0 0x4000\n%s 0x4000 0x4000\n' "$tmp/env.img" "$tmp/env.img" >"$tmp/fw_env.config"
cfg=$tmp/fw_env.config
n=50 us=0
for i in $(seq "$n"); do
  if (( i % 2 )); then cur=A next=B; else cur=B next=A; fi
  t0=${EPOCHREALTIME/./}
  fw_setenv -c "$cfg" otad_prev "$cur" otad_slot "$next"  # arm, 1/2
  fw_setenv -c "$cfg" upgrade_available 1 bootcount 0     # arm, 2/2
  t1=${EPOCHREALTIME/./}
  fw_setenv -c "$cfg" bootcount 1                         # the trial boot (U-Boot), untimed
  t2=${EPOCHREALTIME/./}
  fw_setenv -c "$cfg" upgrade_available 0                 # commit, 1/2
  fw_setenv -c "$cfg" bootcount 0                         # commit, 2/2
  t3=${EPOCHREALTIME/./}
  us=$(( us + t1 - t0 + t3 - t2 ))
done
[ "$(fw_printenv -c "$cfg" -n upgrade_available)" = 0 ] || { echo "baseline did not commit"; exit 1; }

awk -v o="$otad_ns" -v f="$us" -v n="$n" 'BEGIN {
  f = f * 1000 / n
  printf "bootenv arm+commit, otad native Go (2 writes, fdatasync + read-back): %8.3f ms/cycle\n", o/1e6
  printf "bootenv arm+commit, 4 fw_setenv processes (RAUC way, baseline):    %8.3f ms/cycle\n", f/1e6
  printf "bootenv ratio: otad is %.1fx faster than fw_setenv (goal <= 5 ms/cycle: %s)\n", f/o, (o <= 5e6 ? "met" : "MISSED")
}'
