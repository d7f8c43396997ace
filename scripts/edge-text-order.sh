#!/usr/bin/env bash
# Records bins/edgecore/text-order.txt: the functions a joined edgecore runs, in the order LLD
# should lay them out (see bins/edgecore/build.rs). Run it after changes to the edge's start-up
# path; a stale list only costs idle memory.
#
# It builds the release binaries, starts a cloud with `keadm init`, joins an edgecore (edged on
# Docker, EventBus, DeviceTwin, MetaServer) running under valgrind's callgrind, and dumps the
# functions called up to the idle, joined state; then it creates a ConfigMap and a pod, reads
# MetaServer, deletes the pod and stops the edge, and appends the functions called since. The
# names are mapped back to the binary's mangled symbols with nm.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_rust
ensure_build_deps
ensure_docker
ensure_apt valgrind python3 binutils curl
cargo build --release --locked -p cloudcore -p keadm
# edgecore alone, as a user builds it: symbol names carry hashes of each crate's features, and
# building it beside other packages unifies their features (other names, a list that misses).
cargo build --release --locked -p edgecore

work="$(mktemp -d)"
cleanup() {
  for p in "$work"/root/var/lib/kubeedge/*.pid; do [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true; done
  [ -n "${edge_pid:-}" ] && kill -9 "$edge_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/bin" "$work/root"
cp target/release/keadm target/release/cloudcore "$work/bin/"
cp target/release/edgecore "$work/edgecore.real"
cat > "$work/bin/edgecore" <<WRAP
#!/bin/sh
exec valgrind --tool=callgrind --dump-instr=no --callgrind-out-file=$work/cg.out "$work/edgecore.real" "\$@"
WRAP
chmod +x "$work/bin/edgecore"
read -r ws https api tun str mon ms mq <<<"$(python3 -c "
import socket
ss = [socket.socket() for _ in range(8)]
for s in ss: s.bind(('127.0.0.1', 0))
print(*[s.getsockname()[1] for s in ss])")"
export KUBEEDGE_ROOT="$work/root" KEADM_NO_SYSTEMD=1 PATH="$work/bin:$PATH" RUST_LOG=info
export KUBECONFIG="$work/root/etc/kubeedge/admin.kubeconfig"
keadm init --advertise-address=127.0.0.1 --apiserver-listen="127.0.0.1:$api" \
  --set="modules.cloudHub.websocket.port=$ws,modules.cloudHub.https.port=$https,modules.cloudHub.websocket.address=127.0.0.1,modules.cloudHub.https.address=127.0.0.1,modules.cloudStream.tunnelPort=$tun,modules.cloudStream.streamPort=$str,commonConfig.monitorServer.bindAddress=127.0.0.1:$mon" >/dev/null
token="$(keadm gettoken 2>/dev/null | tail -n1)"
keadm join --cloudcore-ipport="127.0.0.1:$ws" --certport="$https" --edgenode-name=order-edge --token="$token" \
  --set="modules.metaManager.metaServer.server=127.0.0.1:$ms,modules.eventBus.enable=true,modules.eventBus.mqttServerInternal=tcp://127.0.0.1:$mq,modules.eventBus.mqttServerExternal=tcp://127.0.0.1:$mq,modules.edgeStream.server=127.0.0.1:$tun,modules.deviceTwin.enable=true,modules.edgeMesh.enable=false" >/dev/null
edge_pid="$(cat "$work/root/var/lib/kubeedge/edgecore.pid")"

# wait_for what seconds command...: run the command once a second until it succeeds.
wait_for() {
  local what="$1" limit="$2"; shift 2
  for _ in $(seq "$limit"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "timed out: $what" >&2; exit 1
}
node_ready() { kubectl get node order-edge -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -q True; }
wait_for "the edge node Ready" 120 node_ready
sleep 10 # the idle loop: heartbeats, lease renewals, status reports
callgrind_control -d idle "$edge_pid" >/dev/null
wait_for "the idle dump" 30 test -s "$work/cg.out.1"
kubectl create configmap order --from-literal=a=b >/dev/null
kubectl run order-pod --image=busybox --overrides='{"spec":{"nodeName":"order-edge"}}' -- sleep 1000 >/dev/null
pod_placed() { kubectl get pod order-pod -o jsonpath='{.status.podIP}' | grep -q .; }
wait_for "the pod's status from the edge" 120 pod_placed
curl -sf "http://127.0.0.1:$ms/api/v1/pods" >/dev/null
kubectl delete pod order-pod --wait=false >/dev/null
sleep 5
kill -TERM "$edge_pid"
wait_for "edgecore to stop" 60 sh -c "! kill -0 $edge_pid"
edge_pid=""

python3 - "$work" bins/edgecore/text-order.txt <<'PY'
import collections, re, subprocess, sys
work, out = sys.argv[1], sys.argv[2]
def called(path):
    names = []
    for line in open(path, errors="replace"):
        m = re.match(r"^c?fn=\(\d+\) (.*)$", line.rstrip("\n"))
        if m:
            names.append(m.group(1))
    return names
binary = f"{work}/edgecore.real"
nm = lambda *a: subprocess.run(["nm", *a, binary], capture_output=True, text=True, check=True).stdout.splitlines()
symbols = collections.defaultdict(list)
for mangled, demangled in zip(nm(), nm("-C")):
    m, d = mangled.split(" ", 2), demangled.split(" ", 2)
    if len(m) == 3 and m[1] in "tT":
        symbols[d[2]].append(m[2])
order, seen = [], set()
for name in called(f"{work}/cg.out.1") + called(f"{work}/cg.out"):
    for s in symbols.get(name, []):
        if s not in seen:
            seen.add(s)
            order.append(s)
open(out, "w").write("\n".join(order) + "\n")
print(f"{out}: {len(order)} functions")
PY
