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
  ensure_apt build-essential pkg-config protobuf-compiler libprotobuf-dev
}

# ensure_etcd: Debian's etcd server and etcdctl, and HAProxy, for the etcd store's and the HA
# tests (each test starts its own processes on free loopback ports; the packaged services are
# not used).
ensure_etcd() {
  command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1 || ensure_apt etcd-server etcd-client
  command -v haproxy >/dev/null 2>&1 || ensure_apt haproxy
}

# ensure_stream_test_deps: what the kubectl streams tests run beside kubectl: curl through
# port-forward, script(1) for a pseudo-terminal, ip netns and iptables for the iptables manager.
ensure_stream_test_deps() {
  ensure_apt curl bsdutils iproute2 iptables
}

# ensure_mesh_test_deps: nft and ip for the mesh's interception tests (in network namespaces
# the tests make).
ensure_mesh_test_deps() {
  ensure_apt nftables iproute2
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

# containerd for the edged CRI tests: Debian's containerd and runc, with the CNI plugins, run
# beside Docker with their own root, state, config and socket so neither sees the other.
CONTAINERD_DIR=/run/kubeedge-rs-containerd
CONTAINERD_SOCK="$CONTAINERD_DIR/containerd.sock"
CONTAINERD_ROOT=/var/lib/kubeedge-rs-containerd
CONTAINERD_ETC=/etc/kubeedge-rs-containerd
# The images the CRI tests use (built locally: no registry is reachable).
CRI_BUSYBOX_IMAGE=docker.io/kubeedge-rs-test/busybox:2
CRI_PAUSE_IMAGE=docker.io/kubeedge-rs/pause:cri

# write_containerd_config: config.toml (CRI plugin on) and a CNI conflist of our own.
write_containerd_config() {
  as_root mkdir -p "$CONTAINERD_ETC/cni/net.d" "$CONTAINERD_DIR" "$CONTAINERD_ROOT"
  as_root tee "$CONTAINERD_ETC/config.toml" >/dev/null <<TOML
version = 2
root = "$CONTAINERD_ROOT"
state = "$CONTAINERD_DIR/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_DIR/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$CRI_PAUSE_IMAGE"
  # Containers may not go below containerd's own OOM score (machines whose root cannot lower
  # oom_score_adj, as in a VM or a container, refuse the sandbox's -998 otherwise).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CONTAINERD_ETC/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
TOML
  as_root tee "$CONTAINERD_ETC/cni/net.d/10-kubeedge-rs.conflist" >/dev/null <<'JSON'
{
  "cniVersion": "0.4.0",
  "name": "kubeedge-rs",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "kers-cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "10.89.0.0/16" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
  as_root tee "$CONTAINERD_ETC/cni/net.d/99-loopback.conf" >/dev/null <<'JSON'
{ "cniVersion": "0.4.0", "name": "lo", "type": "loopback" }
JSON
}

# image_tarball OUT REF CMD_JSON: a docker-save tarball of one layer holding the host's static
# busybox and its applets, tagged REF, with CMD_JSON (e.g. ["/bin/sh"]) as its command.
image_tarball() {
  local out="$1" ref="$2" cmd="$3" work
  work="$(mktemp -d)"
  mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp" "$work/rootfs/etc" "$work/img"
  cp /bin/busybox "$work/rootfs/bin/busybox"
  for a in sh httpd sleep cat echo env true false touch wget ls kill date rm mkdir id tar stty head dd wc; do
    ln -s busybox "$work/rootfs/bin/$a"
  done
  tar --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$work/rootfs" -cf "$work/img/layer.tar" .
  local diff cfg
  diff="$(sha256sum "$work/img/layer.tar" | cut -d' ' -f1)"
  printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$cmd" "$diff" >"$work/img/config.json"
  cfg="$(sha256sum "$work/img/config.json" | cut -d' ' -f1)"
  mv "$work/img/config.json" "$work/img/$cfg.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$cfg" "$ref" >"$work/img/manifest.json"
  tar -C "$work/img" -cf "$out" .
  rm -rf "$work"
}

# ensure_containerd: a running containerd on $CONTAINERD_SOCK with the test images imported
# into its k8s.io namespace. Idempotent: a containerd that answers is left as it is.
ensure_containerd() {
  command -v containerd >/dev/null 2>&1 || ensure_apt containerd
  command -v runc >/dev/null 2>&1 || ensure_apt runc
  ensure_apt containernetworking-plugins busybox-static iptables
  if ! as_root ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; then
    write_containerd_config
    local log
    log="$(mktemp -t containerd.XXXXXX.log)"
    echo "starting containerd on $CONTAINERD_SOCK (log: $log)"
    as_root sh -c "nohup containerd --config '$CONTAINERD_ETC/config.toml' >'$log' 2>&1 &"
    local deadline=$((SECONDS + 60))
    until as_root ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "containerd did not come up within 60 s; its log:" >&2
        tail -n 50 "$log" >&2
        return 1
      fi
      sleep 0.5
    done
  fi
  local ref cmd tarball
  for spec in "$CRI_BUSYBOX_IMAGE|[\"/bin/sh\"]" "$CRI_PAUSE_IMAGE|[\"/bin/sleep\",\"2147483647\"]"; do
    ref="${spec%%|*}" cmd="${spec#*|}"
    as_root ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep -qxF "$ref" && continue
    tarball="$(mktemp -t cri-image.XXXXXX.tar)"
    image_tarball "$tarball" "$ref" "$cmd"
    as_root ctr --address "$CONTAINERD_SOCK" -n k8s.io images import --no-unpack=false "$tarball" >/dev/null
    rm -f "$tarball"
  done
}
