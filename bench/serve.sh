#!/usr/bin/env bash
# Serving benchmark: the catalog against nginx and Debian's docker-registry, in one run.
#
#   bash bench/serve.sh        # prints the three ratios and appends them to RESULTS
#
# 1. blob download: a BLOB_MB MiB blob (random bytes) downloaded with curl from `kiln catalog serve`
#    (/api/v1/blobs/sha256:…) and from nginx serving the same file (sendfile on); hyperfine, ratio of means.
#    Target: <= 1.1.
# 2. `skopeo copy` of debian-base-oci (built here by `kiln pipeline` into a fresh catalog, and pushed as is to
#    a docker-registry with skopeo) from the catalog and from the registry into a fresh oci: layout;
#    hyperfine, ratio of means. Target: <= 1.0.
# 3. manifest GETs with 64 connections (wrk, 2 threads, DURATION): /v2/debian-base-oci/manifests/1.0.0 from
#    each; ratio of requests per second, kiln / docker-registry. Target: >= 5.
#
# Environment: BLOB_MB (default 200), RUNS (10), DURATION (10s), RESULTS (/var/tmp/kiln-bench/results.txt),
#              KILN_CACHE, CARGO_TARGET_DIR. Needs root (the build), and installs hyperfine, wrk, nginx,
#              docker-registry, skopeo, curl and jq when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

blob_mb=${BLOB_MB:-200}
runs=${RUNS:-10}
duration=${DURATION:-10s}
results=${RESULTS:-/var/tmp/kiln-bench/results.txt}

ensure_packages hyperfine wrk nginx docker-registry skopeo curl jq
cargo build --release --locked -q --bin kiln
kiln="$CARGO_TARGET_DIR/release/kiln"

work=$(mktemp -d /var/tmp/kiln-bench-serve.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# A port nothing listens on (ss from iproute2).
free_port() {
  local p
  while :; do
    p=$(shuf -i 20000-60000 -n 1)
    ss -Hltn "sport = :$p" | grep -q . || { echo "$p"; return; }
  done
}

# The image: debian-base-oci through the pipeline into a fresh catalog.
export KILN_SIGNING_PASSWORD=bench
"$kiln" -q keygen --out "$work/key"
"$kiln" -q catalog init --data "$work/catalog" --trust-key "$work/key.pub" >/dev/null
"$kiln" -q pipeline blueprints/debian-base-oci --catalog "$work/catalog" --key "$work/key.key" \
  --out "$work/out" --channel stable >/dev/null
token=$(cat "$work/catalog/admin-token")

"$kiln" -q catalog serve --data "$work/catalog" --listen 127.0.0.1:0 >"$work/kiln.url" 2>"$work/kiln.log" &
pids+=($!)
for _ in $(seq 100); do [[ -s $work/kiln.url ]] && break; sleep 0.1; done
kiln_url=$(head -1 "$work/kiln.url")

# docker-registry with the same image.
reg_port=$(free_port)
mkdir -p "$work/registry"
cat >"$work/registry.yml" <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$reg_port
log:
  level: error
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$reg_port/v2/" >/dev/null && break; sleep 0.1; done
skopeo copy -q --dest-tls-verify=false "oci:$work/out/oci:1.0.0" \
  "docker://127.0.0.1:$reg_port/debian-base-oci:1.0.0"

# The blob, in the catalog and under nginx.
head -c "$((blob_mb << 20))" /dev/urandom >"$work/blob"
digest="sha256:$(sha256sum "$work/blob" | cut -d' ' -f1)"
curl -fs -X PUT -H "Authorization: Bearer $token" -H "Content-Type: application/octet-stream" \
  --data-binary "@$work/blob" "$kiln_url/api/v1/blobs/$digest" >/dev/null
mkdir -p "$work/www"
ln "$work/blob" "$work/www/blob"
# nginx's workers run as www-data: they must reach the file (mktemp made the folder private).
chmod 0755 "$work" "$work/www"
chmod 0644 "$work/blob"
nginx_port=$(free_port)
cat >"$work/nginx.conf" <<EOF
daemon off;
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  server {
    listen 127.0.0.1:$nginx_port;
    root $work/www;
    location / { default_type application/octet-stream; }
  }
}
EOF
nginx -c "$work/nginx.conf" &
pids+=($!)
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$nginx_port/blob" && break; sleep 0.1; done

mean() { jq -r '.results[0].mean' "$1"; }

echo "== blob download ($blob_mb MiB)"
hyperfine -N -w 2 -r "$runs" --export-json "$work/blob-kiln.json" \
  "curl -fs -o /dev/null $kiln_url/api/v1/blobs/$digest" >/dev/null
hyperfine -N -w 2 -r "$runs" --export-json "$work/blob-nginx.json" \
  "curl -fs -o /dev/null http://127.0.0.1:$nginx_port/blob" >/dev/null
blob_ratio=$(awk -v a="$(mean "$work/blob-kiln.json")" -v b="$(mean "$work/blob-nginx.json")" 'BEGIN { printf "%.2f", a / b }')
printf 'kiln %.3fs  nginx %.3fs  ratio %s (target <= 1.1)\n' "$(mean "$work/blob-kiln.json")" "$(mean "$work/blob-nginx.json")" "$blob_ratio"

echo "== skopeo copy of debian-base-oci"
host=${kiln_url#http://}
hyperfine -w 1 -r "$runs" --export-json "$work/copy-kiln.json" --prepare "rm -rf $work/dest" \
  "skopeo copy -q --src-tls-verify=false docker://$host/debian-base-oci:1.0.0 oci:$work/dest:x" >/dev/null
hyperfine -w 1 -r "$runs" --export-json "$work/copy-reg.json" --prepare "rm -rf $work/dest" \
  "skopeo copy -q --src-tls-verify=false docker://127.0.0.1:$reg_port/debian-base-oci:1.0.0 oci:$work/dest:x" >/dev/null
copy_ratio=$(awk -v a="$(mean "$work/copy-kiln.json")" -v b="$(mean "$work/copy-reg.json")" 'BEGIN { printf "%.2f", a / b }')
printf 'kiln %.3fs  docker-registry %.3fs  ratio %s (target <= 1.0)\n' "$(mean "$work/copy-kiln.json")" "$(mean "$work/copy-reg.json")" "$copy_ratio"

echo "== manifest GETs, 64 connections"
accept="Accept: application/vnd.oci.image.manifest.v1+json"
rps() { wrk -t2 -c64 -d"$duration" -H "$accept" "$1" | awk '/Requests\/sec/ { print $2 }'; }
wrk -t2 -c64 -d2s -H "$accept" "$kiln_url/v2/debian-base-oci/manifests/1.0.0" >/dev/null
kiln_rps=$(rps "$kiln_url/v2/debian-base-oci/manifests/1.0.0")
wrk -t2 -c64 -d2s -H "$accept" "http://127.0.0.1:$reg_port/v2/debian-base-oci/manifests/1.0.0" >/dev/null
reg_rps=$(rps "http://127.0.0.1:$reg_port/v2/debian-base-oci/manifests/1.0.0")
rps_ratio=$(awk -v a="$kiln_rps" -v b="$reg_rps" 'BEGIN { printf "%.2f", a / b }')
printf 'kiln %s req/s  docker-registry %s req/s  ratio %s (target >= 5)\n' "$kiln_rps" "$reg_rps" "$rps_ratio"

mkdir -p "$(dirname "$results")"
printf '%s serve blob=%s copy=%s manifest_rps=%s\n' "$(date -u +%FT%TZ)" "$blob_ratio" "$copy_ratio" "$rps_ratio" >>"$results"
