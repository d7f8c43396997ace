//! End to end, as a user runs it: `keadm init` starts cloudcore (embedded control plane) on
//! free loopback ports, `keadm join` starts edgecore on this host with the real Docker engine,
//! and the stock kubectl drives it. Each test has its own cluster (own KUBEEDGE_ROOT, own node
//! name), so they run side by side; dropping a cluster runs `keadm reset`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use kubeedge_bench::cluster::{app_containers, containers, metric, wait_for, Cluster, LinkProxy};
use kubeedge_bench::BUSYBOX_IMAGE;

/// Generous bound for things that take a few seconds when the machine is quiet.
const LIMIT: Duration = Duration::from_secs(90);

fn image() -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(kubeedge_bench::ensure_busybox_image())
}

/// A Deployment `web` of `replicas` busybox pods pinned to edge nodes, mounting the
/// ConfigMap `web-content` at /etc/web.
fn deployment(replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      nodeSelector:
        node-role.kubernetes.io/edge: ""
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: {BUSYBOX_IMAGE}
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
        volumeMounts:
        - {{name: content, mountPath: /etc/web}}
      volumes:
      - name: content
        configMap: {{name: web-content}}
"#
    )
}

fn configmap(text: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-content\n  namespace: default\ndata:\n  index.html: {text:?}\n"
    )
}

/// init + join (through `ws`, cloudcore's own address when None) + wait Ready; returns the
/// cluster and the time from `keadm join` returning to the node being Ready.
fn joined(node: &str, via: Option<&LinkProxy>) -> Result<(Cluster, Duration)> {
    image()?;
    let mut cluster = Cluster::init()?;
    let ws = via.map(|p| p.addr).unwrap_or(cluster.ws);
    let out = cluster.join(node, ws)?;
    ensure!(out.contains("[5/5]"), "keadm join steps: {out}");
    let joined = Instant::now();
    wait_for(&format!("node {node} Ready"), LIMIT, || {
        cluster.node_ready(node)
    })
    .with_context(|| cluster.logs_tail(30))?;
    Ok((cluster, joined.elapsed()))
}

fn deploy(cluster: &Cluster, replicas: u32) -> Result<()> {
    cluster.apply(&configmap("v1"))?;
    cluster.apply(&deployment(replicas))?;
    Ok(())
}

fn ids(node: &str) -> Result<BTreeSet<String>> {
    Ok(app_containers(node)?.into_iter().map(|c| c.id).collect())
}

fn uids(cluster: &Cluster) -> Result<BTreeSet<String>> {
    Ok(cluster
        .pods("default")?
        .into_iter()
        .map(|p| p.uid)
        .collect())
}

fn file_in(container: &str, path: &str) -> Result<String> {
    let out = std::process::Command::new("docker")
        .args(["exec", container, "cat", path])
        .output()?;
    ensure!(out.status.success(), "docker exec cat {path}: {out:?}");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn join_deploy_scale_configmap_delete_and_reset() -> Result<()> {
    let node = "e2e-life";
    let (cluster, ready_after) = joined(node, None)?;
    ensure!(
        ready_after <= Duration::from_secs(2),
        "join -> Ready took {ready_after:?} (goal: within 2 s)"
    );
    let nodes = cluster.kubectl(&["get", "node", node])?;
    ensure!(nodes.contains("agent,edge"), "ROLES: {nodes}");

    // Joining a joined host says so and changes nothing.
    let again = cluster.rejoin()?;
    ensure!(again.contains("already running"), "second join: {again}");

    deploy(&cluster, 2)?;
    let pods = cluster.wait_running("default", 2, LIMIT)?;
    let wide = cluster.kubectl(&["get", "po", "-o", "wide"])?;
    ensure!(
        pods.iter().all(|p| wide.contains(&p.name)) && wide.contains(node),
        "{wide}"
    );

    // cloudcore's monitor server: ready, and its figures say what just happened.
    ensure!(cluster.monitor_get("/readyz")?.0 == 200);
    let (status, metrics) = cluster.monitor_get("/metrics")?;
    ensure!(status == 200, "{metrics}");
    let sample = |name: &str| metric(&metrics, name);
    ensure!(
        sample("kubeedge_cloudhub_connected_nodes") == Some(1.0),
        "{metrics}"
    );
    ensure!(
        sample("KubeEdge_CloudHub_connected_nodes") == Some(1.0),
        "{metrics}"
    );
    ensure!(
        sample("kubeedge_cloudhub_ack_latency_seconds_count").is_some_and(|n| n >= 2.0),
        "both pods were pushed and acked: {metrics}"
    );
    ensure!(
        sample(r#"kubeedge_apiserver_requests_total{verb="list",group="",resource="pods",subresource="",code="200"}"#)
            .is_some_and(|n| n >= 1.0),
        "kubectl get po is counted: {metrics}"
    );
    ensure!(
        sample("kubeedge_synccontroller_objectsyncs").is_some_and(|n| n >= 2.0),
        "the acked pods are in the ObjectSync ledger: {metrics}"
    );
    ensure!(
        sample("kubeedge_synccontroller_pending_writes").is_some(),
        "{metrics}"
    );
    // edgecore's, at its MetaServer: the link is up and edged runs both pods.
    let metaserver = cluster.metaserver.context("joined")?;
    let (status, edge) = kubeedge_bench::cluster::http_get(metaserver, "/metrics")?;
    ensure!(status == 200, "{edge}");
    ensure!(
        metric(&edge, "kubeedge_edgehub_connected") == Some(1.0),
        "{edge}"
    );
    ensure!(
        metric(&edge, r#"kubeedge_edged_pods{phase="Running"}"#) == Some(2.0),
        "{edge}"
    );

    // The mounted ConfigMap follows an update.
    let first = app_containers(node)?
        .into_iter()
        .next()
        .context("a container")?;
    ensure!(file_in(&first.id, "/etc/web/index.html")? == "v1");
    cluster.apply(&configmap("v2"))?;
    wait_for("configmap v2 in the pod", LIMIT, || {
        Ok(file_in(&first.id, "/etc/web/index.html")? == "v2")
    })
    .with_context(|| cluster.logs_tail(30))?;

    // Scale up and down: exactly one container per pod each time.
    cluster.kubectl(&["scale", "deployment/web", "--replicas=4"])?;
    let up = cluster.wait_running("default", 4, LIMIT)?;
    cluster.kubectl(&["scale", "deployment/web", "--replicas=1"])?;
    let down = cluster.wait_running("default", 1, LIMIT)?;
    ensure!(
        up.iter().any(|p| p.uid == down[0].uid),
        "scale-down kept one of the pods"
    );

    // Delete: the pods go, and so do their containers (sandboxes too).
    cluster.kubectl(&["delete", "deployment", "web", "--wait=false"])?;
    wait_for("pods and containers gone", LIMIT, || {
        Ok(cluster.pods("default")?.is_empty() && containers(node)?.is_empty())
    })
    .with_context(|| cluster.logs_tail(30))?;

    // reset twice: both succeed, nothing is left.
    let first = cluster.keadm(&["reset"])?;
    ensure!(first.contains("keadm reset: done"), "{first}");
    let second = cluster.keadm(&["reset"])?;
    ensure!(second.contains("keadm reset: done"), "{second}");
    ensure!(cluster.pid("edgecore").is_none() && cluster.pid("cloudcore").is_none());
    for dir in ["etc/kubeedge", "var/lib/kubeedge", "var/lib/edged"] {
        ensure!(!cluster.root().join(dir).exists(), "{dir} left behind");
    }
    Ok(())
}

#[test]
fn cloudcore_restart_and_the_edge_agree() -> Result<()> {
    let node = "e2e-cloud-restart";
    let (mut cluster, _) = joined(node, None)?;
    deploy(&cluster, 2)?;
    cluster.wait_running("default", 2, LIMIT)?;
    let (pods, cs) = (uids(&cluster)?, ids(node)?);

    cluster.kill9("cloudcore")?;
    cluster.start_cloudcore()?;
    // keadm init returns once cloudcore serves: from there, kubectl and the edge agree
    // within 5 s, with the same pods and the same containers.
    cluster.wait_running("default", 2, Duration::from_secs(5))?;
    wait_for("node Ready again", Duration::from_secs(5), || {
        cluster.node_ready(node)
    })?;
    ensure!(uids(&cluster)? == pods, "pods were recreated");
    ensure!(ids(node)? == cs, "containers were recreated");

    // And the restarted cloud still drives the edge.
    cluster.kubectl(&["scale", "deployment/web", "--replicas=3"])?;
    cluster.wait_running("default", 3, LIMIT)?;
    ensure!(ids(node)?.is_superset(&cs), "old containers kept");
    Ok(())
}

#[test]
fn edgecore_kill9_and_restart_duplicates_and_loses_nothing() -> Result<()> {
    let node = "e2e-edge-restart";
    let (cluster, _) = joined(node, None)?;
    deploy(&cluster, 3)?;
    cluster.wait_running("default", 3, LIMIT)?;
    let (pods, cs) = (uids(&cluster)?, ids(node)?);

    cluster.kill9("edgecore")?;
    // The containers outlive edgecore.
    ensure!(
        ids(node)? == cs,
        "containers changed while edgecore was down"
    );
    let out = cluster.rejoin()?;
    ensure!(out.contains("starting it again"), "{out}");
    wait_for("node Ready", LIMIT, || cluster.node_ready(node))?;
    // A pod created after the restart runs: the restarted edged has synced past the old ones.
    cluster.kubectl(&["scale", "deployment/web", "--replicas=4"])?;
    cluster.wait_running("default", 4, LIMIT)?;
    let now = ids(node)?;
    ensure!(
        now.is_superset(&cs),
        "a container was lost: {cs:?} -> {now:?}"
    );
    ensure!(now.len() == 4, "duplicated containers: {now:?}");
    ensure!(uids(&cluster)?.is_superset(&pods), "pods were recreated");
    Ok(())
}

/// How long the link stays cut: past the node lifecycle's grace period, so that the node goes
/// NotReady in the cloud while its pods keep running.
const CUT: Duration = Duration::from_secs(60);

#[test]
fn a_60s_link_cut_keeps_pods_and_catches_up() -> Result<()> {
    let node = "e2e-link-cut";
    image()?;
    let mut cluster = Cluster::init()?;
    let proxy = LinkProxy::start(cluster.ws)?;
    cluster.join(node, proxy.addr)?;
    wait_for("node Ready", LIMIT, || cluster.node_ready(node))
        .with_context(|| cluster.logs_tail(30))?;
    deploy(&cluster, 2)?;
    let before = cluster.wait_running("default", 2, LIMIT)?;
    let cs = app_containers(node)?;

    proxy.set_cut(true);
    let cut_at = Instant::now();
    // While cut: a container dies (edged restarts it; the status waits at the edge), and the
    // cloud scales up (the new pod waits in the cloud).
    let victim = cs[0].clone();
    let status = std::process::Command::new("docker")
        .args(["kill", &victim.id])
        .output()?;
    ensure!(status.status.success(), "docker kill: {status:?}");
    cluster.kubectl(&["scale", "deployment/web", "--replicas=3"])?;
    wait_for("the edge restarts the killed container", LIMIT, || {
        Ok(app_containers(node)?
            .iter()
            .any(|c| c.pod_uid == victim.pod_uid && c.id != victim.id))
    })?;
    // The cloud sees the node go NotReady, and evicts nothing.
    wait_for("node NotReady in the cloud", CUT, || {
        Ok(!cluster.node_ready(node)?)
    })
    .with_context(|| cluster.logs_tail(30))?;
    if let Some(rest) = CUT.checked_sub(cut_at.elapsed()) {
        std::thread::sleep(rest); // the cut's length is the scenario, not a synchronisation
    }
    let during = cluster.pods("default")?;
    for p in &before {
        ensure!(
            during.iter().any(|d| d.uid == p.uid && !d.deleting),
            "pod {} was evicted during the cut",
            p.name
        );
    }
    ensure!(
        app_containers(node)?.len() == 2,
        "the edge kept exactly its two pods running"
    );

    proxy.set_cut(false);
    wait_for("node Ready after the cut", LIMIT, || {
        cluster.node_ready(node)
    })
    .with_context(|| cluster.logs_tail(30))?;
    let after = cluster.wait_running("default", 3, LIMIT)?;
    for p in &before {
        ensure!(
            after.iter().any(|a| a.uid == p.uid),
            "pod {} was recreated",
            p.name
        );
    }
    // The restart made during the cut reached the cloud.
    wait_for("restartCount caught up", LIMIT, || {
        Ok(cluster
            .pods("default")?
            .iter()
            .any(|p| p.uid == victim.pod_uid && p.restarts >= 1))
    })
    .with_context(|| cluster.logs_tail(30))?;
    let survivor = &cs[1];
    ensure!(
        app_containers(node)?.iter().any(|c| c.id == survivor.id),
        "the untouched container was recreated"
    );
    Ok(())
}

/// The test containerd (scripts/test.sh starts it, with the busybox image imported).
const CRI_SOCKET: &str = "/run/kubeedge-rs-containerd/containerd.sock";
/// The busybox (with httpd) imported into that containerd's k8s.io namespace.
const CRI_BUSYBOX_IMAGE: &str = "docker.io/kubeedge-rs-test/busybox:2";

fn have_containerd() -> bool {
    let ok = std::path::Path::new(CRI_SOCKET).exists();
    if !ok {
        eprintln!("skipped: no containerd at {CRI_SOCKET} (scripts/test.sh starts one)");
    }
    ok
}

/// The seed's nginx Deployment and Service (examples/nginx-deploy.yaml) with the image
/// imported into containerd and `host_port` for its hostPort.
fn seed_nginx(host_port: u16) -> Result<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/nginx-deploy.yaml");
    let yaml = std::fs::read_to_string(path).with_context(|| path.to_owned())?;
    ensure!(yaml.contains("image: kubeedge-rs/httpd:local") && yaml.contains("hostPort: 8080"));
    Ok(yaml
        .replace(
            "image: kubeedge-rs/httpd:local",
            &format!("image: {CRI_BUSYBOX_IMAGE}"),
        )
        .replace("hostPort: 8080", &format!("hostPort: {host_port}")))
}

/// `GET /` on `addr`: the response, or an error.
fn http_get(addr: &str) -> Result<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: edge\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// The sandboxes and containers of `node` on the test containerd.
fn cri_containers(node: &str) -> Result<usize> {
    use kubeedge_edge::edged::{runtime::LABEL_NODE, ContainerRuntime, CriRuntime};
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let rt = CriRuntime::new(format!("unix://{CRI_SOCKET}"), "/var/log/pods");
            Ok(rt.list_containers(&[(LABEL_NODE, node)]).await?.len())
        })
}

/// `keadm join` with `flags` naming the test containerd, then the seed's nginx: every pod
/// Running and Ready on containerd (none on Docker), the Service's endpoints, the hostPort
/// answering on the node; `keadm reset` removes the pods from containerd.
fn nginx_on_containerd(node: &str, flags: &[String]) -> Result<()> {
    let mut cluster = Cluster::init()?;
    cluster.join_flags = flags.to_vec();
    let out = cluster.join(node, cluster.ws)?;
    ensure!(out.contains("[5/5]"), "keadm join steps: {out}");
    ensure!(
        out.contains(&format!(
            "CRI runtime at unix://{CRI_SOCKET} answers: containerd"
        )),
        "{out}"
    );
    let config = std::fs::read_to_string(cluster.root().join("etc/kubeedge/config/edgecore.yaml"))?;
    ensure!(
        config.contains(&format!("containerRuntimeEndpoint: unix://{CRI_SOCKET}"))
            && config.contains("cgroupDriver: cgroupfs"),
        "{config}"
    );
    wait_for(&format!("node {node} Ready"), LIMIT, || {
        cluster.node_ready(node)
    })
    .with_context(|| cluster.logs_tail(30))?;

    let host_port = kubeedge_bench::free_port()?;
    cluster.apply(&seed_nginx(host_port)?)?;
    wait_for("every nginx pod Running and Ready", LIMIT, || {
        let pods = cluster.pods("default")?;
        Ok(!pods.is_empty()
            && pods
                .iter()
                .all(|p| p.phase == "Running" && p.ready && p.node == node))
    })
    .with_context(|| cluster.logs_tail(30))?;
    ensure!(containers(node)?.is_empty(), "pods ran on Docker");
    ensure!(
        cri_containers(node)? >= 2,
        "no sandbox and container on containerd"
    );
    let pod_ip = cluster.kubectl(&[
        "get",
        "po",
        "-l",
        "app=nginx",
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ])?;
    ensure!(!pod_ip.trim().is_empty(), "no pod IP");
    wait_for("nginx-svc endpoints name the pod", LIMIT, || {
        let eps = cluster.kubectl(&[
            "get",
            "endpoints",
            "nginx-svc",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ])?;
        Ok(eps.split_whitespace().any(|ip| ip == pod_ip.trim()))
    })?;
    let node_ip = cluster.kubectl(&[
        "get",
        "node",
        node,
        "-o",
        "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
    ])?;
    let addr = format!("{}:{host_port}", node_ip.trim());
    wait_for(&format!("hostPort answers on {addr}"), LIMIT, || {
        Ok(http_get(&addr).is_ok_and(|r| r.contains("hello from kubeedge-rs")))
    })
    .with_context(|| cluster.logs_tail(30))?;

    let reset = cluster.keadm(&["reset"])?;
    ensure!(reset.contains("keadm reset: done"), "{reset}");
    ensure!(
        cri_containers(node)? == 0,
        "reset left pods on containerd: {reset}"
    );
    Ok(())
}

#[test]
fn join_with_remote_runtime_endpoint_runs_the_seed_nginx_on_containerd() -> Result<()> {
    if !have_containerd() {
        return Ok(());
    }
    nginx_on_containerd(
        "e2e-cri",
        &[format!("--remote-runtime-endpoint=unix://{CRI_SOCKET}")],
    )
}

#[test]
fn join_with_v112_runtimetype_remote_runs_the_seed_nginx_on_containerd() -> Result<()> {
    if !have_containerd() {
        return Ok(());
    }
    nginx_on_containerd(
        "e2e-cri-v112",
        &[
            "--runtimetype=remote".to_owned(),
            format!("--remote-runtime-endpoint=unix://{CRI_SOCKET}"),
        ],
    )
}

/// Every file under `root`, for "nothing was written".
fn files_under(root: &std::path::Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            out.insert(p.display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok(out)
}

#[test]
fn join_with_a_wrong_endpoint_fails_in_one_line_and_writes_nothing() -> Result<()> {
    let cluster = Cluster::init()?;
    let token = cluster.token()?;
    // A socket that does not exist, and one that answers but is not a CRI server (Docker's).
    for endpoint in [
        "unix:///run/kubeedge-rs-no-such/containerd.sock",
        "unix:///var/run/docker.sock",
    ] {
        let before = files_under(cluster.root())?;
        let out = cluster.keadm_output(&[
            "join",
            &format!("--cloudcore-ipport={}", cluster.ws),
            &format!("--certport={}", cluster.https_port),
            "--edgenode-name=e2e-wrong-endpoint",
            &format!("--token={token}"),
            &format!("--remote-runtime-endpoint={endpoint}"),
        ])?;
        ensure!(!out.status.success(), "join succeeded with {endpoint}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        ensure!(
            lines.len() == 1 && lines[0].starts_with("error: ") && lines[0].contains(endpoint),
            "not a one-line error naming {endpoint}: {stderr:?}"
        );
        ensure!(
            files_under(cluster.root())? == before,
            "join with {endpoint} wrote files"
        );
        ensure!(cluster.pid("edgecore").is_none(), "edgecore started");
    }
    Ok(())
}
