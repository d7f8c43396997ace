#!/usr/bin/env bash
# The main job: a single-machine cloud + edge on the embedded defaults.
#
# Builds cloudcore, edgecore and keadm, makes sure a Docker engine runs, then:
#   keadm init  --advertise-address=127.0.0.1     (cloudcore with its embedded control plane)
#   keadm gettoken                                (the join token)
#   keadm join  --cloudcore-ipport=127.0.0.1:10000 --token=...   (edgecore on this host)
# and waits until the edge node is Ready. Everything lives under KUBEEDGE_ROOT (default /)
# as upstream lays it out; `keadm reset` (run with the same KUBEEDGE_ROOT) removes it all.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
ensure_rust
ensure_docker
ensure_kubectl

echo "building cloudcore, edgecore and keadm (release)..."
cargo build --release --locked -p cloudcore -p edgecore -p keadm
BIN="$(pwd)/target/release"
export PATH="$BIN:$PATH"
ROOT="${KUBEEDGE_ROOT:-/}"
export KUBEEDGE_ROOT="$ROOT"
NODE="${NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}"

# The example's image: a local busybox httpd (no registry is needed).
if ! docker image inspect kubeedge-rs/httpd:local >/dev/null 2>&1; then
  tmp="$(mktemp -d)"
  mkdir -p "$tmp/bin" "$tmp/www"
  cp /bin/busybox "$tmp/bin/busybox"
  for a in sh httpd ls cat echo sleep wget; do ln -s busybox "$tmp/bin/$a"; done
  tar -C "$tmp" -c . | docker import - kubeedge-rs/httpd:local >/dev/null
  rm -rf "$tmp"
fi

keadm init --advertise-address=127.0.0.1
KUBECONFIG_PATH="${ROOT%/}/etc/kubeedge/admin.kubeconfig"
TOKEN="$(keadm gettoken --kube-config="$KUBECONFIG_PATH")"
keadm join --cloudcore-ipport=127.0.0.1:10000 --edgenode-name="$NODE" --token="$TOKEN"

echo "waiting for node $NODE to be Ready..."
deadline=$((SECONDS + 60))
until kubectl --kubeconfig "$KUBECONFIG_PATH" get node "$NODE" 2>/dev/null | grep -q ' Ready'; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "node $NODE is not Ready after 60 s; logs: ${ROOT%/}/var/log/kubeedge/" >&2
    exit 1
  fi
  sleep 0.5
done
kubectl --kubeconfig "$KUBECONFIG_PATH" get node -o wide

cat <<TXT

kubeedge-rs is running: cloudcore (embedded control plane) and edgecore (node $NODE).

  export KUBECONFIG=$KUBECONFIG_PATH
  kubectl get node                          # $NODE Ready, ROLES agent,edge
  kubectl apply -f examples/nginx-deploy.yaml
  kubectl get po -o wide                    # Running on $NODE
  curl http://127.0.0.1:8080/               # the pod answers on its hostPort

Logs: ${ROOT%/}/var/log/kubeedge/   Stop and remove everything: KUBEEDGE_ROOT=$ROOT $BIN/keadm reset
TXT
