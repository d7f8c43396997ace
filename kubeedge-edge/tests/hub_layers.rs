//! The hub client's layers, one at a time over `tower_test::mock`: readiness, errors and
//! backpressure of the rate limit, request/reply, and the duplicate handling of resends.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use kubeedge_edge::hub::{Acks, RateLimitLayer, Replies};
use kubeedge_edge::HubError;
use kubeedge_proto::{Content, Message, Operation, Route};
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok};
use tower::{Layer, Service};
use tower_test::mock;

fn push(n: u32) -> Message {
    Message::new(
        Route::new(
            "edgecontroller",
            "resource",
            Operation::Update,
            format!("default/pod/p{n}"),
        ),
        Content::string("x"),
    )
}

type Mock = mock::Mock<Message, ()>;

fn boxed(e: tower::BoxError) -> anyhow::Error {
    anyhow::anyhow!(e)
}

#[tokio::test(start_paused = true)]
async fn rate_limit_holds_callers_past_the_burst_until_a_token_is_due() -> Result<()> {
    let (mut svc, mut handle) = mock::spawn_layer::<Message, (), _>(RateLimitLayer::new(10, 2));
    handle.allow(100);
    for n in 0..2 {
        assert_ready_ok!(svc.poll_ready());
        let sent = svc.call(push(n));
        let (got, reply) = handle.next_request().await.context("request")?;
        ensure!(got.route.resource.ends_with(&format!("p{n}")));
        reply.send_response(());
        sent.await.map_err(boxed)?;
    }
    // The burst is spent: pending, and woken when the next token is due (1/10 s).
    assert_pending!(svc.poll_ready());
    tokio::time::advance(Duration::from_millis(60)).await;
    assert_pending!(svc.poll_ready());
    tokio::time::advance(Duration::from_millis(50)).await;
    ensure!(
        svc.is_woken(),
        "the limiter wakes its caller when the token is due"
    );
    assert_ready_ok!(svc.poll_ready());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn rate_limit_shares_one_bucket_between_clones() -> Result<()> {
    let layer = RateLimitLayer::new(1, 1);
    let (inner, mut handle): (Mock, _) = mock::pair();
    handle.allow(100);
    let mut a = tokio_test::task::spawn(());
    let mut first = layer.layer(inner.clone());
    let mut second = layer.layer(inner);
    a.enter(|cx, _| -> Result<()> {
        ensure!(first.poll_ready(cx).is_ready());
        ensure!(
            second.poll_ready(cx).is_pending(),
            "the clone found the token spent"
        );
        Ok(())
    })
}

#[tokio::test(start_paused = true)]
async fn rate_limit_passes_on_the_inner_backpressure_and_errors() -> Result<()> {
    let (mut svc, mut handle) = mock::spawn_layer::<Message, (), _>(RateLimitLayer::new(100, 100));
    // Tokens but no room below: not ready.
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    ensure!(svc.is_woken());
    assert_ready_ok!(svc.poll_ready());
    let sent = svc.call(push(1));
    let (_, reply) = handle.next_request().await.context("request")?;
    reply.send_response(());
    sent.await.map_err(boxed)?;
    // The link below fails: the error comes up unchanged.
    handle.send_error("link gone");
    let err = assert_ready_err!(svc.poll_ready());
    ensure!(err.to_string() == "link gone", "{err}");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn requester_matches_the_reply_and_times_out_without_one() -> Result<()> {
    let replies = Replies::default();
    let (outbound, mut handle): (Mock, _) = mock::pair();
    let mut requester = replies.requester(outbound, Duration::from_secs(2));
    // Readiness is the outbound service's.
    let mut t = tokio_test::task::spawn(());
    handle.allow(0);
    t.enter(|cx, _| -> Result<()> {
        ensure!(requester.poll_ready(cx).is_pending());
        Ok(())
    })?;
    handle.allow(2);
    t.enter(|cx, _| -> Result<()> {
        ensure!(requester.poll_ready(cx).is_ready());
        Ok(())
    })?;
    let query = push(1);
    let call = tokio::spawn(requester.call(query.clone()));
    let (sent, done) = handle.next_request().await.context("request")?;
    done.send_response(());
    ensure!(replies.len() == 1, "one request waits");
    // Someone else's message passes through; the reply is taken.
    ensure!(replies.resolve(push(9)).is_some());
    let answer = sent.reply(Content::string("ok"));
    ensure!(replies.resolve(answer.clone()).is_none());
    let got = call.await??;
    ensure!(got.id() == answer.id());
    ensure!(replies.is_empty());
    // No reply: a timeout naming the request, and nothing left waiting.
    t.enter(|cx, _| -> Result<()> {
        ensure!(requester.poll_ready(cx).is_ready());
        Ok(())
    })?;
    let call = tokio::spawn(requester.call(push(2)));
    let (_, done) = handle.next_request().await.context("request")?;
    done.send_response(());
    match call.await? {
        Err(HubError::Timeout { .. }) => {}
        other => anyhow::bail!("expected a timeout, got {other:?}"),
    }
    ensure!(replies.is_empty());
    Ok(())
}

#[tokio::test]
async fn requester_reports_a_failing_stack_as_a_hub_error() -> Result<()> {
    let replies = Replies::default();
    let (outbound, mut handle): (Mock, _) = mock::pair();
    let mut requester = replies.requester(outbound, Duration::from_secs(2));
    handle.send_error("refused by a layer");
    let mut t = tokio_test::task::spawn(());
    t.enter(|cx, _| match requester.poll_ready(cx) {
        std::task::Poll::Ready(Err(HubError::Stack(e))) => {
            ensure!(e.to_string() == "refused by a layer");
            Ok(())
        }
        other => anyhow::bail!("expected a stack error, got {other:?}"),
    })
}

#[tokio::test]
async fn resolve_answers_replies_even_while_the_modules_are_full() -> Result<()> {
    let replies = Replies::default();
    let (modules, mut handle): (Mock, _) = mock::pair();
    let mut resolve = replies.layer().layer(modules);
    handle.allow(0);
    let mut t = tokio_test::task::spawn(());
    t.enter(|cx, _| -> Result<()> {
        ensure!(resolve.poll_ready(cx).is_ready(), "always ready");
        Ok(())
    })?;
    // A reply to a waiting request never reaches the (full) modules.
    let (outbound, mut out) = kubeedge_edge::hub::channel(4);
    let req = push(1);
    let waiting = tokio::spawn({
        let r = replies.requester(outbound, Duration::from_secs(5));
        let req = req.clone();
        async move { tower::ServiceExt::oneshot(r, req).await }
    });
    out.recv().await.context("sent")?;
    while replies.is_empty() {
        tokio::task::yield_now().await;
    }
    tokio::time::timeout(
        Duration::from_secs(5),
        resolve.call(req.reply(Content::string("ok"))),
    )
    .await?
    .map_err(boxed)?;
    waiting.await??;
    // Anything else waits for the modules, then reaches them.
    let other = tokio::spawn(resolve.call(push(2)));
    handle.allow(1);
    let (got, done) = handle.next_request().await.context("delivered")?;
    ensure!(got.route.resource.ends_with("p2"));
    done.send_response(());
    other.await?.map_err(boxed)?;
    Ok(())
}

#[tokio::test]
async fn dedup_delivers_once_and_acks_a_resend_only_after_the_modules_acked() -> Result<()> {
    let acks = Acks::default();
    let (modules, mut to_modules): (Mock, _) = mock::pair();
    let (link, mut to_link): (Mock, _) = mock::pair();
    let mut inbound = acks.dedup_layer(link.clone()).layer(modules);
    let mut outbound = acks.note_layer().layer(link);
    to_modules.allow(10);
    to_link.allow(10);
    let msg = push(1);
    // First copy: delivered.
    let first = tokio::spawn(inbound.call(msg.clone()));
    let (got, done) = to_modules.next_request().await.context("delivered")?;
    ensure!(got.id() == msg.id());
    done.send_response(());
    first.await?.map_err(boxed)?;
    // A resend before the ack: dropped (the modules are still on it), nothing on the link.
    inbound.call(msg.clone()).await.map_err(boxed)?;
    // The modules ack through the outbound layer.
    let mut t = tokio_test::task::spawn(());
    t.enter(|cx, _| -> Result<()> {
        ensure!(outbound.poll_ready(cx).is_ready());
        Ok(())
    })?;
    let acked = tokio::spawn(outbound.call(msg.ack()));
    let (_, done) = to_link.next_request().await.context("ack")?;
    done.send_response(());
    acked.await?.map_err(boxed)?;
    // A resend now: acked again on the link, and the modules see nothing.
    let again = tokio::spawn(inbound.call(msg.clone()));
    let (reack, done) = to_link.next_request().await.context("re-ack")?;
    ensure!(reack.parent_id() == Some(msg.id()));
    done.send_response(());
    again.await?.map_err(boxed)?;
    tokio::task::yield_now().await;
    let mut t = tokio_test::task::spawn(to_modules.next_request());
    ensure!(t.poll().is_pending(), "the modules got the resend");
    Ok(())
}

#[tokio::test]
async fn dedup_knows_an_object_version_sent_again_under_another_id() -> Result<()> {
    // A second cloudcore sends what the edge acked through the first: same version, new id.
    let acks = Acks::default();
    let (modules, mut to_modules): (Mock, _) = mock::pair();
    let (link, mut to_link): (Mock, _) = mock::pair();
    let mut inbound = acks.dedup_layer(link.clone()).layer(modules);
    let mut outbound = acks.note_layer().layer(link);
    to_modules.allow(10);
    to_link.allow(10);
    let version = |rv: &str| -> Result<Message> {
        let mut m = push(1).with_resource_version(rv);
        m.content =
            Content::json(&serde_json::json!({"metadata": {"uid": "u-1", "resourceVersion": rv}}))?;
        Ok(m)
    };
    let first = version("7")?;
    let delivered = tokio::spawn(inbound.call(first.clone()));
    let (_, done) = to_modules.next_request().await.context("delivered")?;
    done.send_response(());
    delivered.await?.map_err(boxed)?;
    let mut t = tokio_test::task::spawn(());
    t.enter(|cx, _| -> Result<()> {
        ensure!(outbound.poll_ready(cx).is_ready());
        Ok(())
    })?;
    let acked = tokio::spawn(outbound.call(first.ack()));
    let (_, done) = to_link.next_request().await.context("ack")?;
    done.send_response(());
    acked.await?.map_err(boxed)?;

    let again = version("7")?;
    ensure!(again.id() != first.id());
    let copy = tokio::spawn(inbound.call(again.clone()));
    let (reack, done) = to_link.next_request().await.context("re-ack")?;
    ensure!(
        reack.parent_id() == Some(again.id()),
        "the copy is acked under its own id"
    );
    done.send_response(());
    copy.await?.map_err(boxed)?;
    // Another object at the same version, a newer version, and a delete of the same version
    // are new messages.
    let mut other = version("7")?;
    other.content = Content::json(&serde_json::json!({"metadata": {"uid": "u-2"}}))?;
    let delivered = tokio::spawn(inbound.call(other));
    let (_, done) = to_modules.next_request().await.context("another object")?;
    done.send_response(());
    delivered.await?.map_err(boxed)?;
    let newer = tokio::spawn(inbound.call(version("8")?));
    let (got, done) = to_modules.next_request().await.context("newer")?;
    ensure!(got.header.resource_version == "8");
    done.send_response(());
    newer.await?.map_err(boxed)?;
    let mut delete = version("8")?;
    delete.route.operation = Some(Operation::Delete);
    let deleted = tokio::spawn(inbound.call(delete));
    let (got, done) = to_modules.next_request().await.context("delete")?;
    ensure!(got.route.is_operation(&Operation::Delete));
    done.send_response(());
    deleted.await?.map_err(boxed)?;
    Ok(())
}

#[tokio::test]
async fn dedup_passes_module_errors_up_and_the_note_layer_passes_backpressure() -> Result<()> {
    let acks = Acks::default();
    let (modules, mut to_modules): (Mock, _) = mock::pair();
    let (link, mut to_link): (Mock, _) = mock::pair();
    let mut inbound = acks.dedup_layer(link.clone()).layer(modules);
    to_modules.send_error("module gone");
    let err = inbound
        .call(push(1))
        .await
        .err()
        .context("the modules' error")?;
    ensure!(err.to_string() == "module gone", "{err}");
    let mut outbound = acks.note_layer().layer(link);
    to_link.allow(0);
    let mut t = tokio_test::task::spawn(());
    t.enter(|cx, _| -> Result<()> {
        ensure!(outbound.poll_ready(cx).is_pending());
        Ok(())
    })?;
    to_link.allow(1);
    t.enter(|cx, _| -> Result<()> {
        ensure!(outbound.poll_ready(cx).is_ready());
        Ok(())
    })?;
    Ok(())
}

#[tokio::test]
async fn the_meta_cache_waits_for_its_transport_and_reports_its_failure() -> Result<()> {
    use kubeedge_edge::hub::{Client, ConnectionState};
    use kubeedge_edge::meta::{MetaDb, MetaLayer, Outputs, SqliteStore};
    use kubeedge_proto::Group;
    let dir = tempfile::tempdir()?;
    let (store, _) = SqliteStore::open(&dir.path().join("edge.db"))?;
    let db = MetaDb::spawn(store);
    let (transport, mut handle): (Mock, _) = mock::pair();
    let (_, state) = tokio::sync::watch::channel(ConnectionState::Connected(1));
    let client = Client::new(
        tower::ServiceExt::map_err(transport, HubError::from_stack),
        Replies::default(),
        state,
    );
    let mut meta = MetaLayer::new(db.clone(), Outputs::default()).layer(client);
    let cm = |name: &str| -> Result<Message> {
        let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": "7"}});
        Ok(Message::new(
            Route::new(
                "edgecontroller",
                Group::Resource,
                "insert",
                format!("default/configmap/{name}"),
            ),
            Content::json(&body)?,
        ))
    };
    // The transport has no room: the push is committed, and its ack waits for the room.
    handle.allow(0);
    let first = cm("a")?;
    let mut call = tokio_test::task::spawn(meta.call(first.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while db.get("default/configmap/a").await?.is_none() {
        ensure!(tokio::time::Instant::now() < deadline, "never stored");
        ensure!(call.poll().is_pending(), "finished without a transport");
        tokio::task::yield_now().await;
    }
    ensure!(
        call.poll().is_pending(),
        "acked without room in the transport"
    );
    handle.allow(1);
    ensure!(call.is_woken(), "room in the transport wakes the ack");
    ensure!(
        call.poll().is_pending(),
        "acked before the transport answered"
    );
    let (ack, done) = handle.next_request().await.context("ack")?;
    ensure!(ack.parent_id() == Some(first.id()));
    done.send_response(());
    call.await.map_err(|e| anyhow::anyhow!("{e}"))?;
    // The transport fails: the push is still stored (it is re-sent and acked later), and the
    // call reports the hub's error.
    handle.send_error("link gone");
    let err = meta.call(cm("b")?).await.err().context("an error")?;
    ensure!(err.to_string().contains("hub"), "{err}");
    ensure!(db.get("default/configmap/b").await?.is_some());
    Ok(())
}
