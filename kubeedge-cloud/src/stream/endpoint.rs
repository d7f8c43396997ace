//! How a real kube-apiserver finds a node's "kubelet": as upstream does since v1.7, each
//! cloudcore replica takes its own port from 10351 up, recorded in the ConfigMap
//! `kubeedge/tunnelport` (annotation `tunnelportrecord.kubeedge.io`,
//! `{"ipTunnelPort":{"<cloudcore ip>":10351},"port":{"10351":true}}`), and writes it into
//! `status.daemonEndpoints.kubeletEndpoint.Port` of each node whose tunnel connects to it.
//! Upstream's iptables manager then leads that port to the stream server.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};

/// The namespace and name of the record.
const NAMESPACE: &str = "kubeedge";
const NAME: &str = "tunnelport";
/// The record's annotation.
pub const TUNNEL_PORT_ANNOTATION: &str = "tunnelportrecord.kubeedge.io";
/// Ports are handed out above this one (upstream's `ServerPort`).
const BASE_PORT: u16 = 10350;

/// Upstream's `TunnelPortRecord`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelPortRecord {
    /// `ipTunnelPort`: each cloudcore's port, by its IP.
    #[serde(rename = "ipTunnelPort", default)]
    pub ip_tunnel_port: BTreeMap<String, u16>,
    /// `port`: the ports taken.
    #[serde(default)]
    pub port: BTreeMap<u16, bool>,
}

/// This cloudcore's kubelet port: the one recorded for `local_ip`, or the next free one
/// above 10350 (recorded now).
pub async fn negotiate_tunnel_port(
    client: &kube::Client,
    local_ip: &str,
) -> Result<u16, kube::Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(NAMESPACE).await?.is_none() {
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}}))
                .map_err(kube::Error::SerdeError)?;
        match namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    loop {
        let existing = cms.get_opt(NAME).await?;
        let mut record: TunnelPortRecord = existing
            .as_ref()
            .and_then(|c| c.metadata.annotations.as_ref())
            .and_then(|a| a.get(TUNNEL_PORT_ANNOTATION))
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        if let Some(p) = record.ip_tunnel_port.get(local_ip) {
            return Ok(*p);
        }
        let port = (BASE_PORT + 1..=u16::MAX)
            .find(|p| !record.port.contains_key(p))
            .unwrap_or(BASE_PORT + 1);
        record.ip_tunnel_port.insert(local_ip.to_owned(), port);
        record.port.insert(port, true);
        let value = serde_json::to_string(&record).map_err(kube::Error::SerdeError)?;
        let written = match existing {
            Some(mut cm) => {
                cm.metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(TUNNEL_PORT_ANNOTATION.into(), value);
                cms.replace(NAME, &PostParams::default(), &cm).await
            }
            None => {
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": NAME, "namespace": NAMESPACE,
                                 "annotations": {TUNNEL_PORT_ANNOTATION: value}},
                }))
                .map_err(kube::Error::SerdeError)?;
                cms.create(&PostParams::default(), &cm).await
            }
        };
        match written {
            Ok(_) => return Ok(port),
            // Another replica wrote first: read again.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Write `port` into `node`'s `status.daemonEndpoints.kubeletEndpoint.Port`, retrying every
/// `every` for up to `within` (the node may not be registered yet).
pub async fn set_kubelet_port(
    client: &kube::Client,
    node: &str,
    port: u16,
    every: Duration,
    within: Duration,
) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let patch =
        serde_json::json!({"status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match nodes
            .patch_status(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() + every > deadline => return Err(e),
            Err(e) => tracing::debug!(node, error = %e, "kubelet port not written yet; retrying"),
        }
        tokio::time::sleep(every).await;
    }
}
