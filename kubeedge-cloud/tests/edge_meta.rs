//! The edge meta manager behind a real hub: pushes persisted on SQLite, acked after the
//! commit, refusals answered with error messages, a corrupt database moved aside.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use kubeedge_edge::meta::{MetaDb, MetaManager, Outputs, SqliteStore, StoreError};
use kubeedge_edge::router::{self, Routes};
use kubeedge_proto::{Content, Message, Route};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct EdgeMeta {
    db: MetaDb,
    edged: mpsc::Receiver<Message>,
    _edge: Edge,
    _cancel: CancellationToken,
}

async fn edge_with_meta(cloud: &Cloud, node: &str, db_path: &std::path::Path) -> Result<EdgeMeta> {
    let dir = tempfile::tempdir()?;
    let tls = join(cloud, node, dir.path()).await?;
    let mut e = edge(cloud, node, tls);
    within("connect", e.client.connected()).await??;
    let (store, warning) = SqliteStore::open(db_path)?;
    assert!(warning.is_none());
    let db = MetaDb::spawn(store);
    let (edged_tx, edged) = mpsc::channel(1024);
    let meta = MetaManager::new(
        db.clone(),
        e.client.clone(),
        Outputs {
            edged: Some(edged_tx),
            twin: None,
        },
    );
    let cancel = CancellationToken::new();
    let inbound = std::mem::replace(&mut e.inbound, mpsc::channel(1).1);
    let routes = Routes {
        meta: Some(meta),
        ..Routes::default()
    };
    tokio::spawn(router::run(
        inbound,
        e.client.clone(),
        routes,
        cancel.clone(),
    ));
    std::mem::forget(dir);
    Ok(EdgeMeta {
        db,
        edged,
        _edge: e,
        _cancel: cancel,
    })
}

fn object(kind: &str, rtype: &str, uid: &str, rv: &str, op: &str) -> Message {
    let content = Content::json(&serde_json::json!({
        "apiVersion": "v1", "kind": kind,
        "metadata": {"name": "x", "namespace": "default", "uid": uid, "resourceVersion": rv},
        "data": {"k": "v"}
    }))
    .expect("json");
    Message::new(
        Route::new(
            "edgecontroller",
            "resource",
            op,
            format!("default/{rtype}/x"),
        ),
        content,
    )
    .with_resource_version(rv)
}

#[tokio::test]
async fn pushes_are_persisted_then_acked_and_handed_to_edged() -> Result<()> {
    trace();
    let cloud = cloud(fast()).await?;
    let dbdir = tempfile::tempdir()?;
    let db_path = dbdir.path().join("edgecore.db");
    let mut em = edge_with_meta(&cloud, "edge-1", &db_path).await?;
    let pushes = [
        object("Pod", "pod", "p1", "5", "insert"),
        object("ConfigMap", "configmap", "c1", "6", "update"),
        object("Secret", "secret", "s1", "7", "update"),
    ];
    for m in &pushes {
        cloud.down.send("edge-1", m.clone()).await?;
    }
    eventually("all acked", || cloud.down.queued("edge-1") == 0).await?;
    // Acked means committed: another connection to the file sees every row.
    let conn = rusqlite::Connection::open(&db_path)?;
    for m in &pushes {
        let value: String = conn.query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [&m.route.resource],
            |r| r.get(0),
        )?;
        assert_eq!(value.as_bytes(), &*m.content.bytes());
    }
    for m in &pushes {
        let got = within("edged", em.edged.recv()).await?.context("closed")?;
        assert_eq!(got.id(), m.id());
    }
    // A delete with another UID leaves the pod; the right UID removes it.
    cloud
        .down
        .send("edge-1", object("Pod", "pod", "other", "8", "delete"))
        .await?;
    eventually("acked", || cloud.down.queued("edge-1") == 0).await?;
    assert!(
        em.db.get("default/pod/x").await?.is_some(),
        "uid mismatch keeps the pod"
    );
    cloud
        .down
        .send("edge-1", object("Pod", "pod", "p1", "9", "delete"))
        .await?;
    eventually("acked", || cloud.down.queued("edge-1") == 0).await?;
    assert!(em.db.get("default/pod/x").await?.is_none());
    Ok(())
}

#[tokio::test]
async fn captured_upstream_pushes_are_stored_and_acked() -> Result<()> {
    trace();
    let cloud = cloud(fast()).await?;
    let mut n = 0;
    for version in ["v1.12.1", "v1.22.2"] {
        // Each version's edge has its own store: upstream's insert keeps an existing row.
        let node = format!("edge-{}", version.replace('.', "-"));
        let dbdir = tempfile::tempdir()?;
        let em = edge_with_meta(&cloud, &node, &dbdir.path().join("edgecore.db")).await?;
        for name in [
            "08-pod-insert-downstream",
            "09-configmap-update-downstream",
            "10-secret-update-downstream",
            "11-pod-update-downstream",
            "18-devicemodel-insert-downstream",
            "19-device-insert-downstream",
        ] {
            let path = format!(
                "{}/../testdata/captures/{version}/{name}.json",
                env!("CARGO_MANIFEST_DIR")
            );
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
            let push = Message::from_json(
                serde_json::to_string(&v["exchange"][0]["message"])?.as_bytes(),
            )?;
            let upstream_ack = Message::from_json(
                serde_json::to_string(&v["exchange"][1]["message"])?.as_bytes(),
            )?;
            // What we will answer is what the upstream edge answered.
            assert_eq!(push.ack().route, upstream_ack.route, "{path}");
            cloud.down.send(&node, push.clone()).await?;
            eventually("acked", || cloud.down.queued(&node) == 0).await?;
            let row = em.db.get(&push.route.resource).await?.context("stored")?;
            assert_eq!(row.value.as_bytes(), &*push.content.bytes(), "{path}");
            n += 1;
        }
    }
    assert_eq!(n, 12);
    Ok(())
}

#[tokio::test]
async fn bad_pushes_get_error_replies_and_leave_the_store_alone() -> Result<()> {
    trace();
    let mut cloud = cloud(fast()).await?;
    let dbdir = tempfile::tempdir()?;
    let em = edge_with_meta(&cloud, "edge-1", &dbdir.path().join("edgecore.db")).await?;
    cloud
        .down
        .send("edge-1", object("Pod", "pod", "p1", "5", "insert"))
        .await?;
    eventually("acked", || cloud.down.queued("edge-1") == 0).await?;
    let before = em.db.get("default/pod/x").await?;

    let mut wrong_type = object("Pod", "pod", "p1", "6", "update");
    wrong_type.content = Content::string("not an object");
    let unknown = Message::new(
        Route::new("edgecontroller", "resource", "update", "what"),
        Content::null(),
    );
    let mut huge = object("Pod", "pod", "p1", "7", "update");
    huge.content = Content::json(
        &serde_json::json!({"metadata": {"uid": "p1"}, "blob": "x".repeat(5 * 1024 * 1024)}),
    )?;
    for (m, why) in [
        (wrong_type, "must be a json object"),
        (unknown, "has no resource type"),
        (huge, "over the limit"),
    ] {
        cloud.down.send("edge-1", m.clone()).await?;
        let reply = within("error reply", async {
            loop {
                let up = cloud.up.recv().await?;
                if up.msg.parent_id() == Some(m.id()) {
                    return Some(up.msg);
                }
            }
        })
        .await?
        .context("closed")?;
        assert_eq!(reply.route.operation_str(), "error");
        let text = reply.content.as_str().unwrap_or_default().into_owned();
        assert!(text.contains(why), "{text}");
    }
    assert_eq!(em.db.get("default/pod/x").await?, before, "store untouched");
    // A refused message is not resent forever: it leaves the outbox.
    eventually("refusals leave the outbox", || {
        cloud.down.queued("edge-1") == 0
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_corrupt_database_is_moved_aside_not_deleted() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("edgecore.db");
    let junk = b"this is not an sqlite database, but it is somebody's data".repeat(100);
    std::fs::write(&path, &junk)?;
    let (store, warning) = SqliteStore::open(&path)?;
    let Some(StoreError::Corrupt { moved_to, .. }) = warning else {
        anyhow::bail!("expected a corruption warning, got {warning:?}");
    };
    assert_eq!(
        std::fs::read(&moved_to)?,
        junk,
        "the bad file is kept intact"
    );
    let db = MetaDb::spawn(store);
    assert!(db.get("default/pod/x").await?.is_none());
    let _ = Duration::ZERO;
    Ok(())
}

#[tokio::test]
async fn queries_go_to_the_cloud_when_online_and_to_the_store_when_not() -> Result<()> {
    trace();
    let mut cloud = cloud(fast()).await?;
    let dir = tempfile::tempdir()?;
    let tls = join(&cloud, "edge-1", dir.path()).await?;
    let e = edge(&cloud, "edge-1", tls);
    within("connect", e.client.connected()).await??;
    let (store, _) = SqliteStore::open(&dir.path().join("edgecore.db"))?;
    let db = MetaDb::spawn(store);
    let meta = MetaManager::new(db.clone(), e.client.clone(), Outputs::default())
        .with_remote_timeout(Duration::from_secs(5));
    let m2 = meta.clone();
    let q = tokio::spawn(async move { m2.query("default/configmap/cm").await });
    let up = within("query upstream", cloud.up.recv())
        .await?
        .context("closed")?;
    assert_eq!(up.msg.route.operation_str(), "query");
    assert_eq!(up.msg.route.resource, "default/configmap/cm");
    let cm = Content::json(
        &serde_json::json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm","namespace":"default","uid":"c1","resourceVersion":"4"},"data":{"a":"b"}}),
    )?;
    let reply = up.msg.reply(cm.clone()).with_resource_version("4");
    cloud.down.send("edge-1", reply).await?;
    let got = within("answer", q).await???.context("found")?;
    assert_eq!(got.value.as_bytes(), &*cm.bytes());
    // Stored, and the (ACK-mode) answer was acked.
    assert!(db.get("default/configmap/cm").await?.is_some());
    eventually("answer acked", || cloud.down.queued("edge-1") == 0).await?;
    // Offline: answered from the store.
    e.cancel.cancel();
    until_state(&e.client, "offline", disconnected).await?;
    let local = within("local answer", meta.query("default/configmap/cm")).await??;
    assert_eq!(local, Some(got));
    assert!(within("missing", meta.query("default/secret/none"))
        .await??
        .is_none());
    Ok(())
}

#[tokio::test]
async fn status_reported_offline_is_coalesced_and_flushed_in_order() -> Result<()> {
    trace();
    let mut cloud = cloud(fast()).await?;
    let dir = tempfile::tempdir()?;
    let tls = join(&cloud, "edge-1", dir.path()).await?;
    let mut cfg = kubeedge_edge::hub::HubConfig::default();
    cfg.server = cloud.ws.to_string();
    cfg.node_name = "edge-1".into();
    cfg.heartbeat = Duration::from_millis(300);
    let (client, _inbound, driver) = kubeedge_edge::hub::connect(cfg, tls);
    let (store, _) = SqliteStore::open(&dir.path().join("edgecore.db"))?;
    let db = MetaDb::spawn(store);
    let meta = MetaManager::new(db.clone(), client.clone(), Outputs::default())
        .with_remote_timeout(Duration::from_secs(5));
    let cancel = CancellationToken::new();
    tokio::spawn(meta.clone().run_outbox(cancel.clone()));
    let status = |pod: &str, phase: &str| {
        Message::new(
            Route::new("edged", "meta", "patch", format!("default/podpatch/{pod}")),
            Content::string(&format!("{{\"status\":{{\"phase\":\"{phase}\"}}}}")),
        )
    };
    // Offline: four reports, three for the same pod.
    for (pod, phase) in [
        ("a", "Pending"),
        ("a", "Running"),
        ("b", "Running"),
        ("a", "Succeeded"),
    ] {
        meta.report(status(pod, phase)).await?;
    }
    assert_eq!(db.outbox(10).await?.len(), 2, "one entry per pod");
    // The link comes up: the latest per pod, in order of last change, each answered.
    tokio::spawn(driver.run(cancel.child_token()));
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let up = within("flushed", cloud.up.recv())
            .await?
            .context("closed")?;
        if up.msg.route.operation_str() != "patch" {
            continue;
        }
        seen.push((
            up.msg.route.resource.clone(),
            up.msg.content.as_str().unwrap_or_default().into_owned(),
        ));
        cloud
            .down
            .send("edge-1", up.msg.reply(Content::string("OK")))
            .await?;
    }
    assert_eq!(
        seen[0],
        (
            "default/podpatch/b".into(),
            "{\"status\":{\"phase\":\"Running\"}}".into()
        )
    );
    assert_eq!(
        seen[1],
        (
            "default/podpatch/a".into(),
            "{\"status\":{\"phase\":\"Succeeded\"}}".into()
        )
    );
    let db2 = db.clone();
    within("outbox empty", async {
        while !db2.outbox(10).await.map(|v| v.is_empty()).unwrap_or(false) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await?;
    cancel.cancel();
    Ok(())
}

/// An upstream cloud answers no `event` report. Before: the outbox waited for that answer,
/// retried the event forever and held back every report behind it (pod status never reached
/// the cloud). Now a report the cloud got on a session that stayed up is done when its answer
/// does not come, and the next report goes out.
#[tokio::test]
async fn an_unanswered_report_does_not_hold_back_the_ones_behind_it() -> Result<()> {
    trace();
    let mut cloud = cloud(fast()).await?;
    let dir = tempfile::tempdir()?;
    let tls = join(&cloud, "edge-1", dir.path()).await?;
    let mut cfg = kubeedge_edge::hub::HubConfig::default();
    cfg.server = cloud.ws.to_string();
    cfg.node_name = "edge-1".into();
    let (client, _inbound, driver) = kubeedge_edge::hub::connect(cfg, tls);
    let cancel = CancellationToken::new();
    tokio::spawn(driver.run(cancel.child_token()));
    within("connect", client.connected()).await??;
    let (store, _) = SqliteStore::open(&dir.path().join("edgecore.db"))?;
    let db = MetaDb::spawn(store);
    let meta = MetaManager::new(db.clone(), client.clone(), Outputs::default())
        .with_remote_timeout(Duration::from_millis(300));
    tokio::spawn(meta.clone().run_outbox(cancel.clone()));
    let event = Message::new(
        Route::new("edged", "meta", "insert", "default/event/web.1"),
        Content::json(&serde_json::json!({"kind": "Event", "reason": "Failed"}))?,
    );
    meta.report(event).await?;
    meta.report(Message::new(
        Route::new("edged", "meta", "patch", "default/podpatch/web"),
        Content::string("{\"status\":{\"phase\":\"Failed\"}}"),
    ))
    .await?;
    let mut events = 0;
    loop {
        let up = within("pod status after the event", cloud.up.recv())
            .await?
            .context("closed")?;
        match up.msg.route.resource.as_str() {
            // Upstream's cloud: no answer.
            "default/event/web.1" => events += 1,
            "default/podpatch/web" => {
                cloud
                    .down
                    .send("edge-1", up.msg.reply(Content::string("OK")))
                    .await?;
                break;
            }
            _ => {}
        }
    }
    assert_eq!(events, 1, "the event is sent once, not retried");
    let db2 = db.clone();
    within("outbox empty", async {
        while !db2.outbox(10).await.map(|v| v.is_empty()).unwrap_or(false) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await?;
    cancel.cancel();
    Ok(())
}
