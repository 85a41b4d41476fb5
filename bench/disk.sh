#!/usr/bin/env bash
# Times kiln's qcow2 writer against qemu-img on a 2 GiB ext4 raw image holding ~700 MB of files from /usr:
#   qemu-img convert -O qcow2        vs  kiln (uncompressed)          target ratio kiln/qemu-img <= 1.0
#   qemu-img convert -c -O qcow2     vs  kiln --compress zlib         target ratio kiln/qemu-img <= 0.25
# Runs alternate between the two tools (so background load hits both alike); the ratio of median wall times
# is checked against the target, and best-of-runs wall and median CPU (user + sys) ratios are printed too, as
# a shared machine makes wall times noisy. Each tool's previous output is removed right before its run,
# outside the timing.
#
# Usage: bench/disk.sh [RUNS]      (default 3 compressed runs of each tool; uncompressed runs are cheap: 3 x RUNS)
# Environment: BENCH_DIR (work directory, default /var/tmp/kiln-bench-disk), DATA_MB (default 720),
#              CARGO_TARGET_DIR (default $HOME/.cache/kiln-target).
set -euo pipefail

RUNS=${1:-3}
BENCH_DIR=${BENCH_DIR:-/var/tmp/kiln-bench-disk}
DATA_MB=${DATA_MB:-720}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}
REPO=$(cd "$(dirname "$0")/.." && pwd)

for tool in mke2fs qemu-img; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y e2fsprogs qemu-utils)" >&2; exit 1; }
done

mkdir -p "$BENCH_DIR"
cd "$BENCH_DIR"
RAW=$BENCH_DIR/raw.img

if [[ ! -s $RAW ]]; then
    echo "== making a tree of ~${DATA_MB} MB from /usr"
    rm -rf tree && mkdir tree
    # Files of /usr in a stable order until DATA_MB is reached; hard links where possible (same file system).
    find /usr/bin /usr/sbin /usr/include /usr/share /usr/lib -xdev -type f -printf '%s\t%p\n' 2>/dev/null |
        LC_ALL=C sort -t $'\t' -k2 |
        awk -F'\t' -v limit=$((DATA_MB * 1024 * 1024)) '{ total += $1; if (total <= limit) print $2 }' >files.txt
    if ! xargs -d '\n' cp --parents -l -t tree <files.txt 2>/dev/null; then
        rm -rf tree && mkdir tree
        xargs -d '\n' cp --parents -t tree <files.txt
    fi
    echo "   $(du -s --apparent-size -m tree | cut -f1) MB in $(wc -l <files.txt) files"
    echo "== making a 2 GiB ext4 image of it"
    rm -f "$RAW" && truncate -s 2G "$RAW"
    mke2fs -q -F -t ext4 -d tree "$RAW"
    rm -rf tree
fi
echo "   $(du -m "$RAW" | cut -f1) MB allocated in $RAW"

echo "== building kiln's writer"
(cd "$REPO" && cargo build --quiet --release -p kiln-disk --example qcow2)
KILN=$CARGO_TARGET_DIR/release/examples/qcow2

# Warm the page cache, as a build would have just written the raw image.
cat "$RAW" >/dev/null

# time_run OUTPUT COMMAND... : removes OUTPUT, runs COMMAND once, prints "wall cpu" seconds (cpu = user + sys).
time_run() {
    local out=$1
    shift
    rm -f "$out"
    local TIMEFORMAT='%R %U %S' t
    t=$({ time "$@" >/dev/null 2>&1; } 2>&1)
    awk '{ printf "%.3f %.3f\n", $1, $2 + $3 }' <<<"$t"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
minimum() { sort -n | head -1; }
ratio() { awk -v k="$1" -v q="$2" 'BEGIN { printf "%.3f", k / q }'; }

# compare LABEL TARGET RUNS "KILN ARGS" "QEMU ARGS"
compare() {
    local label=$1 target=$2 runs=$3 kiln_args=$4 qemu_args=$5
    local kw=() kc=() qw=() qc=() r
    for ((i = 0; i < runs; i++)); do
        # shellcheck disable=SC2086
        read -r w c < <(time_run kiln.qcow2 "$KILN" "$RAW" kiln.qcow2 $kiln_args)
        kw+=("$w") kc+=("$c")
        # shellcheck disable=SC2086
        read -r w c < <(time_run qemu.qcow2 qemu-img convert $qemu_args -O qcow2 "$RAW" qemu.qcow2)
        qw+=("$w") qc+=("$c")
    done
    qemu-img compare -q "$RAW" kiln.qcow2 || { echo "kiln's $label qcow2 differs from the raw image" >&2; exit 1; }
    local kmed qmed kmin qmin kcpu qcpu
    kmed=$(printf '%s\n' "${kw[@]}" | median) qmed=$(printf '%s\n' "${qw[@]}" | median)
    kmin=$(printf '%s\n' "${kw[@]}" | minimum) qmin=$(printf '%s\n' "${qw[@]}" | minimum)
    kcpu=$(printf '%s\n' "${kc[@]}" | median) qcpu=$(printf '%s\n' "${qc[@]}" | median)
    r=$(ratio "$kmed" "$qmed")
    echo "$label: kiln $(($(stat -c %s kiln.qcow2) / 1048576)) MB, qemu-img $(($(stat -c %s qemu.qcow2) / 1048576)) MB"
    echo "  wall runs   kiln ${kw[*]}  |  qemu-img ${qw[*]}"
    echo "  median wall kiln ${kmed}s  qemu-img ${qmed}s  ratio $r"
    echo "  best wall   kiln ${kmin}s  qemu-img ${qmin}s  ratio $(ratio "$kmin" "$qmin")"
    echo "  median cpu  kiln ${kcpu}s  qemu-img ${qcpu}s  ratio $(ratio "$kcpu" "$qcpu")"
    if awk -v r="$r" -v t="$target" 'BEGIN { exit !(r <= t) }'; then
        echo "  target kiln/qemu-img <= $target (median wall): met"
    else
        echo "  target kiln/qemu-img <= $target (median wall): MISSED"
    fi
}

echo "== $((3 * RUNS)) uncompressed and $RUNS compressed runs each, $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
compare "uncompressed" 1.0 $((3 * RUNS)) "" ""
compare "zlib" 0.25 "$RUNS" "--compress zlib" "-c"
rm -f kiln.qcow2 qemu.qcow2
