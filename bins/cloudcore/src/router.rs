//! The Router (`modules.router`): REST calls to edge apps by Rule, served over TLS with
//! cloudcore's certificate, each call authorized by the API for the caller's client
//! certificate or token (or, with `insecure: true`, plain HTTP to anyone, as upstream).

use std::sync::Arc;

use anyhow::Context as _;
use kubeedge_cloud::certs::Pki;
use kubeedge_cloud::hub::{CloudHub, Downstream};
use kubeedge_cloud::router::{
    Router, RouterAuth, RouterConfig, RouterPeers, RouterSettings, RouterTls,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Starts the Router's listener; the Router is returned for the controllers (it takes the
/// edges' answers).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start(
    settings: &RouterSettings,
    api: kube::Config,
    client: &kube::Client,
    (hub, down): (&CloudHub, &Downstream),
    pki: &Arc<Pki>,
    (ip, identity): (std::net::IpAddr, &str),
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<(Router, String)> {
    let mut config = RouterConfig::default();
    config.rest_timeout = settings.rest_timeout;
    let tls = if settings.insecure {
        warn!("modules.router.insecure: the router serves plain HTTP to anyone, as upstream");
        None
    } else {
        // Callers' client certificates: those of the API's CA (kube-apiserver's client CA in
        // a kubeadm cluster, and the embedded API's).
        let client_cas = api.root_cert.clone().unwrap_or_default();
        config.auth = RouterAuth::Token(Box::new(api));
        Some(RouterTls::new(pki, &client_cas).context("router tls")?)
    };
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {} (router)", settings.listen))?;
    // Calls for a node another replica holds go to that replica's Router.
    let own = std::net::SocketAddr::new(ip, listener.local_addr()?.port()).to_string();
    let peer_pki = tls.is_some().then_some(pki.as_ref());
    config.peers = Some(RouterPeers::new(peer_pki, own.clone(), identity).context("router peers")?);
    let router = Router::new(client.clone(), hub.clone(), down.clone(), config);
    info!(addr = %listener.local_addr()?, tls = tls.is_some(), "router listening");
    tracker.spawn(router.clone().run_subscriptions(cancel.clone()));
    tracker.spawn(router.clone().serve(listener, tls, cancel));
    Ok((router, own))
}
