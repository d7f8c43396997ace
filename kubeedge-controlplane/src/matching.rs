//! Matching rules: label selectors, node selectors and node affinity, taints and tolerations.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, Taint, Toleration,
};

type Labels = BTreeMap<String, String>;

/// `true` when a map selector (a Service's `spec.selector`) matches.
pub(crate) fn map_matches(sel: &Labels, labels: Option<&Labels>) -> bool {
    sel.iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let int = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => match (value.and_then(int), values.first().and_then(|x| int(x))) {
            (Some(v), Some(x)) => v > x,
            _ => false,
        },
        "Lt" => match (value.and_then(int), values.first().and_then(|x| int(x))) {
            (Some(v), Some(x)) => v < x,
            _ => false,
        },
        _ => false,
    }
}

/// `true` when the node satisfies one term (its expressions and fields are ANDed; an empty
/// term matches nothing, as upstream).
pub(crate) fn term_matches(t: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or_default();
    let fields = t.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields.iter().all(|r| {
            let v = match r.key.as_str() {
                "metadata.name" => node.metadata.name.as_deref(),
                _ => None,
            };
            requirement_matches(r, v)
        })
}

/// `true` when the node satisfies the pod's `nodeSelector` and required node affinity.
pub(crate) fn node_matches(spec: &PodSpec, node: &Node) -> bool {
    let labels = node.metadata.labels.as_ref();
    for (k, v) in spec.node_selector.iter().flatten() {
        if labels.and_then(|l| l.get(k)) != Some(v) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        None => true,
        Some(sel) => sel
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node)),
    }
}

/// The summed weights of the preferred node-affinity terms the node satisfies.
pub(crate) fn preferred_score(spec: &PodSpec, node: &Node) -> i64 {
    spec.affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|terms| {
            terms
                .iter()
                .filter(|t| term_matches(&t.preference, node))
                .map(|t| i64::from(t.weight))
                .sum()
        })
        .unwrap_or(0)
}

/// `true` when the toleration tolerates the taint.
pub(crate) fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    let key = t.key.as_deref().unwrap_or_default();
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        "Equal" => {
            key == taint.key
                && t.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// The first NoSchedule or NoExecute taint of the node that no toleration tolerates.
pub(crate) fn untolerated_taint<'a>(
    node: &'a Node,
    tolerations: Option<&[Toleration]>,
) -> Option<&'a Taint> {
    let tols = tolerations.unwrap_or_default();
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|taint| !tols.iter().any(|t| tolerates(t, taint)))
}

/// How many PreferNoSchedule taints of the node are not tolerated.
pub(crate) fn prefer_no_schedule_count(node: &Node, tolerations: Option<&[Toleration]>) -> i64 {
    let tols = tolerations.unwrap_or_default();
    let n = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|taint| !tols.iter().any(|t| tolerates(t, taint)))
        .count();
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The status of the node's Ready condition (`Unknown` when absent).
pub(crate) fn node_ready_status(n: &Node) -> &str {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map_or("Unknown", |c| c.status.as_str())
}

/// `true` when one of `labels` is present on the node.
pub(crate) fn has_any_label(n: &Node, labels: &[String]) -> bool {
    n.metadata
        .labels
        .as_ref()
        .is_some_and(|l| labels.iter().any(|k| l.contains_key(k)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": "n1", "labels": labels}, "spec": {"taints": taints}}),
        )
        .expect("node")
    }

    #[test]
    fn affinity_operators_including_does_not_exist() {
        let edge = node(
            json!({"node-role.kubernetes.io/edge": "", "zone": "a", "gen": "5"}),
            json!([]),
        );
        let cloud = node(json!({"zone": "b", "gen": "2"}), json!([]));
        let spec = |expr: serde_json::Value| -> PodSpec {
            serde_json::from_value(json!({"containers": [], "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [expr]}]}}}}))
                .expect("spec")
        };
        let keep_off_edge =
            spec(json!({"key": "node-role.kubernetes.io/edge", "operator": "DoesNotExist"}));
        assert!(!node_matches(&keep_off_edge, &edge));
        assert!(node_matches(&keep_off_edge, &cloud));
        let only_edge = spec(json!({"key": "node-role.kubernetes.io/edge", "operator": "Exists"}));
        assert!(node_matches(&only_edge, &edge) && !node_matches(&only_edge, &cloud));
        let zone_a = spec(json!({"key": "zone", "operator": "In", "values": ["a"]}));
        assert!(node_matches(&zone_a, &edge) && !node_matches(&zone_a, &cloud));
        let not_a = spec(json!({"key": "zone", "operator": "NotIn", "values": ["a"]}));
        assert!(!node_matches(&not_a, &edge) && node_matches(&not_a, &cloud));
        let gt = spec(json!({"key": "gen", "operator": "Gt", "values": ["3"]}));
        assert!(node_matches(&gt, &edge) && !node_matches(&gt, &cloud));
        let lt = spec(json!({"key": "gen", "operator": "Lt", "values": ["3"]}));
        assert!(!node_matches(&lt, &edge) && node_matches(&lt, &cloud));
    }

    #[test]
    fn taints_and_tolerations() {
        let n = node(
            json!({}),
            json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
        );
        assert!(untolerated_taint(&n, None).is_some());
        let tol: Vec<Toleration> = serde_json::from_value(
            json!([{"key": "dedicated", "operator": "Equal", "value": "gpu"}]),
        )
        .expect("tol");
        assert!(untolerated_taint(&n, Some(&tol)).is_none());
        let all: Vec<Toleration> =
            serde_json::from_value(json!([{"operator": "Exists"}])).expect("tol");
        assert!(untolerated_taint(&n, Some(&all)).is_none());
        let wrong: Vec<Toleration> = serde_json::from_value(
            json!([{"key": "dedicated", "value": "cpu", "effect": "NoSchedule"}]),
        )
        .expect("tol");
        assert!(untolerated_taint(&n, Some(&wrong)).is_some());
    }
}
