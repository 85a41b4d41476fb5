#!/usr/bin/env bash
# Catalog benchmark: resolving by contract over a family of 10,000 versions, against a plain manifest GET on
# the same server, in one run.
#
#   bash bench/catalog.sh          # prints p50/p99 of both and the ratio resolve p99 / manifest p99
#
# A fresh catalog folder is seeded with one family of VERSIONS versions by the kiln-catalog `seed` example
# (records through the store API, each manifest.json a real blob; catalog/examples/seed.rs says what the
# family looks like), served by a release `kiln catalog serve`, and measured with `wrk --latency`, the same
# threads, connections and duration for both, after a warm-up of each:
#   resolve   GET /api/v1/resolve?family=bench-os&contract=base-os@^1&channel=stable
#             (walks the whole 2.x line and some 1.x versions: ~1,030 passed over, 100 listed)
#   manifest  GET /api/v1/families/bench-os/versions/V/manifest   (V: the version resolve answers)
# and, for information, "resolve-new": the same resolve with a supported_until day long past that changes
# with every request (the same walk and answer, but never asked before, so no kept answer serves it).
# ROUNDS rounds alternate the two, so a change of machine load hits both; each percentile is the median of
# the rounds. Target: resolve p99 <= 2 x manifest p99. The ratios are printed and appended to RESULTS.
#
# Environment: VERSIONS (default 10000), ROUNDS (3), DURATION (10s), THREADS (2), CONNECTIONS (8),
#              RESULTS (default /var/tmp/kiln-bench/results.txt), CARGO_TARGET_DIR.
# Needs wrk, curl and jq (installed here when missing; root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

versions=${VERSIONS:-10000}
rounds=${ROUNDS:-3}
duration=${DURATION:-10s}
threads=${THREADS:-2}
connections=${CONNECTIONS:-8}
results=${RESULTS:-/var/tmp/kiln-bench/results.txt}
family=bench-os

ensure_packages wrk curl jq

cargo build --release --locked -q --bin kiln
cargo build --release --locked -q -p kiln-catalog --example seed
kiln="$CARGO_TARGET_DIR/release/kiln"
seed="$CARGO_TARGET_DIR/release/examples/seed"

work=$(mktemp -d /var/tmp/kiln-bench-catalog.XXXXXX)
server=
cleanup() {
  if [[ -n $server ]]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

start=$(date +%s.%N)
seeded=$("$seed" --data "$work/data" --family "$family" --versions "$versions")
echo "seeded $versions versions of $family in $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s: $seeded"
expected=$(jq -r .resolves_to <<<"$seeded")

"$kiln" catalog serve --data "$work/data" --listen 127.0.0.1:0 >"$work/url" 2>"$work/serve.log" &
server=$!
for _ in $(seq 100); do [[ -s $work/url ]] && break; sleep 0.1; done
url=$(head -1 "$work/url")
[[ $url == http://* ]] || { echo "kiln catalog serve did not start:" >&2; cat "$work/serve.log" >&2; exit 1; }

resolve_path="/api/v1/resolve?family=$family&contract=base-os@%5E1&channel=stable"
answer=$(curl -fsS "$url$resolve_path")
chosen=$(jq -r .chosen.version <<<"$answer")
[[ $chosen == "$expected" ]] || { echo "resolve answered $chosen, the seed made $expected the answer" >&2; exit 1; }
manifest_path="/api/v1/families/$family/versions/$chosen/manifest"
curl -fsS -o /dev/null "$url$manifest_path"
echo "resolve answers $chosen: $(jq '.passed_over | length' <<<"$answer") passed over listed, $(jq .omitted <<<"$answer") more counted; $(wc -c <<<"$answer") bytes"
echo "manifest: $(curl -fsS "$url$manifest_path" | wc -c) bytes"

# to_us VALUE: a wrk duration (123.45us, 1.20ms, 1.01s) in microseconds.
to_us() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    f = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1000000 : (u == "m") ? 60000000 : -1
    if (f < 0) { print "bad wrk duration " v > "/dev/stderr"; exit 1 }
    printf "%.1f", n * f
  }'
}

# Each request a resolve not asked before: supported_until walks through days of the years 1000-1999.
cat >"$work/new.lua" <<'LUA'
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function init(args)
  n = id * 100000
end
function request()
  n = n + 1
  local day = string.format("%04d-%02d-%02d", 1000 + math.floor(n / 336) % 1000, 1 + math.floor(n / 28) % 12, 1 + n % 28)
  return wrk.format(nil, wrk.path .. "&supported_until=" .. day)
end
LUA

# measure NAME PATH [WRK ARGS]: one wrk run; appends "p50 p99 requests/s" (microseconds) to $work/NAME.
measure() {
  local name=$1 path=$2 out p50 p99 rps
  shift 2
  out=$(wrk --latency -t "$threads" -c "$connections" -d "$duration" "$@" "$url$path")
  if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then
    echo "$name: errors during the run:" >&2
    echo "$out" >&2
    exit 1
  fi
  p50=$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  rps=$(awk '$1 == "Requests/sec:" { print $2 }' <<<"$out")
  echo "$p50 $p99 $rps" >>"$work/$name"
  printf '  %-11s p50 %8.1fus  p99 %8.1fus  %9.0f requests/s\n' "$name" "$p50" "$p99" "$rps"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

echo "== warm-up, then $rounds rounds of $duration each: $threads threads, $connections connections; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
wrk -t "$threads" -c "$connections" -d 3s "$url$resolve_path" >/dev/null
wrk -t "$threads" -c "$connections" -d 3s "$url$manifest_path" >/dev/null
for round in $(seq "$rounds"); do
  echo "round $round"
  measure resolve "$resolve_path"
  measure manifest "$manifest_path"
  measure resolve-new "$resolve_path" -s "$work/new.lua"
done

col() { awk -v c="$2" '{ print $c }' "$work/$1" | median; }
r50=$(col resolve 1) r99=$(col resolve 2) m50=$(col manifest 1) m99=$(col manifest 2)
ratio99=$(awk -v a="$r99" -v b="$m99" 'BEGIN { printf "%.2f", a / b }')
ratio50=$(awk -v a="$r50" -v b="$m50" 'BEGIN { printf "%.2f", a / b }')
n50=$(col resolve-new 1) n99=$(col resolve-new 2)
echo "median of $rounds rounds: resolve p50 ${r50}us p99 ${r99}us; manifest p50 ${m50}us p99 ${m99}us;" \
  "resolve-new p50 ${n50}us p99 ${n99}us"
echo "ratio resolve/manifest: p99 $ratio99 (target <= 2.0), p50 $ratio50;" \
  "resolve-new/manifest p99 $(awk -v a="$n99" -v b="$m99" 'BEGIN { printf "%.2f", a / b }') (no target)"
if awk -v r="$ratio99" 'BEGIN { exit !(r <= 2.0) }'; then echo "target met"; else echo "target MISSED"; fi
mkdir -p "$(dirname "$results")"
echo "catalog.sh versions=$versions resolve/manifest p99 $ratio99 p50 $ratio50 (resolve p99 ${r99}us, manifest p99 ${m99}us)" >>"$results"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
