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
  # The board itself (slot files, redundant env booting A, keys/, cmdline,
  # system.conf) is the one the demo and the daemon tests use.
  "$bin" demo -board-only -dir "$tmp" -slot-size $((mib + 44))M -compatible bench-board >/dev/null
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
