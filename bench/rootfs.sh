#!/usr/bin/env bash
# Root tree benchmark: kiln's package stage against mmdebstrap, the same package set, in one run.
#
#   bash bench/rootfs.sh            # prints seconds and the ratios kiln/mmdebstrap, cold and warm
#
# cold: nothing cached (kiln: an empty cache folder; mmdebstrap: downloads every package).
# warm: packages already downloaded (mmdebstrap: its archives synced in, as its manual shows; kiln: its
#       cache, which also holds the configured package stage).
# Targets: kiln/mmdebstrap <= 0.5 cold, <= 0.25 warm. Needs root, the Debian mirror of the host's apt
# sources, mmdebstrap, and a release build of kiln (built here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

suite=${SUITE:-bookworm}
packages=${PACKAGES:-linux-image-amd64,systemd-sysv,udev,openssh-server}
work=$(mktemp -d /var/tmp/kiln-bench-rootfs.XXXXXX)
trap 'rm -rf --one-file-system "$work"' EXIT

cargo build --release --locked -q --bin kiln
kiln="$CARGO_TARGET_DIR/release/kiln"

mkdir -p "$work/bp"
{
  echo 'name = "bench-rootfs"'
  echo 'version = "1.0.0"'
  echo '[base]'
  echo "suite = \"$suite\""
  echo 'variant = "minbase"'
  echo '[packages]'
  printf 'include = [%s]\n' "$(echo "$packages" | sed 's/[^,]*/"&"/g')"
} >"$work/bp/blueprint.toml"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

run_mmdebstrap() { # $1: target, rest: extra options
  local target=$1
  shift
  mmdebstrap --quiet --variant=minbase --include="$packages" "$@" "$suite" "$target" >/dev/null
}

# Cold.
t0=$(now)
run_mmdebstrap "$work/mm-cold"
t1=$(now)
"$kiln" -q build "$work/bp" --out "$work/kiln-cold" --cache "$work/kiln-cache" --tree-only --source-date-epoch 0 >/dev/null
t2=$(now)
mm_cold=$(elapsed "$t0" "$t1")
kiln_cold=$(elapsed "$t1" "$t2")

# Warm: mmdebstrap with its packages synced in, kiln with its cache.
mkdir -p "$work/apt-cache"
run_mmdebstrap "$work/mm-seed" --skip=essential/unlink \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
  --customize-hook="sync-out /var/cache/apt/archives $work/apt-cache"
t3=$(now)
run_mmdebstrap "$work/mm-warm" --skip=essential/unlink \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
  --setup-hook="sync-in $work/apt-cache /var/cache/apt/archives/"
t4=$(now)
"$kiln" -q build "$work/bp" --out "$work/kiln-warm" --cache "$work/kiln-cache" --tree-only --source-date-epoch 0 >/dev/null
t5=$(now)
mm_warm=$(elapsed "$t3" "$t4")
kiln_warm=$(elapsed "$t4" "$t5")

printf '%-10s %10s %10s %8s %8s\n' stage mmdebstrap kiln ratio target
printf '%-10s %10.1f %10.1f %8.2f %8s\n' cold "$mm_cold" "$kiln_cold" "$(ratio "$kiln_cold" "$mm_cold")" 0.5
printf '%-10s %10.1f %10.1f %8.2f %8s\n' warm "$mm_warm" "$kiln_warm" "$(ratio "$kiln_warm" "$mm_warm")" 0.25
printf 'tree sizes: mmdebstrap %s, kiln %s\n' "$(du -sh "$work/mm-cold" | cut -f1)" "$(du -sh "$work/kiln-cold/rootfs" | cut -f1)"
