//! The hub client as tower services, over a transport of the test's own (`hub::channel`):
//! readiness is the outbound queue's room, request/reply is matched by parent id, and the meta
//! cache stores a push and acks it through whatever transport it is given.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use kubeedge_edge::meta::{MetaDb, MetaLayer, Outputs, SqliteStore};
use kubeedge_edge::{hub, HubError};
use kubeedge_proto::{Content, Group, Message, Route};
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{Service, ServiceBuilder, ServiceExt};

fn hello(n: u32) -> Message {
    Message::new(
        Route::new("gateway", Group::User, "update", format!("hello/{n}")),
        Content::string("hi"),
    )
}

#[tokio::test]
async fn readiness_is_the_outbound_queues_room_and_wakes_when_it_drains() -> Result<()> {
    let (mut client, mut transport) = hub::channel(1);
    let mut ready = task::spawn(std::future::poll_fn(|cx| client.poll_ready(cx)));
    assert_ready_ok!(ready.poll());
    drop(ready);
    client.call(hello(1)).await?;

    // The queue holds one message: the next one has to wait...
    let mut ready = task::spawn(std::future::poll_fn(|cx| client.poll_ready(cx)));
    assert_pending!(ready.poll());
    // ...until the transport takes the first, which wakes the waiting sender.
    let first = transport.recv().await.context("first message")?;
    ensure!(first.route.resource == "hello/1");
    ensure!(
        ready.is_woken(),
        "draining the queue wakes the waiting sender"
    );
    assert_ready_ok!(ready.poll());
    drop(ready);
    client.call(hello(2)).await?;
    ensure!(transport.recv().await.context("second")?.route.resource == "hello/2");

    // A transport that is gone is an error, not a wait.
    drop(transport);
    let err = client
        .ready()
        .await
        .err()
        .context("ready on a closed transport")?;
    ensure!(matches!(err, HubError::Closed), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn requester_matches_replies_by_parent_id_and_times_out() -> Result<()> {
    let (client, mut transport) = hub::channel(8);
    // The "cloud": answers every request except those on hello/0.
    let cloud = client.clone();
    tokio::spawn(async move {
        while let Some(req) = transport.recv().await {
            if req.route.resource != "hello/0" {
                let reply = req.reply(Content::string(&format!("re {}", req.route.resource)));
                // A reply goes to its request, never to the inbound consumer.
                assert!(cloud.resolve(reply).is_none());
            }
        }
    });
    let requester = client.requester(Duration::from_millis(300));
    // Two requests in flight at once, each gets its own answer.
    let (a, b) = tokio::join!(
        requester.clone().oneshot(hello(1)),
        requester.clone().oneshot(hello(2))
    );
    ensure!(a?.content.bytes().as_ref() == b"re hello/1");
    ensure!(b?.content.bytes().as_ref() == b"re hello/2");
    let unanswered = requester.oneshot(hello(0)).await;
    ensure!(
        matches!(unanswered, Err(HubError::Timeout { .. })),
        "{unanswered:?}"
    );
    // A message that answers nothing is handed back to the caller.
    ensure!(client.resolve(hello(9)).is_some());
    Ok(())
}

#[tokio::test]
async fn the_meta_cache_is_a_service_over_any_transport() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, _) = SqliteStore::open(&dir.path().join("edge.db"))?;
    let db = MetaDb::spawn(store);
    let (client, mut transport) = hub::channel(8);
    let (to_handler, mut handler) = tokio::sync::mpsc::channel(8);
    let outputs = Outputs {
        edged: Some(to_handler),
        twin: None,
    };
    // The stack, top to bottom: a layer of the user's own (here it counts what comes in),
    // the meta cache, and the hub transport under it.
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    let mut stack = ServiceBuilder::new()
        .map_request(move |m: Message| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            m
        })
        .layer(MetaLayer::new(db.clone(), outputs))
        .service(client);

    let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "default", "resourceVersion": "7"}});
    let push = Message::new(
        Route::new(
            "edgecontroller",
            Group::Resource,
            "insert",
            "default/configmap/settings",
        ),
        Content::json(&cm)?,
    );
    stack.ready().await?.call(push.clone()).await?;

    // Stored, then acked on the transport, then handed to the module behind the cache.
    ensure!(
        db.get("default/configmap/settings").await?.is_some(),
        "not stored"
    );
    let ack = transport.recv().await.context("ack")?;
    ensure!(ack.parent_id() == Some(push.id()), "ack {ack:?}");
    let handed = handler.recv().await.context("handed on")?;
    ensure!(handed.route.resource == "default/configmap/settings");
    ensure!(seen.load(std::sync::atomic::Ordering::Relaxed) == 1);
    Ok(())
}

#[tokio::test]
async fn the_router_hands_each_group_to_its_handler_service() -> Result<()> {
    use kubeedge_edge::router::{self, Routes};
    use kubeedge_proto::Source;

    let (client, mut transport) = hub::channel(8);
    // The twin is a service of the test's own; the event bus a module's inbound channel.
    let (twin_tx, mut twin_seen) = tokio::sync::mpsc::channel(8);
    let twin = tower::service_fn(move |m: Message| {
        let tx = twin_tx.clone();
        async move { tx.send(m).await.map_err(|_| HubError::Closed) }
    });
    let (bus_tx, mut bus_seen) = tokio::sync::mpsc::channel(8);
    let routes = Routes {
        twin: Some(router::handler(twin)),
        eventbus: Some(router::channel_handler(bus_tx)),
        ..Routes::default()
    };

    let to_twin = Message::new(
        Route::new("devicecontroller", Group::Twin, "update", "membership"),
        Content::string("{}"),
    );
    router::route(&client, &routes, to_twin.clone()).await;
    ensure!(twin_seen.recv().await.context("twin")?.id() == to_twin.id());

    let to_bus = Message::new(
        Route::new(Source::RouterEventBus, Group::User, "publish", "a/topic"),
        Content::string("x"),
    );
    router::route(&client, &routes, to_bus.clone()).await;
    ensure!(bus_seen.recv().await.context("eventbus")?.id() == to_bus.id());

    // No service bus here: the cloud gets an error reply to that message.
    let to_servicebus = Message::new(
        Route::new(Source::RouterServiceBus, Group::User, "post", "app"),
        Content::string("x"),
    );
    router::route(&client, &routes, to_servicebus.clone()).await;
    let reply = transport.recv().await.context("error reply")?;
    ensure!(reply.parent_id() == Some(to_servicebus.id()), "{reply:?}");
    Ok(())
}
