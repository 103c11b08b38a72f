#!/usr/bin/env bash
# Block slot writer throughput: a 256 MiB image into a loop device with otad's
# writer (without and with read-back) against `dd bs=4M conv=fsync` of the
# same image to the same device, in the same run. Prints time ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ] || ! command -v losetup >/dev/null; then
  echo "slotwrite: skipped (needs root and losetup for a loop device)"
  exit 0
fi

MIB=${SLOTWRITE_MIB:-256}
ROUNDS=${SLOTWRITE_ROUNDS:-5}
tmp=$(mktemp -d)
dev=""
cleanup() {
  if [ -n "$dev" ]; then losetup --detach "$dev" || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/slotbench" ./internal/slot/cmd/slotbench
head -c "$((MIB << 20))" /dev/urandom >"$tmp/image"
sum=$(sha256sum "$tmp/image" | cut -d' ' -f1)
truncate -s "$(((MIB + 16) << 20))" "$tmp/disk"
dev=$(losetup --find --show "$tmp/disk")

now() { date +%s.%N; }
# Each run starts from the same state: image in the page cache, device
# buffers flushed and dropped.
prep() { sync; blockdev --flushbufs "$dev"; }
run_dd() {
  prep; local t0; t0=$(now)
  dd if="$tmp/image" of="$dev" bs=4M conv=fsync status=none
  echo "$(now) - $t0" | bc -l
}
run_otad() {
  prep; local t0; t0=$(now)
  "$tmp/slotbench" -dev "$dev" -image "$tmp/image" -sha256 "$sum" "$@" >/dev/null
  echo "$(now) - $t0" | bc -l
}
# Best of N: on a shared machine the minimum is the run least disturbed by
# others, for the baseline and for otad alike.
best() { printf '%s\n' "$@" | sort -g | head -n1; }

cat "$tmp/image" >/dev/null
dd_t=() ot_t=() rb_t=() tr_t=() h_t=()
for _ in $(seq "$ROUNDS"); do
  dd_t+=("$(run_dd)")
  ot_t+=("$(run_otad)")
  rb_t+=("$(run_otad -readback)")
  tr_t+=("$(run_otad -readback -readback-while-writing)")
  h_t+=("$("$tmp/slotbench" -hash-only -image "$tmp/image")")
done
d=$(best "${dd_t[@]}"); o=$(best "${ot_t[@]}"); r=$(best "${rb_t[@]}"); w=$(best "${tr_t[@]}"); h=$(best "${h_t[@]}")
mbs() { echo "scale=1; $MIB * 1.048576 / $1" | bc -l; }
printf 'slotwrite: %d MiB image -> %s, best of %d rounds (load %s)\n' "$MIB" "$dev" "$ROUNDS" "$(cut -d' ' -f1 /proc/loadavg)"
printf '  dd bs=4M conv=fsync      %7s MB/s  (%.3f s)\n' "$(mbs "$d")" "$d"
printf '  otad block writer        %7s MB/s  (%.3f s)\n' "$(mbs "$o")" "$o"
printf '  otad + read-back         %7s MB/s  (%.3f s)\n' "$(mbs "$r")" "$r"
printf '  otad + read-back during  %7s MB/s  (%.3f s)  (ReadBackWhileWriting)\n' "$(mbs "$w")" "$w"
printf '  sha256 of the cached image alone (CPU floor of any read-back): %.3f s = %.2f x dd\n' "$h" "$(echo "$h / $d" | bc -l)"
printf '  ratio otad/dd            %7.3f  (goal <= 1.05)\n' "$(echo "$o / $d" | bc -l)"
printf '  ratio otad+read-back/dd  %7.3f  (goal <= 1.15)\n' "$(echo "$r / $d" | bc -l)"
printf '  ratio read-back during   %7.3f  (goal <= 1.15)\n' "$(echo "$w / $d" | bc -l)"
