#!/usr/bin/env bash
# Times kiln's OCI layer writer against the reference pipelines
#   tar --sort=name -C TREE -cf - . | zstd -T0 -3 | sha256sum
#   tar --sort=name -C TREE -cf - . | gzip -6 | sha256sum
# and prints kiln/reference ratios of the mean wall times (targets: zstd <= 0.8, gzip <= 0.5).
#
# Usage: bench/oci.sh [TREE]
#   TREE defaults to a copy of /usr/share (about 700 MB of tar) made once under $KILN_BENCH_DIR
#   (default /var/tmp/kiln-bench). Needs hyperfine, zstd, gzip, GNU tar and jq.
#   KILN_BENCH_RUNS sets the runs per command (default 5; one warm-up run each fills the page cache).
# kiln's side writes the compressed blob to /dev/null and computes both digests itself (diff_id and blob
# digest), so it does strictly more hashing than the reference, which hashes the compressed stream only.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench_dir="${KILN_BENCH_DIR:-/var/tmp/kiln-bench}"
runs="${KILN_BENCH_RUNS:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"

for tool in hyperfine zstd gzip tar jq; do
    command -v "$tool" >/dev/null || { echo "bench/oci.sh: $tool is missing" >&2; exit 1; }
done

tree="${1:-}"
if [[ -z "$tree" ]]; then
    tree="$bench_dir/tree"
    if [[ ! -d "$tree" ]]; then
        echo "Copying /usr/share to $tree ..." >&2
        mkdir -p "$bench_dir"
        cp -a /usr/share "$tree.partial"
        mv "$tree.partial" "$tree"
    fi
fi
[[ -d "$tree" ]] || { echo "bench/oci.sh: $tree is not a directory" >&2; exit 1; }

(cd "$here" && cargo build --release --quiet -p kiln-oci --example layer)
layer="$CARGO_TARGET_DIR/release/examples/layer"

size=$(tar --sort=name -C "$tree" -cf - . | wc -c)
echo "Tree $tree: $(find "$tree" | wc -l) entries, $((size / 1024 / 1024)) MiB of tar; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"

results="$(mktemp -d)"
trap 'rm -rf "$results"' EXIT

run() { # NAME REFERENCE-COMMAND KILN-COMMAND
    hyperfine --warmup 1 --runs "$runs" --export-json "$results/$1.json" \
        --command-name "reference $1" "$2" \
        --command-name "kiln $1" "$3"
}

run zstd "tar --sort=name -C '$tree' -cf - . | zstd -T0 -3 | sha256sum" \
    "'$layer' '$tree' /dev/null --compression zstd"
run gzip "tar --sort=name -C '$tree' -cf - . | gzip -6 | sha256sum" \
    "'$layer' '$tree' /dev/null --compression gzip"

echo
for name in zstd gzip; do
    target=$([[ $name == zstd ]] && echo 0.8 || echo 0.5)
    jq -r --arg name "$name" --arg target "$target" '
        (.results[0].mean) as $ref | (.results[1].mean) as $kiln |
        (.results[0].min) as $refmin | (.results[1].min) as $kilnmin |
        "\($name): reference \($ref * 100 | round / 100)s, kiln \($kiln * 100 | round / 100)s, " +
        "ratio kiln/reference \($kiln / $ref * 1000 | round / 1000) (of minimums \($kilnmin / $refmin * 1000 | round / 1000)), target <= \($target)"
    ' "$results/$name.json"
done
for name in zstd gzip; do
    compress=$([[ $name == zstd ]] && echo "zstd -T0 -3" || echo "gzip -6")
    ref_size=$(tar --sort=name -C "$tree" -cf - . | $compress | wc -c)
    kiln_size=$("$layer" "$tree" /dev/null --compression "$name" 2>/dev/null | awk '/^size /{print $2}')
    echo "$name: compressed size reference $ref_size, kiln $kiln_size bytes"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
