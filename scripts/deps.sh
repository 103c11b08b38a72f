#!/usr/bin/env bash
# Installs every Debian package in scripts/deps.list (what the demo, tests,
# power-cut campaign, VM tests and benches need), without recommends: what a
# tool only recommends but we need is named in the list. Idempotent and
# quiet: prints nothing when all is present. Ends with scripts/deps-check.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mapfile -t pkgs < <(awk '!/^#/ && NF {print $1}' "$here/deps.list")
missing=()
for p in "${pkgs[@]}"; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$st" == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then echo "deps: need root for apt-get" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# A package can be "installed" with a command missing (a diverted or deleted
# file); the check says which.
"$here/deps-check.sh" --quiet
