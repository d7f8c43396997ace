# Shared set-up for scripts/*.sh and .ci/run: install only what is missing.
# shellcheck shell=bash

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

# ensure_apt pkg... : apt-get install the Debian packages that are not installed yet.
ensure_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# ensure_rust: cargo with rustfmt and clippy, through rustup when cargo is absent.
ensure_rust() {
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
  if ! command -v cargo >/dev/null 2>&1; then
    ensure_apt curl ca-certificates
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    . "$HOME/.cargo/env"
  fi
  if command -v rustup >/dev/null 2>&1; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
  fi
}

# ensure_build_deps: what the workspace needs to build (a C compiler for bundled SQLite etc.).
ensure_build_deps() {
  ensure_apt build-essential pkg-config
}

# ensure_kubectl: a kubectl client (Debian's kubernetes-client when none is installed).
ensure_kubectl() {
  command -v kubectl >/dev/null 2>&1 || ensure_apt kubernetes-client
}

# ensure_docker: a running Docker engine (the edged tests use it) and a static busybox (the
# tests build their images from it). Installs docker.io and busybox-static when missing, and
# starts dockerd in the background (log in a temp file) when `docker info` fails.
ensure_docker() {
  command -v dockerd >/dev/null 2>&1 || ensure_apt docker.io
  ensure_apt busybox-static
  docker info >/dev/null 2>&1 && return 0
  local log
  log="$(mktemp -t dockerd.XXXXXX.log)"
  echo "starting dockerd (log: $log)"
  as_root sh -c "nohup dockerd >'$log' 2>&1 &"
  local deadline=$((SECONDS + 60))
  until docker info >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "dockerd did not come up within 60 s; its log:" >&2
      tail -n 50 "$log" >&2
      return 1
    fi
    sleep 0.5
  done
}

# ensure_device_test_deps: what the device tests run against: Debian's mosquitto (external
# broker mode) and pymodbus from PyPI (a Modbus TCP server we did not write), pinned.
PYMODBUS_VERSION=3.16.1
ensure_device_test_deps() {
  ensure_apt mosquitto python3 python3-pip
  if ! python3 -c "import pymodbus, sys; sys.exit(pymodbus.__version__ != '$PYMODBUS_VERSION')" 2>/dev/null; then
    python3 -m pip install -q "pymodbus==$PYMODBUS_VERSION" 2>/dev/null \
      || python3 -m pip install -q --break-system-packages "pymodbus==$PYMODBUS_VERSION"
  fi
}
