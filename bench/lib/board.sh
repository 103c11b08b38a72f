# Sourced by bench scripts: a file-backed board driven by a real `otad serve`
# on a private dbus-daemon, like make demo. Needs $bin (otad) and $tmp.
#   board_setup IMAGE_MIB ENCODING   keys, bundle $tmp/update.otab, env, config
#   board_serve                      starts bus + serve; sets $spid $buspid
#   board_stop                       stops both (by PID)
board_setup() {
  local mib=$1 enc=$2
  # A quarter random, the rest compressible (a root file system compresses about 2:1).
  head -c $((mib / 4 << 20)) /dev/urandom >"$tmp/rootfs.img"
  head -c $((mib * 3 / 4 << 20)) /dev/zero | tr '\0' 'x' >>"$tmp/rootfs.img"
  "$bin" bundle keygen --id bench -o "$tmp/bench" >/dev/null
  mkdir -p "$tmp/keys" && cp "$tmp/bench.pub" "$tmp/keys/"
  "$bin" bundle create --compatible bench-board --version 1.0 --compress "$enc" \
    --image rootfs="$tmp/rootfs.img" --key "$tmp/bench.key" -o "$tmp/update.otab" >/dev/null
  rm "$tmp/rootfs.img"
  head -c 16384 /dev/zero >"$tmp/env0"; head -c 16384 /dev/zero >"$tmp/env1"
  printf '%s 0x0 0x4000\n%s 0x0 0x4000\n' "$tmp/env0" "$tmp/env1" >"$tmp/fw_env.config"
  echo "root=/dev/x otad.slot=A" >"$tmp/cmdline"
  cat >"$tmp/system.conf" <<CONF
[system]
compatible = bench-board
data-dir = $tmp/data
env-config = $tmp/fw_env.config
env-lock = $tmp/fw_env.lock
cmdline = $tmp/cmdline
reboot = manual
[keyring]
directory = $tmp/keys
[slot.rootfs.0]
name = A
device = $tmp/slotA
type = file
size = $((mib + 44))M
[slot.rootfs.1]
name = B
device = $tmp/slotB
type = file
size = $((mib + 44))M
[health]
target =
watchdog = none
CONF
  "$bin" env init -c "$tmp/fw_env.config" -f /dev/null >/dev/null 2>&1
}

board_serve() {
  cat >"$tmp/bus.conf" <<BUS
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path=$tmp/bus</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/></policy>
</busconfig>
BUS
  local out
  out=$(dbus-daemon --config-file="$tmp/bus.conf" --fork --print-pid)
  buspid=${out%%$'\n'*}
  export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$tmp/bus
  "$bin" serve --config "$tmp/system.conf" 2>"$tmp/serve.log" &
  spid=$!
  local i
  for i in $(seq 100); do "$bin" status >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "otad serve did not come up:" >&2; cat "$tmp/serve.log" >&2; return 1
}

board_stop() {
  [[ -n ${spid:-} ]] && { kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; }
  [[ -n ${buspid:-} ]] && { kill "$buspid" 2>/dev/null || true; }
  spid= buspid=
}
