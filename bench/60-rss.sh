#!/usr/bin/env bash
# Memory and size of the daemon.
#  - peak RSS (VmHWM) of the daemon wiring (internal/daemon, as `otad serve`
#    runs it, minus the bus) while installing a 256 MiB bundle into a file
#    slot; goal <= 32 MB
#  - idle RSS after start; goal <= 12 MB
#  - baseline in the same run: peak RSS of sha256sum over the same bundle
#    file (about the least any verifying reader of the bundle needs)
#  - `make cross` binary sizes; goal <= 8 MiB each
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${OTAD_BIN:-$PWD/bin/otad}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Built like bin/otad: static, trimmed, stripped.
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$tmp/rssbench" ./internal/daemon/testdata/rssbench

# 256 MiB image: a quarter random, the rest compressible (a root file
# system compresses about 2:1).
head -c $((64 << 20)) /dev/urandom >"$tmp/rootfs.img"
head -c $((192 << 20)) /dev/zero | tr '\0' 'x' >>"$tmp/rootfs.img"
"$bin" bundle keygen --id bench -o "$tmp/bench" >/dev/null
mkdir "$tmp/keys" && cp "$tmp/bench.pub" "$tmp/keys/"
"$bin" bundle create --compatible bench-board --version 1.0 --image rootfs="$tmp/rootfs.img" \
  --key "$tmp/bench.key" -o "$tmp/update.otab" >/dev/null
rm "$tmp/rootfs.img"
head -c 16384 /dev/zero >"$tmp/env0"; head -c 16384 /dev/zero >"$tmp/env1"
printf '%s 0x0 0x4000\n%s 0x0 0x4000\n' "$tmp/env0" "$tmp/env1" >"$tmp/fw_env.config"
echo "root=/dev/x otad.slot=A" >"$tmp/cmdline"
cat >"$tmp/system.conf" <<CONF
[system]
compatible = bench-board
data-dir = $tmp/data
env-config = $tmp/fw_env.config
cmdline = $tmp/cmdline
reboot = manual
[keyring]
directory = $tmp/keys
[slot.rootfs.0]
name = A
device = $tmp/slotA
type = file
size = 300M
[slot.rootfs.1]
name = B
device = $tmp/slotB
type = file
size = 300M
[health]
target =
watchdog = none
CONF

# Prefer the real `otad serve` on a private bus, driven by `otactl install`;
# until serve is built, the same wiring runs in-process (rssbench install).
if ! "$bin" serve -h 2>&1 | grep -q 'not built yet'; then
  cat >"$tmp/bus.conf" <<BUS
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path=$tmp/bus</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/></policy>
</busconfig>
BUS
  busout=$(dbus-daemon --config-file="$tmp/bus.conf" --fork --print-pid)
  buspid=${busout%%$'\n'*}
  export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$tmp/bus
  "$tmp/rssbench" initenv "$tmp/system.conf"
  "$bin" serve --config "$tmp/system.conf" 2>"$tmp/serve.log" &
  spid=$!
  trap 'kill $spid 2>/dev/null; kill $buspid 2>/dev/null; rm -rf "$tmp"' EXIT
  for _ in $(seq 100); do "$bin" status >/dev/null 2>&1 && break; sleep 0.1; done
  sleep 1
  idle=$(awk '/^VmRSS:/ {print $2}' /proc/$spid/status)
  "$bin" install "$tmp/update.otab" >/dev/null
  peak=$(awk '/^VmHWM:/ {print $2}' /proc/$spid/status)
  kill $spid; wait $spid 2>/dev/null || true
  kill $buspid 2>/dev/null || true
  how="otad serve over D-Bus (private bus), install by otactl"
else
  out=$("$tmp/rssbench" install "$tmp/system.conf" "$tmp/update.otab")
  idle=$(sed -n 's/.*idle_kb=\([0-9]*\).*/\1/p' <<<"$out")
  peak=$(sed -n 's/.*peak_kb=\([0-9]*\).*/\1/p' <<<"$out")
  how="daemon wiring in-process (otad serve not built yet)"
fi
sha=$("$tmp/rssbench" exec sha256sum "$tmp/update.otab" | sed 's/peak_kb=//')
bsize=$(stat -c %s "$tmp/update.otab")

echo "measured: $how"
awk -v i="$idle" -v p="$peak" -v s="$sha" -v b="$bsize" 'BEGIN {
  printf "bundle: %.0f MiB image, %.0f MiB bundle (zstd)\n", 256, b/1048576
  printf "otad install peak RSS (VmHWM):  %6.1f MB   goal <= 32 MB  %s\n", p/1024, (p/1024 <= 32 ? "ok" : "OVER")
  printf "otad idle RSS after start:      %6.1f MB   goal <= 12 MB  %s\n", i/1024, (i/1024 <= 12 ? "ok" : "OVER")
  printf "baseline sha256sum peak RSS:    %6.1f MB\n", s/1024
  printf "ratio otad install / sha256sum peak RSS: %.1fx\n", p/s
}'

echo "make cross:"
make -s cross | while read -r f s _ mib _; do
  printf '%-26s %5.2f MiB   goal <= 8 MiB  %s\n' "$f" "${mib#(}" "$(awk -v m="${mib#(}" 'BEGIN{print (m <= 8 ? "ok" : "OVER")}')"
done
