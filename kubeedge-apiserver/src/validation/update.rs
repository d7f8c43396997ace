//! Update rules: unconditional updates, immutable fields.

use serde_json::{json, Value};

use crate::objects::{self, Cause};
use crate::registry::ResourceDef;

/// `AllowUnconditionalUpdate` of the kind's registry strategy: may a PUT omit
/// `metadata.resourceVersion`? False for Lease (`pkg/registry/coordination/lease/strategy.go`),
/// CustomResourceDefinition (`apiextensions-apiserver/pkg/registry/customresourcedefinition/
/// strategy.go`) and every custom resource (`…/registry/customresource/strategy.go`).
pub(crate) fn allows_unconditional_update(def: &ResourceDef) -> bool {
    def.builtin && !matches!(def.kind.as_str(), "Lease" | "CustomResourceDefinition")
}

/// The cause upstream's generic store gives a PUT without a resourceVersion where the kind
/// needs one (`apiserver/pkg/registry/generic/registry/store.go`).
pub(crate) fn missing_resource_version() -> Cause {
    Cause::invalid_raw(
        "metadata.resourceVersion",
        "0",
        "must be specified for an update",
    )
}

/// `metadata.uid` may be omitted on update (the stored one is kept) but not changed
/// (`apiserver/pkg/registry/rest/update.go`, `apimachinery/pkg/api/validation/objectmeta.go`).
pub(crate) fn uid_causes(old: &Value, new: &Value) -> Vec<Cause> {
    let new_uid = new
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let old_uid = old
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if new_uid.is_empty() || new_uid == old_uid {
        return Vec::new();
    }
    vec![Cause::invalid(
        "metadata.uid",
        new_uid,
        "field is immutable",
    )]
}

/// Drops nulls and empty lists, which upstream's semantic equality does not tell from unset.
fn semantic(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null() && !x.as_array().is_some_and(Vec::is_empty))
                .map(|(k, x)| (k.clone(), semantic(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(semantic).collect()),
        other => other.clone(),
    }
}

const POD_UPDATABLE: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// `ValidatePodUpdate` (`pkg/apis/core/validation/validation.go`): the new spec, once the
/// updatable fields are reset to their old values, must equal the old spec.
fn pod_spec(def: &ResourceDef, old: &Value, new: &Value) -> Vec<Cause> {
    let old_spec = semantic(old.get("spec").unwrap_or(&Value::Null));
    // The decoder defaults the new object before validation, as it did the stored one.
    let mut wrapped = json!({"spec": new.get("spec").cloned().unwrap_or(json!({}))});
    objects::default(def, &mut wrapped);
    let mut munged = semantic(&wrapped["spec"]);
    let Some(m) = munged.as_object_mut() else {
        return Vec::new();
    };
    for list in ["containers", "initContainers"] {
        if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
            for (i, c) in cs.iter_mut().enumerate() {
                let old_image = old_spec
                    .get(list)
                    .and_then(|o| o.get(i))
                    .and_then(|o| o.get("image"));
                if let (Some(c), Some(img)) = (c.as_object_mut(), old_image) {
                    c.insert("image".into(), img.clone());
                }
            }
        }
    }
    let reset = |m: &mut serde_json::Map<String, Value>, k: &str| match old_spec.get(k) {
        Some(v) => {
            m.insert(k.into(), v.clone());
        }
        None => {
            m.remove(k);
        }
    };
    reset(m, "activeDeadlineSeconds");
    let subset = |small: Option<&Value>, big: Option<&Value>| {
        let big = big.and_then(Value::as_array).cloned().unwrap_or_default();
        small
            .and_then(Value::as_array)
            .is_none_or(|s| s.iter().all(|x| big.contains(x)))
    };
    if subset(old_spec.get("tolerations"), m.get("tolerations")) {
        reset(m, "tolerations");
    }
    if subset(m.get("schedulingGates"), old_spec.get("schedulingGates")) {
        reset(m, "schedulingGates");
    }
    let old_grace = old_spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64);
    if old_grace.is_some_and(|g| g < 0)
        && m.get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            == Some(1)
    {
        reset(m, "terminationGracePeriodSeconds");
    }
    if munged == old_spec {
        return Vec::new();
    }
    let mut keys: Vec<&String> = munged
        .as_object()
        .into_iter()
        .chain(old_spec.as_object())
        .flat_map(|o| o.keys())
        .collect();
    keys.sort();
    keys.dedup();
    let diff: Vec<String> = keys
        .into_iter()
        .filter(|k| munged.get(k.as_str()) != old_spec.get(k.as_str()))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("<unset>".into(), Value::to_string);
            format!(
                "  spec.{k}: {} -> {}",
                show(old_spec.get(k.as_str())),
                show(munged.get(k.as_str()))
            )
        })
        .collect();
    vec![Cause::forbidden(
        "spec",
        &format!("{POD_UPDATABLE}\n{}", diff.join("\n")),
    )]
}

/// A label selector as Go's `json.Marshal` writes a `metav1.LabelSelector`.
fn selector_json(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(ml) = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
    {
        parts.push(format!("\"matchLabels\":{}", Value::Object(ml.clone())));
    }
    if let Some(me) = sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
    {
        let items: Vec<String> = me
            .iter()
            .map(|e| {
                let mut f = vec![
                    format!("\"key\":{}", e.get("key").unwrap_or(&json!(""))),
                    format!("\"operator\":{}", e.get("operator").unwrap_or(&json!(""))),
                ];
                if let Some(vs) = e
                    .get("values")
                    .and_then(Value::as_array)
                    .filter(|a| !a.is_empty())
                {
                    f.push(format!("\"values\":{}", Value::Array(vs.clone())));
                }
                format!("{{{}}}", f.join(","))
            })
            .collect();
        parts.push(format!("\"matchExpressions\":[{}]", items.join(",")));
    }
    format!("{{{}}}", parts.join(","))
}

/// apps/v1 Deployment, ReplicaSet and DaemonSet: `spec.selector` is immutable
/// (`pkg/registry/apps/{deployment,replicaset,daemonset}/strategy.go`, ValidateUpdate).
fn selector(old: &Value, new: &Value) -> Vec<Cause> {
    let o = semantic(old.pointer("/spec/selector").unwrap_or(&Value::Null));
    let n = semantic(new.pointer("/spec/selector").unwrap_or(&Value::Null));
    let empty = |v: &Value| {
        v.as_object().is_none_or(|m| {
            m.values()
                .all(|x| x.as_object().is_some_and(|o| o.is_empty()))
        })
    };
    if o == n || (empty(&o) && empty(&n)) {
        return Vec::new();
    }
    let shown = if n.is_null() {
        "null".to_owned()
    } else {
        selector_json(&n)
    };
    vec![Cause::invalid_raw(
        "spec.selector",
        &shown,
        "field is immutable",
    )]
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Service: the allocated ClusterIPs may not change (`validateUpgradeDowngradeClusterIPs`,
/// `pkg/apis/core/validation/validation.go`).
fn cluster_ips(old: &Value, new: &Value) -> Vec<Cause> {
    let ty = |v: &Value| {
        v.pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_owned()
    };
    if ty(old) == "ExternalName" || ty(new) == "ExternalName" {
        return Vec::new();
    }
    let old_ips = strings(old.pointer("/spec/clusterIPs"));
    let mut new_ips = strings(new.pointer("/spec/clusterIPs"));
    let ip = |v: &Value| {
        v.pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    // A changed clusterIP with unchanged clusterIPs is taken as the new primary.
    if ip(new) != ip(old) && new_ips == old_ips {
        new_ips = vec![ip(new)];
    }
    let headless = |ips: &[String]| ips.first().is_some_and(|i| i == "None");
    if headless(&old_ips) && headless(&new_ips) {
        return Vec::new();
    }
    let shown = Value::from(new_ips.clone()).to_string();
    let field = |i: usize| format!("spec.clusterIPs[{i}]");
    if new_ips.is_empty() && !old_ips.is_empty() {
        return vec![Cause::invalid_raw(
            &field(0),
            &shown,
            "primary clusterIP can not be unset",
        )];
    }
    old_ips
        .iter()
        .zip(&new_ips)
        .enumerate()
        .filter(|(_, (o, n))| o != n)
        .map(|(i, _)| Cause::invalid_raw(&field(i), &shown, "may not change once set"))
        .collect()
}

/// The field errors of updating `old` to `new` (both whole objects, `new` already merged
/// with the stored status and metadata) through the main resource (`status == false`).
pub(crate) fn update_causes(
    def: &ResourceDef,
    old: &Value,
    new: &Value,
    status: bool,
) -> Vec<Cause> {
    if !def.builtin || status {
        return Vec::new();
    }
    match def.kind.as_str() {
        "Pod" => pod_spec(def, old, new),
        "Deployment" | "ReplicaSet" | "DaemonSet" => selector(old, new),
        "Service" => cluster_ips(old, new),
        _ => Vec::new(),
    }
}
