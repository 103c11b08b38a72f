#!/usr/bin/env bash
# bench-fleet.sh — `make bench-fleet`: the static update channel under load
# and in the daemon, one table.
#  1. fleetbench: 100,000 simulated devices, each running otad's channel
#     poll, verify and decide code (engine = recorder), against nginx on
#     127.0.0.1 with the poll interval compressed; rollout stages 1 %, 10 %,
#     100 % published with the host tooling; bounded by -max-duration.
#  2. `otad serve` RSS with [channel] off and on (polling a document served
#     by nginx every 2 s), measured like bench/60-rss.sh (highest VmRSS of the
#     process sampled 4-10 s after start); goal: under 1 MB more.
# Knobs: FLEET_DEVICES (100000), FLEET_INTERVAL (10s), FLEET_JITTER (2s),
# FLEET_CONNS (64).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || scripts/deps.sh
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
bin=${OTAD_BIN:-$PWD/bin/otad}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/otad-bench-fleet.XXXXXX")
spid= buspid= npid=
stop_nginx() { [[ -n $npid ]] && { kill "$npid" 2>/dev/null || true; wait "$npid" 2>/dev/null || true; }; npid=; }
trap 'board_stop; stop_nginx; rm -rf "$tmp"' EXIT
. bench/lib/board.sh

go build -o "$tmp/fleetbench" ./internal/channel/cmd/fleetbench
echo "== fleet: ${FLEET_DEVICES:-100000} devices against nginx on loopback" >&2
"$tmp/fleetbench" -devices "${FLEET_DEVICES:-100000}" -interval "${FLEET_INTERVAL:-10s}" \
  -jitter "${FLEET_JITTER:-2s}" -conns "${FLEET_CONNS:-64}" -nginx "$NGINX" -max-duration 270s -stage-max 100s | tee "$tmp/fleet.out"

echo "== otad serve RSS, [channel] off vs on" >&2
board_setup 4 zstd
"$bin" bundle keygen --id bench-channel --role channel -o "$tmp/chkey" >/dev/null
cp "$tmp/chkey.pub" "$tmp/keys/"
"$bin" channel init --compatible bench-board "$tmp/pub" >/dev/null
"$bin" channel add --bundle "$tmp/update.otab" --keyring "$tmp/keys" "$tmp/pub" >/dev/null
# Halted: the daemon holds and re-checks a real document but installs nothing.
"$bin" channel pause --halt --release 1.0 "$tmp/pub" >/dev/null
"$bin" channel sign --key "$tmp/chkey.key" "$tmp/pub" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
user=; [ "$(id -u)" = 0 ] && user="user root root;"
cat >"$tmp/nginx.conf" <<NG
daemon off; $user worker_processes 1; pid $tmp/nginx.pid; error_log $tmp/nginx.err warn;
events { worker_connections 64; }
http { access_log off; client_body_temp_path $tmp/nb; proxy_temp_path $tmp/np; fastcgi_temp_path $tmp/nf;
  uwsgi_temp_path $tmp/nu; scgi_temp_path $tmp/ns;
  server { listen 127.0.0.1:$port; root $tmp/pub; } }
NG
"$NGINX" -c "$tmp/nginx.conf" -p "$tmp" -e "$tmp/nginx.err" &
npid=$!
echo "bench-machine-id-0123456789abcdef" >"$tmp/machine-id"

rss_after() { # seconds → "VMRSS RSSANON RSSFILE" (kB): the highest of each, sampled every second from 4 s on
  local i max=0 amax=0 fmax=0 v a f
  for i in $(seq "$1"); do
    sleep 1
    [ "$i" -lt 4 ] && continue
    read -r v a f < <(awk '/^VmRSS:/ {r=$2} /^RssAnon:/ {a=$2} /^RssFile:/ {f=$2} END {print r, a, f}' /proc/$spid/status)
    [ "$v" -gt "$max" ] && max=$v
    [ "$a" -gt "$amax" ] && amax=$a
    [ "$f" -gt "$fmax" ] && fmax=$f
  done
  echo "$max $amax $fmax"
}
board_serve
off=$(rss_after 10)
board_stop
cat >>"$tmp/system.conf" <<CONF
[channel]
url = http://127.0.0.1:$port/channel.json
interval = 2s
jitter = 1s
device-id-file = $tmp/machine-id
CONF
board_serve
on=$(rss_after 10)
board_stop
stop_nginx
[ -s "$tmp/data/channel/state.json" ] || { echo "bench-fleet: the daemon did not accept the channel document:" >&2; cat "$tmp/serve.log" >&2; exit 1; }
awk -v off="$off" -v on="$on" 'BEGIN {
  split(off, f, " "); split(on, n, " ")
  d = (n[1] - f[1]) / 1024
  printf "| otad serve RSS, [channel] off / on (polling every 2 s; highest VmRSS sampled 4-10 s after start) | %.1f MB / %.1f MB: %+.2f MB, goal < 1 MB %s |\n", f[1]/1024, n[1]/1024, d, (d < 1 ? "ok" : "OVER")
  printf "| … of which anonymous (heap, stacks) / file-backed (the binary'"'"'s pages) | %+.2f MB / %+.2f MB |\n", (n[2]-f[2])/1024, (n[3]-f[3])/1024
}'
