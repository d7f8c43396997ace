//! The embedded cluster: kubeedge-apiserver on SQLite served over HTTPS, and the
//! kubeedge-controlplane controllers over it (feature `embedded`, on by default).

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use std::collections::BTreeMap;

use kubeedge_apiserver::{NodeProxyError, UpgradeKind, UpgradeResponse};
use kubeedge_cloud::config::CloudCoreFile;
use kubeedge_cloud::stream::{CloudStream, StreamError};
use kubeedge_controlplane::KubernetesService;
use kubeedge_proto::TunnelMessageType;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::{host_ip, Args};

/// What the embedded API started with: the `default/kubernetes` Service to keep, and on etcd
/// the way to the other replicas' stream servers.
#[derive(Clone)]
pub(crate) struct Embedded {
    kubernetes: KubernetesService,
    #[cfg(feature = "etcd")]
    pub(crate) peers: Option<crate::peers::Peers>,
}

/// TLS to etcd from `--etcd-cafile`, `--etcd-certfile` and `--etcd-keyfile`.
#[cfg(feature = "etcd")]
fn etcd_tls(args: &Args) -> anyhow::Result<Option<kubeedge_apiserver::EtcdTls>> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let Some(ca) = &args.etcd_cafile else {
        anyhow::ensure!(
            args.etcd_certfile.is_none(),
            "--etcd-certfile needs --etcd-cafile"
        );
        return Ok(None);
    };
    let mut tls = kubeedge_apiserver::EtcdTls::new(read(ca)?);
    if let (Some(cert), Some(key)) = (&args.etcd_certfile, &args.etcd_keyfile) {
        tls = tls.with_client(read(cert)?, read(key)?);
    }
    Ok(Some(tls))
}

/// The API's store: etcd with `--etcd-servers`, else SQLite under `--data-dir`.
async fn open_store(args: &Args) -> anyhow::Result<kubeedge_apiserver::AnyStore> {
    if args.etcd_servers.is_empty() {
        let path = args.data_dir.join("state.db");
        return Ok(kubeedge_apiserver::SqliteStore::open(path)?.into());
    }
    #[cfg(feature = "etcd")]
    {
        let mut config = kubeedge_apiserver::EtcdConfig::new(args.etcd_servers.clone());
        config.prefix = args.etcd_prefix.clone();
        config.tls = etcd_tls(args)?;
        let store = kubeedge_apiserver::EtcdStore::connect(config)
            .await
            .with_context(|| format!("cannot reach etcd at {}", args.etcd_servers.join(",")))?;
        info!(servers = %args.etcd_servers.join(","), prefix = %args.etcd_prefix, "API objects in etcd");
        Ok(store.into())
    }
    #[cfg(not(feature = "etcd"))]
    anyhow::bail!("--etcd-servers needs cloudcore built with the etcd feature")
}

/// Start the embedded API server; a client for the controllers (in process).
pub(crate) async fn start(
    args: &Args,
    file: &CloudCoreFile,
    stream: &CloudStream,
    registry: &mut prometheus_client::registry::Registry,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<(kube::Client, Embedded)> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let store = open_store(args).await?;
    let mut api_config = kubeedge_apiserver::ApiConfig::default();
    // ServiceAccount tokens stay valid across restarts.
    let pki_dir = args.data_dir.join("pki");
    std::fs::create_dir_all(&pki_dir)
        .with_context(|| format!("cannot create {}", pki_dir.display()))?;
    // Replicas on one etcd serve with one CA and one ServiceAccount key.
    #[cfg(feature = "etcd")]
    if !args.etcd_servers.is_empty() {
        crate::shared_pki::share(&store, &pki_dir)
            .await
            .context("sharing the API's CA through etcd")?;
    }
    api_config.service_account_key = Some(
        kubeedge_apiserver::authz::token::SigningKey::load_or_generate(&pki_dir.join("sa.key"))?,
    );
    let mut hosts: Vec<String> = file.modules.cloud_hub.advertise_address.clone();
    hosts.push(host_ip().to_string());
    let pki = kubeedge_apiserver::Pki::load_or_generate(&args.data_dir.join("pki"), &hosts)?;
    #[cfg(feature = "etcd")]
    let peers = if args.etcd_servers.is_empty() {
        None
    } else {
        Some(crate::peers::Peers::new(store.clone(), &pki)?)
    };
    // pods/log goes to the pod's node through the CloudStream tunnel, in process (or through
    // the replica that holds the node).
    api_config.node_proxy = Some(kubeedge_apiserver::NodeProxyHandle(std::sync::Arc::new(
        TunnelProxy {
            stream: stream.clone(),
            #[cfg(feature = "etcd")]
            peers: peers.clone(),
        },
    )));
    let cluster_ip = first_ip(&api_config.service_cidr)
        .with_context(|| format!("bad service range {}", api_config.service_cidr))?;
    let service = kubeedge_apiserver::ApiService::new(store, api_config)
        .await?
        .with_metrics(registry);
    let listener = TcpListener::bind(args.apiserver_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.apiserver_listen))?;
    let addr = listener.local_addr()?;
    let server_host = if addr.ip().is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    let admin = pki.issue_client_cert("admin", Some("system:masters"))?;
    let kubeconfig = args
        .kubeconfig_out
        .clone()
        .unwrap_or_else(|| args.data_dir.join("admin.kubeconfig"));
    kubeedge_apiserver::write_kubeconfig(
        &kubeconfig,
        &format!("https://{}", SocketAddr::new(server_host, addr.port())),
        &pki.ca_pem(),
        Some(&admin),
        None,
    )?;
    let tls = pki.server_tls()?;
    let svc = service.clone();
    tracker.spawn(async move {
        let r = kubeedge_apiserver::serve(
            listener,
            svc,
            tls,
            Default::default(),
            cancel.cancelled_owned(),
        )
        .await;
        if let Err(e) = r {
            error!(error = %e, "embedded api server failed");
        }
    });
    info!(
        api = %addr,
        kubeconfig = %kubeconfig.display(),
        "embedded Kubernetes API running; use: kubectl --kubeconfig {}",
        kubeconfig.display()
    );
    // The address pods reach the API at, as kube-apiserver advertises it: the host's when
    // listening on every address.
    let advertised = if addr.ip().is_unspecified() {
        host_ip()
    } else {
        addr.ip()
    };
    Ok((
        kube::Client::new(service, "default"),
        Embedded {
            kubernetes: KubernetesService::new(
                cluster_ip,
                SocketAddr::new(advertised, addr.port()),
            ),
            #[cfg(feature = "etcd")]
            peers,
        },
    ))
}

/// The API server's kubelet connection over the CloudStream tunnel.
struct TunnelProxy {
    stream: CloudStream,
    #[cfg(feature = "etcd")]
    peers: Option<crate::peers::Peers>,
}

impl TunnelProxy {
    /// The replica that holds `node`, when its tunnel is not here.
    #[cfg(feature = "etcd")]
    async fn elsewhere(
        stream: &CloudStream,
        peers: Option<&crate::peers::Peers>,
        node: &str,
    ) -> Option<(kubeedge_cloud::stream::Forwarder, SocketAddr)> {
        if stream.is_connected(node) {
            return None;
        }
        peers?.holder_of(node).await
    }
}

impl kubeedge_apiserver::NodeProxy for TunnelProxy {
    fn get_stream(
        &self,
        node: &str,
        path_and_query: &str,
    ) -> BoxFuture<'static, Result<BoxStream<'static, Bytes>, NodeProxyError>> {
        let (stream, node, path) = (
            self.stream.clone(),
            node.to_owned(),
            path_and_query.to_owned(),
        );
        #[cfg(feature = "etcd")]
        let peers = self.peers.clone();
        Box::pin(async move {
            #[cfg(feature = "etcd")]
            if let Some((f, addr)) = Self::elsewhere(&stream, peers.as_ref(), &node).await {
                return f.get(addr, &node, &path).await.map_err(proxy_error);
            }
            if path.starts_with("/stats/") || path.starts_with("/metrics/") {
                stream.metrics(&node, &path).await.map_err(proxy_error)
            } else {
                stream.logs(&node, &path).await.map_err(proxy_error)
            }
        })
    }

    fn upgrade(
        &self,
        node: &str,
        kind: UpgradeKind,
        method: &str,
        path_and_query: &str,
        headers: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<UpgradeResponse, NodeProxyError>> {
        let stream = self.stream.clone();
        #[cfg(feature = "etcd")]
        let peers = self.peers.clone();
        #[cfg(feature = "etcd")]
        let raw_headers = headers.clone();
        let (node, method, path) = (
            node.to_owned(),
            method.to_owned(),
            path_and_query.to_owned(),
        );
        // Upstream has no port-forward frame; its edge dials whatever URL an exec connect
        // names, so port-forward travels as one.
        let kind = match kind {
            UpgradeKind::Attach => TunnelMessageType::AttachConnect,
            _ => TunnelMessageType::ExecConnect,
        };
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in headers {
            map.entry(go_canonical(&k)).or_default().push(v);
        }
        Box::pin(async move {
            #[cfg(feature = "etcd")]
            if let Some((f, addr)) = Self::elsewhere(&stream, peers.as_ref(), &node).await {
                let up = f
                    .upgrade(addr, &method, &path, &raw_headers)
                    .await
                    .map_err(proxy_error)?;
                return Ok(UpgradeResponse {
                    status: up.status,
                    headers: up.headers,
                    io: Box::new(up.io),
                });
            }
            let up = stream
                .upgrade(&node, kind, &method, &path, map)
                .await
                .map_err(proxy_error)?;
            Ok(UpgradeResponse {
                status: up.status,
                headers: up.headers,
                io: Box::new(up.io),
            })
        })
    }
}

fn proxy_error(e: StreamError) -> NodeProxyError {
    NodeProxyError {
        code: match &e {
            StreamError::Refused { code, .. } => *code,
            _ => 500,
        },
        message: e.to_string(),
    }
}

/// Go's `http.CanonicalHeaderKey` (`sec-websocket-key` -> `Sec-Websocket-Key`), as upstream's
/// edge expects the connect's header map.
fn go_canonical(k: &str) -> String {
    k.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map_or(String::new(), |f| {
                f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The first address of a service range (`10.96.0.0/12` -> `10.96.0.1`), the ClusterIP of
/// the `kubernetes` Service.
fn first_ip(cidr: &str) -> Option<IpAddr> {
    let net: std::net::Ipv4Addr = cidr.split('/').next()?.parse().ok()?;
    Some(IpAddr::V4(std::net::Ipv4Addr::from(
        u32::from(net).checked_add(1)?,
    )))
}

/// The embedded control plane: scheduler, workload, endpoints, namespace, garbage-collection
/// and node-lifecycle controllers over the embedded API.
pub(crate) fn start_control_plane(
    client: kube::Client,
    embedded: &Embedded,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) {
    let kubernetes = embedded.kubernetes.clone();
    tracker.spawn(async move {
        let mut config = kubeedge_controlplane::ControlPlaneConfig::default();
        config.kubernetes_service = Some(kubernetes);
        if let Err(e) = kubeedge_controlplane::run(client, config, cancel).await {
            error!(error = %e, "embedded control plane failed");
        }
    });
    info!("embedded control plane running");
}
