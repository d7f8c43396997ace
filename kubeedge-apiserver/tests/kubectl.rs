//! Acceptance: the real kubectl binary against the server over HTTPS on 127.0.0.1:0.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context as _};
use common::{wait_for, TestServer};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};

const NGINX: &str = include_str!("manifests/nginx-deploy.yaml");
const CRD: &str = include_str!("manifests/device-crd.yaml");
const CR: &str = include_str!("manifests/device.yaml");
const SYNC_CRD: &str = include_str!("manifests/clusterobjectsync-crd.yaml");

fn manifest(srv: &TestServer, name: &str, text: &str) -> anyhow::Result<String> {
    let p = srv.path(name);
    std::fs::write(&p, text)?;
    Ok(p.display().to_string())
}

async fn create_node(srv: &TestServer, name: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(srv.client().await?);
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": ""}},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "192.0.2.10"}],
            "nodeInfo": {"kubeletVersion": "v1.29.5-kubeedge-v1.18.0", "osImage": "Ubuntu", "kernelVersion": "6.1",
                "containerRuntimeVersion": "docker://24", "architecture": "amd64", "bootID": "", "kubeProxyVersion": "",
                "machineID": "", "operatingSystem": "linux", "systemUUID": ""}
        }
    }))?;
    let created = nodes.create(&PostParams::default(), &node).await?;
    // Status is a subresource: the create ignores nothing for nodes, but write it again through
    // /status the way a kubelet does.
    let mut with_status = created.clone();
    with_status.status = node.status.clone();
    nodes
        .replace_status(name, &PostParams::default(), &with_status)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_nodes_shows_status_roles_version() -> anyhow::Result<()> {
    let srv = TestServer::start().await?;
    create_node(&srv, "edge-1").await?;
    let out = srv.kubectl(&["get", "nodes"]).await?;
    let header: Vec<&str> = out
        .lines()
        .next()
        .context("no header")?
        .split_whitespace()
        .collect();
    ensure!(
        header == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "header {header:?}"
    );
    let row: Vec<&str> = out
        .lines()
        .nth(1)
        .context("no row")?
        .split_whitespace()
        .collect();
    ensure!(
        row[0] == "edge-1" && row[1] == "Ready" && row[2] == "agent,edge",
        "row {row:?}"
    );
    ensure!(row[4] == "v1.29.5-kubeedge-v1.18.0", "row {row:?}");
    let wide = srv.kubectl(&["get", "nodes", "-o", "wide"]).await?;
    ensure!(
        wide.contains("INTERNAL-IP")
            && wide.contains("192.0.2.10")
            && wide.contains("CONTAINER-RUNTIME"),
        "{wide}"
    );
    srv.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_twice_scale_patch_yaml_jsonpath() -> anyhow::Result<()> {
    let srv = TestServer::start().await?;
    let file = manifest(&srv, "nginx.yaml", NGINX)?;
    let out = srv.kubectl(&["apply", "-f", &file]).await?;
    ensure!(
        out.contains("deployment.apps/nginx-deployment created")
            && out.contains("service/nginx-svc created"),
        "{out}"
    );
    let again = srv.kubectl(&["apply", "-f", &file]).await?;
    ensure!(
        again.contains("deployment.apps/nginx-deployment unchanged")
            && again.contains("service/nginx-svc unchanged"),
        "{again}"
    );

    let ip = srv
        .kubectl(&[
            "get",
            "svc",
            "nginx-svc",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .await?;
    ensure!(ip.starts_with("10.9"), "cluster ip {ip}");

    let out = srv
        .kubectl(&["scale", "deployment", "nginx-deployment", "--replicas=5"])
        .await?;
    ensure!(out.contains("scaled"), "{out}");
    let replicas = srv
        .kubectl(&[
            "get",
            "deploy",
            "nginx-deployment",
            "-o",
            "jsonpath={.spec.replicas}",
        ])
        .await?;
    ensure!(replicas == "5", "replicas {replicas}");

    // Strategic merge: the container list merges by name, the port list stays.
    srv.kubectl(&[
        "patch",
        "deployment",
        "nginx-deployment",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.27"}]}}}}"#,
    ])
    .await?;
    let img = srv.kubectl(&["get", "deploy", "nginx-deployment", "-o",
        "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort} {.metadata.generation}"]).await?;
    ensure!(img == "nginx:1.27 80 3", "after patch: {img}");

    srv.kubectl(&[
        "patch",
        "deployment",
        "nginx-deployment",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"tier":"web"}}}"#,
    ])
    .await?;
    srv.kubectl(&[
        "patch",
        "deployment",
        "nginx-deployment",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":2}]"#,
    ])
    .await?;
    let yaml = srv
        .kubectl(&["get", "deploy", "nginx-deployment", "-o", "yaml"])
        .await?;
    let v: serde_json::Value = serde_yaml::from_str(&yaml)?;
    ensure!(
        v["metadata"]["labels"]["tier"] == "web" && v["spec"]["replicas"] == 2,
        "{yaml}"
    );
    ensure!(
        v["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string(),
        "{yaml}"
    );

    // kubectl edit, with a scripted editor: it sends a patch of what changed.
    let mut edit = srv.kubectl_cmd(&["edit", "deployment", "nginx-deployment"]);
    edit.env("KUBE_EDITOR", "sed -i s/nginx:1.27/nginx:1.28/");
    let out = tokio::time::timeout(Duration::from_secs(60), edit.output()).await??;
    ensure!(
        out.status.success(),
        "edit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = srv
        .kubectl(&[
            "get",
            "deploy",
            "nginx-deployment",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .await?;
    ensure!(img == "nginx:1.28", "after edit: {img}");

    // Applying the file again restores what it says (2 replicas, image 1.25).
    let out = srv.kubectl(&["apply", "-f", &file]).await?;
    ensure!(
        out.contains("deployment.apps/nginx-deployment configured"),
        "{out}"
    );
    let img = srv
        .kubectl(&[
            "get",
            "deploy",
            "nginx-deployment",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .await?;
    ensure!(img == "nginx:1.25", "{img}");

    // Strict field validation of built-in types: a typo is refused, or dropped when
    // validation is off.
    let typo = NGINX.replace("replicas: 2", "replicas: 2\n  replica: 2");
    let typo_file = manifest(&srv, "typo.yaml", &typo)?;
    let out = srv.kubectl_raw(&["apply", "-f", &typo_file], None).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && stderr.contains(r#"strict decoding error: unknown field "spec.replica""#),
        "{stderr}"
    );
    srv.kubectl(&["apply", "--validate=false", "-f", &typo_file])
        .await?;
    let spec = srv
        .kubectl(&[
            "get",
            "deploy",
            "nginx-deployment",
            "-o",
            "jsonpath={.spec}",
        ])
        .await?;
    ensure!(!spec.contains("\"replica\""), "{spec}");

    // Server-side apply is accepted too (as a merge of the applied configuration).
    let out = srv
        .kubectl(&["apply", "--server-side", "-f", &file])
        .await?;
    ensure!(out.contains("serverside-applied"), "{out}");
    let all = srv.kubectl(&["get", "all"]).await?;
    ensure!(
        all.contains("service/nginx-svc") && all.contains("deployment.apps/nginx-deployment"),
        "{all}"
    );
    let wide = srv.kubectl(&["get", "deploy", "-o", "wide"]).await?;
    ensure!(
        wide.contains("CONTAINERS") && wide.contains("SELECTOR") && wide.contains("app=nginx"),
        "{wide}"
    );
    srv.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_pod_and_wide_columns() -> anyhow::Result<()> {
    let srv = TestServer::start().await?;
    srv.kubectl_stdin(&["apply", "-f", "-"], r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-1","labels":{"app":"web"}},
        "spec":{"nodeName":"edge-1","containers":[{"name":"nginx","image":"nginx:1.25","ports":[{"containerPort":80}]}]}}"#).await?;
    let pods: Api<Pod> = Api::default_namespaced(srv.client().await?);
    let mut p = pods.get("web-1").await?;
    p.status = Some(serde_json::from_value(
        json!({"phase": "Running", "podIP": "10.244.0.7",
        "containerStatuses": [{"name": "nginx", "ready": true, "restartCount": 2, "image": "nginx:1.25", "imageID": "",
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}),
    )?);
    pods.replace_status("web-1", &PostParams::default(), &p)
        .await?;

    // An event about the pod, found by describe through involvedObject field selectors.
    let uid = p.metadata.uid.clone().context("uid")?;
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::default_namespaced(srv.client().await?);
    events.create(&PostParams::default(), &serde_json::from_value(json!({
        "metadata": {"name": "web-1.scheduled"},
        "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default", "uid": uid},
        "reason": "Scheduled", "message": "Successfully assigned default/web-1 to edge-1", "type": "Normal",
        "source": {"component": "default-scheduler"}, "count": 1,
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z"}))?).await?;
    let out = srv.kubectl(&["describe", "pod", "web-1"]).await?;
    for want in [
        "Scheduled",
        "Successfully assigned default/web-1 to edge-1",
        "Name:",
        "web-1",
        "Node:",
        "edge-1",
        "Status:",
        "Running",
        "IP:",
        "10.244.0.7",
        "nginx:1.25",
        "80/TCP",
    ] {
        ensure!(out.contains(want), "describe lacks {want}:\n{out}");
    }
    let ev = srv.kubectl(&["get", "events"]).await?;
    let header: Vec<&str> = ev
        .lines()
        .next()
        .context("header")?
        .split_whitespace()
        .collect();
    ensure!(
        header == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{ev}"
    );
    ensure!(ev.contains("pod/web-1"), "{ev}");
    let wide = srv.kubectl(&["get", "pods", "-o", "wide"]).await?;
    let header: Vec<&str> = wide
        .lines()
        .next()
        .context("header")?
        .split_whitespace()
        .collect();
    ensure!(
        header[..7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"],
        "{header:?}"
    );
    let row: Vec<&str> = wide
        .lines()
        .nth(1)
        .context("row")?
        .split_whitespace()
        .collect();
    ensure!(
        row[..4] == ["web-1", "1/1", "Running", "2"]
            && row[5] == "10.244.0.7"
            && row[6] == "edge-1",
        "{row:?}"
    );
    srv.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_cascades_through_owner_references() -> anyhow::Result<()> {
    let srv = TestServer::start().await?;
    let file = manifest(&srv, "nginx.yaml", NGINX)?;
    srv.kubectl(&["apply", "-f", &file]).await?;
    let client = srv.client().await?;
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let d = deploys.get("nginx-deployment").await?;
    let owner = |kind: &str, name: &str, uid: &str| json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": true}]);
    let rss: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let rs: ReplicaSet = serde_json::from_value(
        json!({"metadata": {"name": "nginx-rs", "ownerReferences": owner("Deployment", "nginx-deployment", d.metadata.uid.as_deref().unwrap_or_default())},
        "spec": {"selector": {"matchLabels": {"app": "nginx"}}, "template": {"metadata": {"labels": {"app": "nginx"}}, "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}}}),
    )?;
    let rs = rss.create(&PostParams::default(), &rs).await?;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    for i in 0..2 {
        let p: Pod = serde_json::from_value(
            json!({"metadata": {"name": format!("nginx-{i}"), "labels": {"app": "nginx"}, "ownerReferences": owner("ReplicaSet", "nginx-rs", rs.metadata.uid.as_deref().unwrap_or_default())},
            "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}),
        )?;
        pods.create(&PostParams::default(), &p).await?;
    }
    // An unrelated pod survives.
    srv.kubectl(&["run", "other", "--image=busybox"]).await?;
    let out = srv
        .kubectl(&[
            "delete",
            "deployment",
            "nginx-deployment",
            "--cascade=foreground",
        ])
        .await?;
    ensure!(out.contains("deleted"), "{out}");
    let left = srv.kubectl(&["get", "pods,rs", "-o", "name"]).await?;
    ensure!(left.trim() == "pod/other", "left over: {left}");
    let out = srv.kubectl(&["delete", "-f", &file]).await;
    ensure!(
        out.is_err(),
        "deployment already gone, service deleted, kubectl reports the missing one"
    );
    let svc = srv.kubectl(&["get", "svc", "-o", "name"]).await?;
    ensure!(svc.trim().is_empty(), "{svc}");
    srv.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_pods_watch_streams_events() -> anyhow::Result<()> {
    let srv = TestServer::start().await?;
    srv.kubectl(&["run", "first", "--image=busybox"]).await?;
    let mut child = srv
        .kubectl_cmd(&["get", "pods", "-w"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let read = async {
        // The initial list, then the events from the creations below.
        while let Some(line) = lines.next_line().await? {
            seen.push(line.clone());
            if line.starts_with("first") && seen.len() == 2 {
                srv.kubectl(&["run", "second", "--image=busybox"]).await?;
                srv.kubectl(&["label", "pod", "second", "x=y"]).await?;
            }
            if seen.iter().filter(|l| l.starts_with("second")).count() >= 2 {
                return anyhow::Ok(());
            }
        }
        anyhow::bail!("kubectl exited early: {seen:?}")
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .context("watch output deadline")??;
    child.kill().await?;
    ensure!(
        seen[0].starts_with("NAME") && seen[0].contains("STATUS"),
        "{seen:?}"
    );
    srv.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_then_custom_resource() -> anyhow::Result<()> {
    let srv = TestServer::start().await?;
    let crd = manifest(&srv, "crd.yaml", CRD)?;
    let cr = manifest(&srv, "cr.yaml", CR)?;
    srv.kubectl(&["apply", "-f", &crd]).await?;
    srv.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/devices.devices.kubeedge.io",
        "--timeout=10s",
    ])
    .await?;
    let out = srv.kubectl(&["apply", "-f", &cr]).await?;
    ensure!(
        out.contains("device.devices.kubeedge.io/thermo-1 created"),
        "{out}"
    );
    let again = srv.kubectl(&["apply", "-f", &cr]).await?;
    ensure!(again.contains("unchanged"), "{again}");
    let table = srv.kubectl(&["get", "dev"]).await?;
    ensure!(
        table.contains("MODEL") && table.contains("thermo-model"),
        "{table}"
    );
    let model = srv
        .kubectl(&[
            "get",
            "device",
            "thermo-1",
            "-o",
            "jsonpath={.spec.deviceModelRef.name}",
        ])
        .await?;
    ensure!(model == "thermo-model", "{model}");
    // The status subresource: a status patch changes status only.
    srv.kubectl(&["patch", "device", "thermo-1", "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"twins":[{"propertyName":"temp"}]},"spec":{"deviceModelRef":{"name":"ignored"}}}"#]).await?;
    let yaml = srv
        .kubectl(&["get", "device", "thermo-1", "-o", "yaml"])
        .await?;
    let v: serde_json::Value = serde_yaml::from_str(&yaml)?;
    ensure!(
        v["status"]["twins"][0]["propertyName"] == "temp"
            && v["spec"]["deviceModelRef"]["name"] == "thermo-model",
        "{yaml}"
    );
    srv.kubectl(&["delete", "-f", &crd]).await?;
    let gone = srv.kubectl_raw(&["get", "devices"], None).await?;
    ensure!(
        !gone.status.success(),
        "devices still served after the CRD was deleted"
    );
    srv.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_and_newer_kubectl_versions() -> anyhow::Result<()> {
    let dir = std::path::Path::new("/usr/lib/google-cloud-sdk/bin");
    let versions: Vec<_> = ["1.27", "1.30", "1.33"]
        .iter()
        .map(|v| dir.join(format!("kubectl.{v}")))
        .filter(|p| p.is_file())
        .collect();
    if versions.is_empty() {
        eprintln!("no versioned kubectl binaries found; only the default kubectl is exercised");
        return Ok(());
    }
    let srv = TestServer::start().await?;
    let file = manifest(&srv, "nginx.yaml", NGINX)?;
    for bin in versions {
        let out = tokio::process::Command::new(&bin)
            .arg("--kubeconfig")
            .arg(&srv.kubeconfig)
            .arg("--cache-dir")
            .arg(srv.path(&format!(
                "cache-{}",
                bin.display().to_string().replace('/', "_")
            )))
            .args(["apply", "-f", &file])
            .env("HOME", srv.dir.path())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), out).await??;
        ensure!(
            out.status.success(),
            "{}: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            text.contains("nginx-deployment"),
            "{}: {text}",
            bin.display()
        );
    }
    let _ = wait_for(Duration::from_secs(1), || async { Some(()) }).await;
    srv.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_scoped_crd_with_schema_validation() -> anyhow::Result<()> {
    let srv = TestServer::start().await?;
    let crd = manifest(&srv, "sync-crd.yaml", SYNC_CRD)?;
    srv.kubectl(&["apply", "-f", &crd]).await?;
    let good = r#"{"apiVersion":"reliablesyncs.kubeedge.io/v1alpha1","kind":"ClusterObjectSync",
        "metadata":{"name":"edge-1.pod.web"},"spec":{"objectKind":"Pod","objectName":"web"}}"#;
    let out = srv.kubectl_stdin(&["apply", "-f", "-"], good).await?;
    ensure!(
        out.contains("clusterobjectsync.reliablesyncs.kubeedge.io/edge-1.pod.web created"),
        "{out}"
    );
    // kubectl validates strictly by default: an unknown field is refused by the server.
    let unknown = good.replace(r#""objectName":"web""#, r#""objectName":"web","bogus":1"#);
    let out = srv
        .kubectl_raw(&["apply", "-f", "-"], Some(&unknown))
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains(r#"unknown field "spec.bogus""#),
        "{stderr}"
    );
    // ... and pruned when validation is off.
    srv.kubectl_stdin(&["apply", "--validate=false", "-f", "-"], &unknown)
        .await?;
    let spec = srv
        .kubectl(&[
            "get",
            "clusterobjectsync",
            "edge-1.pod.web",
            "-o",
            "jsonpath={.spec}",
        ])
        .await?;
    ensure!(!spec.contains("bogus"), "{spec}");
    // A type error or a missing required field is 422 whatever the validation mode.
    let wrong = good.replace(r#""objectKind":"Pod""#, r#""objectKind":7"#);
    let out = srv
        .kubectl_raw(&["apply", "--validate=false", "-f", "-"], Some(&wrong))
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && stderr.contains("spec.objectKind")
            && stderr.contains("must be of type string"),
        "{stderr}"
    );
    let missing = r#"{"apiVersion":"reliablesyncs.kubeedge.io/v1alpha1","kind":"ClusterObjectSync","metadata":{"name":"x"},"spec":{}}"#;
    let out = srv
        .kubectl_raw(&["create", "-f", "-"], Some(missing))
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("spec.objectName: Required value"),
        "{stderr}"
    );
    // Status subresource of a cluster-scoped custom resource.
    srv.kubectl(&[
        "patch",
        "clusterobjectsync",
        "edge-1.pod.web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"objectResourceVersion":"42"}}"#,
    ])
    .await?;
    let rv = srv
        .kubectl(&[
            "get",
            "clusterobjectsync",
            "edge-1.pod.web",
            "-o",
            "jsonpath={.status.objectResourceVersion}",
        ])
        .await?;
    ensure!(rv == "42", "{rv}");
    srv.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_whoami_shows_the_certificate_and_token_identities() -> anyhow::Result<()> {
    let srv = TestServer::start().await?;
    let out = srv.kubectl(&["auth", "whoami"]).await?;
    ensure!(
        out.contains("admin") && out.contains("system:masters"),
        "client cert CN/O: {out}"
    );
    let node = srv
        .pki
        .issue_client_cert("system:node:edge-1", Some("system:nodes"))?;
    let kc = srv.path("node.kubeconfig");
    kubeedge_apiserver::write_kubeconfig(
        &kc,
        &format!("https://127.0.0.1:{}", srv.addr.port()),
        &srv.pki.ca_pem(),
        Some(&node),
        None,
    )?;
    let kc_s = kc.display().to_string();
    let out = srv
        .kubectl(&["--kubeconfig", &kc_s, "auth", "whoami"])
        .await?;
    ensure!(
        out.contains("system:node:edge-1") && out.contains("system:nodes"),
        "{out}"
    );
    let tok = srv.token_kubeconfig.display().to_string();
    let out = srv
        .kubectl(&["--kubeconfig", &tok, "auth", "whoami"])
        .await?;
    ensure!(
        out.contains("admin") && out.contains("system:masters"),
        "token identity: {out}"
    );
    let can = srv.kubectl(&["auth", "can-i", "create", "pods"]).await?;
    ensure!(can.trim() == "yes", "{can}");
    srv.stop().await;
    Ok(())
}

/// `kubectl create <kind>` and `kubectl expose` use typed clients that send protobuf bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imperative_create_commands_send_protobuf_and_work() -> anyhow::Result<()> {
    let srv = TestServer::start().await?;
    for args in [
        &["create", "namespace", "n1"][..],
        &[
            "create",
            "configmap",
            "c1",
            "--from-literal=a=b",
            "-n",
            "n1",
        ],
        &[
            "create",
            "secret",
            "generic",
            "s1",
            "--from-literal=k=secret-value",
            "-n",
            "n1",
        ],
        &["create", "serviceaccount", "sa1", "-n", "n1"],
        &[
            "create",
            "deployment",
            "d1",
            "--image=nginx",
            "--replicas=0",
            "--port=80",
            "-n",
            "n1",
        ],
        &[
            "expose",
            "deployment",
            "d1",
            "--port=80",
            "--target-port=8080",
            "-n",
            "n1",
        ],
    ] {
        srv.kubectl(args)
            .await
            .with_context(|| format!("kubectl {args:?}"))?;
    }
    for (kind, name, path, want) in [
        ("cm", "c1", "{.data.a}", "b"),
        ("secret", "s1", "{.data.k}", "c2VjcmV0LXZhbHVl"),
        // A pointer field set to zero stays zero (not defaulted to 1).
        ("deploy", "d1", "{.spec.replicas}", "0"),
        (
            "deploy",
            "d1",
            "{.spec.template.spec.containers[0].ports[0].containerPort}",
            "80",
        ),
        ("svc", "d1", "{.spec.ports[0].targetPort}", "8080"),
    ] {
        let jsonpath = format!("jsonpath={path}");
        let got = srv
            .kubectl(&["get", kind, name, "-n", "n1", "-o", &jsonpath])
            .await?;
        ensure!(got.trim() == want, "{kind}/{name} {path}: {got}");
    }
    Ok(())
}
