#!/usr/bin/env bash
# Checks that every package in scripts/deps.list is installed and every
# command listed for it resolves, and that the Go toolchain is there. Fails
# naming each missing package or command, so a missing tool is reported in a
# second instead of as a scenario failing twenty minutes into a run.
# Usage: deps-check.sh [--quiet]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
quiet=${1:-}
bad=0
while read -r pkg rest; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  cmds=${rest%%#*}
  st=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  if [[ "$st" != "install ok installed" ]]; then
    echo "deps-check: package $pkg is not installed (run: make deps)" >&2
    bad=1
    continue
  fi
  for c in $cmds; do
    [[ "$c" == - ]] && continue
    if ! command -v "$c" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$c" && ! -x "/sbin/$c" ]]; then
      echo "deps-check: command $c (package $pkg) not found" >&2
      bad=1
    fi
  done
done <"$here/deps.list"
if ! command -v "${GO:-go}" >/dev/null 2>&1; then
  echo "deps-check: the Go toolchain (go) is not on PATH" >&2
  bad=1
fi
if ((bad)); then exit 1; fi
[[ "$quiet" == --quiet ]] || echo "deps-check: all $(awk '!/^#/ && NF' "$here/deps.list" | wc -l) packages and their commands present"
