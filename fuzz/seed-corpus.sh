#!/usr/bin/env bash
# Write seed corpora for every fuzz target from the recorded upstream traffic.
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
PY
for d in corpus/*; do echo "$(ls "$d" | wc -l) seeds in $d"; done
