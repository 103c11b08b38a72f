#!/usr/bin/env bash
# Verify time of a 256 MiB bundle signed with RSA-4096 (RSASSA-PSS) against
# the same bundle signed with Ed25519, both through `otad bundle verify`
# (every payload byte through the verifying reader), in the same run. The
# signature covers only the manifest, so the ratio should be close to 1.0:
# one RSA-4096 verification costs well under a millisecond next to hashing
# 256 MiB. Warm page cache.
set -euo pipefail
OTAD_BIN=${OTAD_BIN:-$PWD/bin/otad}
MIB=${BENCH_BUNDLE_MIB:-256}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

head -c $((MIB << 20)) /dev/urandom >"$tmp/rootfs.img"
"$OTAD_BIN" bundle keygen --alg ed25519 --id bench-ed --role release -o "$tmp/ed" >/dev/null
"$OTAD_BIN" bundle keygen --alg rsa4096 --id bench-rsa --role release -o "$tmp/rsa" >/dev/null
for k in ed rsa; do
  mkdir "$tmp/keys-$k" && cp "$tmp/$k.pub" "$tmp/keys-$k/"
  "$OTAD_BIN" bundle create --compatible bench-gw --version 1 --security-version 1 \
    --image rootfs="$tmp/rootfs.img" --compress none --chunk-size 1M \
    --key "$tmp/$k.key" -o "$tmp/$k.otab" >/dev/null
  cat "$tmp/$k.otab" >/dev/null # warm the page cache
done
rm "$tmp/rootfs.img"

ns() { date +%s%N; }
# Wall time and CPU time (user+sys, from /usr/bin/time) of each run; best
# of 7, the two signatures interleaved so load from other jobs hits both.
# CPU time is the steadier number on a shared machine.
declare -A wall cpu
for _ in 1 2 3 4 5 6 7; do
  for k in ed rsa; do
    t0=$(ns)
    /usr/bin/time -f '%U %S' -o "$tmp/time" \
      "$OTAD_BIN" bundle verify --keyring "$tmp/keys-$k" --compatible bench-gw "$tmp/$k.otab" >/dev/null
    t=$(( $(ns) - t0 ))
    c=$(awk '{printf "%d", ($1 + $2) * 1000}' "$tmp/time")
    if [[ -z ${wall[$k]:-} ]] || (( t < ${wall[$k]} )); then wall[$k]=$t; fi
    if [[ -z ${cpu[$k]:-} ]] || (( c < ${cpu[$k]} )); then cpu[$k]=$c; fi
  done
done
ms() { echo "scale=1; $1 / 1000000" | bc; }
printf 'bundle %d MiB verify, Ed25519 signature (baseline)  wall %8s ms  cpu %6s ms\n' "$MIB" "$(ms "${wall[ed]}")" "${cpu[ed]}"
printf 'bundle %d MiB verify, RSA-4096 PSS signature        wall %8s ms  cpu %6s ms  ratio wall %s cpu %s (expected ~1.0)\n' "$MIB" \
  "$(ms "${wall[rsa]}")" "${cpu[rsa]}" "$(echo "scale=3; ${wall[rsa]} / ${wall[ed]}" | bc)" "$(echo "scale=3; ${cpu[rsa]} / ${cpu[ed]}" | bc)"
