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
W=$(mktemp -d "${TMPDIR:-/tmp}/otad-bench-delta.XXXXXX")
cg_parent=""
cleanup() {
  local d
  if [ -n "$cg_parent" ]; then
    for d in "$cg_parent"/otad-bench-$$-*; do cg_remove "$d"; done
  fi
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
size() { stat -Lc %s "$1"; }
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

# bspatch on the rootfs pair, for the memory-limit run only: Debian's bsdiff
# does not finish that pair, so this writes a valid BSDIFF40 patch that
# carries the new image as "extra" bytes under one control triple. bspatch
# reads the whole old image and allocates the whole new image whatever the
# patch holds, so its memory on this patch is its memory on the pair.
le64() { local v=$1 i; for i in 0 1 2 3 4 5 6 7; do printf "\\x$(printf %02x $(((v >> (8 * i)) & 255)))"; done; }
log "bsdiff-format patch for the rootfs pair (literal, for bspatch's memory)"
{ le64 0; le64 "$(size "$FS_NEW")"; le64 0; } | bzip2 -9 >"$W/bsl.ctrl"
bzip2 -9 </dev/null >"$W/bsl.diff"
bzip2 -1 <"$FS_NEW" >"$W/bsl.extra"
{ printf BSDIFF40; le64 "$(size "$W/bsl.ctrl")"; le64 "$(size "$W/bsl.diff")"; le64 "$(size "$FS_NEW")"
  cat "$W/bsl.ctrl" "$W/bsl.diff" "$W/bsl.extra"; } >"$W/fs.bslit"
rm -f "$W"/bsl.*

# ---------------------------------------------------------------- apply CPU, exe pair
# Apply CPU time (user+sys from rusage, all threads) against bspatch on the
# executable pair, summed over CPU_RUNS runs of each, in alternating rounds
# so that drift hits both alike. perf stat reports the rusage per run in ns;
# without perf, /usr/bin/time over a loop of runs (10 ms granularity on the
# sum, plus the loop shell's own small share).
CPU_RUNS=${OTAD_DELTA_CPU_RUNS:-40}
ROUNDS=4
cpu_runs() { # cpu_runs N OUT CMD...: appends "user_s sys_s" summed over N runs to OUT
  local n=$1 out=$2; shift 2
  if [ -z "${NO_PERF:-}" ] && perf stat -x, -e user_time,system_time -r "$n" -o "$W/perf.t" "$@" >/dev/null 2>&1 &&
    grep -q ',user_time,' "$W/perf.t"; then
    awk -F, -v n="$n" '$3 == "user_time" {u = $1} $3 == "system_time" {s = $1} END {printf "%.6f %.6f\n", u * n / 1e9, s * n / 1e9}' "$W/perf.t" >>"$out"
  else
    NO_PERF=1
    /usr/bin/time -f '%U %S' -o "$W/loop.t" bash -c 'n=$1; shift; for ((i = 0; i < n; i++)); do "$@"; done' _ "$n" "$@" >/dev/null
    cat "$W/loop.t" >>"$out"
  fi
}
# The floor is everything apply does on this pair but decoding the patch:
# check the source bytes it reads (CRC-32C), read them again, SHA-256 and
# write the new image (deltaapply -floor), in the same kind of process.
"$W/deltaapply" -stats "$W/exe.otad" "$EXE_OLD" "$W/exe.o2" 2>"$W/stats.log"
src_bytes=$(sed -n 's/.*source \([0-9]*\) bytes checked.*/\1/p' "$W/stats.log")
log "apply CPU: $CPU_RUNS runs each of otad, bspatch and the no-decoding floor on the executable pair"
: >"$W/cpu.ours"; : >"$W/cpu.bsp"; : >"$W/cpu.floor"
for ((r = 0; r < ROUNDS; r++)); do
  cpu_runs $((CPU_RUNS / ROUNDS)) "$W/cpu.ours" "$W/deltaapply" "$W/exe.otad" "$EXE_OLD" "$W/exe.o2"
  cpu_runs $((CPU_RUNS / ROUNDS)) "$W/cpu.bsp" bspatch "$EXE_OLD" "$W/exe.b2" "$W/exe.bsdiff"
  cpu_runs $((CPU_RUNS / ROUNDS)) "$W/cpu.floor" "$W/deltaapply" -floor "$src_bytes,$(size "$EXE_NEW")" "$EXE_OLD" "$W/exe.f2"
done
cmp -s "$W/exe.o2" "$EXE_NEW" && cmp -s "$W/exe.b2" "$EXE_NEW" || { log "apply outputs differ"; exit 1; }
per_run() { awk -v n=$((CPU_RUNS / ROUNDS * ROUNDS)) -v c="$2" '{u += $1; s += $2} END {printf "%.2f\n", (c == "u" ? u : c == "s" ? s : u + s) * 1000 / n}' "$1"; }
ours_ms=$(per_run "$W/cpu.ours" t) ours_us=$(per_run "$W/cpu.ours" u) ours_ss=$(per_run "$W/cpu.ours" s)
bsp_ms=$(per_run "$W/cpu.bsp" t) bsp_us=$(per_run "$W/cpu.bsp" u) bsp_ss=$(per_run "$W/cpu.bsp" s)
floor_ms=$(per_run "$W/cpu.floor" t) floor_us=$(per_run "$W/cpu.floor" u) floor_ss=$(per_run "$W/cpu.floor" s)
cpu_how=rusage-perf; [ -n "${NO_PERF:-}" ] && cpu_how=rusage-loop
rm -f "$W/exe.o2" "$W/exe.b2" "$W/exe.f2"

# ---------------------------------------------------------------- memory cgroup, 48 MiB
# cgroup v2 memory.max when the unified hierarchy has the memory controller,
# else the v1 memory controller (memory.limit_in_bytes, and memsw set equal
# so swap cannot hide usage). Every command gets a fresh child group under
# this shell's own group, so failcnt/peak/oom_kill are its own; the group is
# removed after the command and again by the EXIT trap.
CG_LIMIT_BYTES=$((48 << 20))
cg_kind="" cg_parent="" cg_note=""
cg_mount() { # cg_mount FSTYPE [V1-CONTROLLER]: mount point of that hierarchy
  awk -v t="$1" -v c="${2:-}" '{ for (i = 7; $i != "-"; i++) {}; if ($(i+1) != t) next
    if (c != "" && ("," $(i+3) ",") !~ ("," c ",")) next; print $4 " " $5; exit }' /proc/self/mountinfo
}
cg_join() { # cg_join MOUNTROOT MOUNTPOINT CGPATH: the group's directory
  local rel=$3
  [ "$1" != / ] && rel=${rel#"$1"}
  echo "$2${rel%/}"
}
m=$(cg_mount cgroup2)
if [ -n "$m" ]; then
  p=$(cg_join ${m% *} ${m#* } "$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)")
  if grep -qw memory "$p/cgroup.controllers" 2>/dev/null; then
    # A v2 group with processes cannot enable controllers for children, so
    # the limit groups go next to this one, under its parent, which must
    # delegate memory already.
    [ -f "$p/memory.max" ] && grep -qw memory "${p%/*}/cgroup.subtree_control" 2>/dev/null &&
      cg_kind=v2 cg_parent=${p%/*}
  fi
fi
if [ -z "$cg_kind" ]; then
  m=$(cg_mount cgroup memory)
  if [ -n "$m" ]; then
    p=$(cg_join ${m% *} ${m#* } "$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/self/cgroup)")
    [ -w "$p" ] && [ -f "$p/memory.limit_in_bytes" ] && cg_kind=v1 cg_parent=$p
  fi
fi
[ -z "$cg_kind" ] && cg_note="no writable cgroup with the memory controller (v2 memory.max or v1 memory.limit_in_bytes)"
cg_make() { # cg_make NAME: prints the new group's directory
  local d=$cg_parent/otad-bench-$$-$1
  mkdir "$d" || return 1
  if [ $cg_kind = v2 ]; then
    echo $CG_LIMIT_BYTES >"$d/memory.max"
    [ -f "$d/memory.swap.max" ] && echo 0 >"$d/memory.swap.max"
  else
    echo $CG_LIMIT_BYTES >"$d/memory.limit_in_bytes"
    [ -f "$d/memory.memsw.limit_in_bytes" ] && echo $CG_LIMIT_BYTES >"$d/memory.memsw.limit_in_bytes"
  fi
  local f=memory.limit_in_bytes
  [ $cg_kind = v2 ] && f=memory.max
  [ "$(cat "$d/$f")" = $CG_LIMIT_BYTES ] || { log "could not set the limit in $d"; return 1; }
  echo "$d"
}
cg_remove() { # moves any leftover process back to the parent, then removes the group
  local d=$1 pid
  [ -d "$d" ] || return 0
  for pid in $(cat "$d/cgroup.procs" 2>/dev/null); do echo "$pid" >"$cg_parent/cgroup.procs" 2>/dev/null || true; done
  for _ in 1 2 3 4 5; do rmdir "$d" 2>/dev/null && return 0; sleep 0.2; done
  log "could not remove $d"
}
cg_oom_kills() { # OOM kills recorded in group $1
  if [ $cg_kind = v2 ]; then awk '$1 == "oom_kill" {print $2}' "$1/memory.events"
  else awk '$1 == "oom_kill" {print $2}' "$1/memory.oom_control"; fi
}
# in_cg WANT CMD... : runs CMD alone in a fresh 48 MiB group (stdout/stderr to
# $W/cg.log) and prints what happened: completed with output identical to
# WANT (the file the command must produce, $W/cg.out), or killed, or failed,
# with the group's OOM-kill count and peak charge as measured.
in_cg() {
  local want=$1; shift
  local d rc=0 kills peak res
  d=$(cg_make run) || { echo "not run (cgroup setup failed)"; return; }
  rm -f "$W/cg.out"
  { ( echo "$BASHPID" >"$d/cgroup.procs" && exec "$@" ) >"$W/cg.log" 2>&1; } 2>/dev/null || rc=$?
  kills=$(cg_oom_kills "$d")
  if [ $cg_kind = v2 ]; then peak=$(cat "$d/memory.peak" 2>/dev/null || echo "")
  else peak=$(cat "$d/memory.max_usage_in_bytes"); fi
  cg_remove "$d"
  if [ "${kills:-0}" -gt 0 ] || [ $rc -eq 137 ]; then res="KILLED by the OOM killer (exit $rc, oom_kill $kills)"
  elif [ $rc -ne 0 ]; then res="FAILED (exit $rc: $(tail -n 1 "$W/cg.log" | cut -c1-80))"
  elif cmp -s "$W/cg.out" "$want"; then res="completed, output identical"
  else res="completed but output DIFFERS"; fi
  echo "$res; peak charge ${peak:+$(mib $((peak / 1024)))} MiB"
  rm -f "$W/cg.out"
}
if [ -n "$cg_kind" ]; then
  log "48 MiB memory cgroup ($cg_kind under $cg_parent)"
  cg_ours_fs=$(in_cg "$FS_NEW" "$W/deltaapply" -mem "$W/fs.otad" "$FS_OLD" "$W/cg.out")
  cg_ours_fs_mem=$(sed -n 's/.*VmHWM: *\([0-9]*\) kB.*RssAnon: *\([0-9]*\) kB.*/\1 \2/p' "$W/cg.log")
  cg_ours_syn=$(in_cg "$SYN_NEW" "$W/deltaapply" -mem "$W/syn.otad" "$SYN_OLD" "$W/cg.out")
  cg_ours_syn_mem=$(sed -n 's/.*VmHWM: *\([0-9]*\) kB.*RssAnon: *\([0-9]*\) kB.*/\1 \2/p' "$W/cg.log")
  cg_bsp_exe=$(in_cg "$EXE_NEW" bspatch "$EXE_OLD" "$W/cg.out" "$W/exe.bsdiff")
  cg_bsp_fs=$(in_cg "$FS_NEW" bspatch "$FS_OLD" "$W/cg.out" "$W/fs.bslit")
  cg_xd=$(in_cg "$FS_NEW" xdelta3 -d -f -s "$FS_OLD" "$W/fs.xd" "$W/cg.out")
  cg_zs=$(in_cg "$FS_NEW" zstd -q -f -d --long=31 --memory=2048MB --patch-from="$FS_OLD" "$W/fs.zst" -o "$W/cg.out")
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
echo "  apply CPU per run, exe pair ($CPU_RUNS runs each, $cpu_how): otad $ours_ms ms (user $ours_us + sys $ours_ss)," \
     "bspatch $bsp_ms ms (user $bsp_us + sys $bsp_ss) -> ratio $(ratio "$ours_ms" "$bsp_ms") (goal <= 0.2)"
echo "  floor, the same work without decoding the patch: CRC-32C of the $(mib $((src_bytes / 1024))) MiB of source apply reads," \
     "reading it again, SHA-256 and write of the $(mib $(($(size "$EXE_NEW") / 1024))) MiB image:" \
     "$floor_ms ms (user $floor_us + sys $floor_ss) -> $(ratio "$floor_ms" "$bsp_ms") of bspatch"
echo "  ($(sed -n 's/^stats: //p' "$W/stats.log"); the last check is the image SHA-256, so the engine does not hash the slot again)"
echo "  the 0.2 goal allows $(awk -v b="$bsp_ms" 'BEGIN{printf "%.2f", b / 5}') ms per run"
if [ -n "$cg_kind" ]; then
  echo "  memory cgroup ($cg_kind, limit $CG_LIMIT_BYTES bytes = 48 MiB, swap included), each command alone in a fresh group:"
  printf '    %-46s %s\n' "otad apply, rootfs pair" "$cg_ours_fs" \
    "" "(inside: peak RSS $(mib "${cg_ours_fs_mem% *}") MiB, anon $(mib "${cg_ours_fs_mem#* }") MiB)" \
    "otad apply, ${SYN_MIB} MiB synthetic pair" "$cg_ours_syn" \
    "" "(inside: peak RSS $(mib "${cg_ours_syn_mem% *}") MiB, anon $(mib "${cg_ours_syn_mem#* }") MiB)" \
    "bspatch, exe pair (bsdiff 4.3 patch)" "$cg_bsp_exe" \
    "bspatch, rootfs pair (literal BSDIFF40 patch)" "$cg_bsp_fs" \
    "xdelta3 -d (default -B), rootfs pair" "$cg_xd" \
    "zstd -d --long=31 --patch-from, rootfs pair" "$cg_zs"
  echo "    (the peak charge counts page cache, which the kernel reclaims at the limit; anonymous memory that does not fit gets the process killed)"
else
  echo "  48 MiB memory cgroup run skipped: $cg_note"
  echo "  peak RSS instead (same run): otad rootfs $(mib "$(get apply.fs.hwm)") MiB, otad ${SYN_MIB} MiB pair $(mib "$(get apply.syn.hwm)") MiB;" \
       "xdelta3 -d rootfs $(mib "$(get apply.xd.fs.rss)") MiB; zstd -d --patch-from rootfs $(mib "$(get apply.zs.fs.rss)") MiB; bspatch exe $(mib "$(get apply.bspatch.rss)") MiB"
fi
echo "  goals: patch <= 1.0x bsdiff anchor (stretch 0.85); rootfs generation <= 120 CPU-s and <= 4096 MiB; apply anon RSS <= 16 MiB"
