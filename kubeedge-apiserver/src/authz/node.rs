//! The Node authorizer (`plugin/pkg/auth/authorizer/node`): a node (`system:node:<name>` in
//! `system:nodes`) reads only its own Node, the pods bound to it, and the Secrets, ConfigMaps,
//! PersistentVolumeClaims and ServiceAccount tokens those pods use; it writes its own Lease,
//! Node and pod statuses. Everything else a kubelet needs comes from `system:node`'s static
//! rules. Nothing here denies: a refusal is no opinion, with upstream's reason.
//!
//! Upstream keeps a graph fed by informers; here the relationships are read from the store
//! when asked (the pods of the object's namespace bound to the node).

use serde_json::Value;

use super::{bootstrap, rbac::Rule, Attributes, Decision};
use crate::error::StoreError;
use crate::store::{ObjectKey, Scope, Store};

/// The node a user is, when it is one: `system:node:<name>` in the group `system:nodes`.
pub(crate) fn node_name(user: &str, groups: &[String]) -> Option<String> {
    let name = user.strip_prefix("system:node:")?;
    groups
        .iter()
        .any(|g| g == "system:nodes")
        .then(|| name.to_owned())
}

const MIRROR: &str = "kubernetes.io/config.mirror";

fn no(reason: &str) -> (Decision, String) {
    (Decision::NoOpinion, reason.to_owned())
}

fn allow() -> (Decision, String) {
    (Decision::Allow, String::new())
}

fn no_relationship(node: &str) -> (Decision, String) {
    no(&format!(
        "no relationship found between node '{node}' and this object"
    ))
}

/// The names of the objects of `kind` (`secret`, `configmap`, `pvc`, `serviceaccount`) a pod
/// uses: volumes, env and envFrom of every container, image pull secrets, its service account.
pub(crate) fn pod_references(pod: &Value, kind: &str) -> Vec<String> {
    let mut out = Vec::new();
    if pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(MIRROR))
        .is_some()
    {
        return out;
    }
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let mut push = |v: Option<&Value>| {
        if let Some(s) = v.and_then(Value::as_str).filter(|s| !s.is_empty()) {
            if !out.iter().any(|o| o == s) {
                out.push(s.to_owned());
            }
        }
    };
    let arr = |v: &Value, k: &str| -> Vec<Value> {
        v.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind == "serviceaccount" {
        push(spec.get("serviceAccountName"));
        return out;
    }
    for vol in arr(spec, "volumes") {
        match kind {
            "secret" => {
                push(vol.pointer("/secret/secretName"));
                for s in arr(vol.get("projected").unwrap_or(&Value::Null), "sources") {
                    push(s.pointer("/secret/name"));
                }
                for p in [
                    "/csi/nodePublishSecretRef/name",
                    "/cephfs/secretRef/name",
                    "/rbd/secretRef/name",
                    "/iscsi/secretRef/name",
                    "/flexVolume/secretRef/name",
                    "/azureFile/secretName",
                ] {
                    push(vol.pointer(p));
                }
            }
            "configmap" => {
                push(vol.pointer("/configMap/name"));
                for s in arr(vol.get("projected").unwrap_or(&Value::Null), "sources") {
                    push(s.pointer("/configMap/name"));
                }
            }
            "pvc" => {
                push(vol.pointer("/persistentVolumeClaim/claimName"));
                if vol.get("ephemeral").is_some() {
                    let name = vol.get("name").and_then(Value::as_str).unwrap_or_default();
                    push(Some(&Value::String(format!("{pod_name}-{name}"))));
                }
            }
            _ => {}
        }
    }
    if kind == "secret" {
        for s in arr(spec, "imagePullSecrets") {
            push(s.get("name"));
        }
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in arr(spec, list) {
            for e in arr(&c, "env") {
                match kind {
                    "secret" => push(e.pointer("/valueFrom/secretKeyRef/name")),
                    "configmap" => push(e.pointer("/valueFrom/configMapKeyRef/name")),
                    _ => {}
                }
            }
            for e in arr(&c, "envFrom") {
                match kind {
                    "secret" => push(e.pointer("/secretRef/name")),
                    "configmap" => push(e.pointer("/configMapRef/name")),
                    _ => {}
                }
            }
        }
    }
    out
}

fn bound_to(pod: &Value, node: &str) -> bool {
    pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
}

/// Whether a pod bound to `node` in `namespace` uses the object `name` of `kind`.
async fn related<S: Store>(
    store: &S,
    node: &str,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Result<bool, StoreError> {
    let page = store
        .list(
            Scope {
                resource: "core/pods".into(),
                namespace: Some(namespace.to_owned()),
            },
            None,
            None,
        )
        .await?;
    Ok(page
        .items
        .iter()
        .filter_map(|s| s.value().ok())
        .any(|p| bound_to(&p, node) && pod_references(&p, kind).iter().any(|n| n == name)))
}

async fn get_pod<S: Store>(store: &S, ns: &str, name: &str) -> Result<Option<Value>, StoreError> {
    match store.get(ObjectKey::new("core/pods", ns, name)).await? {
        Some(s) => Ok(s.value().ok()),
        None => Ok(None),
    }
}

/// The Node authorizer's decision for `node`.
pub(crate) async fn authorize<S: Store>(
    store: &S,
    node: &str,
    a: &Attributes,
) -> Result<(Decision, String), StoreError> {
    if !a.resource_request {
        return Ok(static_rules(a));
    }
    let (g, r, sub, verb) = (
        a.api_group.as_str(),
        a.resource.as_str(),
        a.subresource.as_str(),
        a.verb.as_str(),
    );
    Ok(match (g, r) {
        ("", "secrets" | "configmaps") => {
            if !matches!(verb, "get" | "list" | "watch") {
                no("can only read resources of this type")
            } else if !sub.is_empty() {
                no("cannot read subresource")
            } else if a.namespace.is_empty() {
                no("can only read namespaced object of this type")
            } else if a.name.is_empty() {
                no("No Object name found")
            } else {
                let kind = if r == "secrets" {
                    "secret"
                } else {
                    "configmap"
                };
                if related(store, node, &a.namespace, kind, &a.name).await? {
                    allow()
                } else {
                    no_relationship(node)
                }
            }
        }
        ("", "persistentvolumeclaims") => match sub {
            "" if verb == "get" => {
                if related(store, node, &a.namespace, "pvc", &a.name).await? {
                    allow()
                } else {
                    no_relationship(node)
                }
            }
            "" => no("can only get individual resources of this type"),
            "status" if matches!(verb, "update" | "patch") => {
                if related(store, node, &a.namespace, "pvc", &a.name).await? {
                    allow()
                } else {
                    no_relationship(node)
                }
            }
            "status" => no("can only get/update/patch this type"),
            _ => no("can only update status subresource"),
        },
        ("", "serviceaccounts") if sub == "token" => {
            if verb != "create" || a.name.is_empty() {
                no("can only create tokens for individual service accounts")
            } else if related(store, node, &a.namespace, "serviceaccount", &a.name).await? {
                allow()
            } else {
                no_relationship(node)
            }
        }
        ("coordination.k8s.io", "leases") => {
            if !matches!(verb, "get" | "create" | "update" | "patch" | "delete") {
                no("can only get, create, update, patch, or delete a node lease")
            } else if a.namespace != "kube-node-lease" {
                no("can only access leases in the \"kube-node-lease\" system namespace")
            } else if verb != "create" && a.name != node {
                no("can only access node lease with the same name as the requesting node")
            } else {
                allow()
            }
        }
        ("", "nodes") => match (sub, verb) {
            ("", "create" | "update" | "patch") | ("status", "update" | "patch") => allow(),
            ("", "get" | "list" | "watch") if a.name == node => allow(),
            ("", "get" | "list" | "watch") if a.name.is_empty() => no(&format!(
                "node '{node}' cannot read all nodes, only its own Node object"
            )),
            ("", "get" | "list" | "watch") => no(&format!(
                "node '{node}' cannot read '{}', only its own Node object",
                a.name
            )),
            _ => no(""),
        },
        ("", "pods") => match (sub, verb) {
            ("", "get") => match get_pod(store, &a.namespace, &a.name).await? {
                Some(p) if bound_to(&p, node) => allow(),
                _ => no_relationship(node),
            },
            ("", "list" | "watch") => {
                let scoped = a.field_selector.split(',').any(|t| {
                    let t = t.trim();
                    t == format!("spec.nodeName={node}") || t == format!("spec.nodeName=={node}")
                });
                if scoped {
                    allow()
                } else if !a.name.is_empty() {
                    match get_pod(store, &a.namespace, &a.name).await? {
                        Some(p) if bound_to(&p, node) => allow(),
                        _ => no_relationship(node),
                    }
                } else {
                    no("can only list/watch pods with spec.nodeName field selector")
                }
            }
            ("", "create" | "delete") | ("status", "update" | "patch") | ("eviction", "create") => {
                allow()
            }
            _ => no(""),
        },
        _ => static_rules(a),
    })
}

/// `system:node`'s rules, which apply to every node without a binding.
fn static_rules(a: &Attributes) -> (Decision, String) {
    static RULES: std::sync::LazyLock<Vec<Rule>> = std::sync::LazyLock::new(|| {
        bootstrap::node_rules()
            .iter()
            .map(Rule::from_value)
            .collect()
    });
    if RULES.iter().any(|r| r.allows(a)) {
        allow()
    } else {
        no("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_uses_what_its_volumes_env_and_pull_secrets_name() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "serviceAccountName": "sa",
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [{"name": "v", "secret": {"secretName": "vol"}},
                        {"name": "c", "configMap": {"name": "cm"}},
                        {"name": "d", "persistentVolumeClaim": {"claimName": "claim"}},
                        {"name": "e", "ephemeral": {}}],
            "containers": [{"name": "x", "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "env", "key": "k"}}}],
                            "envFrom": [{"configMapRef": {"name": "cm2"}}]}]}});
        assert_eq!(pod_references(&pod, "secret"), ["vol", "pull", "env"]);
        assert_eq!(pod_references(&pod, "configmap"), ["cm", "cm2"]);
        assert_eq!(pod_references(&pod, "pvc"), ["claim", "p-e"]);
        assert_eq!(pod_references(&pod, "serviceaccount"), ["sa"]);
        let mut mirror = pod.clone();
        mirror["metadata"]["annotations"] = json!({MIRROR: "x"});
        assert!(pod_references(&mirror, "secret").is_empty());
    }

    #[test]
    fn node_identity_needs_the_group() {
        let nodes = vec!["system:nodes".to_owned()];
        assert_eq!(node_name("system:node:a", &nodes).as_deref(), Some("a"));
        assert_eq!(node_name("system:node:a", &[]), None);
        assert_eq!(node_name("alice", &nodes), None);
    }
}
