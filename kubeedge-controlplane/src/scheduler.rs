//! The scheduler: binds each pending pod to the best feasible node.
//!
//! Decisions are made one pod at a time on the watch caches plus an in-memory ledger of what
//! each node already carries (bound pods, and pods assumed bound while their binding is in
//! flight), so back-to-back decisions never overcommit a node. Bindings run concurrently.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::events::{self, Recorder};
use super::informer::{synced, Change, Informers};
use super::matching;
use super::pod::{self, Resources};
use super::ports::{self, HostPort};
use super::queue::{Key, WorkQueue};
use super::{api_code, ControlPlaneConfig, ControlPlaneError};

/// The scheduler name served by default, as upstream's.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

#[derive(Debug, Clone)]
struct Placed {
    node: String,
    requests: Resources,
    owner: Option<String>,
    ports: Vec<HostPort>,
}

impl Placed {
    fn of(p: &Pod, node: &str) -> Self {
        Placed {
            node: node.to_owned(),
            requests: p.spec.as_ref().map(pod::pod_requests).unwrap_or_default(),
            owner: pod::controller_of(&p.metadata).map(|r| r.uid.clone()),
            ports: p.spec.as_ref().map(ports::host_ports).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Default)]
struct NodeUsage {
    requested: Resources,
    pods: i64,
    by_owner: HashMap<String, i64>,
    /// Host ports held on the node (a multiset: one entry per holding pod).
    ports: Vec<HostPort>,
}

/// What every node carries, by pod uid.
#[derive(Debug, Default)]
struct Ledger {
    placed: HashMap<String, Placed>,
    assumed: HashSet<String>,
    usage: HashMap<String, NodeUsage>,
}

impl Ledger {
    fn set(&mut self, uid: &str, p: Option<Placed>) {
        if let Some(old) = self.placed.remove(uid) {
            if let Some(u) = self.usage.get_mut(&old.node) {
                for (k, v) in &old.requests {
                    *u.requested.entry(k.clone()).or_insert(0) -= v;
                }
                u.pods -= 1;
                for hp in &old.ports {
                    if let Some(i) = u.ports.iter().position(|x| x == hp) {
                        u.ports.swap_remove(i);
                    }
                }
                if let Some(o) = &old.owner {
                    if let Some(c) = u.by_owner.get_mut(o) {
                        *c -= 1;
                        if *c <= 0 {
                            u.by_owner.remove(o);
                        }
                    }
                }
            }
        }
        if let Some(p) = p {
            let u = self.usage.entry(p.node.clone()).or_default();
            for (k, v) in &p.requests {
                *u.requested.entry(k.clone()).or_insert(0) += v;
            }
            u.pods += 1;
            u.ports.extend(p.ports.iter().cloned());
            if let Some(o) = &p.owner {
                *u.by_owner.entry(o.clone()).or_insert(0) += 1;
            }
            self.placed.insert(uid.to_owned(), p);
        }
    }
}

struct Inner {
    config: ControlPlaneConfig,
    pods: Store<Pod>,
    nodes: Store<Node>,
    queue: WorkQueue<Key>,
    ledger: Mutex<Ledger>,
    /// Parsed allocatable resources by node name, with the node's resourceVersion.
    allocatable: Mutex<HashMap<String, (String, Arc<Resources>)>>,
    unschedulable: Mutex<HashSet<Key>>,
    recorder: Recorder,
    client: Client,
}

impl Inner {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn serves(&self, p: &Pod) -> bool {
        let name = p
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or_default();
        name.is_empty() || name == self.config.scheduler_name
    }

    fn pending(&self, p: &Pod) -> bool {
        pod::node_name(p).is_none() && pod::is_active(p) && self.serves(p)
    }

    /// Queues every pod that failed to fit: something changed that may let it fit now.
    fn retry_unschedulable(&self) {
        let keys: Vec<Key> = self
            .unschedulable
            .lock()
            .map(|mut u| u.drain().collect())
            .unwrap_or_default();
        for k in keys {
            self.queue.add(k);
        }
    }

    fn on_pod(&self, change: &Change<'_, Pod>) {
        let p = change.object();
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let mut freed = false;
        {
            let mut l = self.ledger();
            match change {
                Change::Deleted(_) => {
                    l.assumed.remove(&uid);
                    freed = l.placed.contains_key(&uid);
                    l.set(&uid, None);
                }
                Change::Applied { .. } => match pod::node_name(p) {
                    Some(node) if !pod::is_terminal(p) => {
                        l.assumed.remove(&uid);
                        l.set(&uid, Some(Placed::of(p, node)));
                    }
                    _ if l.assumed.contains(&uid) => {}
                    _ => {
                        freed = l.placed.contains_key(&uid);
                        l.set(&uid, None);
                    }
                },
            }
        }
        if freed {
            self.retry_unschedulable();
        }
        if let Change::Applied { new, .. } = change {
            if self.pending(new) && !self.ledger().assumed.contains(&uid) {
                self.queue.add(Key::of(*new));
            }
        }
    }

    fn on_node(&self, change: &Change<'_, Node>) {
        // Heartbeats change nothing that matters here; retry only on a relevant change.
        let relevant = |n: &Node| {
            (
                n.metadata.labels.clone(),
                n.spec.as_ref().map(|s| (s.taints.clone(), s.unschedulable)),
                matching::node_ready_status(n).to_owned(),
                n.status.as_ref().map(|s| s.allocatable.clone()),
            )
        };
        let changed = match change {
            Change::Applied {
                old: Some(old),
                new,
            } => relevant(old) != relevant(new),
            _ => true,
        };
        if let Change::Deleted(n) = change {
            if let Some(name) = n.metadata.name.as_deref() {
                self.allocatable
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(name);
            }
        }
        if changed {
            self.retry_unschedulable();
        }
    }
}

/// The scheduler controller.
pub(crate) struct Scheduler {
    inner: Arc<Inner>,
}

/// Why one node was rejected: the first of upstream's default filters (NodeUnschedulable,
/// TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit) that fails, in its words.
fn filter(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    requests: &Resources,
    wanted_ports: &[HostPort],
    node: &Node,
    alloc: &Resources,
    usage: Option<&NodeUsage>,
) -> Result<(), String> {
    let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
    let tols = spec.tolerations.as_deref();
    if unschedulable {
        let taint = k8s_openapi::api::core::v1::Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !tols
            .unwrap_or_default()
            .iter()
            .any(|t| matching::tolerates(t, &taint))
        {
            return Err("node(s) were unschedulable".into());
        }
    }
    if let Some(t) = matching::untolerated_taint(node, tols) {
        return Err(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or_default()
        ));
    }
    if matching::node_ready_status(node) != "True" {
        return Err("node(s) were not ready".into());
    }
    if !matching::node_matches(spec, node) {
        return Err("node(s) didn't match Pod's node affinity/selector".into());
    }
    if !wanted_ports.is_empty() && usage.is_some_and(|u| ports::conflict(&u.ports, wanted_ports)) {
        return Err(ports::NO_FREE_PORTS.into());
    }
    if alloc.is_empty() {
        // A node that reports no capacity at all is not limited.
        return Ok(());
    }
    let empty = NodeUsage::default();
    let usage = usage.unwrap_or(&empty);
    if let Some(max) = alloc.get("pods") {
        if i128::from(usage.pods + 1) * 1000 > *max {
            return Err("Too many pods".into());
        }
    }
    for (r, req) in requests {
        if *req <= 0 {
            continue;
        }
        let have = alloc.get(r).copied().unwrap_or(0);
        let used = usage.requested.get(r).copied().unwrap_or(0);
        if used + req > have {
            return Err(format!("Insufficient {r}"));
        }
    }
    Ok(())
}

/// Higher is better.
fn score(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    requests: &Resources,
    owner: Option<&str>,
    node: &Node,
    alloc: &Resources,
    usage: Option<&NodeUsage>,
) -> i64 {
    let empty = NodeUsage::default();
    let usage = usage.unwrap_or(&empty);
    let mut free = Vec::new();
    for r in ["cpu", "memory"] {
        let have = alloc.get(r).copied().unwrap_or(0);
        if have > 0 {
            let used = usage.requested.get(r).copied().unwrap_or(0)
                + requests.get(r).copied().unwrap_or(0);
            free.push(i64::try_from(((have - used).max(0) * 100) / have).unwrap_or(0));
        }
    }
    let least_allocated = if free.is_empty() {
        50
    } else {
        free.iter().sum::<i64>() / i64::try_from(free.len()).unwrap_or(1)
    };
    let same_owner = owner
        .and_then(|o| usage.by_owner.get(o))
        .copied()
        .unwrap_or(0);
    least_allocated + matching::preferred_score(spec, node)
        - 100 * same_owner
        - 50 * matching::prefer_no_schedule_count(node, spec.tolerations.as_deref())
}

/// Upstream's summary: "0/3 nodes are available: 1 node(s) ..., 2 node(s) ....".
fn unschedulable_message(total: usize, reasons: &BTreeMap<String, usize>) -> String {
    if total == 0 {
        return "no nodes available to schedule pods".into();
    }
    let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    format!("0/{total} nodes are available: {}.", parts.join(", "))
}

enum Decision {
    Bind(String),
    Unschedulable(String),
}

impl Scheduler {
    pub(crate) fn new(
        client: &Client,
        config: &ControlPlaneConfig,
        inf: &mut Informers,
        recorder: Recorder,
    ) -> Self {
        let inner = Arc::new(Inner {
            config: config.clone(),
            pods: inf.pods.store(),
            nodes: inf.nodes.store(),
            queue: WorkQueue::new(),
            ledger: Mutex::new(Ledger::default()),
            allocatable: Mutex::new(HashMap::new()),
            unschedulable: Mutex::new(HashSet::new()),
            recorder,
            client: client.clone(),
        });
        let i = Arc::clone(&inner);
        inf.pods.on(move |c| i.on_pod(c));
        let i = Arc::clone(&inner);
        inf.nodes.on(move |c| i.on_node(c));
        Self { inner }
    }

    fn decide(&self, p: &Pod) -> Decision {
        let Some(spec) = p.spec.as_ref() else {
            return Decision::Unschedulable("the pod has no spec".into());
        };
        let requests = pod::pod_requests(spec);
        let wanted_ports = ports::host_ports(spec);
        let owner = pod::controller_of(&p.metadata).map(|r| r.uid.as_str());
        let nodes = self.inner.nodes.state();
        let ledger = self.inner.ledger();
        let mut allocs = self
            .inner
            .allocatable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut best: Option<(i64, i64, &str)> = None;
        for n in &nodes {
            let name = n.metadata.name.as_deref().unwrap_or_default();
            let usage = ledger.usage.get(name);
            // A node's allocatable is parsed once per version of the node object.
            let rv = n.metadata.resource_version.as_deref().unwrap_or_default();
            let alloc = match allocs.get(name) {
                Some((v, a)) if v == rv => Arc::clone(a),
                _ => {
                    let a = Arc::new(pod::allocatable(n));
                    allocs.insert(name.to_owned(), (rv.to_owned(), Arc::clone(&a)));
                    a
                }
            };
            match filter(spec, &requests, &wanted_ports, n, &alloc, usage) {
                Err(r) => *reasons.entry(r).or_insert(0) += 1,
                Ok(()) => {
                    let s = score(spec, &requests, owner, n, &alloc, usage);
                    let pods = usage.map_or(0, |u| u.pods);
                    let better = match best {
                        None => true,
                        Some((bs, bp, bn)) => {
                            (s, -pods) > (bs, -bp) || ((s, -pods) == (bs, -bp) && name < bn)
                        }
                    };
                    if better {
                        best = Some((s, pods, name));
                    }
                }
            }
        }
        match best {
            Some((_, _, name)) => Decision::Bind(name.to_owned()),
            None => Decision::Unschedulable(unschedulable_message(nodes.len(), &reasons)),
        }
    }

    fn schedule_one(&self, key: &Key, binds: &mut JoinSet<()>) {
        let inner = &self.inner;
        let Some(p) = inner.pods.get(&key.object_ref()) else {
            return;
        };
        let uid = p.metadata.uid.clone().unwrap_or_default();
        if !inner.pending(&p) || inner.ledger().assumed.contains(&uid) {
            return;
        }
        match self.decide(&p) {
            Decision::Bind(node) => {
                {
                    let mut l = inner.ledger();
                    l.assumed.insert(uid.clone());
                    l.set(&uid, Some(Placed::of(&p, &node)));
                }
                let inner = Arc::clone(inner);
                let key = key.clone();
                binds.spawn(async move { bind(inner, key, p, uid, node).await });
            }
            Decision::Unschedulable(message) => {
                if let Ok(mut u) = inner.unschedulable.lock() {
                    u.insert(key.clone());
                }
                let already = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
                    .is_some_and(|c| {
                        c.status == "False" && c.message.as_deref() == Some(message.as_str())
                    });
                if already {
                    return;
                }
                tracing::debug!(pod = %key, %message, "unschedulable");
                let inner = Arc::clone(inner);
                binds.spawn(async move { mark_unschedulable(inner, p, message).await });
            }
        }
    }

    /// Runs until `cancel` fires.
    pub(crate) async fn run(self, cancel: CancellationToken) -> Result<(), ControlPlaneError> {
        synced(&self.inner.pods, "pods").await?;
        synced(&self.inner.nodes, "nodes").await?;
        let mut binds: JoinSet<()> = JoinSet::new();
        let mut retry = tokio::time::interval(self.inner.config.unschedulable_retry);
        retry.tick().await;
        let limit = self.inner.config.bind_concurrency.max(1);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                Some(_) = binds.join_next(), if !binds.is_empty() => {}
                key = self.inner.queue.next(), if binds.len() < limit => {
                    self.schedule_one(&key, &mut binds);
                    self.inner.queue.done(&key);
                }
                _ = retry.tick() => self.inner.retry_unschedulable(),
            }
        }
        binds.shutdown().await;
        Ok(())
    }
}

async fn bind(inner: Arc<Inner>, key: Key, p: Arc<Pod>, uid: String, node: String) {
    let api: Api<Pod> = Api::namespaced(inner.client.clone(), &key.namespace);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            uid: Some(uid.clone()),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.clone()),
            ..ObjectReference::default()
        },
    };
    let res: Result<serde_json::Value, kube::Error> = api
        .create_subresource("binding", &key.name, &PostParams::default(), &binding)
        .await;
    match res {
        Ok(_) => {
            tracing::debug!(pod = %key, node, "bound");
            inner
                .recorder
                .publish(
                    DEFAULT_SCHEDULER,
                    events::reference(p.as_ref()),
                    events::NORMAL,
                    "Scheduled",
                    format!("Successfully assigned {key} to {node}"),
                )
                .await;
        }
        Err(e) => {
            {
                let mut l = inner.ledger();
                l.assumed.remove(&uid);
                let still_unbound = inner
                    .pods
                    .get(&key.object_ref())
                    .is_some_and(|p| pod::node_name(&p).is_none());
                if still_unbound {
                    l.set(&uid, None);
                }
            }
            if api_code(&e) == Some(409) || api_code(&e) == Some(404) {
                // Bound elsewhere, being deleted, or gone: the cache will tell.
                tracing::debug!(pod = %key, error = %e, "binding refused");
            } else {
                tracing::warn!(pod = %key, node, error = %e, "binding failed; retrying");
                inner
                    .queue
                    .add_after(key, std::time::Duration::from_millis(200));
            }
        }
    }
}

async fn mark_unschedulable(inner: Arc<Inner>, p: Arc<Pod>, message: String) {
    let ns = p.metadata.namespace.clone().unwrap_or_default();
    let name = p.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(inner.client.clone(), &ns);
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message, "lastProbeTime": null, "lastTransitionTime": Time(Timestamp::now()),
    }]}});
    if let Err(e) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
    {
        tracing::debug!(pod = %name, error = %e, "cannot record PodScheduled=False");
    }
    inner
        .recorder
        .publish(
            DEFAULT_SCHEDULER,
            events::reference(p.as_ref()),
            events::WARNING,
            "FailedScheduling",
            message,
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_lists_reasons_in_order() {
        let mut r = BTreeMap::new();
        r.insert(
            "node(s) didn't match Pod's node affinity/selector".to_owned(),
            2,
        );
        r.insert("Insufficient cpu".to_owned(), 1);
        assert_eq!(
            unschedulable_message(3, &r),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector."
        );
    }
}
