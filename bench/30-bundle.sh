#!/usr/bin/env bash
# Verify-while-streaming throughput of a 256 MiB bundle (compression none,
# 1 MiB chunks) through `otad bundle verify`, which reads every payload byte
# through bundle.Reader (chunk hash before any byte is released), against
# `sha256sum` of the same file in the same run. Both read from a warm page
# cache; best of 3 each. A second line measures --full-hash (adds the
# whole-image SHA-256 on top of the chunk hashes for raw images). Debian's
# sha256sum has no SHA-NI code while Go's crypto/sha256 does, so an
# openssl line (which uses SHA-NI) is printed as a stricter reference.
set -euo pipefail
OTAD_BIN=${OTAD_BIN:-$PWD/bin/otad}
MIB=${BENCH_BUNDLE_MIB:-256}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

head -c $((MIB << 20)) /dev/urandom >"$tmp/rootfs.img"
"$OTAD_BIN" bundle keygen --id bench --role release -o "$tmp/bench" >/dev/null
mkdir "$tmp/keys" && cp "$tmp/bench.pub" "$tmp/keys/"
"$OTAD_BIN" bundle create --compatible bench-gw --version 1 --security-version 1 \
  --image rootfs="$tmp/rootfs.img" --compress none --chunk-size 1M \
  --key "$tmp/bench.key" -o "$tmp/b.otab" >/dev/null
rm "$tmp/rootfs.img"
size=$(stat -c %s "$tmp/b.otab")
cat "$tmp/b.otab" >/dev/null # warm the page cache for both sides

ns() { date +%s%N; }
best() { # best wall time in ns of 3 runs of "$@"
  local b=0 t0 t
  for _ in 1 2 3; do
    t0=$(ns); "$@" >/dev/null; t=$(( $(ns) - t0 ))
    if (( b == 0 || t < b )); then b=$t; fi
  done
  echo "$b"
}
base=$(best sha256sum "$tmp/b.otab")
ossl=0
if command -v openssl >/dev/null; then ossl=$(best openssl dgst -sha256 "$tmp/b.otab"); fi
verify=$(best "$OTAD_BIN" bundle verify --keyring "$tmp/keys" --compatible bench-gw "$tmp/b.otab")
full=$(best "$OTAD_BIN" bundle verify --keyring "$tmp/keys" --compatible bench-gw --full-hash "$tmp/b.otab")

mbs() { echo "scale=1; $size * 1000 / $1" | bc; }
printf 'bundle %d MiB raw: sha256sum (baseline)           %8s MB/s\n' "$MIB" "$(mbs "$base")"
printf 'bundle %d MiB raw: verify --full-hash (2 hashes)  %8s MB/s  ratio %s\n' "$MIB" "$(mbs "$full")" "$(echo "scale=2; $base / $full" | bc)"
if (( ossl > 0 )); then
  printf 'bundle %d MiB raw: openssl dgst -sha256 (SHA-NI)  %8s MB/s  (stricter reference; verify/openssl ratio %s)\n' "$MIB" "$(mbs "$ossl")" "$(echo "scale=2; $ossl / $verify" | bc)"
fi
printf 'bundle %d MiB raw: verify while streaming         %8s MB/s  ratio %s (goal >= 0.9)\n' "$MIB" "$(mbs "$verify")" "$(echo "scale=2; $base / $verify" | bc)"
