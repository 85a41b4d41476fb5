# Shared by kiln's set-up scripts: idempotent installation of Debian packages and the build directory.
# shellcheck shell=bash

# Packages kiln's tests and main job use: image tools, the VM, OCI tools, the Debian tool chain, a headless
# browser for the catalog's web pages (and a font for its screenshots), PostgreSQL and a registry for the
# scaled-out catalog's tests.
KILN_APT_PACKAGES=(
  ca-certificates git gcc pkg-config
  e2fsprogs dosfstools fdisk mtools
  zstd xz-utils gzip
  gnupg sqv gpgv debian-archive-keyring dpkg-dev
  openssl libssl-dev
  libsqlite3-dev
  mmdebstrap
  skopeo umoci podman
  ovmf
  uidmap
  chromium fonts-dejavu-core
  postgresql docker-registry
)

# Reuse compiled dependencies between runs and fresh clones.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Install the named Debian packages that are missing; do nothing when all are there.
ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -q
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# QEMU: qemu-system-x86 and qemu-utils must come from the same release, so they go in one command; a
# qemu-utils from backports is brought back to the release's own version (--allow-downgrades). Also from
# that release: qemu-block-extra (the curl block driver, `-drive file.driver=http`, booting a disk straight
# from the catalog) and ipxe-qemu (the NICs' iPXE ROMs, network boot from the catalog).
ensure_qemu() {
  local p ok=1
  for p in qemu-system-x86 qemu-block-extra ipxe-qemu; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || ok=0
  done
  if [ "$ok" -eq 1 ] && command -v qemu-img >/dev/null; then
    return 0
  fi
  local codename
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  log "installing qemu-system-x86, qemu-utils, qemu-block-extra and ipxe-qemu from $codename"
  as_root apt-get update -q
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --allow-downgrades --no-install-recommends \
    qemu-system-x86 "qemu-utils/$codename" "qemu-block-extra/$codename" ipxe-qemu
}

# The simplestreams client (`sstream-query`), which the catalog's stream tests read it with. Debian
# bookworm does not package it, so it comes from PyPI (python-simplestreams, pinned) into its own venv,
# linked onto PATH.
KILN_SIMPLESTREAMS_VENV=/opt/kiln-tools/simplestreams
KILN_SIMPLESTREAMS_VERSION=0.1.0.post59
ensure_simplestreams() {
  local venv=$KILN_SIMPLESTREAMS_VENV
  if [ -x "$venv/bin/sstream-query" ] && "$venv/bin/python" -c 'import simplestreams' 2>/dev/null; then
    return 0
  fi
  log "installing python-simplestreams $KILN_SIMPLESTREAMS_VERSION into $venv"
  python3 -m venv --help >/dev/null 2>&1 || ensure_packages python3-venv
  as_root rm -rf "$venv"
  as_root python3 -m venv "$venv"
  as_root "$venv/bin/pip" install -q --disable-pip-version-check "python-simplestreams==$KILN_SIMPLESTREAMS_VERSION"
  as_root ln -sf "$venv/bin/sstream-query" /usr/local/bin/sstream-query
}

ensure_rust() {
  if ! command -v cargo >/dev/null; then
    echo "kiln needs a Rust toolchain (cargo, rustc >= 1.85, with rustfmt and clippy); install one with rustup" >&2
    exit 1
  fi
}

# The user the tests build as without root: a system account with subordinate ids (an unprivileged build
# runs as root of a user namespace mapping them).
KILN_UNPRIVILEGED_USER=kiln-unprivileged
ensure_unprivileged_user() {
  local u=$KILN_UNPRIVILEGED_USER
  if ! getent passwd "$u" >/dev/null; then
    log "adding system user $u (for unprivileged build tests)"
    as_root useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin "$u"
  fi
  if ! grep -q "^$u:" /etc/subuid 2>/dev/null || ! grep -q "^$u:" /etc/subgid 2>/dev/null; then
    log "giving $u subordinate ids 3000000-3065535"
    as_root usermod --add-subuids 3000000-3065535 --add-subgids 3000000-3065535 "$u"
  fi
}
