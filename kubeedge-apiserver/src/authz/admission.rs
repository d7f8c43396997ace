//! NodeRestriction (`plugin/pkg/admission/noderestriction`): what a node may change, once the
//! Node authorizer let the request through. A node creates only mirror pods bound to itself,
//! deletes only its own pods, updates the status of its own pods (labels unchanged), and
//! changes only its own Node (taints, `configSource` and labels outside the kubelet's set
//! unchanged) and its own Lease.
//!
//! Not checked here: mirror pods' owner references.

use serde_json::Value;

/// What a write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Create,
    Update,
    Delete,
}

/// The object a write is about, as admission sees it.
pub(crate) struct Request<'a> {
    pub(crate) op: Op,
    pub(crate) group: &'a str,
    pub(crate) resource: &'a str,
    pub(crate) subresource: &'a str,
    pub(crate) namespace: &'a str,
    pub(crate) name: &'a str,
    pub(crate) old: Option<&'a Value>,
    pub(crate) new: Option<&'a Value>,
}

fn node_name_of(pod: Option<&Value>) -> &str {
    pod.and_then(|p| p.pointer("/spec/nodeName"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn has_mirror_annotation(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get("kubernetes.io/config.mirror"))
        .is_some()
}

/// `Ok` when `node` may make this change; otherwise upstream's message.
pub(crate) fn node_restriction(node: &str, r: &Request<'_>) -> Result<(), String> {
    match (r.group, r.resource) {
        ("", "pods") => pods(node, r),
        ("", "nodes") => nodes(node, r),
        ("coordination.k8s.io", "leases") => {
            if r.namespace != "kube-node-lease" {
                return Err(
                    "can only access leases in the \"kube-node-lease\" system namespace".into(),
                );
            }
            if r.name != node {
                return Err(
                    "can only access node lease with the same name as the requesting node".into(),
                );
            }
            Ok(())
        }
        ("", "persistentvolumeclaims") if r.subresource != "status" => {
            Err("may only update PVC status".into())
        }
        _ => Ok(()),
    }
}

fn pods(node: &str, r: &Request<'_>) -> Result<(), String> {
    match (r.subresource, r.op) {
        ("", Op::Create) => {
            let Some(pod) = r.new else {
                return Ok(());
            };
            if !has_mirror_annotation(pod) {
                return Err(format!("pod does not have \"kubernetes.io/config.mirror\" annotation, node \"{node}\" can only create mirror pods"));
            }
            if node_name_of(r.new) != node {
                return Err(format!(
                    "node \"{node}\" can only create pods with spec.nodeName set to itself"
                ));
            }
            for (kind, what) in [
                ("serviceaccount", "a service account"),
                ("secret", "secrets"),
                ("configmap", "configmaps"),
                ("pvc", "persistentvolumeclaims"),
            ] {
                let mut plain = pod.clone();
                if let Some(a) = plain
                    .pointer_mut("/metadata/annotations")
                    .and_then(Value::as_object_mut)
                {
                    a.remove("kubernetes.io/config.mirror");
                }
                if !super::node::pod_references(&plain, kind).is_empty() {
                    return Err(format!(
                        "node \"{node}\" can not create pods that reference {what}"
                    ));
                }
            }
            Ok(())
        }
        ("", Op::Update) => Err(format!(
            "unexpected operation \"UPDATE\", node \"{node}\" can only create and delete mirror pods"
        )),
        ("", Op::Delete) => {
            if node_name_of(r.old) != node {
                return Err(format!(
                    "node \"{node}\" can only delete pods with spec.nodeName set to itself"
                ));
            }
            Ok(())
        }
        ("status", Op::Update) => {
            if node_name_of(r.old) != node {
                return Err(format!(
                    "node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"
                ));
            }
            let labels = |v: Option<&Value>| {
                v.and_then(|p| p.pointer("/metadata/labels"))
                    .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
                    .cloned()
            };
            if labels(r.old) != labels(r.new) {
                return Err(format!(
                    "node \"{node}\" cannot update labels through pod status"
                ));
            }
            Ok(())
        }
        ("status", op) => Err(format!("unexpected operation \"{}\"", op_name(op))),
        ("eviction", _) => Ok(()),
        (sub, _) => Err(format!(
            "unexpected pod subresource \"{sub}\", only 'status' and 'eviction' are allowed"
        )),
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Create => "CREATE",
        Op::Update => "UPDATE",
        Op::Delete => "DELETE",
    }
}

fn nodes(node: &str, r: &Request<'_>) -> Result<(), String> {
    let target = if r.name.is_empty() {
        r.new
            .and_then(|n| n.pointer("/metadata/name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    } else {
        r.name
    };
    if target != node {
        return Err(format!(
            "node \"{node}\" is not allowed to modify node \"{target}\""
        ));
    }
    let config_source = |v: Option<&Value>| {
        v.and_then(|n| n.pointer("/spec/configSource"))
            .filter(|c| !c.is_null())
            .cloned()
    };
    if r.op == Op::Create {
        if config_source(r.new).is_some() {
            return Err(format!(
                "node \"{node}\" is not allowed to create pods with a non-nil configSource"
            ));
        }
        let forbidden = forbidden_labels(None, r.new);
        if !forbidden.is_empty() {
            return Err(format!(
                "node \"{node}\" is not allowed to set the following labels: {}",
                forbidden.join(", ")
            ));
        }
    }
    if r.op == Op::Update {
        if config_source(r.new).is_some() && config_source(r.new) != config_source(r.old) {
            return Err(format!(
                "node \"{node}\" is not allowed to update configSource to a new non-nil configSource"
            ));
        }
        let taints = |v: Option<&Value>| {
            v.and_then(|n| n.pointer("/spec/taints"))
                .filter(|t| t.as_array().is_some_and(|a| !a.is_empty()))
                .cloned()
        };
        if taints(r.old) != taints(r.new) {
            return Err(format!("node \"{node}\" is not allowed to modify taints"));
        }
        let forbidden = forbidden_labels(r.old, r.new);
        if !forbidden.is_empty() {
            // Kubernetes' own wording, without the node's name.
            return Err(format!(
                "is not allowed to modify labels: {}",
                forbidden.join(", ")
            ));
        }
    }
    Ok(())
}

/// The label keys a kubelet may set on its own Node (`k8s.io/kubelet/pkg/apis`
/// `well_known_labels.go`), besides the `kubelet.kubernetes.io` and `node.kubernetes.io`
/// namespaces.
const KUBELET_LABELS: [&str; 11] = [
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// The namespace (prefix) of a label key, `""` when it has none.
fn label_namespace(key: &str) -> &str {
    key.split_once('/').map_or("", |(ns, _)| ns)
}

fn in_namespace(ns: &str, domain: &str) -> bool {
    ns == domain
        || ns
            .strip_suffix(domain)
            .is_some_and(|head| head.ends_with('.'))
}

/// Whether a node may not add, remove or change the label `key` (NodeRestriction's
/// `getForbiddenLabels`): `node-restriction.kubernetes.io` labels, and `kubernetes.io` or
/// `k8s.io` labels outside the kubelet's set.
pub(crate) fn is_forbidden_node_label(key: &str) -> bool {
    let ns = label_namespace(key);
    if in_namespace(ns, "node-restriction.kubernetes.io") {
        return true;
    }
    let kubernetes = in_namespace(ns, "kubernetes.io") || in_namespace(ns, "k8s.io");
    let kubelet = KUBELET_LABELS.contains(&key)
        || in_namespace(ns, "kubelet.kubernetes.io")
        || in_namespace(ns, "node.kubernetes.io");
    kubernetes && !kubelet
}

/// The label keys that differ between the two Nodes and that a node may not change, sorted.
fn forbidden_labels(old: Option<&Value>, new: Option<&Value>) -> Vec<String> {
    let labels = |v: Option<&Value>| {
        v.and_then(|n| n.pointer("/metadata/labels"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let (old, new) = (labels(old), labels(new));
    let mut out: Vec<String> = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(*v))
        .chain(new.iter().filter(|(k, v)| old.get(*k) != Some(*v)))
        .map(|(k, _)| k.clone())
        .filter(|k| is_forbidden_node_label(k))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req<'a>(
        op: Op,
        resource: &'a str,
        sub: &'a str,
        name: &'a str,
        old: Option<&'a Value>,
        new: Option<&'a Value>,
    ) -> Request<'a> {
        Request {
            op,
            group: "",
            resource,
            subresource: sub,
            namespace: "default",
            name,
            old,
            new,
        }
    }

    #[test]
    fn nodes_change_only_their_own_things() {
        let mine =
            json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"nodeName": "n1"}});
        let theirs = json!({"metadata": {"name": "q"}, "spec": {"nodeName": "n2"}});
        let relabelled =
            json!({"metadata": {"name": "p", "labels": {"a": "2"}}, "spec": {"nodeName": "n1"}});
        assert!(node_restriction(
            "n1",
            &req(Op::Update, "pods", "status", "p", Some(&mine), Some(&mine))
        )
        .is_ok());
        assert_eq!(
            node_restriction(
                "n1",
                &req(
                    Op::Update,
                    "pods",
                    "status",
                    "q",
                    Some(&theirs),
                    Some(&theirs)
                )
            )
            .unwrap_err(),
            "node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
        );
        assert!(node_restriction(
            "n1",
            &req(
                Op::Update,
                "pods",
                "status",
                "p",
                Some(&mine),
                Some(&relabelled)
            )
        )
        .is_err());
        assert!(
            node_restriction("n1", &req(Op::Create, "pods", "", "", None, Some(&mine)))
                .unwrap_err()
                .contains("can only create mirror pods")
        );
        assert!(
            node_restriction("n1", &req(Op::Delete, "pods", "", "q", Some(&theirs), None)).is_err()
        );
        assert!(
            node_restriction("n1", &req(Op::Delete, "pods", "", "p", Some(&mine), None)).is_ok()
        );
        assert_eq!(
            node_restriction("n1", &req(Op::Update, "nodes", "status", "n2", None, None))
                .unwrap_err(),
            "node \"n1\" is not allowed to modify node \"n2\""
        );
        let tainted = json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
        let labelled = |l: Value| json!({"metadata": {"name": "n1", "labels": l}});
        let own =
            labelled(json!({"kubernetes.io/hostname": "n1", "node-role.kubernetes.io/edge": ""}));
        assert_eq!(
            node_restriction("n1", &req(Op::Create, "nodes", "", "", None, Some(&own)))
                .unwrap_err(),
            "node \"n1\" is not allowed to set the following labels: node-role.kubernetes.io/edge"
        );
        let kubelet = labelled(json!({
            "kubernetes.io/hostname": "n1",
            "node.kubernetes.io/exclude-from-external-load-balancers": "",
            "team": "a",
        }));
        assert!(node_restriction(
            "n1",
            &req(Op::Create, "nodes", "", "", None, Some(&kubelet))
        )
        .is_ok());
        // Unchanged reserved labels are fine; adding, changing or removing one is not.
        assert!(node_restriction(
            "n1",
            &req(Op::Update, "nodes", "status", "n1", Some(&own), Some(&own))
        )
        .is_ok());
        let restricted = labelled(json!({
            "kubernetes.io/hostname": "n1",
            "node-role.kubernetes.io/edge": "",
            "node-restriction.kubernetes.io/pci": "yes",
        }));
        assert_eq!(
            node_restriction(
                "n1",
                &req(Op::Update, "nodes", "", "n1", Some(&own), Some(&restricted))
            )
            .unwrap_err(),
            "is not allowed to modify labels: node-restriction.kubernetes.io/pci"
        );
        let dropped = labelled(json!({"kubernetes.io/hostname": "n1"}));
        assert_eq!(
            node_restriction(
                "n1",
                &req(Op::Update, "nodes", "", "n1", Some(&own), Some(&dropped))
            )
            .unwrap_err(),
            "is not allowed to modify labels: node-role.kubernetes.io/edge"
        );
        for (key, forbidden) in [
            ("example.k8s.io/x", true),
            ("k8s.io/x", true),
            ("a.node-restriction.kubernetes.io/x", true),
            ("kubelet.kubernetes.io/x", false),
            ("x.node.kubernetes.io/y", false),
            ("topology.kubernetes.io/zone", false),
            ("topology.kubernetes.io/rack", true),
            ("notkubernetes.io/x", false),
            ("plain", false),
        ] {
            assert_eq!(is_forbidden_node_label(key), forbidden, "{key}");
        }
        let sourced =
            json!({"metadata": {"name": "n1"}, "spec": {"configSource": {"configMap": {}}}});
        assert!(node_restriction(
            "n1",
            &req(Op::Create, "nodes", "", "", None, Some(&sourced))
        )
        .unwrap_err()
        .contains("non-nil configSource"));
        assert!(node_restriction(
            "n1",
            &req(
                Op::Update,
                "nodes",
                "",
                "n1",
                Some(&json!({})),
                Some(&tainted)
            )
        )
        .is_err());
    }
}
