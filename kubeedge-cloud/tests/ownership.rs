//! Node records on the real (in-process) API: a hub writes itself as the holder of a node when
//! its websocket arrives and clears it when the session ends; when another replica takes a
//! node that has no session here, what this hub queued for it is dropped (without a shared
//! ledger) or kept until the node acks it there (with one). Two replicas on one API, and an
//! edge moving between them, get every message to the edge once.

mod common;

use std::time::Duration;

use std::collections::HashMap;

use anyhow::{ensure, Context as _, Result};
use common::partition::Partition;
use common::{cloud, controlled::api, edge, edge_via, join, pod};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubeedge_bench::proxy::Proxy;
use kubeedge_cloud::hub::HubConfig;
use kubeedge_cloud::hub::HubEvent;
use kubeedge_cloud::ownership::{record_name, NodeOwnership};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

async fn holder(leases: &Api<Lease>, node: &str) -> Option<String> {
    leases
        .get_opt(&record_name(node))
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// Polls `holder` of `node` until it is `want` (10 s at most).
async fn until_holder(leases: &Api<Lease>, node: &str, want: Option<&str>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = holder(leases, node).await;
        if now.as_deref() == want {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "holder of {node}: {now:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_follow_sessions_and_without_a_shared_ledger_a_taken_node_loses_its_queue(
) -> Result<()> {
    let (_api_dir, client) = api().await?;
    common::controlled::namespace(&client, "kubeedge").await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kubeedge");
    let hub = cloud(HubConfig::default()).await?;
    let cancel = CancellationToken::new();
    let mut ownership = NodeOwnership::new("kubeedge", "replica-a");
    ownership.shared_ledger = false;
    tokio::spawn(ownership.run(client.clone(), hub.hub.clone(), cancel.clone()));

    // The websocket arrives: this replica holds the node; it leaves: nobody does.
    let dir = tempfile::tempdir()?;
    let tls = join(&hub, "e1", dir.path()).await?;
    let e1 = edge(&hub, "e1", tls.clone());
    until_holder(&leases, "e1", Some("replica-a")).await?;
    e1.cancel.cancel();
    until_holder(&leases, "e1", None).await?;
    let e1 = edge(&hub, "e1", tls);
    until_holder(&leases, "e1", Some("replica-a")).await?;

    // e2 is not connected here; changes for it are queued. Replica B takes it: the queue goes.
    for i in 0..3 {
        hub.down
            .send("e2", pod(&format!("uid-{i}"), "5", "update"))
            .await?;
    }
    ensure!(hub.down.queued("e2") == 3);
    let taken: Lease = serde_json::from_value(serde_json::json!({
        "metadata": {"name": record_name("e2"), "labels": {"kubeedge.io/owner-record": "node"}},
        "spec": {"holderIdentity": "replica-b"}
    }))?;
    leases.create(&PostParams::default(), &taken).await?;
    common::eventually("e2's queue dropped", || hub.down.queued("e2") == 0).await?;
    // The capacity came back: the node can be queued for again.
    hub.down.send("e2", pod("uid-9", "6", "update")).await?;
    ensure!(hub.down.queued("e2") == 1);

    // Another replica taking e1, which has a session here, changes nothing here until the
    // session ends; then e1's record is left to B.
    let mut l = leases.get(&record_name("e1")).await?;
    if let Some(s) = l.spec.as_mut() {
        s.holder_identity = Some("replica-b".into());
    }
    leases
        .replace(&record_name("e1"), &PostParams::default(), &l)
        .await?;
    e1.cancel.cancel();
    common::eventually("e1's session ended", || !hub.hub.is_connected("e1")).await?;
    tokio::time::timeout(Duration::from_secs(5), e1.task)
        .await
        .ok();
    ensure!(holder(&leases, "e1").await.as_deref() == Some("replica-b"));
    cancel.cancel();
    Ok(())
}

/// One replica: a hub on the shared PKI, its node records and every controller, on `client`.
async fn replica(
    first: Option<&common::Cloud>,
    client: &kube::Client,
    identity: &str,
) -> Result<(common::Cloud, CancellationToken)> {
    replica_with(
        first,
        client,
        NodeOwnership::new("kubeedge", identity),
        common::fast(),
    )
    .await
}

async fn replica_with(
    first: Option<&common::Cloud>,
    client: &kube::Client,
    ownership: NodeOwnership,
    hub: HubConfig,
) -> Result<(common::Cloud, CancellationToken)> {
    let mut cloud = match first {
        Some(a) => a.replica(hub).await?,
        None => cloud(hub).await?,
    };
    let (cancel, _task) = common::controlled::start_controllers(&mut cloud, client);
    tokio::spawn(ownership.run(client.clone(), cloud.hub.clone(), cancel.clone()));
    Ok((cloud, cancel))
}

fn busy_pod(name: &str, node: &str) -> Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
    }))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_moving_between_replicas_gets_every_message_once() -> Result<()> {
    let (_api_dir, client) = api().await?;
    common::controlled::namespace(&client, "kubeedge").await?;
    common::controlled::edge_node(&client, "e1").await?;
    let (a, stop_a) = replica(None, &client, "replica-a").await?;
    let (b, stop_b) = replica(Some(&a), &client, "replica-b").await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kubeedge");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // The edge reaches the replicas through one address, as through a load balancer.
    let lb = Proxy::start(a.ws).await?;
    let dir = tempfile::tempdir()?;
    let tls = join(&a, "e1", dir.path()).await?;
    let mut e = edge_via(lb.addr, "e1", tls, None);
    until_holder(&leases, "e1", Some("replica-a")).await?;

    // Pods are created and updated while the edge moves A -> B -> A; it acks what it gets.
    const PODS: usize = 40;
    let producer = {
        let pods = pods.clone();
        tokio::spawn(async move {
            for i in 0..PODS {
                pods.create(&PostParams::default(), &busy_pod(&format!("p{i}"), "e1")?)
                    .await?;
                if i % 2 == 0 {
                    let patch = serde_json::json!({"metadata": {"labels": {"step": "2"}}});
                    pods.patch(
                        &format!("p{i}"),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
                }
            }
            anyhow::Ok(())
        })
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut latest: HashMap<String, String> = HashMap::new();
    let mut moves = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if producer.is_finished() && latest.len() == PODS {
            // Done once every pod's current version has arrived.
            let mut all = true;
            for p in pods.list(&Default::default()).await? {
                let (uid, rv) = (
                    p.metadata.uid.unwrap_or_default(),
                    p.metadata.resource_version.unwrap_or_default(),
                );
                all &= latest.get(&uid) == Some(&rv);
            }
            if all {
                break;
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        ensure!(
            !left.is_zero(),
            "not every version arrived: {} of {PODS} pods, moves {moves:?}",
            latest.len()
        );
        let Ok(msg) =
            tokio::time::timeout(left.min(Duration::from_millis(200)), e.inbound.recv()).await
        else {
            continue;
        };
        let msg = msg.context("edge closed")?;
        if !msg.route.resource.contains("/pod/") {
            e.client.send(msg.ack()).await?;
            continue;
        }
        let uid = msg.content.decode::<serde_json::Value>()?["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let rv = msg.header.resource_version.clone();
        *seen.entry(format!("{uid}@{rv}")).or_default() += 1;
        if latest
            .get(&uid)
            .is_none_or(|v| v.parse::<u64>().unwrap_or(0) < rv.parse::<u64>().unwrap_or(0))
        {
            latest.insert(uid, rv);
        }
        e.client.send(msg.ack()).await?;
        // Move while messages and acks are in flight: to B after a third, back to A after
        // two thirds of the pods.
        let target = match (latest.len(), moves.len()) {
            (n, 0) if n >= PODS / 3 => Some(("B", b.ws)),
            (n, 1) if n >= 2 * PODS / 3 => Some(("A", a.ws)),
            _ => None,
        };
        if let Some((name, addr)) = target {
            lb.retarget(addr);
            lb.cut();
            moves.push(name);
        }
    }
    producer.await??;
    ensure!(moves == ["B", "A"], "{moves:?}");
    until_holder(&leases, "e1", Some("replica-a")).await?;
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(dups.is_empty(), "delivered more than once: {dups:?}");
    // Nothing is left queued for the edge on either replica: B's queue emptied as the edge
    // acked through A.
    common::eventually("both outboxes drained", || {
        a.down.queued("e1") == 0 && b.down.queued("e1") == 0
    })
    .await
    .with_context(|| format!("A {} B {}", a.down.queued("e1"), b.down.queued("e1")))?;
    // The ledger in the API ends at each pod's version, whichever replica wrote last.
    let syncs: Api<kubeedge_proto::api::reliablesyncs::ObjectSync> =
        Api::namespaced(client.clone(), "default");
    common::within("the object syncs at the pods' versions", async {
        loop {
            let rows: HashMap<String, String> = syncs
                .list(&Default::default())
                .await?
                .into_iter()
                .filter_map(|o| {
                    let uid = o.metadata.name?.strip_prefix("e1.")?.to_owned();
                    Some((uid, o.status?.object_resource_version))
                })
                .collect();
            if rows == latest {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await??;
    stop_a.cancel();
    stop_b.cancel();
    Ok(())
}

/// Short heartbeat timings, so that the faults play out in seconds.
fn quick(identity: &str) -> NodeOwnership {
    let mut o = NodeOwnership::new("kubeedge", identity);
    o.lease_duration = Duration::from_secs(3);
    o.renew_deadline = Duration::from_secs(2);
    o.retry_period = Duration::from_millis(300);
    o
}

/// A hub that keeps a silent session for a minute: a half-open link lingers on its side.
fn patient() -> HubConfig {
    let mut c = common::fast();
    c.keepalive_interval = Duration::from_secs(60);
    c
}

/// When each replica started and stopped writing to `node`, from the hubs' events.
#[derive(Clone, Default)]
struct Timeline(Arc<Mutex<Vec<Stamp>>>);

/// When, which replica, and whether it started (or stopped) writing.
type Stamp = (tokio::time::Instant, &'static str, bool);

impl Timeline {
    fn follow(&self, replica: &'static str, hub: &kubeedge_cloud::hub::CloudHub, node: &str) {
        let (mut events, log, node) = (hub.events(), self.0.clone(), node.to_owned());
        tokio::spawn(async move {
            while let Ok(ev) = events.recv().await {
                let serving = match ev {
                    HubEvent::Admitted { node: n } if n == node => true,
                    HubEvent::Disconnected { node: n } if n == node => false,
                    _ => continue,
                };
                log.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((tokio::time::Instant::now(), replica, serving));
            }
        });
    }

    fn events(&self) -> Vec<Stamp> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Fails if two replicas ever wrote to the node at once; returns when `replica` started
    /// writing last.
    fn one_writer(&self, replica: &str) -> Result<tokio::time::Instant> {
        let mut writing: Vec<&str> = Vec::new();
        let mut last = None;
        for (at, r, serving) in self.events() {
            if serving {
                ensure!(
                    writing.iter().all(|w| *w == r),
                    "{r} started writing while {writing:?} still did: {:?}",
                    self.events()
                );
                writing.push(r);
                if r == replica {
                    last = Some(at);
                }
            } else {
                writing.retain(|w| *w != r);
            }
        }
        last.context("never admitted")
    }
}

/// The edge's way to the replicas: a balancer in front, and a link to A that can go half-open.
struct Paths {
    lb: Proxy,
    to_a: Proxy,
}

impl Paths {
    async fn new(a: &common::Cloud) -> Result<Self> {
        let to_a = Proxy::start(a.ws).await?;
        let lb = Proxy::start(to_a.addr).await?;
        Ok(Self { lb, to_a })
    }

    /// The link to A goes silent both ways, and the balancer sends new connections to `to`.
    fn half_open_to_a(&self, to: std::net::SocketAddr) {
        self.to_a.blackhole(true);
        self.lb.retarget(to);
    }
}

async fn until_admitted(t: &Timeline, replica: &str) -> Result<()> {
    common::within(&format!("{replica} admitted"), async {
        while !t.events().iter().any(|(_, r, s)| *r == replica && *s) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Replicas A and B (short heartbeats, patient hubs) with the edge `e1` on A through
/// [`Paths`], its writes followed on both hubs' [`Timeline`].
struct Pair {
    b: common::Cloud,
    timeline: Timeline,
    paths: Paths,
    _a: (common::Cloud, CancellationToken),
    _stop_b: CancellationToken,
    _edge: common::Edge,
    _dir: tempfile::TempDir,
}

impl Pair {
    async fn edge_on_a(
        client_a: &kube::Client,
        ownership_a: NodeOwnership,
        client_b: &kube::Client,
        leases: &Api<Lease>,
    ) -> Result<Self> {
        let (a, stop_a) = replica_with(None, client_a, ownership_a, patient()).await?;
        let (b, stop_b) = replica_with(Some(&a), client_b, quick("replica-b"), patient()).await?;
        let timeline = Timeline::default();
        timeline.follow("A", &a.hub, "e1");
        timeline.follow("B", &b.hub, "e1");
        let paths = Paths::new(&a).await?;
        let dir = tempfile::tempdir()?;
        let tls = join(&a, "e1", dir.path()).await?;
        let edge = edge_via(paths.lb.addr, "e1", tls, None);
        until_admitted(&timeline, "A").await?;
        until_holder(leases, "e1", Some("replica-a")).await?;
        Ok(Self {
            b,
            timeline,
            paths,
            _a: (a, stop_a),
            _stop_b: stop_b,
            _edge: edge,
            _dir: dir,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_replica_lets_go_of_a_node_whose_edge_reappears_elsewhere() -> Result<()> {
    let (_api_dir, client) = api().await?;
    common::controlled::namespace(&client, "kubeedge").await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kubeedge");
    let Pair {
        b, timeline, paths, ..
    } = &Pair::edge_on_a(&client, quick("replica-a"), &client, &leases).await?;

    // The edge's link to A goes half-open: A still has a session, the edge dials B. B asks,
    // and A ends its stale session and lets go at once (well within a heartbeat's expiry).
    let moved = tokio::time::Instant::now();
    paths.half_open_to_a(b.ws);
    until_admitted(timeline, "B").await?;
    let b_writes = timeline.one_writer("B")?;
    ensure!(
        b_writes - moved < Duration::from_secs(3),
        "B waited {:?}",
        b_writes - moved
    );
    until_holder(&leases, "e1", Some("replica-b")).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_the_api_stops_writing_before_another_takes_its_nodes() -> Result<()>
{
    let (_api_dir, service) = common::controlled::api_service().await?;
    let client = kube::Client::new(service.clone(), "default");
    common::controlled::namespace(&client, "kubeedge").await?;
    let cut = CancellationToken::new();
    let client_a = kube::Client::new(Partition::new(service, cut.clone()), "default");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kubeedge");
    let ownership_a = quick("replica-a");
    let serving_a = ownership_a.serving();
    let Pair {
        b, timeline, paths, ..
    } = &Pair::edge_on_a(&client_a, ownership_a, &client, &leases).await?;
    ensure!(*serving_a.borrow());

    // A loses the API, and its edge link goes half-open: A keeps a session it cannot hear
    // from, and cannot see B asking. B must wait for A's heartbeat to expire, and A must
    // have stopped writing before then.
    let cut_at = tokio::time::Instant::now();
    cut.cancel();
    paths.half_open_to_a(b.ws);
    until_admitted(timeline, "B").await?;
    let b_writes = timeline.one_writer("B")?;
    let a_stopped = timeline
        .events()
        .iter()
        .find(|(at, r, s)| *r == "A" && !*s && *at > cut_at)
        .map(|(at, _, _)| *at)
        .context("A never ended its session")?;
    ensure!(!*serving_a.borrow(), "A still serves without the API");
    ensure!(
        a_stopped - cut_at <= Duration::from_millis(2_500),
        "A stepped down after {:?}",
        a_stopped - cut_at
    );
    ensure!(
        b_writes - cut_at >= Duration::from_millis(2_500),
        "B took the node {:?} after the cut, before A's heartbeat could expire",
        b_writes - cut_at
    );
    println!(
        "A stopped writing {:.1} s after losing the API; B took the node after {:.1} s",
        (a_stopped - cut_at).as_secs_f64(),
        (b_writes - cut_at).as_secs_f64()
    );
    until_holder(&leases, "e1", Some("replica-b")).await?;
    Ok(())
}
