//! Streams for nodes held by other replicas (embedded mode on etcd): when a node's tunnel is
//! not here, its record (`kubeedge/node-<node>`, see `kubeedge_cloud::ownership`) names the
//! holder's stream server, and the call goes there as a kube-apiserver's call to the node's
//! kubelet would. Every replica serves its stream server to the others, accepting the client
//! certificates of the shared API CA.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use kubeedge_apiserver::{AnyStore, ClientCert, ObjectKey, Pki, Store};
use kubeedge_cloud::ownership::{record_name, STREAM_SERVER};
use kubeedge_cloud::stream::Forwarder;

/// This replica's way to its peers' stream servers. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Peers {
    store: AnyStore,
    api_ca_pem: String,
    client: Arc<ClientCert>,
    /// Set once the hub's CA is known: the forwarder, and this replica's own stream server.
    armed: Arc<OnceLock<(Forwarder, SocketAddr)>>,
}

impl Peers {
    /// Peers reached with a client certificate of the API's CA.
    pub(crate) fn new(store: AnyStore, api_pki: &Pki) -> anyhow::Result<Self> {
        let client =
            api_pki.issue_client_cert("kube-apiserver-kubelet-client", Some("system:masters"))?;
        Ok(Self {
            store,
            api_ca_pem: api_pki.ca_pem(),
            client: Arc::new(client),
            armed: Arc::new(OnceLock::new()),
        })
    }

    /// The CA whose client certificates this replica's stream server serves.
    pub(crate) fn api_ca_pem(&self) -> &str {
        &self.api_ca_pem
    }

    /// Trusts peers' stream servers signed by the hub's CA; `own` is this replica's.
    pub(crate) fn arm(&self, hub_ca_der: &[u8], own: SocketAddr) -> anyhow::Result<()> {
        let f = Forwarder::from_pem(hub_ca_der, &self.client.cert_pem, &self.client.key_pem)?;
        let _ = self.armed.set((f, own));
        Ok(())
    }

    /// The forwarder and the stream server of the replica that holds `node`, when that is
    /// another replica.
    pub(crate) async fn holder_of(&self, node: &str) -> Option<(Forwarder, SocketAddr)> {
        let (forwarder, own) = self.armed.get()?;
        let key = ObjectKey::new("coordination.k8s.io/leases", "kubeedge", record_name(node));
        let record = self.store.get(key).await.ok()??.value().ok()?;
        let holder = record.pointer("/spec/holderIdentity")?.as_str()?;
        if holder.is_empty() {
            return None;
        }
        let addr: SocketAddr = record
            .pointer("/metadata/annotations")?
            .get(STREAM_SERVER)?
            .as_str()?
            .parse()
            .ok()?;
        (addr != *own).then(|| (forwarder.clone(), addr))
    }
}
