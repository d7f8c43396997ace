//! An upstream edgecore against our cloudcore binary: the recorded sessions of upstream
//! v1.12.1, v1.15.4 and v1.22.2 edges (`testdata/captures/raw/ws-*.jsonl`) are replayed frame
//! for frame, with the captured handshake headers, against `keadm init`'s cloudcore, and our
//! cloud must answer as upstream's did.
//!
//! Per session: the objects the upstream cloud pushed (pod, configmap, secret) are created
//! through the API first; the edge's certificate comes from the bootstrap port with a join
//! token; then every message the upstream edge sent (keepalives, twin membership request,
//! MetaServer Applications: list pods, register the node, get a configmap, patch pod and node
//! status, create the lease) goes out byte for byte. Each Application gets a reply with the
//! same route, the same content keys and the same `Status` as upstream's reply; the node
//! exists in the API with the edge's labels; the pod status patch is applied; and the pod is
//! pushed to the edge with upstream's envelope and acked, which the cloud records in the
//! ObjectSync ledger.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use futures_util::{SinkExt as _, StreamExt as _};
use kubeedge_bench::cluster::{wait_for, Cluster};
use kubeedge_edge::hub::{self, CertFiles};
use kubeedge_proto::{JoinToken, Message};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const LIMIT: Duration = Duration::from_secs(30);

/// One recorded session.
struct Session {
    node: String,
    headers: Vec<(String, String)>,
    /// Every websocket message in order: (edge to cloud?, payload).
    frames: Vec<(bool, Value)>,
}

fn session(file: &str) -> Result<Session> {
    let path = format!(
        "{}/../testdata/captures/raw/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    let (mut node, mut headers, mut frames) = (String::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        let o: Value = serde_json::from_str(line)?;
        let up = o["dir"] == "edge->cloud";
        match o["event"].as_str() {
            Some("http-head") if up && headers.is_empty() => {
                for h in o["headers"].as_array().context("headers")? {
                    let (k, v) = (h[0].as_str().unwrap_or(""), h[1].as_str().unwrap_or(""));
                    if matches!(k, "Node_id" | "Project_id" | "Connectionuse") {
                        headers.push((k.to_owned(), v.to_owned()));
                    }
                    if k == "Node_id" {
                        node = v.to_owned();
                    }
                }
            }
            Some("ws-message") if o["payload_json"].is_object() => {
                frames.push((up, o["payload_json"].clone()));
            }
            _ => {}
        }
    }
    ensure!(!node.is_empty(), "{file}: no handshake");
    Ok(Session {
        node,
        headers,
        frames,
    })
}

/// The object of a captured push, ready to be created through the API.
fn creatable(push: &Value) -> Option<Value> {
    let mut obj = push["content"].clone();
    if !obj.is_object() {
        return None;
    }
    let meta = obj["metadata"].as_object_mut()?;
    for k in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
        "generation",
        "ownerReferences",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        meta.remove(k);
    }
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
    if obj["kind"].is_null() {
        let rtype = push["route"]["resource"].as_str()?.split('/').nth(1)?;
        let kind = match rtype {
            "pod" => "Pod",
            "configmap" => "ConfigMap",
            "secret" => "Secret",
            _ => return None,
        };
        obj["kind"] = kind.into();
        obj["apiVersion"] = "v1".into();
    }
    Some(obj)
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn b64_json(v: &Value) -> Option<Value> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str()?)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The next text frame from the cloud, decoded, with its text.
async fn next_message(ws: &mut kubeedge_bench::RawWs) -> Result<(Message, String)> {
    loop {
        let Some(frame) = ws.next().await else {
            bail!("the cloud closed the session");
        };
        if let WsMessage::Text(t) = frame? {
            return Ok((Message::from_json(t.as_bytes())?, t.as_str().to_owned()));
        }
    }
}

/// Ack a push as the edge does, and keep it.
async fn ack_push(
    ws: &mut kubeedge_bench::RawWs,
    pushes: &mut Vec<Message>,
    m: Message,
) -> Result<()> {
    ws.send(WsMessage::text(String::from_utf8(m.ack().to_json())?))
        .await?;
    pushes.push(m);
    Ok(())
}

async fn replay(file: &str, sets: &[&str]) -> Result<()> {
    let s = session(file)?;
    let cluster = Cluster::init_with(sets)?;
    let node = s.node.as_str();

    // The objects upstream's cloud pushed to this edge, created through the API.
    let mut created = BTreeSet::new();
    for (up, f) in &s.frames {
        let res = f["route"]["resource"].as_str().unwrap_or_default();
        if *up || f["route"]["group"] != "resource" || created.contains(res) {
            continue;
        }
        if let Some(obj) = creatable(f) {
            created.insert(res.to_owned());
            cluster.apply(&serde_json::to_string(&obj)?)?;
        }
    }
    let pod_resource = created
        .iter()
        .find(|r| r.contains("/pod/"))
        .cloned()
        .context("a pod in the session")?;

    // The edge's certificate, by token, from our bootstrap port.
    let token: JoinToken = cluster.token()?.parse()?;
    let dir = tempfile::tempdir()?;
    let tls = hub::bootstrap(
        &format!("127.0.0.1:{}", cluster.https_port),
        &token,
        node,
        &CertFiles::in_dir(dir.path()),
        LIMIT,
    )
    .await?;
    let headers: Vec<(&str, &str)> = s
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut ws = kubeedge_bench::ws_dial(cluster.ws, tls.client_config()?, node, &headers).await?;

    // Upstream's replies to this edge's requests, by the request's msg_id.
    let mut upstream_reply: HashMap<String, Value> = HashMap::new();
    for (up, f) in &s.frames {
        if let Some(parent) = f["header"]["parent_msg_id"].as_str() {
            if !*up && !parent.is_empty() {
                upstream_reply.insert(parent.to_owned(), f.clone());
            }
        }
    }

    let mut pushes: Vec<Message> = Vec::new();
    let mut answered = 0;
    let mut pod_status: Option<Value> = None;
    for (up, f) in &s.frames {
        let op = f["route"]["operation"].as_str().unwrap_or_default();
        if !*up || op == "response" {
            continue; // acks of the recorded pushes: ours are acked live below
        }
        let id = f["header"]["msg_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        ws.send(WsMessage::text(serde_json::to_string(f)?)).await?;
        let Some(expected) = upstream_reply.get(&id) else {
            continue;
        };
        if f["content"]["Verb"] == "patch"
            && f["content"]["Key"]
                .as_str()
                .is_some_and(|k| k.contains("/pods/"))
        {
            pod_status = b64_json(&f["content"]["ReqBody"]);
        }
        // Read until our reply to this request arrives, acking pushes on the way.
        let reply = tokio::time::timeout(LIMIT, async {
            loop {
                let (m, text) = next_message(&mut ws).await?;
                if m.parent_id().is_some_and(|p| p.as_str() == id) {
                    break anyhow::Ok(serde_json::from_str::<Value>(&text)?);
                }
                ack_push(&mut ws, &mut pushes, m).await?;
            }
        })
        .await
        .with_context(|| format!("{file}: no reply to {}", f["content"]["Key"]))??;
        let what = format!(
            "{file}: reply to {} {}",
            f["content"]["Verb"], f["content"]["Key"]
        );
        ensure!(
            reply["route"] == expected["route"],
            "{what}: route {}",
            reply["route"]
        );
        ensure!(
            keys(&reply["content"]) == keys(&expected["content"]),
            "{what}: content keys {:?} vs upstream's {:?}",
            keys(&reply["content"]),
            keys(&expected["content"])
        );
        ensure!(
            reply["content"]["Status"] == expected["content"]["Status"],
            "{what}: Status {} (upstream: {}), Reason {}",
            reply["content"]["Status"],
            expected["content"]["Status"],
            reply["content"]["Reason"]
        );
        answered += 1;
    }
    ensure!(
        answered >= 5 && answered == upstream_reply.len(),
        "{file}: {answered} of {} requests compared",
        upstream_reply.len()
    );

    // The node the edge registered through MetaServer exists, with its labels.
    let labels = cluster
        .kubectl(&["get", "node", node, "-o", "jsonpath={.metadata.labels}"])
        .with_context(|| cluster.logs_tail(40))?;
    ensure!(labels.contains("node-role.kubernetes.io/edge"), "{labels}");

    // The pod status patch the edge sent is what the API holds.
    if let Some(phase) = pod_status
        .as_ref()
        .and_then(|p| p["status"]["phase"].as_str())
    {
        let pod = pod_resource.rsplit('/').next().unwrap_or_default();
        let got = cluster.kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"])?;
        ensure!(got == phase, "{file}: pod phase {got:?}, patched {phase:?}");
    }

    // The pod reaches the edge as upstream's push did, and our ack lands in the ledger.
    let pushed = |ps: &[Message]| {
        ps.iter()
            .any(|m| m.route.resource == pod_resource && m.route.operation_str() == "insert")
    };
    tokio::time::timeout(LIMIT, async {
        while !pushed(&pushes) {
            let (m, _) = next_message(&mut ws).await?;
            ack_push(&mut ws, &mut pushes, m).await?;
        }
        anyhow::Ok(())
    })
    .await
    .with_context(|| format!("{file}: pod {pod_resource} not pushed"))??;
    let push = pushes
        .iter()
        .find(|m| m.route.resource == pod_resource)
        .context("the pod push")?;
    let recorded = s
        .frames
        .iter()
        .find(|(up, f)| !*up && f["route"]["resource"] == pod_resource.as_str())
        .map(|(_, f)| f)
        .context("the recorded pod push")?;
    let ours: Value = serde_json::from_slice(&push.to_json())?;
    ensure!(ours["route"]["source"] == recorded["route"]["source"]);
    ensure!(ours["route"]["group"] == recorded["route"]["group"]);
    ensure!(keys(&ours["header"]).is_superset(&keys(&recorded["header"])));
    wait_for("the ack recorded as an ObjectSync", LIMIT, || {
        let out = cluster.kubectl(&["get", "objectsyncs", "-A", "-o", "name"])?;
        Ok(out.contains(node))
    })?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_v1_22_edge_session() -> Result<()> {
    replay("ws-v1.22.2-20261125T145228.jsonl", &[]).await
}

/// v1.15 edges present the legacy certificate subject: cloudcore runs as upstream's did for
/// them, with `cloudHub.authorization.enable: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_v1_15_edge_session() -> Result<()> {
    replay(
        "ws-v1.15.4-20261125T143919.jsonl",
        &["modules.cloudHub.authorization.enable=false"],
    )
    .await
}

/// v1.12 also used v1alpha2 Devices with bare-name twin ids (the session reports a twin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_v1_12_edge_session() -> Result<()> {
    replay(
        "ws-v1.12.1-20261125T143335.jsonl",
        &[
            "modules.cloudHub.authorization.enable=false",
            "modules.deviceController.apiVersion=devices.kubeedge.io/v1alpha2",
        ],
    )
    .await
}
