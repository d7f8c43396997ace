//! EdgeMesh's catalog on a real edge: keadm-made cloudcore and edgecore (processes), the mesh's
//! watchers pointed at the edge's MetaServer. Their watch registers with the cloud, the cloud's
//! DynamicController pushes the Services and Endpoints to the node, and the cluster DNS answers
//! from them, also after cloudcore is killed (a fresh catalog lists them from the node's store).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use hickory_server::proto::op::{Message, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use kubeedge_bench::cluster::{container_log, last_count, remove_host_mesh, wait_for, Cluster};
use kubeedge_mesh::catalog::{feed, Catalog, FilterMode};
use kubeedge_mesh::dns::ClusterDns;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(30);

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: nginx-svc, namespace: default}
spec:
  clusterIP: 10.96.0.80
  ports: [{name: http, port: 8080, targetPort: 80}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: nginx-svc, namespace: default}
subsets:
- addresses: [{ip: 10.244.1.5}]
  ports: [{name: http, port: 80}]
"#;

fn metaserver_client(addr: SocketAddr) -> Result<kube::Client> {
    let config = kube::Config::new(format!("http://{addr}").parse()?);
    Ok(kube::Client::try_from(config)?)
}

/// A catalog fed from `addr`, once it holds nginx-svc with `endpoints` endpoints.
async fn catalog_from(
    addr: SocketAddr,
    endpoints: usize,
    cancel: &CancellationToken,
) -> Result<Catalog> {
    let catalog = Catalog::new();
    tokio::spawn(feed::run(
        metaserver_client(addr)?,
        catalog.clone(),
        FilterMode::default(),
        cancel.clone(),
    ));
    until("the Service in the catalog", || {
        let snap = catalog.snapshot();
        snap.service("default", "nginx-svc").is_some()
            && snap.backends("default", "nginx-svc").len() == endpoints
    })
    .await?;
    Ok(catalog)
}

/// Waits (30 s at most) until `ok`.
async fn until(what: &str, ok: impl Fn() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !ok() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn resolve(catalog: Catalog, name: &str) -> Result<(ResponseCode, Vec<IpAddr>)> {
    let cancel = CancellationToken::new();
    let tcp = TcpListener::bind("127.0.0.1:0").await?;
    let addr = tcp.local_addr()?;
    let udp = UdpSocket::bind(addr).await?;
    tokio::spawn(ClusterDns::new(catalog, "cluster.local", vec![])?.serve(
        udp,
        tcp,
        cancel.clone(),
    ));
    let client = UdpSocket::bind("127.0.0.1:0").await?;
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    client.send_to(&q.to_vec()?, addr).await?;
    let mut buf = vec![0u8; 1500];
    let n = tokio::time::timeout(LIMIT, client.recv(&mut buf)).await??;
    cancel.cancel();
    let m = Message::from_vec(&buf[..n])?;
    let ips = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect();
    Ok((m.metadata.response_code, ips))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reach_the_edge_through_its_metaserver_and_stay_offline() -> Result<()> {
    let mut cluster = Cluster::init()?;
    let ws = cluster.ws;
    let out = cluster.join("mesh-edge", ws)?;
    ensure!(out.contains("[5/5]"), "keadm join: {out}");
    wait_for("node Ready", LIMIT, || cluster.node_ready("mesh-edge"))
        .with_context(|| cluster.logs_tail(30))?;
    cluster.apply(WEB)?;
    let metaserver = cluster.metaserver.context("joined")?;

    let cancel = CancellationToken::new();
    let catalog = catalog_from(metaserver, 1, &cancel)
        .await
        .with_context(|| cluster.logs_tail(30))?;
    let (code, ips) = resolve(catalog.clone(), "nginx-svc.default.svc.cluster.local.").await?;
    ensure!(
        code == ResponseCode::NoError && ips == vec![IpAddr::from([10, 96, 0, 80])],
        "{code:?} {ips:?}"
    );

    // Endpoints changed in the cloud: the node's catalog follows.
    cluster.kubectl(&[
        "patch",
        "endpoints",
        "nginx-svc",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/subsets/0/addresses/-","value":{"ip":"10.244.2.6"}}]"#,
    ])?;
    until("two endpoints on the edge", || {
        catalog.snapshot().backends("default", "nginx-svc").len() == 2
    })
    .await?;

    // The cloud is gone: a catalog started now still gets everything from the node's store.
    cluster.kill9("cloudcore")?;
    let offline = catalog_from(metaserver, 2, &cancel).await?;
    let (code, ips) = resolve(offline, "nginx-svc.default.svc.cluster.local.").await?;
    ensure!(code == ResponseCode::NoError && ips == vec![IpAddr::from([10, 96, 0, 80])]);
    cancel.cancel();
    Ok(())
}

/// A web pod and a Service in front of it, and a client pod that fetches the page by the
/// Service's full name and by its short name (through the namespace's search path) once a
/// second, printing `full N` and `short N` for each success (busybox's nc: Debian's static
/// busybox 1.35 `wget -T` crashes).
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
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 80 -h /www"]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 8080, targetPort: 80}}]
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
    command: ["sh", "-c", "get() {{ printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 $1 8080 | grep -q hello-from-web; }}; i=0; while true; do i=$((i+1)); get web.default.svc.cluster.local && echo full $i; get web && echo short $i; sleep 1; done"]
"#
    )
}

/// Real pods on Docker, EdgeMesh inside edgecore (`keadm join --set
/// modules.edgeMesh.enable=true`): the client pod's resolver is the mesh (169.254.96.16, set by
/// keadm join), the Service's name resolves and its cluster IP reaches the web pod through the
/// proxy, and it keeps working with cloudcore killed. Needs root, `nft` and `ip`: it uses the
/// host's network (the pods' bridge is the host's).
#[test]
fn a_pod_reaches_a_service_by_name_through_edgemesh_also_offline() -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(kubeedge_bench::ensure_busybox_image())?;
    remove_host_mesh();
    let node = "mesh-pods";
    let mut cluster = Cluster::init()?;
    cluster
        .join_sets
        .push("modules.edgeMesh.enable=true".into());
    let ws = cluster.ws;
    let out = cluster.join(node, ws)?;
    ensure!(out.contains("[5/5]"), "keadm join: {out}");
    wait_for("node Ready", LIMIT, || cluster.node_ready(node))
        .with_context(|| cluster.logs_tail(30))?;
    cluster.apply(&workloads(node))?;
    let long = Duration::from_secs(90);
    wait_for("the client reaching web by both names", long, || {
        let log = container_log(node, "client")?;
        Ok(last_count(&log, "full") > 0 && last_count(&log, "short") > 0)
    })
    .with_context(|| {
        format!(
            "{}\npods: {}\ncontainers: {:?}\nclient: {}",
            cluster.logs_tail(40),
            cluster
                .kubectl(&["get", "pods,svc,endpoints", "-o", "wide"])
                .unwrap_or_default(),
            kubeedge_bench::cluster::containers(node).unwrap_or_default(),
            container_log(node, "client").unwrap_or_default()
        )
    })?;

    cluster.kill9("cloudcore")?;
    let before = last_count(&container_log(node, "client")?, "full");
    wait_for("the client reaching web with cloudcore down", LIMIT, || {
        Ok(last_count(&container_log(node, "client")?, "full") >= before + 3)
    })
    .with_context(|| cluster.logs_tail(40))?;
    drop(cluster);
    remove_host_mesh();
    Ok(())
}
