#!/usr/bin/env bash
# bench-delta.sh — `make bench-delta`: otad's delta patches against bsdiff,
# xdelta3 and zstd --patch-from on the shared release corpus plus a 1 GiB
# synthetic pair. Builds the corpus with ../shared/delta-corpus/make-corpus.sh
# into a cache dir (run in place, never copied here), runs everything in this
# one script and prints one table. Ratios are against baselines measured in
# this same run, except the bsdiff-algorithm anchors of issue 13
# (141,649 and 3,211,800 bytes; Debian's bsdiff is run live on the executable
# pair only — it does not finish the rootfs pair in reasonable time).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CORPUS=${OTAD_DELTA_CORPUS:-$HOME/.cache/otad-corpus}
MAKE_CORPUS=${OTAD_MAKE_CORPUS:-$ROOT/../shared/delta-corpus/make-corpus.sh}
SYN_MIB=${OTAD_DELTA_SYN_MIB:-1024}
CG_LIMIT=48M
W=$(mktemp -d "${TMPDIR:-/tmp}/otad-bench-delta.XXXXXX")
CG=""
cleanup() {
  if [ -n "$CG" ] && [ -d "$CG" ]; then rmdir "$CG" 2>/dev/null || true; fi
  rm -rf "$W"
}
trap cleanup EXIT
log() { echo "bench-delta: $*" >&2; }

[ -x /usr/bin/time ] || scripts/deps.sh
for t in bsdiff bspatch xdelta3 zstd; do command -v $t >/dev/null || scripts/deps.sh; done

# ---------------------------------------------------------------- corpus
corpus_ok() {
  [ -s "$CORPUS/MANIFEST" ] || return 1
  (cd "$CORPUS" && awk 'NF==3 && $3 ~ /\.(bin|ext4)$/ {print $1 "  " $3}' MANIFEST | sha256sum -c --quiet -) >/dev/null 2>&1
}
if ! corpus_ok; then
  [ -r "$MAKE_CORPUS" ] || { log "corpus missing and $MAKE_CORPUS not found"; exit 1; }
  log "building corpus into $CORPUS (minutes; needs network) ..."
  OUT=$CORPUS bash "$MAKE_CORPUS" >"$W/corpus.log" 2>&1 || { tail -n 20 "$W/corpus.log" >&2; exit 1; }
  corpus_ok || { log "corpus does not match its MANIFEST"; exit 1; }
fi
EXE_OLD=$CORPUS/esbuild-0.25.11.bin EXE_NEW=$CORPUS/esbuild-0.25.12.bin
FS_OLD=$CORPUS/rootfs-v1.ext4 FS_NEW=$CORPUS/rootfs-v2.ext4

# ---------------------------------------------------------------- tools
log "building deltagen/deltaapply"
go build -trimpath -o "$W/deltagen" ./internal/delta/cmd/deltagen
go build -trimpath -o "$W/deltaapply" ./internal/delta/cmd/deltaapply

# measure NAME CMD... : runs CMD under /usr/bin/time; sets $W/NAME.cpu (s) and .rss (KiB)
measure() {
  local name=$1; shift
  /usr/bin/time -f '%U %S %M' -o "$W/$name.t" "$@"
  awk '{printf "%.2f\n", $1+$2}' "$W/$name.t" >"$W/$name.cpu"
  awk '{print $3}' "$W/$name.t" >"$W/$name.rss"
}
get() { cat "$W/$1"; }
size() { stat -c %s "$1"; }
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0) printf "%.3f", a/b; else printf "-" }'; }

# ---------------------------------------------------------------- synthetic 1 GiB pair
# Incompressible old image; new = 1 MiB inserted (everything after shifts),
# 1/16 of it zeroed, a few in-place edits. Apply memory must not grow with it.
log "making the ${SYN_MIB} MiB synthetic pair"
SYN_OLD=$W/syn-old.img SYN_NEW=$W/syn-new.img
head -c "${SYN_MIB}M" /dev/urandom >"$SYN_OLD"
q=$((SYN_MIB / 4)) z=$((SYN_MIB / 16))
{ # exactly SYN_MIB MiB; dd, not tail|head, so no writer dies of SIGPIPE under pipefail
  dd if="$SYN_OLD" bs=1M count=$q status=none
  head -c 1M /dev/urandom
  dd if="$SYN_OLD" bs=1M skip=$q count=$q status=none
  head -c "${z}M" /dev/zero
  dd if="$SYN_OLD" bs=1M skip=$((2 * q + z)) count=$((SYN_MIB - 2 * q - z - 1)) status=none
} >"$SYN_NEW"
for off in 4096 $((q * 3 * 1048576 + 17)) $((SYN_MIB * 1048576 - 9000)); do
  printf 'otad-edit' | dd of="$SYN_NEW" bs=1 seek="$off" conv=notrunc status=none
done

# ---------------------------------------------------------------- ours
for p in exe fs syn; do
  case $p in exe) o=$EXE_OLD n=$EXE_NEW ;; fs) o=$FS_OLD n=$FS_NEW ;; syn) o=$SYN_OLD n=$SYN_NEW ;; esac
  log "otad delta: generate $p"
  measure "gen.$p" "$W/deltagen" -full-size -1 "$o" "$n" "$W/$p.otad" 2>"$W/gen.$p.log"
  log "otad delta: apply $p"
  measure "apply.$p" "$W/deltaapply" -mem "$W/$p.otad" "$o" "$W/$p.out" 2>"$W/apply.$p.log"
  cmp -s "$W/$p.out" "$n" || { log "$p: applied image differs from the new image"; exit 1; }
  sed -n 's/.*RssAnon: *\([0-9]*\) kB.*/\1/p' "$W/apply.$p.log" >"$W/apply.$p.anon"
  sed -n 's/.*VmHWM: *\([0-9]*\) kB.*/\1/p' "$W/apply.$p.log" >"$W/apply.$p.hwm"
  rm -f "$W/$p.out"
done

# ---------------------------------------------------------------- baselines (same run)
log "bsdiff (executable pair, live)"
measure gen.bsdiff bsdiff "$EXE_OLD" "$EXE_NEW" "$W/exe.bsdiff"
measure apply.bspatch bspatch "$EXE_OLD" "$W/exe.bsout" "$W/exe.bsdiff"
cmp -s "$W/exe.bsout" "$EXE_NEW" || { log "bspatch output differs"; exit 1; }
for p in exe fs; do
  case $p in exe) o=$EXE_OLD n=$EXE_NEW ;; fs) o=$FS_OLD n=$FS_NEW ;; esac
  log "xdelta3 -9 -B 256M: $p"
  measure "gen.xd.$p" xdelta3 -9 -B 268435456 -e -f -s "$o" "$n" "$W/$p.xd"
  measure "apply.xd.$p" xdelta3 -d -f -B 268435456 -s "$o" "$W/$p.xd" "$W/$p.xdout"
  rm -f "$W/$p.xdout"
  log "zstd --ultra -22 --long=31 --patch-from: $p (slow on the rootfs pair)"
  measure "gen.zs.$p" zstd -q -f --ultra -22 --long=31 --patch-from="$o" "$n" -o "$W/$p.zst"
  measure "apply.zs.$p" zstd -q -f -d --long=31 --memory=2048MB --patch-from="$o" "$W/$p.zst" -o "$W/$p.zsout"
  rm -f "$W/$p.zsout"
done

# Apply CPU against bspatch: 10 runs each, the executable pair.
cpu10() { /usr/bin/time -f '%U %S' -o "$W/cpu10.t" bash -c "for i in 1 2 3 4 5 6 7 8 9 10; do $*; done" && awk '{printf "%.3f\n", ($1+$2)/10}' "$W/cpu10.t"; }
ours_cpu=$(cpu10 "'$W/deltaapply' '$W/exe.otad' '$EXE_OLD' '$W/exe.o2'")
bsp_cpu=$(cpu10 "bspatch '$EXE_OLD' '$W/exe.b2' '$W/exe.bsdiff'")

# ---------------------------------------------------------------- cgroup v2, memory.max = 48 MiB
cg_root=""
if [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ]; then cg_root=/sys/fs/cgroup
elif [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then cg_root=/sys/fs/cgroup/unified
fi
cg_note=""
if [ -z "$cg_root" ]; then
  cg_note="skipped: no cgroup v2 hierarchy mounted"
elif ! grep -qw memory "$cg_root/cgroup.controllers" 2>/dev/null; then
  cg_note="skipped: cgroup v2 at $cg_root has no memory controller (controllers: $(cat "$cg_root/cgroup.controllers" 2>/dev/null | tr -s ' ' ',' ))"
elif ! grep -qw memory "$cg_root/cgroup.subtree_control" 2>/dev/null; then
  cg_note="skipped: memory controller not enabled in $cg_root/cgroup.subtree_control"
elif ! mkdir "$cg_root/otad-bench-$$" 2>/dev/null; then
  cg_note="skipped: $cg_root not writable"
else
  CG=$cg_root/otad-bench-$$
  echo "$CG_LIMIT" >"$CG/memory.max"
  [ -w "$CG/memory.swap.max" ] && echo 0 >"$CG/memory.swap.max"
fi
# in_cg NAME CMD... : runs CMD as a member of the cgroup; prints ok / killed
in_cg() {
  local name=$1; shift
  local before after rc=0
  before=$(awk '/^oom_kill /{print $2}' "$CG/memory.events")
  bash -c 'echo $$ >"$1/cgroup.procs"; shift; exec "$@"' _ "$CG" "$@" >/dev/null 2>&1 || rc=$?
  after=$(awk '/^oom_kill /{print $2}' "$CG/memory.events")
  if [ "$after" != "$before" ] || [ $rc -eq 137 ]; then echo "killed (OOM)"
  elif [ $rc -ne 0 ]; then echo "failed (exit $rc)"
  else echo "completed"; fi
}
if [ -n "$CG" ]; then
  cg_ours_fs=$(in_cg ours "$W/deltaapply" "$W/fs.otad" "$FS_OLD" "$W/cg.out")
  cg_ours_syn=$(in_cg ours "$W/deltaapply" "$W/syn.otad" "$SYN_OLD" "$W/cg.out")
  cg_bsp=$(in_cg bspatch bspatch "$EXE_OLD" "$W/cg.out" "$W/exe.bsdiff")
  cg_xd=$(in_cg xdelta3 xdelta3 -d -f -B 268435456 -s "$FS_OLD" "$W/fs.xd" "$W/cg.out")
  cg_zs=$(in_cg zstd zstd -q -f -d --long=31 --memory=2048MB --patch-from="$FS_OLD" "$W/fs.zst" -o "$W/cg.out")
  rm -f "$W/cg.out"
fi

# ---------------------------------------------------------------- table
BS_EXE=141649 BS_FS=3211800
bs_live=$(size "$W/exe.bsdiff")
echo
echo "otad delta benchmark — $(date -u +%F) — $(nproc) CPUs"
echo "ratios: otad patch size / other tool's patch size (bsdiff: the issue's anchors)"
printf '%-6s %11s %11s %8s %9s %8s %10s %9s %13s %11s\n' pair new-size otad-patch /bsdiff /xdelta3 /zstd gen-cpu-s gen-rss apply-rss-MiB apply-cpu-s
printf '%-6s %11s %11s %8s %9s %8s %10s %9s %13s %11s\n' '' bytes bytes anchor '-9 -B256M' 'pf -22' '' MiB 'peak/anon' ''
for p in exe fs syn; do
  case $p in exe) n=$EXE_NEW bs=$BS_EXE ;; fs) n=$FS_NEW bs=$BS_FS ;; syn) n=$SYN_NEW bs=0 ;; esac
  ps=$(size "$W/$p.otad")
  xd="-" zs="-"
  [ -f "$W/$p.xd" ] && xd=$(ratio "$ps" "$(size "$W/$p.xd")")
  [ -f "$W/$p.zst" ] && zs=$(ratio "$ps" "$(size "$W/$p.zst")")
  printf '%-6s %11d %11d %8s %9s %8s %10s %9s %13s %11s\n' "$p" "$(size "$n")" "$ps" "$(ratio "$ps" "$bs")" "$xd" "$zs" \
    "$(get gen.$p.cpu)" "$(mib "$(get gen.$p.rss)")" "$(mib "$(get apply.$p.hwm)")/$(mib "$(get apply.$p.anon)")" "$(get apply.$p.cpu)"
done
echo
echo "baselines (same run):"
printf '  %-40s %11s %11s %12s %12s\n' tool exe-bytes rootfs-bytes apply-rss-MiB '(exe/rootfs)'
printf '  %-40s %11d %11s %12s\n' "bsdiff 4.3 (live, exe only)" "$bs_live" "($BS_FS)" "$(mib "$(get apply.bspatch.rss)")/-"
printf '  %-40s %11d %11d %12s\n' "xdelta3 -9 -B 256M" "$(size "$W/exe.xd")" "$(size "$W/fs.xd")" "$(mib "$(get apply.xd.exe.rss)")/$(mib "$(get apply.xd.fs.rss)")"
printf '  %-40s %11d %11d %12s\n' "zstd --ultra -22 --long=31 --patch-from" "$(size "$W/exe.zst")" "$(size "$W/fs.zst")" "$(mib "$(get apply.zs.exe.rss)")/$(mib "$(get apply.zs.fs.rss)")"
echo "  generation CPU s: bsdiff exe $(get gen.bsdiff.cpu); xdelta3 exe/rootfs $(get gen.xd.exe.cpu)/$(get gen.xd.fs.cpu); zstd exe/rootfs $(get gen.zs.exe.cpu)/$(get gen.zs.fs.cpu)"
echo "  otad vs live bsdiff on exe: $(ratio "$(size "$W/exe.otad")" "$bs_live") (anchor column uses 141,649 / 3,211,800 B)"
echo
echo "device apply:"
echo "  apply CPU per run (exe pair, mean of 10): otad $ours_cpu s, bspatch $bsp_cpu s -> ratio $(ratio "$ours_cpu" "$bsp_cpu") (goal <= 0.2)"
if [ -n "$CG" ]; then
  echo "  cgroup v2 memory.max=$CG_LIMIT: otad rootfs: $cg_ours_fs; otad ${SYN_MIB} MiB: $cg_ours_syn;"
  echo "    bspatch exe: $cg_bsp (bspatch holds old+new in memory: ~2x image size); xdelta3 -d rootfs: $cg_xd; zstd --patch-from -d rootfs: $cg_zs"
else
  echo "  cgroup v2 memory.max=$CG_LIMIT run $cg_note"
  echo "  peak RSS instead (same run): otad rootfs $(mib "$(get apply.fs.hwm)") MiB, otad ${SYN_MIB} MiB pair $(mib "$(get apply.syn.hwm)") MiB;" \
       "xdelta3 -d rootfs $(mib "$(get apply.xd.fs.rss)") MiB; zstd -d --patch-from rootfs $(mib "$(get apply.zs.fs.rss)") MiB; bspatch exe $(mib "$(get apply.bspatch.rss)") MiB"
fi
echo "  goals: patch <= 1.0x bsdiff anchor (stretch 0.85); rootfs generation <= 120 CPU-s and <= 4096 MiB; apply anon RSS <= 16 MiB"
