//! EdgeMesh across nodes with real pods: a keadm-made cloudcore and edgecore (processes; the
//! edge's pods on Docker; EdgeMesh inside edgecore with its tunnel on) and a cloud node (a
//! network namespace joined to the host by a veth) running the standalone `edgemesh-agent`
//! binary, which reads the real API server through a kubeconfig and serves as the relay.
//!
//! A pod on the edge reaches a Service whose endpoint is on the cloud node (a plain process
//! there, as a hostNetwork pod), and the cloud node reaches the edge pod's Service by its
//! cluster IP: both through the tunnel, both still with cloudcore killed. Needs root, `nft`,
//! `ip` and Docker.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use kubeedge_bench::cluster::{container_log, last_count, remove_host_mesh, wait_for, Cluster};

const LIMIT: Duration = Duration::from_secs(90);
const HOST_IP: &str = "10.88.0.1";
const CLOUD_IP: &str = "10.88.0.2";
const CLOUD_NODE: &str = "cloud-node";

/// The edge's pods: `web` (httpd on 80) behind Service `web`, and a client that asks `web`
/// and `cloud-web` by name once a second, printing `web N` / `cloud N` for each answer.
fn workloads(node: &str) -> String {
    let image = kubeedge_bench::BUSYBOX_IMAGE;
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: default, labels: {{app: web}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {image}
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-edge > /www/index.html && exec httpd -f -p 80 -h /www"]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 8080, targetPort: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: cloud-web, namespace: default}}
spec:
  ports: [{{name: http, port: 8080, targetPort: 8081}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: cloud-web, namespace: default}}
subsets:
- addresses: [{{ip: {CLOUD_IP}, nodeName: {CLOUD_NODE}}}]
  ports: [{{name: http, port: 8081}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: {image}
    command: ["sh", "-c", "get() {{ printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 $1 8080 | grep -q $2; }}; i=0; while true; do i=$((i+1)); get web.default.svc.cluster.local hello-from-edge && echo web $i; get cloud-web hello-from-cloud && echo cloud $i; sleep 1; done"]
"#
    )
}

fn sh(args: &[&str]) -> Result<()> {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .with_context(|| args.join(" "))?;
    ensure!(st.success(), "{} failed", args.join(" "));
    Ok(())
}

/// The cloud node: its namespace, the agent, its workload, and the API forwarder.
struct CloudNode {
    ns: String,
    children: Vec<Child>,
    log: std::path::PathBuf,
    _forwarder: tokio::runtime::Runtime,
}

impl Drop for CloudNode {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.ns])
            .status();
    }
}

impl CloudNode {
    /// Answers `GET /` at `to` from inside the cloud node (busybox nc).
    fn get(&self, to: SocketAddr) -> Result<String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "busybox", "nc", "-w", "2"])
            .args([to.ip().to_string(), to.port().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let out = child.wait_with_output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn agent_log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let nft = Command::new("ip")
            .args(["netns", "exec", &self.ns, "nft", "list", "ruleset"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        format!(
            "{}\nits nftables: {nft}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }
}

/// A forwarder on the host's veth address to the API server on loopback (the cloud node
/// reaches the host there, not at 127.0.0.1); its port.
fn forward_api(rt: &tokio::runtime::Runtime, api: SocketAddr) -> Result<u16> {
    let listener = rt.block_on(tokio::net::TcpListener::bind((HOST_IP, 0)))?;
    let port = listener.local_addr()?.port();
    rt.spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(api).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    Ok(port)
}

fn start_cloud_node(cluster: &Cluster, psk: &std::path::Path) -> Result<CloudNode> {
    let id = std::process::id();
    let ns = format!("kem-e2e-{id}");
    let host = format!("ke{}", id % 100_000);
    sh(&["ip", "netns", "add", &ns])?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut node = CloudNode {
        ns: ns.clone(),
        children: Vec::new(),
        log: cluster.root().join("edgemesh-agent.log"),
        _forwarder: rt,
    };
    let inside = |args: &[&str]| {
        let mut all = vec!["ip", "netns", "exec", ns.as_str()];
        all.extend_from_slice(args);
        sh(&all)
    };
    sh(&[
        "ip", "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns,
    ])?;
    sh(&["ip", "addr", "add", &format!("{HOST_IP}/24"), "dev", &host])?;
    sh(&["ip", "link", "set", &host, "up"])?;
    inside(&[
        "ip",
        "addr",
        "add",
        &format!("{CLOUD_IP}/24"),
        "dev",
        "eth0",
    ])?;
    inside(&["ip", "link", "set", "eth0", "up"])?;
    inside(&["ip", "link", "set", "lo", "up"])?;
    // As any node has: a cluster IP routes somewhere before the mesh's NAT takes it.
    inside(&["ip", "route", "add", "default", "via", HOST_IP])?;

    // The agent's kubeconfig: the admin one, at the forwarder, verified as 127.0.0.1.
    let api = cluster.api_addr();
    let port = forward_api(&node._forwarder, api)?;
    let mut kc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&cluster.kubeconfig)?)?;
    for c in kc["clusters"].as_sequence_mut().context("clusters")? {
        c["cluster"]["server"] = format!("https://{HOST_IP}:{port}").into();
        c["cluster"]["tls-server-name"] = "127.0.0.1".into();
    }
    let kubeconfig = cluster.root().join("cloud-node.kubeconfig");
    std::fs::write(&kubeconfig, serde_yaml::to_string(&kc)?)?;
    let config = cluster.root().join("cloud-node-edgemesh.yaml");
    std::fs::write(
        &config,
        format!(
            "kubeAPIConfig:\n  kubeConfig: {}\nmodules:\n  edgeProxy:\n    enable: true\n  edgeTunnel:\n    enable: true\n    relayNodes:\n    - nodeName: {CLOUD_NODE}\n      advertiseAddress: [{CLOUD_IP}]\n    psk:\n      enable: true\n      path: {}\n",
            kubeconfig.display(),
            psk.display()
        ),
    )?;
    let log = std::fs::File::create(&node.log)?;
    let agent = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(cluster.bin("edgemesh-agent"))
        .arg("--config-file")
        .arg(&config)
        .args(["--node-name", CLOUD_NODE])
        .env("RUST_LOG", "info,kubeedge_mesh=debug")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("edgemesh-agent (build the workspace first)")?;
    node.children.push(agent);
    let www = cluster.root().join("cloud-www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), "hello-from-cloud\n")?;
    let httpd = Command::new("ip")
        .args(["netns", "exec", &ns, "busybox", "httpd", "-f", "-p"])
        .arg(format!("{CLOUD_IP}:8081"))
        .arg("-h")
        .arg(&www)
        .spawn()?;
    node.children.push(httpd);
    Ok(node)
}

#[test]
fn pods_and_a_cloud_node_reach_each_others_services_through_the_tunnel_also_offline() -> Result<()>
{
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(kubeedge_bench::ensure_busybox_image())?;
    remove_host_mesh();
    let node = "mesh-nodes-edge";
    let mut cluster = Cluster::init()?;
    let psk = cluster.root().join("edgemesh-psk");
    std::fs::write(&psk, "a shared secret for the test\n")?;
    let cloud = start_cloud_node(&cluster, &psk)?;

    // The edge's mesh: the proxy, the tunnel (a free port; the cloud node is its relay).
    let edge_config = cluster.root().join("edge-edgemesh.yaml");
    std::fs::write(
        &edge_config,
        format!(
            "modules:\n  edgeProxy:\n    enable: true\n  edgeTunnel:\n    enable: true\n    listenPort: 0\n    relayNodes:\n    - nodeName: {CLOUD_NODE}\n      advertiseAddress: [/ip4/{CLOUD_IP}/tcp/20006]\n    psk:\n      enable: true\n      path: {}\n",
            psk.display()
        ),
    )?;
    cluster
        .join_sets
        .push("modules.edgeMesh.enable=true".into());
    cluster.join_sets.push(format!(
        "modules.edgeMesh.configFile={}",
        edge_config.display()
    ));
    let ws = cluster.ws;
    let out = cluster.join(node, ws)?;
    ensure!(out.contains("[5/5]"), "keadm join: {out}");
    wait_for("node Ready", LIMIT, || cluster.node_ready(node))
        .with_context(|| cluster.logs_tail(30))?;
    cluster.apply(&workloads(node))?;
    let diag = |cluster: &Cluster, cloud: &CloudNode| {
        format!(
            "{}\nagent: {}\npods: {}\nclient: {}",
            cluster.logs_tail(40),
            cloud.agent_log(),
            cluster
                .kubectl(&["get", "pods,svc,endpoints", "-o", "wide"])
                .unwrap_or_default(),
            container_log(node, "client").unwrap_or_default()
        )
    };
    // Edge pod -> the cloud node's endpoint, through the tunnel.
    wait_for("the edge pod reaching cloud-web", LIMIT, || {
        let log = container_log(node, "client")?;
        Ok(last_count(&log, "web") > 0 && last_count(&log, "cloud") > 0)
    })
    .with_context(|| diag(&cluster, &cloud))?;
    // The cloud node -> the edge pod, by the Service's cluster IP, through the tunnel.
    let ip = cluster.kubectl(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"])?;
    let web: SocketAddr = format!("{}:8080", ip.trim()).parse()?;
    wait_for("the cloud node reaching web", LIMIT, || {
        Ok(cloud.get(web)?.contains("hello-from-edge"))
    })
    .with_context(|| diag(&cluster, &cloud))?;

    // Both ways with cloudcore gone.
    cluster.kill9("cloudcore")?;
    let before = last_count(&container_log(node, "client")?, "cloud");
    wait_for(
        "the edge pod reaching cloud-web with cloudcore down",
        LIMIT,
        || Ok(last_count(&container_log(node, "client")?, "cloud") >= before + 3),
    )
    .with_context(|| diag(&cluster, &cloud))?;
    ensure!(
        cloud.get(web)?.contains("hello-from-edge"),
        "the cloud node lost the edge pod: {}",
        cloud.agent_log()
    );
    drop(cluster);
    drop(cloud);
    remove_host_mesh();
    Ok(())
}
