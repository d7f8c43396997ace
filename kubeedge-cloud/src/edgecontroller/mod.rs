//! EdgeController: Kubernetes objects down to edge nodes, and what edges report back up.
//!
//! Down (kube-runtime watches):
//! - Nodes labelled `node-role.kubernetes.io/edge`: the set of edge nodes. A deleted Node's
//!   ledger rows are dropped and its session is closed, as upstream does.
//! - Pods bound to a node (`spec.nodeName` set); those on edge nodes go to that node only, as
//!   `insert`, `update` (also graceful deletion) and `delete`.
//! - ConfigMaps and Secrets: sent only to the nodes running pods that use them (volumes,
//!   projected volumes, env, envFrom, image pull secrets), when a pod starts using one and
//!   whenever it changes. Upstream sent every pod in the cluster to every node (#3593).
//!
//! Every push goes through the sync ledger ([`SyncHandle`]), so nothing an edge already acked
//! is sent again, and the resync can ask the watch caches ([`LiveObjects`]) what each node
//! should hold.
//!
//! Up: the messages of PROTOCOL.md §4.2, answered with upstream's exact reply shapes. Messages
//! are handled in parallel across nodes and in order per node.

mod refs;
mod state;
mod upstream;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kubeedge_proto::Compat;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

pub use state::EDGE_NODE_LABEL;

use crate::error::ControllerError;
use crate::hub::{CloudHub, Upstream};
use crate::synccontroller::{Live, LiveObjects, SyncHandle};
use state::{Kind, Out, State};
pub(crate) use upstream::status_error;

/// EdgeController settings (cloudcore.yaml `modules.edgeController`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EdgeControllerConfig {
    /// Workers handling edge messages (each node's messages stay on one worker, in order).
    pub upstream_workers: usize,
    /// Messages queued per worker.
    pub worker_queue: usize,
    /// Which upstream's error replies to follow.
    pub compat: Compat,
    /// Run each node's requests as that node (`system:node:<name>` in `system:nodes`), so
    /// that the API server's Node authorizer and NodeRestriction decide them. Needs the
    /// `impersonate` permission on a real cluster; cloudcore turns it on for its embedded API.
    pub impersonate_nodes: bool,
}

impl Default for EdgeControllerConfig {
    fn default() -> Self {
        Self {
            upstream_workers: 32,
            worker_queue: 256,
            compat: Compat::Latest,
            impersonate_nodes: false,
        }
    }
}

/// The controller. Cheap to clone.
#[derive(Clone)]
pub struct EdgeController {
    client: kube::Client,
    hub: CloudHub,
    sync: SyncHandle,
    state: Arc<Mutex<State>>,
    config: EdgeControllerConfig,
}

impl std::fmt::Debug for EdgeController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeController")
            .field("edge_nodes", &self.lock().edge_nodes())
            .finish_non_exhaustive()
    }
}

struct Cache(Arc<Mutex<State>>);

impl LiveObjects for Cache {
    fn lookup(
        &self,
        node: &str,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Live {
        if api_version != "v1" {
            return Live::NotMine;
        }
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .live(node, kind, namespace, name)
    }
}

impl EdgeController {
    /// A controller watching through `client`, sending through `sync`. It registers its
    /// caches with the sync ledger's resync.
    pub fn new(
        client: kube::Client,
        hub: CloudHub,
        sync: SyncHandle,
        config: EdgeControllerConfig,
    ) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        sync.add_source(Arc::new(Cache(state.clone())));
        Self {
            client,
            hub,
            sync,
            state,
            config,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True once every watch has completed its first list.
    pub fn is_synced(&self) -> bool {
        let s = self.lock().synced;
        s.nodes && s.pods && s.configmaps && s.secrets
    }

    /// True when `node` is a known edge node.
    pub fn is_edge_node(&self, node: &str) -> bool {
        self.lock().is_edge(node)
    }

    /// Watch and handle `upstream` (the edge controller's share of the hub's messages) until
    /// `cancel`.
    pub async fn run(
        self,
        upstream: mpsc::Receiver<Upstream>,
        cancel: CancellationToken,
    ) -> Result<(), ControllerError> {
        info!("edge controller starting");
        let nodes = self.watch_nodes(cancel.clone());
        let pods = self.watch_pods(cancel.clone());
        let cms = self.watch_configmaps(cancel.clone());
        let secrets = self.watch_secrets(cancel.clone());
        let up = self.upstream(upstream, cancel.clone());
        let (a, b, c, d, e) = tokio::join!(nodes, pods, cms, secrets, up);
        a.and(b).and(c).and(d).and(e)
    }

    async fn deliver(&self, outs: Vec<Out>) {
        for o in outs {
            if let Err(e) = self.sync.send(&o.node, o.msg).await {
                warn!(node = %o.node, error = %e, "push failed");
            }
        }
    }

    async fn follow<K, S, F>(
        &self,
        what: &'static str,
        kind: Kind,
        stream: S,
        cancel: CancellationToken,
        mut apply: F,
    ) -> Result<(), ControllerError>
    where
        S: Stream<Item = Result<Event<K>, watcher::Error>>,
        F: FnMut(&mut State, Event<K>) -> (Vec<Out>, Option<String>),
    {
        let mut stream = std::pin::pin!(stream);
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                ev = stream.next() => ev,
            };
            match ev {
                None => return Err(ControllerError::WatchEnded { what }),
                Some(Err(e)) => warn!(watch = what, error = %e, "watch failed; retrying"),
                Some(Ok(ev)) => {
                    let (outs, gone) = {
                        let mut st = self.lock();
                        match ev {
                            Event::Init => {
                                st.relist_begin(kind);
                                (Vec::new(), Vec::new())
                            }
                            Event::InitDone => {
                                debug!(watch = what, "listed");
                                st.relist_done(kind)
                            }
                            other => {
                                let (outs, gone) = apply(&mut st, other);
                                (outs, gone.into_iter().collect())
                            }
                        }
                    };
                    for n in gone {
                        self.node_gone(n);
                    }
                    self.deliver(outs).await;
                }
            }
        }
    }

    /// A node left the edge selection: if the Node is really gone, forget it.
    fn node_gone(&self, node: String) {
        self.lock().node_removed(&node);
        let this = self.clone();
        tokio::spawn(async move {
            let api: Api<Node> = Api::all(this.client.clone());
            match api.get_opt(&node).await {
                Ok(None) => {
                    info!(%node, "edge node deleted");
                    this.sync.forget_node(&node);
                    this.hub.disconnect(&node).await;
                }
                Ok(Some(_)) => info!(%node, "node is no longer an edge node"),
                Err(e) => debug!(%node, error = %e, "node lookup failed"),
            }
        });
    }

    async fn watch_nodes(&self, cancel: CancellationToken) -> Result<(), ControllerError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let cfg = watcher::Config::default().labels(EDGE_NODE_LABEL);
        let stream = watcher::watcher(api, cfg).default_backoff();
        self.follow("nodes", Kind::Nodes, stream, cancel, |st, ev| match ev {
            Event::Apply(n) | Event::InitApply(n) => (st.node_applied(&n), None),
            Event::Delete(n) => (Vec::new(), n.metadata.name),
            Event::Init | Event::InitDone => (Vec::new(), None),
        })
        .await
    }

    async fn watch_pods(&self, cancel: CancellationToken) -> Result<(), ControllerError> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let cfg = watcher::Config::default().fields("spec.nodeName!=");
        let stream = watcher::watcher(api, cfg).default_backoff();
        self.follow("pods", Kind::Pods, stream, cancel, |st, ev| match ev {
            Event::Apply(p) | Event::InitApply(p) => (st.pod_applied(Arc::new(p)), None),
            Event::Delete(p) => (st.pod_deleted(&p), None),
            Event::Init | Event::InitDone => (Vec::new(), None),
        })
        .await
    }

    async fn watch_configmaps(&self, cancel: CancellationToken) -> Result<(), ControllerError> {
        let api: Api<ConfigMap> = Api::all(self.client.clone());
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        self.follow(
            "configmaps",
            Kind::ConfigMaps,
            stream,
            cancel,
            |st, ev| match ev {
                Event::Apply(c) | Event::InitApply(c) => (st.configmap_applied(Arc::new(c)), None),
                Event::Delete(c) => (st.configmap_deleted(&c), None),
                Event::Init | Event::InitDone => (Vec::new(), None),
            },
        )
        .await
    }

    async fn watch_secrets(&self, cancel: CancellationToken) -> Result<(), ControllerError> {
        let api: Api<Secret> = Api::all(self.client.clone());
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        self.follow(
            "secrets",
            Kind::Secrets,
            stream,
            cancel,
            |st, ev| match ev {
                Event::Apply(s) | Event::InitApply(s) => (st.secret_applied(Arc::new(s)), None),
                Event::Delete(s) => (st.secret_deleted(&s), None),
                Event::Init | Event::InitDone => (Vec::new(), None),
            },
        )
        .await
    }

    async fn upstream(
        &self,
        mut rx: mpsc::Receiver<Upstream>,
        cancel: CancellationToken,
    ) -> Result<(), ControllerError> {
        let ctx = Arc::new(upstream::Ctx {
            client: self.client.clone(),
            cloud: self.client.clone(),
            sync: self.sync.clone(),
            state: self.state.clone(),
            compat: self.config.compat,
            impersonate: self.config.impersonate_nodes,
        });
        let workers = self.config.upstream_workers.max(1);
        let mut queues = Vec::with_capacity(workers);
        let tracker = tokio_util::task::TaskTracker::new();
        for i in 0..workers {
            let (tx, mut wrx) = mpsc::channel::<Upstream>(self.config.worker_queue.max(1));
            queues.push(tx);
            let ctx = ctx.clone();
            let cancel = cancel.clone();
            tracker.spawn(
                async move {
                    loop {
                        let up = tokio::select! {
                            _ = cancel.cancelled() => return,
                            up = wrx.recv() => match up { Some(u) => u, None => return },
                        };
                        let span = tracing::debug_span!("msg", node = %up.node, msg_id = %up.msg.id(), op = up.msg.route.operation_str(), resource = %up.msg.route.resource);
                        let reply = upstream::handle(&ctx, &up.node, &up.msg).instrument(span).await;
                        if let Some(reply) = reply {
                            if let Err(e) = ctx.sync.send(&up.node, reply).await {
                                warn!(node = %up.node, error = %e, "reply not sent");
                            }
                        }
                    }
                }
                .instrument(tracing::debug_span!("edgecontroller-worker", worker = i)),
            );
        }
        loop {
            let up = tokio::select! {
                _ = cancel.cancelled() => break,
                up = rx.recv() => match up { Some(u) => u, None => break },
            };
            let mut h = DefaultHasher::new();
            up.node.hash(&mut h);
            let i = usize::try_from(h.finish()).unwrap_or_default() % workers;
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = queues[i].send(up) => if r.is_err() { break },
            }
        }
        drop(queues);
        tracker.close();
        tracker.wait().await;
        Ok(())
    }
}
