//! CloudHub embedded in a service of your own. It serves KubeEdge's websocket and certificate
//! ports with its own CA (kept in DIR), prints a join token for `keadm join` or any edge, and
//! handles one message type of its own: an edge's `user`-group message on `telemetry/<name>`
//! is counted and answered with the count so far. Everything else edges send is left alone.
//!
//! ```text
//! cargo run -p kubeedge-examples --example cloud-router -- /var/lib/router 0.0.0.0:10000 0.0.0.0:10002
//! ```

use std::sync::Arc;

use kubeedge_cloud::certs::{unix_now, FsCertStore, Pki, PkiConfig};
use kubeedge_cloud::hub::{CloudHub, HubConfig, Upstream};
use kubeedge_proto::Content;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, ws, https] = <[String; 3]>::try_from(args)
        .map_err(|_| anyhow::anyhow!("usage: cloud-router DIR WS_ADDR HTTPS_ADDR"))?;

    // The CA and server certificate (made on first start), the hub, and its two ports.
    let pki = Arc::new(Pki::load_or_create(
        &FsCertStore::in_dir(dir),
        PkiConfig::default(),
    )?);
    let (hub, down, mut up) = CloudHub::new(pki.clone(), HubConfig::default());
    let (ws, https) = (
        TcpListener::bind(ws).await?,
        TcpListener::bind(https).await?,
    );
    println!("websocket {}", ws.local_addr()?);
    println!("https {}", https.local_addr()?);
    println!("token {}", pki.issue_token(unix_now())?);
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move { hub.serve(ws, https, stop).await });

    // Our own upstream message type.
    let mut readings = 0u64;
    loop {
        let Upstream { node, msg, .. } = tokio::select! {
            m = up.recv() => match m { Some(m) => m, None => break },
            _ = tokio::signal::ctrl_c() => break,
        };
        if msg.route.group_str() != "user" || !msg.route.resource.starts_with("telemetry/") {
            continue;
        }
        readings += 1;
        let value = String::from_utf8_lossy(&msg.content.bytes()).into_owned();
        println!("{node} {} {value}", msg.route.resource);
        let reply = msg.reply(Content::json(&serde_json::json!({"readings": readings}))?);
        down.send(&node, reply).await?;
    }
    cancel.cancel();
    Ok(())
}
