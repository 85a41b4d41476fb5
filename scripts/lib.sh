# Shared by kiln's set-up scripts: idempotent installation of Debian packages and the build directory.
# shellcheck shell=bash

# Packages kiln's tests and main job use: image tools, the VM, OCI tools, the Debian tool chain.
KILN_APT_PACKAGES=(
  ca-certificates git gcc pkg-config
  e2fsprogs dosfstools fdisk mtools
  zstd xz-utils gzip
  gnupg sqv gpgv debian-archive-keyring dpkg-dev
  mmdebstrap
  skopeo umoci
  ovmf
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
# qemu-utils from backports is brought back to the release's own version (--allow-downgrades).
ensure_qemu() {
  if dpkg-query -W -f='${Status}' qemu-system-x86 2>/dev/null | grep -q 'install ok installed' \
    && command -v qemu-img >/dev/null; then
    return 0
  fi
  local codename
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  log "installing qemu-system-x86 and qemu-utils from $codename"
  as_root apt-get update -q
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --allow-downgrades --no-install-recommends \
    qemu-system-x86 "qemu-utils/$codename"
}

ensure_rust() {
  if ! command -v cargo >/dev/null; then
    echo "kiln needs a Rust toolchain (cargo, rustc >= 1.85, with rustfmt and clippy); install one with rustup" >&2
    exit 1
  fi
}
