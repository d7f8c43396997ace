//! A gateway of your own on kubeedge-edge with its default features off (`features = ["meta"]`:
//! no container runtime, no MQTT, no API server). It joins a cloudcore with a token, registers
//! its node, receives the pods bound to it and the ConfigMaps they use into its own handler
//! (after they are stored and acked), and reports each pod Running.
//!
//! ```text
//! cargo run -p kubeedge-examples --example custom-gateway -- \
//!     <cloudcore:10000> <cloudcore:10002> "$(keadm gettoken)" gateway-1 /var/lib/gateway
//! ```

use std::path::PathBuf;
use std::time::Duration;

use kubeedge_edge::hub::{self, CertFiles};
use kubeedge_edge::meta::{MetaDb, MetaLayer, Outputs, SqliteStore};
use kubeedge_edge::router::{self, Routes};
use kubeedge_proto::{report, ResourceKind, ResourcePath};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ws, https, token, node, dir] = <[String; 5]>::try_from(args)
        .map_err(|_| anyhow::anyhow!("usage: custom-gateway WS HTTPS TOKEN NODE DIR"))?;
    let (dir, wait) = (PathBuf::from(dir), Duration::from_secs(30));

    // Certificates from the join token, then the websocket to CloudHub, kept up by the driver.
    let files = CertFiles::in_dir(&dir);
    let tls = hub::bootstrap(&https, &token.parse()?, &node, &files, wait).await?;
    let mut config = hub::HubConfig::default();
    (config.server, config.node_name) = (ws, node.clone());
    let (client, inbound, driver) = hub::connect(config, tls);

    // The meta cache stores what the cloud pushes, acks it, and hands it to our handler.
    let (store, _recovered) = SqliteStore::open(&dir.join("gateway.db"))?;
    let (handler, mut objects) = tokio::sync::mpsc::channel(64);
    let outputs = Outputs {
        edged: Some(handler),
        twin: None,
    };
    let meta = ServiceBuilder::new()
        .layer(MetaLayer::new(MetaDb::spawn(store), outputs))
        .service(client.clone());
    let cancel = CancellationToken::new();
    tokio::spawn(driver.run(cancel.clone()));
    let routes = Routes {
        meta: Some(meta),
        ..Routes::default()
    };
    tokio::spawn(router::run(inbound, client.clone(), routes, cancel.clone()));

    client.connected().await?;
    let ready = json!([{"type": "Ready", "status": "True", "reason": "GatewayReady"}]);
    let node_object = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node, "labels": {"node-role.kubernetes.io/edge": ""}},
        "status": {"conditions": ready}});
    client
        .request(report::node_insert("default", &node, &node_object)?, wait)
        .await?;
    println!("registered node {node}");

    // Our own handler: every object for this node, after it is stored.
    while let Some(msg) = objects.recv().await {
        let ResourceKind::Object {
            namespace,
            resource_type,
            name: Some(name),
        } = ResourcePath::parse(&msg.route.resource).into_kind()
        else {
            continue;
        };
        let op = msg.route.operation_str();
        println!("{op} {resource_type} {namespace}/{name}");
        if resource_type.as_str() == "pod" && op != "delete" {
            let pod: Value = msg.content.decode()?;
            let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
            let status =
                json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
            client
                .request(report::pod_patch(&namespace, &name, uid, &status), wait)
                .await?;
            println!("reported {namespace}/{name} Running");
        }
    }
    cancel.cancel();
    Ok(())
}
