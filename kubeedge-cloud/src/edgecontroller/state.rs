//! What the edge controller knows from its watches, sans-IO: edge nodes, bound pods, the
//! configmaps and secrets, and which node uses which object. Each watch event goes in; the
//! messages to send come out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kubeedge_proto::{Message, Operation, ResourceType};
use serde::Serialize;
use tracing::warn;

use super::refs::{pod_refs, ObjRef, RefKind};
use crate::object::push;
use crate::synccontroller::Live;

/// The label that makes a node an edge node.
pub const EDGE_NODE_LABEL: &str = "node-role.kubernetes.io/edge";

/// A message for a node.
#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) node: String,
    pub(crate) msg: Message,
}

type Key = (String, String);

#[derive(Debug)]
struct PodEntry {
    pod: Arc<Pod>,
    uid: String,
    rv: String,
    node: String,
    refs: Vec<ObjRef>,
}

/// Which watches have completed their first list.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Synced {
    pub(crate) nodes: bool,
    pub(crate) pods: bool,
    pub(crate) configmaps: bool,
    pub(crate) secrets: bool,
}

/// The watch kinds, for relists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Nodes,
    Pods,
    ConfigMaps,
    Secrets,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    edge_nodes: HashSet<String>,
    pods: HashMap<Key, PodEntry>,
    configmaps: HashMap<Key, Arc<ConfigMap>>,
    secrets: HashMap<Key, Arc<Secret>>,
    /// Object → node → pods on that node using it.
    users: HashMap<ObjRef, HashMap<String, usize>>,
    /// Keys seen during the current relist, per kind.
    relist: HashMap<&'static str, HashSet<Key>>,
    pub(crate) synced: Synced,
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn message<T: Serialize>(
    op: Operation,
    rtype: ResourceType,
    key: &Key,
    rv: &str,
    obj: &T,
) -> Option<Message> {
    match push(op, &key.0, rtype, &key.1, rv, obj) {
        Ok(m) => Some(m),
        Err(e) => {
            warn!(name = %key.1, error = %e, "object could not be encoded");
            None
        }
    }
}

/// True when the node carries the edge label.
pub(crate) fn is_edge_node(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(EDGE_NODE_LABEL))
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Nodes => "nodes",
        Kind::Pods => "pods",
        Kind::ConfigMaps => "configmaps",
        Kind::Secrets => "secrets",
    }
}

impl State {
    /// True when `node` is a known edge node.
    pub(crate) fn is_edge(&self, node: &str) -> bool {
        self.edge_nodes.contains(node)
    }

    /// Edge nodes known.
    pub(crate) fn edge_nodes(&self) -> usize {
        self.edge_nodes.len()
    }

    /// A pod's (uid, node), from the store.
    pub(crate) fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|e| e.pod.clone())
    }

    /// A relist of `kind` starts.
    pub(crate) fn relist_begin(&mut self, kind: Kind) {
        self.relist.insert(kind_name(kind), HashSet::new());
    }

    fn seen(&mut self, kind: Kind, key: &Key) {
        if let Some(s) = self.relist.get_mut(kind_name(kind)) {
            s.insert(key.clone());
        }
    }

    /// The relist of `kind` is complete: what was not listed is gone.
    pub(crate) fn relist_done(&mut self, kind: Kind) -> (Vec<Out>, Vec<String>) {
        let seen = self.relist.remove(kind_name(kind)).unwrap_or_default();
        let mut out = Vec::new();
        let mut gone_nodes = Vec::new();
        match kind {
            Kind::Nodes => {
                self.synced.nodes = true;
                let gone: Vec<String> = self
                    .edge_nodes
                    .iter()
                    .filter(|n| !seen.contains(&(String::new(), (*n).clone())))
                    .cloned()
                    .collect();
                for n in gone {
                    self.edge_nodes.remove(&n);
                    gone_nodes.push(n);
                }
            }
            Kind::Pods => {
                self.synced.pods = true;
                let gone: Vec<Arc<Pod>> = self
                    .pods
                    .iter()
                    .filter(|(k, _)| !seen.contains(*k))
                    .map(|(_, e)| e.pod.clone())
                    .collect();
                for p in gone {
                    out.extend(self.pod_deleted(&p));
                }
            }
            Kind::ConfigMaps => {
                self.synced.configmaps = true;
                let gone: Vec<Arc<ConfigMap>> = self
                    .configmaps
                    .iter()
                    .filter(|(k, _)| !seen.contains(*k))
                    .map(|(_, v)| v.clone())
                    .collect();
                for c in gone {
                    out.extend(self.configmap_deleted(&c));
                }
            }
            Kind::Secrets => {
                self.synced.secrets = true;
                let gone: Vec<Arc<Secret>> = self
                    .secrets
                    .iter()
                    .filter(|(k, _)| !seen.contains(*k))
                    .map(|(_, v)| v.clone())
                    .collect();
                for s in gone {
                    out.extend(self.secret_deleted(&s));
                }
            }
        }
        (out, gone_nodes)
    }

    /// A node was listed or changed.
    pub(crate) fn node_applied(&mut self, node: &Node) -> Vec<Out> {
        let name = node.metadata.name.clone().unwrap_or_default();
        self.seen(Kind::Nodes, &(String::new(), name.clone()));
        if !is_edge_node(node) {
            self.edge_nodes.remove(&name);
            return Vec::new();
        }
        if !self.edge_nodes.insert(name.clone()) {
            return Vec::new();
        }
        // A node that became an edge node gets its pods and what they use.
        let mut out = Vec::new();
        let pods: Vec<(Key, Arc<Pod>, String)> = self
            .pods
            .iter()
            .filter(|(_, e)| e.node == name)
            .map(|(k, e)| (k.clone(), e.pod.clone(), e.rv.clone()))
            .collect();
        for (k, pod, rv) in pods {
            out.extend(
                message(Operation::Insert, ResourceType::Pod, &k, &rv, &*pod).map(|msg| Out {
                    node: name.clone(),
                    msg,
                }),
            );
        }
        let used: Vec<ObjRef> = self
            .users
            .iter()
            .filter(|(_, nodes)| nodes.contains_key(&name))
            .map(|(r, _)| r.clone())
            .collect();
        for r in used {
            out.extend(self.object_for(&r, &name));
        }
        out
    }

    /// A node left the edge selection (deleted or unlabelled).
    pub(crate) fn node_removed(&mut self, name: &str) {
        self.edge_nodes.remove(name);
    }

    fn object_for(&self, r: &ObjRef, node: &str) -> Option<Out> {
        let key = (r.namespace.clone(), r.name.clone());
        let msg = match r.kind {
            RefKind::ConfigMap => {
                let cm = self.configmaps.get(&key)?;
                let rv = cm.metadata.resource_version.clone().unwrap_or_default();
                message(Operation::Update, ResourceType::ConfigMap, &key, &rv, &**cm)?
            }
            RefKind::Secret => {
                let s = self.secrets.get(&key)?;
                let rv = s.metadata.resource_version.clone().unwrap_or_default();
                message(Operation::Update, ResourceType::Secret, &key, &rv, &**s)?
            }
        };
        Some(Out {
            node: node.to_owned(),
            msg,
        })
    }

    fn add_users(&mut self, refs: &[ObjRef], node: &str) -> Vec<Out> {
        let mut out = Vec::new();
        for r in refs {
            let count = self
                .users
                .entry(r.clone())
                .or_default()
                .entry(node.to_owned())
                .or_default();
            *count += 1;
            if *count == 1 && self.edge_nodes.contains(node) {
                out.extend(self.object_for(r, node));
            }
        }
        out
    }

    fn remove_users(&mut self, refs: &[ObjRef], node: &str) {
        for r in refs {
            if let Some(nodes) = self.users.get_mut(r) {
                if let Some(c) = nodes.get_mut(node) {
                    *c = c.saturating_sub(1);
                    if *c == 0 {
                        nodes.remove(node);
                    }
                }
                if nodes.is_empty() {
                    self.users.remove(r);
                }
            }
        }
    }

    /// A pod was listed, added or changed.
    pub(crate) fn pod_applied(&mut self, pod: Arc<Pod>) -> Vec<Out> {
        let key = key_of(&pod.metadata);
        self.seen(Kind::Pods, &key);
        let Some(node) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
        else {
            return Vec::new();
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let rv = pod.metadata.resource_version.clone().unwrap_or_default();
        let mut out = Vec::new();
        let mut op = Operation::Insert;
        if let Some(old) = self.pods.get(&key) {
            if old.uid == uid && old.rv == rv {
                return out;
            }
            if old.uid == uid {
                op = Operation::Update;
            } else {
                // Same name, new object: the old one is gone.
                let old_pod = old.pod.clone();
                out.extend(self.pod_deleted(&old_pod));
            }
        }
        let refs = pod_refs(&pod);
        let old_refs = self
            .pods
            .get(&key)
            .map(|e| (e.refs.clone(), e.node.clone()));
        // Objects first: the pod should find its configmaps on the edge.
        out.extend(self.add_users(&refs, &node));
        if let Some((old_refs, old_node)) = old_refs {
            self.remove_users(&old_refs, &old_node);
        }
        if self.edge_nodes.contains(&node) {
            out.extend(
                message(op, ResourceType::Pod, &key, &rv, &*pod).map(|msg| Out {
                    node: node.clone(),
                    msg,
                }),
            );
        }
        self.pods.insert(
            key,
            PodEntry {
                pod,
                uid,
                rv,
                node,
                refs,
            },
        );
        out
    }

    /// A pod was deleted.
    pub(crate) fn pod_deleted(&mut self, pod: &Pod) -> Vec<Out> {
        let key = key_of(&pod.metadata);
        let Some(old) = self.pods.remove(&key) else {
            return Vec::new();
        };
        self.remove_users(&old.refs, &old.node);
        if !self.edge_nodes.contains(&old.node) {
            return Vec::new();
        }
        // The last version known, so that the edge matches it by UID.
        let rv = pod
            .metadata
            .resource_version
            .clone()
            .unwrap_or_else(|| old.rv.clone());
        message(Operation::Delete, ResourceType::Pod, &key, &rv, pod)
            .map(|msg| Out {
                node: old.node.clone(),
                msg,
            })
            .into_iter()
            .collect()
    }

    fn users_of(&self, kind: RefKind, key: &Key) -> Vec<String> {
        let r = ObjRef {
            kind,
            namespace: key.0.clone(),
            name: key.1.clone(),
        };
        self.users
            .get(&r)
            .map(|nodes| {
                nodes
                    .keys()
                    .filter(|n| self.edge_nodes.contains(*n))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A configmap was listed, added or changed: to the nodes whose pods use it.
    pub(crate) fn configmap_applied(&mut self, cm: Arc<ConfigMap>) -> Vec<Out> {
        let key = key_of(&cm.metadata);
        self.seen(Kind::ConfigMaps, &key);
        let rv = cm.metadata.resource_version.clone().unwrap_or_default();
        let op = match self.configmaps.get(&key) {
            Some(old) if old.metadata.resource_version == cm.metadata.resource_version => {
                return Vec::new()
            }
            Some(old) if old.metadata.uid == cm.metadata.uid => Operation::Update,
            _ => Operation::Insert,
        };
        self.configmaps.insert(key.clone(), cm.clone());
        let mut out = Vec::new();
        for node in self.users_of(RefKind::ConfigMap, &key) {
            if let Some(msg) = message(op.clone(), ResourceType::ConfigMap, &key, &rv, &*cm) {
                out.push(Out { node, msg });
            }
        }
        out
    }

    /// A configmap was deleted.
    pub(crate) fn configmap_deleted(&mut self, cm: &ConfigMap) -> Vec<Out> {
        let key = key_of(&cm.metadata);
        if self.configmaps.remove(&key).is_none() {
            return Vec::new();
        }
        let rv = cm.metadata.resource_version.clone().unwrap_or_default();
        self.users_of(RefKind::ConfigMap, &key)
            .into_iter()
            .filter_map(|node| {
                message(Operation::Delete, ResourceType::ConfigMap, &key, &rv, cm)
                    .map(|msg| Out { node, msg })
            })
            .collect()
    }

    /// A secret was listed, added or changed (upstream sends `update` for both).
    pub(crate) fn secret_applied(&mut self, s: Arc<Secret>) -> Vec<Out> {
        let key = key_of(&s.metadata);
        self.seen(Kind::Secrets, &key);
        let rv = s.metadata.resource_version.clone().unwrap_or_default();
        if self
            .secrets
            .get(&key)
            .is_some_and(|old| old.metadata.resource_version == s.metadata.resource_version)
        {
            return Vec::new();
        }
        self.secrets.insert(key.clone(), s.clone());
        self.users_of(RefKind::Secret, &key)
            .into_iter()
            .filter_map(|node| {
                message(Operation::Update, ResourceType::Secret, &key, &rv, &*s)
                    .map(|msg| Out { node, msg })
            })
            .collect()
    }

    /// A secret was deleted.
    pub(crate) fn secret_deleted(&mut self, s: &Secret) -> Vec<Out> {
        let key = key_of(&s.metadata);
        if self.secrets.remove(&key).is_none() {
            return Vec::new();
        }
        let rv = s.metadata.resource_version.clone().unwrap_or_default();
        self.users_of(RefKind::Secret, &key)
            .into_iter()
            .filter_map(|node| {
                message(Operation::Delete, ResourceType::Secret, &key, &rv, s)
                    .map(|msg| Out { node, msg })
            })
            .collect()
    }

    /// The resync's question: what should `node`'s copy of this object be?
    pub(crate) fn live(&self, node: &str, kind: &str, namespace: Option<&str>, name: &str) -> Live {
        let key = (namespace.unwrap_or_default().to_owned(), name.to_owned());
        match kind {
            "pod" => {
                if !self.synced.pods {
                    return Live::NotReady;
                }
                match self.pods.get(&key) {
                    None => Live::Gone,
                    Some(e) if e.node != node => Live::NotWanted,
                    Some(e) => {
                        match message(Operation::Update, ResourceType::Pod, &key, &e.rv, &*e.pod) {
                            Some(push) => Live::Found {
                                uid: e.uid.clone(),
                                resource_version: e.rv.clone(),
                                push: Box::new(push),
                            },
                            None => Live::NotReady,
                        }
                    }
                }
            }
            "configmap" | "secret" => {
                let (ready, rkind) = if kind == "configmap" {
                    (self.synced.configmaps, RefKind::ConfigMap)
                } else {
                    (self.synced.secrets, RefKind::Secret)
                };
                if !ready || !self.synced.pods {
                    return Live::NotReady;
                }
                let (meta, push) = if rkind == RefKind::ConfigMap {
                    let Some(cm) = self.configmaps.get(&key) else {
                        return Live::Gone;
                    };
                    let rv = cm.metadata.resource_version.clone().unwrap_or_default();
                    (
                        cm.metadata.clone(),
                        message(Operation::Update, ResourceType::ConfigMap, &key, &rv, &**cm),
                    )
                } else {
                    let Some(s) = self.secrets.get(&key) else {
                        return Live::Gone;
                    };
                    let rv = s.metadata.resource_version.clone().unwrap_or_default();
                    (
                        s.metadata.clone(),
                        message(Operation::Update, ResourceType::Secret, &key, &rv, &**s),
                    )
                };
                if !self.users_of(rkind, &key).iter().any(|n| n == node) {
                    return Live::NotWanted;
                }
                match push {
                    Some(push) => Live::Found {
                        uid: meta.uid.unwrap_or_default(),
                        resource_version: meta.resource_version.unwrap_or_default(),
                        push: Box::new(push),
                    },
                    None => Live::NotReady,
                }
            }
            _ => Live::NotMine,
        }
    }
}

#[cfg(test)]
mod tests;
