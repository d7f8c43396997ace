//! NodeRestriction (`plugin/pkg/admission/noderestriction`): what a node may change, once the
//! Node authorizer let the request through. A node creates only mirror pods bound to itself,
//! deletes only its own pods, updates the status of its own pods (labels unchanged), and
//! changes only its own Node (taints unchanged) and its own Lease.
//!
//! Not checked here: the Node labels a kubelet may set (`node-restriction.kubernetes.io/` and
//! the `kubernetes.io` allow-list) and mirror pods' owner references.

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
    if r.op == Op::Update {
        let taints = |v: Option<&Value>| {
            v.and_then(|n| n.pointer("/spec/taints"))
                .filter(|t| t.as_array().is_some_and(|a| !a.is_empty()))
                .cloned()
        };
        if taints(r.old) != taints(r.new) {
            return Err(format!("node \"{node}\" is not allowed to modify taints"));
        }
    }
    Ok(())
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
