//! The etcd key layout, as kube-apiserver lays out its own so that `etcdctl get --prefix
//! /registry/pods` shows what it would show on a real cluster:
//! `<prefix>/<path>/<namespace>/<name>` for namespaced objects and `<prefix>/<path>/<name>` for
//! cluster-scoped ones. `<path>` is kube-apiserver's resource path for the built-in resources
//! (`pods`, `minions`, `services/specs`, `deployments`, …) and `<group>/<plural>` for everything
//! else (custom resources, as kube-apiserver stores them).

use std::collections::HashMap;

use crate::store::ObjectKey;

/// Built-in resources and kube-apiserver's etcd path for each (`<group>/<plural>` → path).
const BUILTIN: &[(&str, &str)] = &[
    ("core/pods", "pods"),
    ("core/nodes", "minions"),
    ("core/services", "services/specs"),
    ("core/endpoints", "services/endpoints"),
    ("core/replicationcontrollers", "controllers"),
    ("core/namespaces", "namespaces"),
    ("core/configmaps", "configmaps"),
    ("core/secrets", "secrets"),
    ("core/serviceaccounts", "serviceaccounts"),
    ("core/events", "events"),
    ("core/persistentvolumes", "persistentvolumes"),
    ("core/persistentvolumeclaims", "persistentvolumeclaims"),
    ("core/limitranges", "limitranges"),
    ("core/resourcequotas", "resourcequotas"),
    ("core/podtemplates", "podtemplates"),
    ("apps/deployments", "deployments"),
    ("apps/replicasets", "replicasets"),
    ("apps/daemonsets", "daemonsets"),
    ("apps/statefulsets", "statefulsets"),
    ("apps/controllerrevisions", "controllerrevisions"),
    ("batch/jobs", "jobs"),
    ("batch/cronjobs", "cronjobs"),
    ("coordination.k8s.io/leases", "leases"),
    ("discovery.k8s.io/endpointslices", "endpointslices"),
    ("networking.k8s.io/ingresses", "ingress"),
    ("networking.k8s.io/networkpolicies", "networkpolicies"),
    ("policy/poddisruptionbudgets", "poddisruptionbudgets"),
    ("rbac.authorization.k8s.io/roles", "roles"),
    ("rbac.authorization.k8s.io/clusterroles", "clusterroles"),
    ("rbac.authorization.k8s.io/rolebindings", "rolebindings"),
    (
        "rbac.authorization.k8s.io/clusterrolebindings",
        "clusterrolebindings",
    ),
    ("scheduling.k8s.io/priorityclasses", "priorityclasses"),
    ("storage.k8s.io/storageclasses", "storageclasses"),
    ("storage.k8s.io/csinodes", "csinodes"),
    ("storage.k8s.io/csidrivers", "csidrivers"),
    ("storage.k8s.io/volumeattachments", "volumeattachments"),
    (
        "certificates.k8s.io/certificatesigningrequests",
        "certificatesigningrequests",
    ),
    (
        "autoscaling/horizontalpodautoscalers",
        "horizontalpodautoscalers",
    ),
];

/// Maps object keys to etcd keys and back.
#[derive(Debug)]
pub(crate) struct Layout {
    prefix: String,
    to_path: HashMap<&'static str, &'static str>,
    to_resource: HashMap<&'static str, &'static str>,
}

impl Layout {
    /// A layout under `prefix` (`/registry` by default), without a trailing slash.
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_owned(),
            to_path: BUILTIN.iter().copied().collect(),
            to_resource: BUILTIN.iter().map(|&(r, p)| (p, r)).collect(),
        }
    }

    /// `<prefix>/`: every object of the API lives under it.
    pub(crate) fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    fn path<'a>(&self, resource: &'a str) -> &'a str {
        match self.to_path.get(resource) {
            Some(p) => p,
            None => resource.strip_prefix("core/").unwrap_or(resource),
        }
    }

    /// The etcd key of one object.
    pub(crate) fn key(&self, key: &ObjectKey) -> String {
        let path = self.path(&key.resource);
        if key.namespace.is_empty() {
            format!("{}/{path}/{}", self.prefix, key.name)
        } else {
            format!("{}/{path}/{}/{}", self.prefix, key.namespace, key.name)
        }
    }

    /// The prefix of every object of `resource`, or of its objects in `namespace`.
    pub(crate) fn scope(&self, resource: &str, namespace: Option<&str>) -> String {
        let path = self.path(resource);
        match namespace {
            Some(ns) if !ns.is_empty() => format!("{}/{path}/{ns}/", self.prefix),
            _ => format!("{}/{path}/", self.prefix),
        }
    }

    /// The object key of an etcd key, or `None` for a key outside the layout.
    pub(crate) fn parse(&self, raw: &[u8]) -> Option<ObjectKey> {
        let s = std::str::from_utf8(raw).ok()?;
        let rest = s.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        // The longest known path first (`services/specs` before a plural of its own).
        for take in [2, 1] {
            if parts.len() <= take {
                continue;
            }
            let path = parts[..take].join("/");
            let resource = match self.to_resource.get(path.as_str()) {
                Some(r) => (*r).to_owned(),
                // Not built in: `<group>/<plural>`, or a core resource this table lacks.
                None if take == 2 && !self.to_resource.contains_key(parts[0]) => {
                    if parts[0].contains('.') || !is_core_path(parts[0]) {
                        path
                    } else {
                        continue;
                    }
                }
                None if take == 1 && is_core_path(parts[0]) => format!("core/{}", parts[0]),
                None => continue,
            };
            return match &parts[take..] {
                [name] => Some(ObjectKey::new(resource, "", *name)),
                [ns, name] => Some(ObjectKey::new(resource, *ns, *name)),
                _ => None,
            };
        }
        None
    }
}

/// Core resources outside [`BUILTIN`] (kept as `<prefix>/<plural>`), told apart from the
/// groups that lead a `<group>/<plural>` path.
fn is_core_path(first: &str) -> bool {
    !first.contains('.') && !matches!(first, "apps" | "batch" | "policy" | "autoscaling")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kube_apiservers_and_parse_back() {
        let l = Layout::new("/registry");
        for (key, raw) in [
            (
                ObjectKey::new("core/pods", "default", "web"),
                "/registry/pods/default/web",
            ),
            (
                ObjectKey::new("core/nodes", "", "edge-1"),
                "/registry/minions/edge-1",
            ),
            (
                ObjectKey::new("core/services", "kube-system", "dns"),
                "/registry/services/specs/kube-system/dns",
            ),
            (
                ObjectKey::new("core/endpoints", "default", "kubernetes"),
                "/registry/services/endpoints/default/kubernetes",
            ),
            (
                ObjectKey::new("apps/deployments", "default", "d"),
                "/registry/deployments/default/d",
            ),
            (
                ObjectKey::new("devices.kubeedge.io/devices", "default", "fan"),
                "/registry/devices.kubeedge.io/devices/default/fan",
            ),
            (
                ObjectKey::new(
                    "apiextensions.k8s.io/customresourcedefinitions",
                    "",
                    "a.b.c",
                ),
                "/registry/apiextensions.k8s.io/customresourcedefinitions/a.b.c",
            ),
            (
                ObjectKey::new("apps/unknownthings", "ns", "x"),
                "/registry/apps/unknownthings/ns/x",
            ),
            (
                ObjectKey::new("core/bindings", "ns", "x"),
                "/registry/bindings/ns/x",
            ),
        ] {
            assert_eq!(l.key(&key), raw);
            assert_eq!(l.parse(raw.as_bytes()), Some(key));
        }
        assert_eq!(l.scope("core/pods", Some("a")), "/registry/pods/a/");
        assert_eq!(l.scope("core/pods", None), "/registry/pods/");
        assert_eq!(l.parse(b"/other/pods/a/b"), None);
        assert_eq!(l.parse(b"/registry/pods/a/b/c"), None);
        assert_eq!(l.parse(b"/registry/pods"), None);
        assert_eq!(l.parse(&[0xff, 0xfe]), None);
    }
}
