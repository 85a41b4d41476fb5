#!/usr/bin/env bash
# Times kiln's OCI layer writer against the reference pipelines
#   tar --sort=name -C TREE -cf - . | zstd -T0 -3 | sha256sum
#   tar --sort=name -C TREE -cf - . | gzip -6 | sha256sum
# and prints kiln/reference ratios of wall times (targets: zstd <= 0.8, gzip <= 0.5).
#
# Usage: bench/oci.sh [TREE]
#   TREE defaults to a copy of /usr/share (about 700 MB of tar) made once under $KILN_BENCH_DIR
#   (default /var/tmp/kiln-bench). Needs hyperfine, zstd, gzip, GNU tar and jq.
#   KILN_BENCH_ROUNDS (default 3) rounds of KILN_BENCH_RUNS (default 2) runs of each command. The rounds
#   alternate reference and kiln, so a change of machine load between them hits both; the first round
#   starts with a warm-up run of each (page cache). The ratio is given per round, as the median of the
#   rounds, and over all runs.
# kiln's side is the `layer` example: it writes the compressed blob to /dev/null and computes both digests
# (diff_id and blob digest) itself, so it hashes more than the reference, which hashes the compressed stream.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench_dir="${KILN_BENCH_DIR:-/var/tmp/kiln-bench}"
rounds="${KILN_BENCH_ROUNDS:-3}"
runs="${KILN_BENCH_RUNS:-2}"
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

for name in zstd gzip; do
    if [[ $name == zstd ]]; then compress="zstd -T0 -3"; target=0.8; else compress="gzip -6"; target=0.5; fi
    for round in $(seq 1 "$rounds"); do
        warmup=$([[ $round == 1 ]] && echo 1 || echo 0)
        hyperfine --style none --warmup "$warmup" --runs "$runs" --export-json "$results/$name-$round.json" \
            --command-name reference "tar --sort=name -C '$tree' -cf - . | $compress | sha256sum" \
            --command-name kiln "'$layer' '$tree' /dev/null --compression $name"
        jq -r --arg name "$name" --arg round "$round" '
            (.results[0]) as $r | (.results[1]) as $k |
            def s(x): x * 100 | round / 100;
            "\($name) round \($round): reference \(s($r.mean))s (user \(s($r.user))s, sys \(s($r.system))s), " +
            "kiln \(s($k.mean))s (user \(s($k.user))s, sys \(s($k.system))s), ratio \($k.mean / $r.mean * 1000 | round / 1000)"
        ' "$results/$name-$round.json"
    done
    jq -rs --arg name "$name" --arg target "$target" '
        [ .[] | .results[1].mean / .results[0].mean ] | sort as $ratios |
        ($ratios | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end) as $median |
        "\($name): ratio kiln/reference median \($median * 1000 | round / 1000) of \($ratios | length) rounds, target <= \($target)"
    ' "$results/$name"-*.json
    jq -rs --arg name "$name" '
        ([ .[] | .results[0].times[] ] | add) as $r | ([ .[] | .results[1].times[] ] | add) as $k |
        "\($name): ratio of total wall time over all runs \($k / $r * 1000 | round / 1000)"
    ' "$results/$name"-*.json
    ref_size=$(tar --sort=name -C "$tree" -cf - . | $compress | wc -c)
    kiln_size=$("$layer" "$tree" /dev/null --compression "$name" 2>/dev/null | awk '/^size /{print $2}')
    echo "$name: compressed size reference $ref_size, kiln $kiln_size bytes"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
