//! Our edgecore binary against an upstream cloud's traffic: every push the upstream cloudcore
//! (v1.12.1, v1.15.4, v1.22.2) sent in the recorded sessions (`testdata/captures/raw`) and the
//! upstream edge answered is sent, exactly as recorded and in order, over a real TLS websocket
//! to an edgecore process. Each must be acked (the hub matches the ack to the message's id),
//! with the ack upstream's edge sent (route and content), and the edge's store must hold what
//! the cloud sent (or no longer hold what it deleted).

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use kubeedge_bench::{wait_until, TestCloud};
use kubeedge_cloud::hub::HubConfig;
use kubeedge_proto::Message;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

/// An edgecore process, killed when dropped.
struct Edgecore(std::process::Child);

impl Drop for Edgecore {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (push, the upstream edge's answer to it) for every cloud→edge message that got one.
fn exchanges(file: &str) -> Result<Vec<(Value, Value)>> {
    let path = format!(
        "{}/../testdata/captures/raw/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    let frames: Vec<(bool, Value)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|o| o["event"] == "ws-message" && o["payload_json"].is_object())
        .map(|o| (o["dir"] == "edge->cloud", o["payload_json"].clone()))
        .collect();
    Ok(frames
        .iter()
        .filter(|(up, f)| {
            !*up && f["header"]["parent_msg_id"]
                .as_str()
                .unwrap_or("")
                .is_empty()
        })
        .filter_map(|(_, push)| {
            let id = push["header"]["msg_id"].as_str()?;
            let answer = frames
                .iter()
                .find(|(up, f)| *up && f["header"]["parent_msg_id"] == id)?;
            Some((push.clone(), answer.1.clone()))
        })
        .collect())
}

/// The stored object of `key` in the edge's `meta` table.
fn stored(db: &std::path::Path, key: &str) -> Option<Value> {
    let conn = rusqlite::Connection::open(db).ok()?;
    let text: String = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .ok()?;
    serde_json::from_str(&text).ok()
}

async fn replay(file: &str) -> Result<()> {
    let pairs = exchanges(file)?;
    ensure!(pairs.len() >= 8, "{file}: only {} exchanges", pairs.len());
    let cloud = TestCloud::start(HubConfig::default()).await?;
    let (config, db) = cloud.edge_config()?;
    let bin = kubeedge_bench::cluster::bin_dir()?.join("edgecore");
    let _edge = Edgecore(
        std::process::Command::new(bin)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()?,
    );
    let hub = cloud.hub.clone();
    wait_until("edgecore connects", LIMIT, || hub.connected() == 1).await?;

    for (push, expected) in &pairs {
        let msg = Message::from_json(&serde_json::to_vec(push)?)?;
        let msg_ack = msg.ack();
        cloud.down.send("edge-1", msg).await?;
        let what = format!(
            "{file}: {} {}",
            push["route"]["operation"], push["route"]["resource"]
        );
        let ack: Value = serde_json::from_slice(&msg_ack.to_json())?;
        ensure!(
            ack["route"] == expected["route"] && ack["content"] == expected["content"],
            "{what}: our ack {ack} is not upstream's {expected}"
        );
        let down = cloud.down.clone();
        wait_until(&format!("{what}: acked"), LIMIT, || {
            down.queued("edge-1") == 0
        })
        .await?;
        let res = push["route"]["resource"].as_str().unwrap_or_default();
        if push["route"]["source"] == "edgecontroller" && push["route"]["group"] == "resource" {
            let row = stored(&db, res);
            match push["route"]["operation"].as_str() {
                Some("insert" | "update") => ensure!(
                    row.as_ref() == Some(&push["content"]),
                    "{what}: stored {row:?}"
                ),
                Some("delete") if res.contains("/pod/") => {
                    ensure!(row.is_none(), "{what}: still stored")
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_v1_22_cloud_session() -> Result<()> {
    replay("ws-v1.22.2-20261125T145228.jsonl").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_v1_15_cloud_session() -> Result<()> {
    replay("ws-v1.15.4-20261125T143919.jsonl").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_v1_12_cloud_session() -> Result<()> {
    replay("ws-v1.12.1-20261125T143335.jsonl").await
}
