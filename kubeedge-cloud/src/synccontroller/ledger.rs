//! The sync ledger, sans-IO: per node and object, the resourceVersion the edge acked.

use std::collections::HashMap;

use crate::object::newer;

/// An object a node holds, as an ObjectSync records it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Tracked {
    /// `apiVersion` of the object.
    pub(crate) api_version: String,
    /// Upstream's `objectKind`: the lower-case resource type (`pod`, `configmap`).
    pub(crate) kind: String,
    /// Namespace; `None` for cluster-scoped objects (a ClusterObjectSync).
    pub(crate) namespace: Option<String>,
    /// Name.
    pub(crate) name: String,
}

/// One ledger row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) object: Tracked,
    /// The acked resourceVersion.
    pub(crate) acked_rv: String,
    /// An ObjectSync exists in the API for it.
    pub(crate) persisted: bool,
}

/// A write the ledger needs in the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Write {
    /// Create (when `!exists`) and set the status to `rv`.
    Upsert {
        object: Tracked,
        rv: String,
        exists: bool,
    },
    /// Remove the ObjectSync.
    Delete { namespace: Option<String> },
}

/// What a new message for an object means, given the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// The edge holds this version or a newer one: skip.
    Stale,
    /// Send; the edge has some version of the object (an insert should be an update).
    SendKnown,
    /// Send; the edge has never acked this object.
    SendNew,
}

/// Every node's acked objects, keyed by node then object UID.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    nodes: HashMap<String, HashMap<String, Entry>>,
}

impl Ledger {
    /// Decide on a non-delete message for `uid` at `rv`.
    pub(crate) fn admit(&self, node: &str, uid: &str, rv: &str) -> Admit {
        match self.nodes.get(node).and_then(|n| n.get(uid)) {
            None => Admit::SendNew,
            Some(e) if !rv.is_empty() && !newer(rv, &e.acked_rv) => Admit::Stale,
            Some(_) => Admit::SendKnown,
        }
    }

    /// The edge acked `object` (`uid`) at `rv`; returns the API write needed, if any.
    pub(crate) fn acked(
        &mut self,
        node: &str,
        uid: &str,
        object: Tracked,
        rv: &str,
    ) -> Option<Write> {
        let rows = self.nodes.entry(node.to_owned()).or_default();
        match rows.get_mut(uid) {
            Some(e) if e.acked_rv == rv && e.object == object => None,
            Some(e) => {
                // A late ack of an older version must not move the ledger backwards.
                if !rv.is_empty() && !e.acked_rv.is_empty() && !newer(rv, &e.acked_rv) {
                    return None;
                }
                e.acked_rv = rv.to_owned();
                e.object = object.clone();
                let exists = e.persisted;
                e.persisted = true;
                Some(Write::Upsert {
                    object,
                    rv: rv.to_owned(),
                    exists,
                })
            }
            None => {
                rows.insert(
                    uid.to_owned(),
                    Entry {
                        object: object.clone(),
                        acked_rv: rv.to_owned(),
                        persisted: true,
                    },
                );
                Some(Write::Upsert {
                    object,
                    rv: rv.to_owned(),
                    exists: false,
                })
            }
        }
    }

    /// The edge acked a delete of `uid`.
    pub(crate) fn deleted(&mut self, node: &str, uid: &str) -> Option<Write> {
        let rows = self.nodes.get_mut(node)?;
        let e = rows.remove(uid)?;
        if rows.is_empty() {
            self.nodes.remove(node);
        }
        Some(Write::Delete {
            namespace: e.object.namespace,
        })
    }

    /// A row read back from the API at start-up.
    pub(crate) fn load(&mut self, node: &str, uid: &str, object: Tracked, rv: String) {
        self.nodes.entry(node.to_owned()).or_default().insert(
            uid.to_owned(),
            Entry {
                object,
                acked_rv: rv,
                persisted: true,
            },
        );
    }

    /// Another replica persisted `rv` of `uid` for `node`: keep the newer of it and the row
    /// here. Returns true when the row moved.
    pub(crate) fn observed(&mut self, node: &str, uid: &str, object: Tracked, rv: &str) -> bool {
        let rows = self.nodes.entry(node.to_owned()).or_default();
        match rows.get_mut(uid) {
            Some(e) if !newer(rv, &e.acked_rv) => false,
            Some(e) => {
                e.acked_rv = rv.to_owned();
                e.persisted = true;
                true
            }
            None => {
                rows.insert(
                    uid.to_owned(),
                    Entry {
                        object,
                        acked_rv: rv.to_owned(),
                        persisted: true,
                    },
                );
                true
            }
        }
    }

    /// Another replica removed the row of `uid` for `node` (the edge acked its delete).
    pub(crate) fn observed_gone(&mut self, node: &str, uid: &str) -> bool {
        let Some(rows) = self.nodes.get_mut(node) else {
            return false;
        };
        let removed = rows.remove(uid).is_some();
        if rows.is_empty() {
            self.nodes.remove(node);
        }
        removed
    }

    /// Remove every row of `node` (the Node was deleted).
    pub(crate) fn forget_node(&mut self, node: &str) -> Vec<(String, Entry)> {
        self.nodes
            .remove(node)
            .map(|rows| rows.into_iter().collect())
            .unwrap_or_default()
    }

    /// A snapshot of `node`'s rows.
    pub(crate) fn rows(&self, node: &str) -> Vec<(String, Entry)> {
        self.nodes
            .get(node)
            .map(|rows| rows.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Nodes with rows.
    pub(crate) fn nodes(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// Rows in total.
    pub(crate) fn len(&self) -> usize {
        self.nodes.values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Tracked {
        Tracked {
            api_version: "v1".into(),
            kind: "pod".into(),
            namespace: Some("default".into()),
            name: "p".into(),
        }
    }

    #[test]
    fn acks_move_forward_only() {
        let mut l = Ledger::default();
        assert_eq!(l.admit("n", "u", "5"), Admit::SendNew);
        assert!(matches!(
            l.acked("n", "u", pod(), "5"),
            Some(Write::Upsert { exists: false, .. })
        ));
        assert_eq!(l.admit("n", "u", "5"), Admit::Stale);
        assert_eq!(l.admit("n", "u", "4"), Admit::Stale);
        assert_eq!(l.admit("n", "u", "6"), Admit::SendKnown);
        assert_eq!(l.admit("other", "u", "5"), Admit::SendNew);
        assert_eq!(
            l.acked("n", "u", pod(), "5"),
            None,
            "repeat ack writes nothing"
        );
        assert_eq!(
            l.acked("n", "u", pod(), "3"),
            None,
            "late ack of an old version"
        );
        assert!(matches!(
            l.acked("n", "u", pod(), "7"),
            Some(Write::Upsert { exists: true, .. })
        ));
        assert_eq!(l.len(), 1);
        assert!(matches!(l.deleted("n", "u"), Some(Write::Delete { .. })));
        assert_eq!(l.deleted("n", "u"), None);
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn non_numeric_versions_never_panic() {
        let mut l = Ledger::default();
        l.acked("n", "u", pod(), "abc");
        assert_eq!(l.admit("n", "u", "abc"), Admit::Stale);
        assert_eq!(l.admit("n", "u", "abd"), Admit::SendKnown);
        assert_eq!(l.admit("n", "u", "12"), Admit::SendKnown);
        assert!(l.acked("n", "u", pod(), "zzz").is_some());
        assert!(l.acked("n", "u", pod(), "").is_some());
        assert_eq!(l.admit("n", "u", ""), Admit::SendKnown);
    }

    #[test]
    fn rows_written_elsewhere_only_move_forward() {
        let mut l = Ledger::default();
        assert!(l.observed("n", "u", pod(), "5"));
        assert_eq!(l.admit("n", "u", "5"), Admit::Stale);
        assert!(!l.observed("n", "u", pod(), "4"), "an older row is ignored");
        assert_eq!(l.rows("n")[0].1.acked_rv, "5");
        assert!(l.observed("n", "u", pod(), "6"));
        assert_eq!(l.admit("n", "u", "6"), Admit::Stale);
        assert!(l.observed_gone("n", "u"));
        assert!(!l.observed_gone("n", "u"));
        assert_eq!(l.len(), 0);
        assert_eq!(l.admit("n", "u", "7"), Admit::SendNew);
    }

    #[test]
    fn forgetting_a_node() {
        let mut l = Ledger::default();
        l.load("n", "a", pod(), "1".into());
        l.load("n", "b", pod(), "2".into());
        l.load("m", "a", pod(), "1".into());
        assert_eq!(l.forget_node("n").len(), 2);
        assert_eq!(l.nodes(), vec!["m".to_owned()]);
        assert!(l.rows("n").is_empty());
    }
}
