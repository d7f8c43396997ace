#!/usr/bin/env bash
# Write seed corpora for every fuzz target: from the recorded upstream traffic, the API server's
# test manifests, and hand-made protobuf bodies, patches and MQTT packets.
set -euo pipefail
cd "$(dirname "$0")"
python3 - <<'PY'
import base64, glob, json, os, hashlib

root = "../testdata/captures"
def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join("corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)

def messages():
    for path in sorted(glob.glob(root + "/v*/*.json")):
        d = json.load(open(path))
        items = ([d] if "message" in d else []) + d.get("exchange", []) + d.get("sequence", [])
        for it in items:
            if it.get("message"):
                yield it["message"]
    for path in sorted(glob.glob(root + "/raw/ws-*.jsonl")):
        for line in open(path):
            e = json.loads(line)
            if "payload_json" in e:
                yield e["payload_json"]

for m in messages():
    put("decode_message", json.dumps(m, separators=(",", ":")) + "\n")
    res = m.get("route", {}).get("resource", "")
    put("parse_resource_path", res)
    put("parse_resource_path", "node/edge-node-1/" + res)
    c = m.get("content")
    if isinstance(c, str) and c.startswith("{"):
        put("twin_payload", c)
    elif isinstance(c, dict) and ("twin" in c or "added_devices" in c or "device" in c):
        put("twin_payload", json.dumps(c, separators=(",", ":")))
    if m["route"].get("resource", "").startswith("device/"):
        dev = m["route"]["resource"].split("/")[1]
        for t in ["twin/update", "twin/update/delta", "twin/get/result", "state/update", "updated"]:
            put("parse_topic", "$hw/events/device/%s/%s" % (dev, t))
            put("parse_topic", "$hw/events/device/default/%s/%s" % (dev, t))
for t in ["$hw/events/node/edge-node-1/membership/get", "$hw/events/upload/x", "SYS/dis/upload_records",
          "$ke/events/device/d/data/update", "$hw/events/connected/c", "a/user/b"]:
    put("parse_topic", t)

for path in sorted(glob.glob(root + "/v*/01-https-get-ca.json")):
    ca = base64.b64decode(next(h["payload_b64"] for h in json.load(open(path))["http"] if "payload_b64" in h))
    crt = json.load(open(path.replace("01-https-get-ca", "02-https-get-edge-crt")))
    for h in crt["http"]:
        for k, v in h.get("headers") or []:
            if k == "Authorization":
                jwt = v.split(" ", 1)[1]
                put("verify_token", hashlib.sha256(ca).hexdigest() + "." + jwt)
                put("verify_token", jwt)

# Tunnel frames: uvarint(id) uvarint(type) data, as Go writes them.
def uvarint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80); n >>= 7
    out.append(n)
    return bytes(out)
url = {"Scheme": "http", "Opaque": "", "User": None, "Host": "127.0.0.1:10350",
       "Path": "/containerLogs/default/demo-pod/app", "RawPath": "", "ForceQuery": False,
       "RawQuery": "follow=true&tailLines=10", "Fragment": "", "RawFragment": ""}
logs = json.dumps({"MessID": 7, "url": url, "header": {"Accept": ["*/*"]}}).encode()
exec_ = json.dumps({"MessID": 8, "url": dict(url, Path="/exec/default/demo-pod/app", RawQuery="command=sh&stdin=true"),
                    "header": {"X-Stream-Protocol-Version": ["v4.channel.k8s.io"]}, "method": "POST"}).encode()
put("decode_tunnel_frame", uvarint(7) + uvarint(0) + logs)
put("decode_tunnel_frame", uvarint(8) + uvarint(1) + exec_)
put("decode_tunnel_frame", uvarint(300) + uvarint(3) + b"hello from the edge\n")
put("decode_tunnel_frame", uvarint(300) + uvarint(4))
put("decode_tunnel_frame", uvarint(0) + uvarint(5) + b"update node port failed")

# --- API server bodies -------------------------------------------------------------------------
import yaml

def pb_varint(n):
    n &= (1 << 64) - 1
    return uvarint(n)
def pb(field, value):
    """One protobuf field: int -> varint, bytes/str -> length-delimited, list -> repeated."""
    if isinstance(value, list):
        return b"".join(pb(field, v) for v in value)
    if isinstance(value, bool) or isinstance(value, int):
        return pb_varint(field << 3) + pb_varint(int(value))
    if isinstance(value, str):
        value = value.encode()
    return pb_varint(field << 3 | 2) + pb_varint(len(value)) + value
def pb_map(field, d):
    return b"".join(pb(field, pb(1, k) + pb(2, v)) for k, v in d.items())
def meta(name, ns="", labels=None):
    # Go writes every non-pointer field, empty ones included, as kubectl's client does.
    return (pb(1, name) + pb(2, "") + pb(3, ns) + pb(5, "") + pb(6, "") + pb(7, 0)
            + pb(8, b"") + (pb_map(11, labels) if labels else b""))
def envelope(api_version, kind, obj):
    return b"k8s\0" + pb(1, pb(1, api_version) + pb(2, kind)) + pb(2, obj) + pb(3, b"") + pb(4, "")
def int_or_str(v):
    return pb(1, 1) + pb(3, v) if isinstance(v, str) else pb(1, 0) + pb(2, v)
container = (pb(1, "nginx") + pb(2, "nginx:1.25") + pb(3, ["sh", "-c"]) + pb(4, ["sleep 1"])
             + pb(6, pb(3, 80) + pb(4, "TCP")) + pb(7, pb(1, "A") + pb(2, "1"))
             + pb(8, b"".join(pb(1, pb(1, k) + pb(2, pb(1, q))) for k, q in [("cpu", "100m"), ("memory", "64Mi")]))
             + pb(13, "/dev/termination-log") + pb(14, "IfNotPresent") + pb(20, "File"))
pod_spec = (pb(2, container) + pb(3, "Always") + pb(4, 30) + pb(6, "ClusterFirst")
            + pb_map(7, {"kubernetes.io/os": "linux"}) + pb(19, "default-scheduler"))
bodies = [
    envelope("v1", "Namespace", pb(1, meta("demo")) + pb(2, pb(1, ["kubernetes"])) + pb(3, b"")),
    envelope("v1", "ConfigMap", pb(1, meta("c1", "default")) + pb_map(2, {"a": "b", "k": "v"})
             + pb(3, pb(1, "bin") + pb(2, b"\x00\x01\xff"))),
    envelope("v1", "Secret", pb(1, meta("s1", "default")) + pb(2, pb(1, "password") + pb(2, b"hunter2"))
             + pb(3, "Opaque") + pb_map(4, {"user": "me"})),
    envelope("v1", "ServiceAccount", pb(1, meta("sa", "default")) + pb(2, pb(3, "sa-token"))
             + pb(3, pb(1, "regcred")) + pb(4, True)),
    envelope("v1", "Service", pb(1, meta("nginx-svc", "default", {"app": "nginx"}))
             + pb(2, pb(1, pb(1, "http") + pb(2, "TCP") + pb(3, 80) + pb(4, int_or_str(8080)))
                  + pb(1, pb(2, "TCP") + pb(3, 443) + pb(4, int_or_str("https")))
                  + pb_map(2, {"app": "nginx"}) + pb(4, "ClusterIP") + pb(7, "None"))
             + pb(3, b"")),
    envelope("apps/v1", "Deployment", pb(1, meta("nginx-deployment", "default", {"app": "nginx"}))
             + pb(2, pb(1, 2) + pb(2, pb_map(1, {"app": "nginx"}) + pb(2, pb(1, "tier") + pb(2, "In") + pb(3, ["web"])))
                  + pb(3, pb(1, meta("", "", {"app": "nginx"})) + pb(2, pod_spec))
                  + pb(4, pb(1, "RollingUpdate") + pb(2, pb(1, int_or_str("25%")) + pb(2, int_or_str(1))))
                  + pb(5, 0) + pb(6, 10) + pb(9, 600))
             + pb(3, b"")),
]
for b in bodies:
    put("protobuf_body", b)
put("protobuf_body", b"k8s\0" + pb(1, pb(1, "v1") + pb(2, "Pod")) + pb(2, pb(1, meta("p"))))

manifests = "../kubeedge-apiserver/tests/manifests"
objects = []
for path in sorted(glob.glob(manifests + "/*.yaml")):
    for doc in yaml.safe_load_all(open(path)):
        if doc:
            objects.append(doc)
objects += [
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1", "namespace": "default"},
     "data": {"a": "b"}, "extra": 1},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a.b/c": "x"}},
     "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicyy": "Always"}],
              "nodeName": "edge-node-1"}},
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "edge-node-1"},
     "status": {"conditions": [{"type": "Ready", "status": "True"}], "capacity": {"cpu": "2"}}},
    {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "edge-node-1"},
     "spec": {"holderIdentity": "edge-node-1", "leaseDurationSeconds": 40}},
    {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
     "spec": {"size": 3, "ratio": None, "mode": "a", "port": "http", "tags": ["x"],
              "parts": [{"name": "p", "on": True, "unknown": 1}], "labels": {"k": "v"},
              "free": {"anything": [1]}, "typo": 2}, "status": {"x": 1}},
]
kinds = ["Pod", "Node", "Namespace", "ConfigMap", "Secret", "Service", "Endpoints", "Event",
         "ServiceAccount", "Lease", "Deployment", "ReplicaSet", "DaemonSet",
         "CustomResourceDefinition", "Widget"]  # fuzzing::KINDS, in order
for o in objects:
    k = kinds.index(o["kind"]) if o["kind"] in kinds else 14
    for validation in range(3):
        sel = k << 3 | validation << 1
        put("object_body", bytes([sel]) + json.dumps(o).encode())
        put("object_body", bytes([sel | 1]) + yaml.safe_dump(o).encode())
        # json_body: directive in the low two bits, kind above.
        put("json_body", bytes([(k << 2 | validation) & 0xFF]) + json.dumps(o).encode())
    for t in ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05.123456Z", "2024-01-02T03:04:05.123456789Z", "2024-1-2"):
        o2 = json.loads(json.dumps(o))
        o2.setdefault("metadata", {})["creationTimestamp"] = t
        if o["kind"] == "Lease":
            o2.setdefault("spec", {})["renewTime"] = t
        put("json_body", bytes([(k << 2 | 2) & 0xFF]) + json.dumps(o2).encode())
    put("json_body", bytes([k << 2 & 0xFF]) + json.dumps(o).encode()[:-1] + b', "metadata": {}}')

deploy = next(o for o in objects if o["kind"] == "Deployment")
pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "finalizers": ["a", "b"]},
       "spec": {"containers": [{"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}],
                                "volumeMounts": [{"name": "v", "mountPath": "/v"}]},
                               {"name": "b", "image": "b:1"}],
                "volumes": [{"name": "v", "emptyDir": {}}]}}
patches = [
    (0, None, [{"op": "replace", "path": "/spec/replicas", "value": 3},
               {"op": "add", "path": "/metadata/labels/tier", "value": "web"},
               {"op": "remove", "path": "/metadata/labels/app"}]),
    (0, pod, [{"op": "test", "path": "/spec/containers/0/name", "value": "a"},
              {"op": "move", "from": "/spec/containers/1", "path": "/spec/containers/0"},
              {"op": "copy", "from": "/metadata/name", "path": "/metadata/generateName"}]),
    (1, None, {"metadata": {"labels": {"app": None, "tier": "web"}}, "spec": {"replicas": 5}}),
    (1, pod, {"spec": {"containers": [{"name": "c"}]}}),
    (3, None, {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i:2"}]}}}}),
    (3, pod, {"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]},
              "spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                       "containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}],
                                       "volumeMounts": [{"mountPath": "/v", "$patch": "delete"}]},
                                      {"name": "b", "$patch": "delete"}],
                       "volumes": [{"$patch": "replace"}, {"name": "w", "hostPath": {"path": "/w"}}]}}),
    (3, deploy, {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"},
                          "template": {"$patch": "replace", "spec": {"containers": []}}}}),
    (3, None, {"$patch": "delete"}),
]
for sel, current, p in patches:
    pre = json.dumps(current).encode() + b"\0" if current else b""
    put("patch", bytes([sel]) + pre + json.dumps(p).encode())
    if sel == 1:
        put("patch", bytes([2]) + pre + yaml.safe_dump(p).encode())

# --- MQTT 3.1.1 packets for the embedded broker --------------------------------------------------
def remaining(n):
    return uvarint(n)
def mqtt(first, body):
    return bytes([first]) + remaining(len(body)) + body
def mstr(s):
    s = s.encode() if isinstance(s, str) else s
    return len(s).to_bytes(2, "big") + s
def connect(cid, keep=30, will=None, user=None):
    flags = 0x02  # clean session
    tail = mstr(cid)
    if will:
        topic, msg, qos, retain = will
        flags |= 0x04 | qos << 3 | (0x20 if retain else 0)
        tail += mstr(topic) + mstr(msg)
    if user:
        flags |= 0xC0
        tail += mstr(user[0]) + mstr(user[1])
    return mqtt(0x10, mstr("MQTT") + bytes([4, flags]) + keep.to_bytes(2, "big") + tail)
def subscribe(pkid, *filters):
    return mqtt(0x82, pkid.to_bytes(2, "big") + b"".join(mstr(f) + bytes([q]) for f, q in filters))
def unsubscribe(pkid, *filters):
    return mqtt(0xA2, pkid.to_bytes(2, "big") + b"".join(mstr(f) for f in filters))
def publish(topic, payload, qos=0, pkid=1, retain=False, dup=False):
    first = 0x30 | qos << 1 | (1 if retain else 0) | (8 if dup else 0)
    return mqtt(first, mstr(topic) + (pkid.to_bytes(2, "big") if qos else b"") + payload)
PINGREQ, DISCONNECT = b"\xc0\x00", b"\xe0\x00"
SEP = b"\xf0\xf0"  # fuzzing::split_clients: the next client
twin = b'{"event_id":"","timestamp":0,"twin":{"temperature":{"actual":{"value":"21"}}}}'
dev = "$hw/events/device/thermo-1"
mapper = (connect("mapper") + subscribe(1, (dev + "/twin/update/delta", 1), ("$hw/events/device/+/twin/get/result", 0))
          + publish(dev + "/twin/update", twin, qos=1, pkid=2) + publish(dev + "/state/update", b'{"state":"online"}')
          + PINGREQ + DISCONNECT)
app = (connect("app", will=("$hw/events/connected/app", b"gone", 1, True))
       + subscribe(7, ("#", 0), ("$hw/#", 2), ("a/+/c", 1)) + publish("a/b/c", b"retained", qos=1, pkid=3, retain=True)
       + publish("a/b/c", b"", retain=True) + publish("x", b"two", qos=2, pkid=4) + b"\x62\x02\x00\x04"
       + unsubscribe(8, "#") + PINGREQ)
put("mqtt_broker", mapper)
put("mqtt_broker", app)
put("mqtt_broker", mapper + SEP + app)
put("mqtt_broker", connect("same") + subscribe(1, ("t", 1)) + SEP + connect("same") + publish("t", b"x", qos=1) + DISCONNECT)
put("mqtt_broker", connect("", keep=0, user=("u", "p")) + subscribe(1, ("a/#/b", 0), ("+", 1), ("", 0)) + publish("a/+", b"bad"))
put("mqtt_broker", connect("c") + connect("c"))
put("mqtt_broker", publish("t", b"before connect"))
put("mqtt_broker", connect("big") + publish("t", b"x" * 20000, qos=1))
PY
for d in corpus/*; do echo "$(ls "$d" | wc -l) seeds in $d"; done
