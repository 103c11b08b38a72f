#!/usr/bin/env bash
# bench-delta.sh — `make bench-delta`: otad's delta patches against bsdiff,
# xdelta3 and zstd --patch-from on every pair of the release corpus (minor and
# major releases; scripts/delta-corpus.sh builds it into a cache dir and lists
# the pairs in its PAIRS file) plus a synthetic 1 GiB pair, all run in this
# one script, printed as one table.
#
# Every baseline is measured in this run. Debian's bsdiff runs under a bound
# (CPU seconds, address space, wall clock); where it does not finish, the table
# says so, and on the two minor pairs the ratio to bsdiff falls back to the
# bsdiff-algorithm anchors of issue 13 (141,649 and 3,211,800 bytes), marked
# as constants. The bench is not a test: it asserts identical outputs, never
# times or ratios.
#
# Knobs: OTAD_DELTA_CORPUS (cache dir), OTAD_DELTA_PAIRS (names to run, default
# all), OTAD_DELTA_SYN_MIB (synthetic pair size, 0 = skip), OTAD_BSDIFF_CPU_S,
# OTAD_BSDIFF_MEM_MIB (bsdiff's bound), OTAD_DELTA_CPU_RUNS (apply CPU runs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CORPUS=${OTAD_DELTA_CORPUS:-$HOME/.cache/otad-corpus}
MAKE_CORPUS=${OTAD_MAKE_CORPUS:-$ROOT/scripts/delta-corpus.sh}
SYN_MIB=${OTAD_DELTA_SYN_MIB:-1024}
SEL=${OTAD_DELTA_PAIRS:-}
# bsdiff's bound: the issue's generation budget (2 CPU-minutes per 256 MiB of
# image), at least 120 s, and an address-space limit; bsdiff 4.3 needs about
# 17 bytes per byte of the old image, so pairs past ~360 MiB fail at malloc.
BS_CPU_S=${OTAD_BSDIFF_CPU_S:-120}
BS_MEM_MIB=${OTAD_BSDIFF_MEM_MIB:-6144}
XD_B=1073741824 # xdelta3 -B 1G: source window as large as any image here
W=$(mktemp -d "${TMPDIR:-/tmp}/otad-bench-delta.XXXXXX")
cg_parent=""
cleanup() {
  local d
  if [ -n "$cg_parent" ]; then
    for d in "$cg_parent"/otad-bench-"$$"-*; do cg_remove "$d"; done
  fi
  rm -rf "$W"
}
trap cleanup EXIT
log() { echo "bench-delta: $*" >&2; }

[ -x /usr/bin/time ] || scripts/deps.sh
for t in bsdiff bspatch xdelta3 zstd bzip2; do command -v $t >/dev/null || scripts/deps.sh; done

# ---------------------------------------------------------------- corpus
corpus_ok() { # every file PAIRS names is in MANIFEST, and every image matches its hash
  [ -s "$CORPUS/MANIFEST" ] && [ -s "$CORPUS/PAIRS" ] || return 1
  local f
  while read -r f; do
    awk -v f="$f" 'NF == 3 && $3 == f {ok = 1} END {exit !ok}' "$CORPUS/MANIFEST" || return 1
  done < <(awk '!/^#/ && NF >= 3 {print $2; print $3}' "$CORPUS/PAIRS")
  (cd "$CORPUS" && awk 'NF==3 && $3 ~ /\.(bin|ext4)$/ {print $1 "  " $3}' MANIFEST | sha256sum -c --quiet -) >/dev/null 2>&1
}
if ! corpus_ok; then
  [ -r "$MAKE_CORPUS" ] || { log "corpus missing and $MAKE_CORPUS not found"; exit 1; }
  log "building corpus into $CORPUS (minutes; needs network) ..."
  OUT=$CORPUS nice -n 10 bash "$MAKE_CORPUS" >"$W/corpus.log" 2>&1 || { tail -n 20 "$W/corpus.log" >&2; exit 1; }
  corpus_ok || { log "corpus does not match its MANIFEST"; exit 1; }
fi
# pairs: name, old, new (paths), kind (exe for a raw executable, img otherwise)
P_NAME=() P_OLD=() P_NEW=() P_KIND=()
while read -r name old new _; do
  case $name in '#'* | '') continue ;; esac
  if [ -n "$SEL" ]; then case " $SEL " in *" $name "*) ;; *) continue ;; esac; fi
  kind=img
  case $new in *.bin) kind=exe ;; esac
  P_NAME+=("$name") P_OLD+=("$CORPUS/$old") P_NEW+=("$CORPUS/$new") P_KIND+=("$kind")
done <"$CORPUS/PAIRS"
# The labelled constants: bsdiff-algorithm sizes of issue 13 for the two minor
# pairs, used only where Debian's bsdiff does not finish in this run.
declare -A ANCHOR=([esbuild-minor]=141649 [rootfs-minor]=3211800)

# ---------------------------------------------------------------- tools
log "building deltagen/deltaapply"
go build -trimpath -o "$W/deltagen" ./internal/delta/cmd/deltagen
go build -trimpath -o "$W/deltaapply" ./internal/delta/cmd/deltaapply

# measure NAME CMD... : runs CMD under /usr/bin/time; sets $W/NAME.cpu (s) and .rss (KiB)
measure() {
  local name=$1; shift
  /usr/bin/time -f '%U %S %M' -o "$W/$name.t" "$@"
  tail -n 1 "$W/$name.t" | awk '{printf "%.2f\n", $1+$2}' >"$W/$name.cpu"
  tail -n 1 "$W/$name.t" | awk '{print $3}' >"$W/$name.rss"
}
get() { cat "$W/$1" 2>/dev/null || echo -; }
size() { stat -Lc %s "$1"; }
mib() { awk -v k="$1" 'BEGIN{ if (k == "-" || k == "") printf "-"; else printf "%.1f", k/1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0 > 0) printf "%.3f", a/b; else printf "-" }'; }
per256() { # per256 VALUE BYTES: VALUE scaled to 256 MiB of new image
  awk -v v="$1" -v n="$2" 'BEGIN{ if (v == "-" || n <= 0) printf "-"; else printf "%.1f", v * 268435456 / n }'
}

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
  p=$(cg_join "${m% *}" "${m#* }" "$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)")
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
    p=$(cg_join "${m% *}" "${m#* }" "$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/self/cgroup)")
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
  while read -r pid; do echo "$pid" >"$cg_parent/cgroup.procs" 2>/dev/null || true; done < <(cat "$d/cgroup.procs" 2>/dev/null)
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

# ---------------------------------------------------------------- synthetic 1 GiB pair
# Incompressible old image; new = 1 MiB inserted (everything after shifts),
# 1/16 of it zeroed, a few in-place edits. Apply memory must not grow with it.
if [ "$SYN_MIB" -gt 0 ]; then
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
  P_NAME+=("synthetic-${SYN_MIB}M") P_OLD+=("$SYN_OLD") P_NEW+=("$SYN_NEW") P_KIND+=(syn)
fi

# ---------------------------------------------------------------- bounded bsdiff
# run_bsdiff I: Debian's bsdiff on pair I under the bound; leaves $W/I.bsdiff
# when it finishes and always $W/I.bsstat (finished, or why not).
run_bsdiff() {
  local i=$1 rc=0
  ( ulimit -v $((BS_MEM_MIB * 1024)) && ulimit -t "$BS_CPU_S" &&
    exec timeout -k 10 $((BS_CPU_S * 8)) /usr/bin/time -f '%U %S %M' -o "$W/gen.bs.$i.t" \
      bsdiff "${P_OLD[i]}" "${P_NEW[i]}" "$W/$i.bsdiff" ) 2>"$W/bs.$i.err" || rc=$?
  if [ $rc -eq 0 ] && [ -s "$W/$i.bsdiff" ]; then
    tail -n 1 "$W/gen.bs.$i.t" | awk '{printf "%.2f\n", $1+$2}' >"$W/gen.bs.$i.cpu"
    tail -n 1 "$W/gen.bs.$i.t" | awk '{print $3}' >"$W/gen.bs.$i.rss"
    echo finished >"$W/$i.bsstat"
    return
  fi
  rm -f "$W/$i.bsdiff"
  if grep -qi 'signal 24\|signal 9' "$W/gen.bs.$i.t" 2>/dev/null || [ $rc -eq 152 ] || [ $rc -eq 137 ]; then
    echo "did not finish in ${BS_CPU_S} CPU-s" >"$W/$i.bsstat"
  elif [ $rc -eq 124 ]; then
    echo "did not finish in $((BS_CPU_S * 8)) s wall" >"$W/$i.bsstat"
  elif grep -qi 'malloc\|memory' "$W/bs.$i.err"; then
    echo "did not fit in ${BS_MEM_MIB} MiB address space" >"$W/$i.bsstat"
  else
    echo "failed (exit $rc: $(tail -n 1 "$W/bs.$i.err" | cut -c1-60))" >"$W/$i.bsstat"
  fi
}


# ---------------------------------------------------------------- apply CPU helpers
# Apply CPU time (user+sys from rusage, all threads) against bspatch on an
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
    # shellcheck disable=SC2016 # the inner shell expands them
    /usr/bin/time -f '%U %S' -o "$W/loop.t" bash -c 'n=$1; shift; for ((i = 0; i < n; i++)); do "$@"; done' _ "$n" "$@" >/dev/null
    cat "$W/loop.t" >>"$out"
  fi
}
per_run() { awk -v n=$((CPU_RUNS / ROUNDS * ROUNDS)) -v c="$2" '{u += $1; s += $2} END {printf "%.2f\n", (c == "u" ? u : c == "s" ? s : u + s) * 1000 / n}' "$1"; }
# apply_cpu I: otad apply, bspatch and the no-decoding floor on pair I. The
# floor is everything apply does on this pair but decoding the patch: check
# the source bytes it reads (CRC-32C), read them again, SHA-256 and write the
# new image (deltaapply -floor), in the same kind of process.
apply_cpu() {
  local i=$1 o=${P_OLD[$1]} n=${P_NEW[$1]} r src
  "$W/deltaapply" -stats "$W/$i.otad" "$o" "$W/$i.o2" 2>"$W/stats.$i.log"
  src=$(sed -n 's/.*source \([0-9]*\) bytes checked.*/\1/p' "$W/stats.$i.log")
  log "apply CPU: $CPU_RUNS runs each of otad, bspatch and the no-decoding floor on ${P_NAME[i]}"
  : >"$W/cpu.ours.$i"; : >"$W/cpu.bsp.$i"; : >"$W/cpu.floor.$i"
  for ((r = 0; r < ROUNDS; r++)); do
    cpu_runs $((CPU_RUNS / ROUNDS)) "$W/cpu.ours.$i" "$W/deltaapply" "$W/$i.otad" "$o" "$W/$i.o2"
    cpu_runs $((CPU_RUNS / ROUNDS)) "$W/cpu.bsp.$i" bspatch "$o" "$W/$i.b2" "$W/$i.bsdiff"
    cpu_runs $((CPU_RUNS / ROUNDS)) "$W/cpu.floor.$i" "$W/deltaapply" -floor "$src,$(size "$n")" "$o" "$W/$i.f2"
  done
  if ! cmp -s "$W/$i.o2" "$n" || ! cmp -s "$W/$i.b2" "$n"; then log "${P_NAME[i]}: apply outputs differ"; exit 1; fi
  rm -f "$W/$i.o2" "$W/$i.b2" "$W/$i.f2"
  per_run "$W/cpu.ours.$i" t >"$W/acpu.ours.$i"
  per_run "$W/cpu.bsp.$i" t >"$W/acpu.bsp.$i"
  per_run "$W/cpu.floor.$i" t >"$W/acpu.floor.$i"
  echo "$src" >"$W/acpu.src.$i"
}

# ---------------------------------------------------------------- every pair
for i in "${!P_NAME[@]}"; do
  p=${P_NAME[i]} o=${P_OLD[i]} n=${P_NEW[i]}
  log "$p: otad generate"
  measure "gen.$i" "$W/deltagen" -full-size -1 "$o" "$n" "$W/$i.otad" 2>"$W/gen.$i.log"
  log "$p: otad apply"
  measure "apply.$i" "$W/deltaapply" -mem "$W/$i.otad" "$o" "$W/$i.out" 2>"$W/apply.$i.log"
  cmp -s "$W/$i.out" "$n" || { log "$p: applied image differs from the new image"; exit 1; }
  rm -f "$W/$i.out"
  sed -n 's/.*RssAnon: *\([0-9]*\) kB.*/\1/p' "$W/apply.$i.log" >"$W/apply.$i.anon"
  sed -n 's/.*VmHWM: *\([0-9]*\) kB.*/\1/p' "$W/apply.$i.log" >"$W/apply.$i.hwm"
  if [ -n "$cg_kind" ]; then
    in_cg "$n" "$W/deltaapply" -mem "$W/$i.otad" "$o" "$W/cg.out" >"$W/cg.$i"
  fi
  [ "${P_KIND[i]}" = syn ] && continue # no baselines on the synthetic pair, as before

  log "$p: bsdiff (bound: ${BS_CPU_S} CPU-s, ${BS_MEM_MIB} MiB address space)"
  run_bsdiff "$i"
  if [ -f "$W/$i.bsdiff" ]; then
    measure "apply.bsp.$i" bspatch "$o" "$W/$i.bsout" "$W/$i.bsdiff"
    cmp -s "$W/$i.bsout" "$n" || { log "$p: bspatch output differs"; exit 1; }
    rm -f "$W/$i.bsout"
  fi
  log "$p: xdelta3 -9 -B $XD_B"
  measure "gen.xd.$i" xdelta3 -9 -B $XD_B -e -f -s "$o" "$n" "$W/$i.xd"
  measure "apply.xd.$i" xdelta3 -d -f -B $XD_B -s "$o" "$W/$i.xd" "$W/$i.xdout"
  cmp -s "$W/$i.xdout" "$n" || { log "$p: xdelta3 output differs"; exit 1; }
  rm -f "$W/$i.xdout"
  log "$p: zstd --ultra -22 --long=31 --patch-from (slow on the image pairs)"
  measure "gen.zs.$i" zstd -q -f --ultra -22 --long=31 --patch-from="$o" "$n" -o "$W/$i.zst" 2>"$W/zs.$i.err"
  measure "apply.zs.$i" zstd -q -f -d --long=31 --memory=2048MB --patch-from="$o" "$W/$i.zst" -o "$W/$i.zsout"
  cmp -s "$W/$i.zsout" "$n" || { log "$p: zstd output differs"; exit 1; }
  rm -f "$W/$i.zsout"
  if [ "${P_KIND[i]}" = exe ] && [ -f "$W/$i.bsdiff" ]; then apply_cpu "$i"; fi
  # progress, so a run cut short still shows what it measured
  log "$p: otad $(size "$W/$i.otad") B, bsdiff $(if [ -f "$W/$i.bsdiff" ]; then size "$W/$i.bsdiff"; else get "$i.bsstat"; fi)," \
    "xdelta3 $(size "$W/$i.xd") B, zstd $(size "$W/$i.zst") B; gen $(get "gen.$i.cpu") CPU-s, apply anon $(get "apply.$i.anon") kB"
done

# ---------------------------------------------------------------- other tools in 48 MiB
# On the rootfs-minor pair (the first image pair when it is not selected):
# bspatch, xdelta3 -d and zstd -d in the same limit. Debian's bsdiff may not
# finish that pair, so bspatch gets a valid BSDIFF40 patch that carries the
# new image as "extra" bytes under one control triple: bspatch reads the whole
# old image and allocates the whole new image whatever the patch holds, so its
# memory on this patch is its memory on the pair.
# shellcheck disable=SC2059 # the format is the byte escape itself
le64() { local v=$1 i; for i in 0 1 2 3 4 5 6 7; do printf "\\x$(printf %02x $(((v >> (8 * i)) & 255)))"; done; }
cg_i="" cg_e=""
for i in "${!P_NAME[@]}"; do
  [ "${P_KIND[i]}" = img ] && [ -z "$cg_i" ] && cg_i=$i
  [ "${P_NAME[i]}" = rootfs-minor ] && cg_i=$i
  [ "${P_KIND[i]}" = exe ] && [ -z "$cg_e" ] && [ -f "$W/$i.bsdiff" ] && cg_e=$i
done
if [ -n "$cg_kind" ] && [ -n "$cg_i" ]; then
  o=${P_OLD[cg_i]} n=${P_NEW[cg_i]}
  log "bsdiff-format patch for ${P_NAME[cg_i]} (literal, for bspatch's memory)"
  { le64 0; le64 "$(size "$n")"; le64 0; } | bzip2 -9 >"$W/bsl.ctrl"
  bzip2 -9 </dev/null >"$W/bsl.diff"
  bzip2 -1 <"$n" >"$W/bsl.extra"
  { printf BSDIFF40; le64 "$(size "$W/bsl.ctrl")"; le64 "$(size "$W/bsl.diff")"; le64 "$(size "$n")"
    cat "$W/bsl.ctrl" "$W/bsl.diff" "$W/bsl.extra"; } >"$W/bslit"
  rm -f "$W"/bsl.*
  cg_bsp_fs=$(in_cg "$n" bspatch "$o" "$W/cg.out" "$W/bslit")
  rm -f "$W/bslit"
  cg_xd=$(in_cg "$n" xdelta3 -d -f -s "$o" "$W/$cg_i.xd" "$W/cg.out")
  cg_zs=$(in_cg "$n" zstd -q -f -d --long=31 --memory=2048MB --patch-from="$o" "$W/$cg_i.zst" -o "$W/cg.out")
fi
if [ -n "$cg_kind" ] && [ -n "$cg_e" ]; then
  cg_bsp_exe=$(in_cg "${P_NEW[cg_e]}" bspatch "${P_OLD[cg_e]}" "$W/cg.out" "$W/$cg_e.bsdiff")
fi

# ---------------------------------------------------------------- the table
cg_short() { # the 48 MiB cgroup outcome of pair I in a few characters
  local r; r=$(cat "$W/cg.$1" 2>/dev/null) || { echo "-"; return; }
  case $r in "completed, output identical"*) echo "ok" ;; KILLED*) echo "OOM-KILLED" ;; *DIFFERS*) echo "DIFFERS" ;; *) echo "FAILED" ;; esac
}
row() { printf '%-16s %8s %11s %11s %11s %11s %15s %8s %13s %14s %10s %6s %12s\n' "$@"; }
echo
echo "otad delta benchmark — $(date -u +%F) — $(nproc) CPUs — corpus $CORPUS"
row pair new-MiB otad-B bsdiff-B xdelta3-B zstd-B otad/smallest /bsdiff gen-CPU-s gen-RSS-MiB apply-MiB 48MiB apply-CPU
row '' '' '' 'live' '-9 -B 1G' '-22 pf' '(of the 3)' '' '(/256MiB)' '(/256MiB)' 'anon/peak' cgroup '/bspatch(fl)'
for i in "${!P_NAME[@]}"; do
  p=${P_NAME[i]} n=${P_NEW[i]} ns=$(size "${P_NEW[i]}")
  ps=$(size "$W/$i.otad")
  bs="-" xd="-" zs="-" best="" bname="" vbs="-" acpu="-"
  if [ -f "$W/$i.bsdiff" ]; then bs=$(size "$W/$i.bsdiff"); best=$bs bname=bsdiff; vbs=$(ratio "$ps" "$bs")
  elif [ -f "$W/$i.bsstat" ]; then bs=DNF; fi
  if [ "$bs" = DNF ] && [ -n "${ANCHOR[$p]:-}" ]; then vbs="$(ratio "$ps" "${ANCHOR[$p]}")c"; fi
  if [ -f "$W/$i.xd" ]; then xd=$(size "$W/$i.xd"); if [ -z "$best" ] || [ "$xd" -lt "$best" ]; then best=$xd bname=xdelta3; fi; fi
  if [ -f "$W/$i.zst" ]; then zs=$(size "$W/$i.zst"); if [ -z "$best" ] || [ "$zs" -lt "$best" ]; then best=$zs bname=zstd; fi; fi
  vmin="-"; [ -n "$best" ] && vmin="$(ratio "$ps" "$best") $bname"
  [ -f "$W/acpu.ours.$i" ] && acpu="$(ratio "$(get "acpu.ours.$i")" "$(get "acpu.bsp.$i")")($(ratio "$(get "acpu.floor.$i")" "$(get "acpu.bsp.$i")"))"
  row "$p" "$(awk -v b="$ns" 'BEGIN{printf "%.1f", b/1048576}')" "$ps" "$bs" "$xd" "$zs" "$vmin" "$vbs" \
    "$(get "gen.$i.cpu") ($(per256 "$(get "gen.$i.cpu")" "$ns"))" \
    "$(mib "$(get "gen.$i.rss")") ($(per256 "$(mib "$(get "gen.$i.rss")")" "$ns"))" \
    "$(mib "$(get "apply.$i.anon")")/$(mib "$(get "apply.$i.hwm")")" "$(cg_short "$i")" "$acpu"
done
echo "  otad/smallest: otad's patch over the smallest of bsdiff (where it finished), xdelta3 -9 -B $XD_B and zstd --ultra -22 --long=31 --patch-from, all from this run; goal <= 1.0 on every pair"
echo "  /bsdiff: over Debian's bsdiff 4.3 run live; a 'c' marks the labelled constant instead (bsdiff-algorithm anchors of issue 13:" \
     "esbuild-minor 141,649 B, rootfs-minor 3,211,800 B) where bsdiff did not finish; goal <= 1.0, stretch <= 0.85 on the minor pairs"
echo "  gen: deltagen user+sys CPU seconds and peak RSS, raw and scaled to 256 MiB of new image (goal <= 120 CPU-s and <= 4096 MiB per 256 MiB;" \
     "on the ~9 MiB executables the scaling multiplies fixed costs by ~28)"
echo "  apply-MiB: deltaapply's RssAnon/VmHWM at exit (goal anon <= 16 MiB); 48MiB cgroup: deltaapply alone in a fresh group limited to 48 MiB, output compared"
echo "  apply-CPU: user+sys per run over $CPU_RUNS runs ($( [ -n "${NO_PERF:-}" ] && echo rusage-loop || echo rusage-perf)) as a ratio to bspatch on the same pair; (fl) the no-decoding floor; goal <= 0.35"
echo
echo "bsdiff (bound: ${BS_CPU_S} CPU-s, ${BS_MEM_MIB} MiB address space), generation CPU-s of each baseline, apply peak RSS:"
for i in "${!P_NAME[@]}"; do
  [ "${P_KIND[i]}" = syn ] && continue
  st=$(get "$i.bsstat") bsc=""
  [ "$st" = finished ] && bsc=" in $(get "gen.bs.$i.cpu") CPU-s, $(mib "$(get "gen.bs.$i.rss")") MiB; bspatch $(mib "$(get "apply.bsp.$i.rss")") MiB"
  printf '  %-16s bsdiff %s%s\n' "${P_NAME[i]}" "$st" "$bsc"
  printf '  %-16s xdelta3 %s CPU-s, apply %s MiB; zstd %s CPU-s, apply %s MiB\n' '' "$(get "gen.xd.$i.cpu")" "$(mib "$(get "apply.xd.$i.rss")")" \
    "$(get "gen.zs.$i.cpu")" "$(mib "$(get "apply.zs.$i.rss")")"
  if [ -f "$W/acpu.ours.$i" ]; then
    printf '  %-16s apply CPU per run: otad %s ms, bspatch %s ms, floor %s ms (CRC-32C of %s MiB of source, read again, SHA-256 and write of %s MiB)\n' '' \
      "$(get "acpu.ours.$i")" "$(get "acpu.bsp.$i")" "$(get "acpu.floor.$i")" "$(mib $(($(get "acpu.src.$i") / 1024)))" "$(mib $(($(size "${P_NEW[i]}") / 1024)))"
  fi
done
if [ -n "$cg_kind" ]; then
  echo "memory cgroup ($cg_kind, limit $CG_LIMIT_BYTES bytes = 48 MiB, swap included), each command alone in a fresh group:"
  for i in "${!P_NAME[@]}"; do
    printf '  %-46s %s\n' "otad apply, ${P_NAME[i]}" "$(get "cg.$i")"
  done
  [ -n "$cg_e" ] && printf '  %-46s %s\n' "bspatch, ${P_NAME[cg_e]} (bsdiff 4.3 patch)" "$cg_bsp_exe"
  if [ -n "$cg_i" ]; then
    printf '  %-46s %s\n' "bspatch, ${P_NAME[cg_i]} (literal BSDIFF40 patch)" "$cg_bsp_fs" \
      "xdelta3 -d (default -B), ${P_NAME[cg_i]}" "$cg_xd" \
      "zstd -d --long=31 --patch-from, ${P_NAME[cg_i]}" "$cg_zs"
  fi
  echo "  (the peak charge counts page cache, which the kernel reclaims at the limit; anonymous memory that does not fit gets the process killed)"
else
  echo "48 MiB memory cgroup runs skipped: $cg_note"
fi
