//! The edgecore binary with edged on the real Docker engine, against a test cloud: the node
//! registers with the edge labels and our version, its status and lease are renewed, and a
//! pushed pod's status comes back over the podpatch path as Running and Ready.

use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Result};
use kubeedge_bench::{
    ensure_busybox_image, remove_node_containers, wait_until, TestCloud, BUSYBOX_IMAGE,
};
use kubeedge_cloud::hub::{HubConfig, Upstream};
use kubeedge_proto::{Content, Message, Route};
use serde_json::{json, Value};

struct Edgecore(Child, String);

impl Drop for Edgecore {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        remove_node_containers(&self.1);
    }
}

/// (operation, resource, content as JSON, whether the content was a JSON string).
type Seen = (String, String, Value, bool);

fn content(u: &Upstream) -> Value {
    if u.msg.content.is_string() {
        serde_json::from_slice(&u.msg.content.bytes()).unwrap_or_default()
    } else {
        u.msg.content.decode().unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edgecore_registers_the_node_and_reports_pod_status() -> Result<()> {
    ensure_busybox_image().await?;
    let mut cloud = TestCloud::start(HubConfig::default()).await?;
    let node = format!("edged-e2e-{:08x}", std::process::id());
    let (config, _db) = cloud.edge_config_for(
        &node,
        "    nodeIP: 127.0.0.1\n    nodeStatusUpdateFrequency: 1\n    nodeLeaseDurationSeconds: 4\n    podSyncFrequencyMs: 200\n",
    )?;
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let s2 = seen.clone();
    cloud.answer_edged(move |u| {
        let mut s = s2.lock().unwrap();
        s.push((
            u.msg.route.operation_str().to_owned(),
            u.msg.route.resource.clone(),
            content(u),
            u.msg.content.is_string(),
        ));
    });
    let child = Command::new(env!("CARGO_BIN_EXE_edgecore"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let _guard = Edgecore(child, node.clone());
    let limit = Duration::from_secs(30);
    let has = |op: &str, res: &str| {
        let s = seen.lock().unwrap();
        s.iter()
            .find(|(o, r, _, _)| o == op && r == res)
            .map(|(_, _, v, string)| (v.clone(), *string))
    };
    let node_res = format!("default/node/{node}");
    wait_until("node registered", limit, || {
        has("insert", &node_res).is_some()
    })
    .await?;
    let (n, _) = has("insert", &node_res).unwrap_or_default();
    assert_eq!(n["metadata"]["labels"]["node-role.kubernetes.io/edge"], "");
    assert_eq!(n["metadata"]["labels"]["node-role.kubernetes.io/agent"], "");
    let version = n["status"]["nodeInfo"]["kubeletVersion"]
        .as_str()
        .unwrap_or("");
    assert!(version.contains("kubeedge-rs"), "{version}");
    for k in ["cpu", "memory", "pods"] {
        assert!(n["status"]["capacity"][k].is_string(), "capacity {k}");
        assert!(n["status"]["allocatable"][k].is_string(), "allocatable {k}");
    }
    let patch_res = format!("default/nodepatch/{node}");
    wait_until("node status patched", limit, || {
        has("patch", &patch_res).is_some()
    })
    .await?;
    let (p, string) = has("patch", &patch_res).unwrap_or_default();
    assert!(string, "nodepatch content is a JSON string");
    assert_eq!(p["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(p["status"]["conditions"][0]["status"], "True");
    let lease_res = format!("kube-node-lease/lease/{node}");
    // As the kubelet: read, created when missing (the test cloud has none), then renewed.
    wait_until("lease renewed", limit, || {
        has("update", &lease_res).is_some()
    })
    .await?;
    ensure!(
        has("query", &lease_res).is_some(),
        "the lease is read first"
    );
    let (created, _) = has("insert", &lease_res).unwrap_or_default();
    assert_eq!(created["spec"]["leaseDurationSeconds"], 4);
    let (l, _) = has("update", &lease_res).unwrap_or_default();
    assert_eq!(l["spec"]["holderIdentity"], node.as_str());

    // A pod pushed by the cloud runs and its status comes back.
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "e2e", "namespace": "default", "uid": format!("uid-{node}"), "resourceVersion": "5"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": BUSYBOX_IMAGE,
                 "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]},
    });
    let msg = Message::new(
        Route::new("edgecontroller", "resource", "insert", "default/pod/e2e"),
        Content::json(&pod)?,
    )
    .with_resource_version("5");
    cloud.down.send(&node, msg).await?;
    wait_until("pod Running and Ready reported", limit, || {
        let s = seen.lock().unwrap();
        s.iter().any(|(o, r, v, string)| {
            o == "patch"
                && r == "default/podpatch/e2e"
                && *string
                && v["metadata"]["uid"] == pod["metadata"]["uid"]
                && v["status"]["phase"] == "Running"
                && v["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_down_turns_the_node_not_ready() -> Result<()> {
    let mut cloud = TestCloud::start(HubConfig::default()).await?;
    let node = format!("edged-nodocker-{:08x}", std::process::id());
    let (config, _db) = cloud.edge_config_for(
        &node,
        "    nodeIP: 127.0.0.1\n    nodeStatusUpdateFrequency: 1\n    dockerAddress: unix:///nonexistent/docker.sock\n",
    )?;
    let ready: Arc<Mutex<Option<Value>>> = Arc::default();
    let r2 = ready.clone();
    cloud.answer_edged(move |u| {
        if u.msg.route.resource.contains("/node/") || u.msg.route.resource.contains("/nodepatch/") {
            let v = content(u);
            *r2.lock().unwrap() = Some(v["status"]["conditions"][0].clone());
        }
    });
    let child = Command::new(env!("CARGO_BIN_EXE_edgecore"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let mut guard = Edgecore(child, node.clone());
    wait_until("node reported", Duration::from_secs(30), || {
        ready.lock().unwrap().is_some()
    })
    .await?;
    let cond = ready.lock().unwrap().clone().unwrap_or_default();
    assert_eq!(cond["type"], "Ready");
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "ContainerRuntimeDown");
    assert!(guard.0.try_wait()?.is_none(), "edgecore keeps running");
    Ok(())
}
