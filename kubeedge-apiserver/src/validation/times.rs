//! Where the served kinds carry `metav1.Time` and `metav1.MicroTime`, and their decoding:
//! every such field is parsed as upstream's decoder parses it and rewritten in the form
//! upstream encodes it (so a Time sent with a fraction is stored without one, as a real
//! server stores it).

use serde_json::Value;

use super::gotime;

/// Time fields of every object's metadata (`ObjectMeta`).
const META: &[&str] = &[
    "metadata.creationTimestamp",
    "metadata.deletionTimestamp",
    "metadata.managedFields[].time",
];

/// Time fields of a pod template's metadata.
const TEMPLATE_META: &[&str] = &[
    "spec.template.metadata.creationTimestamp",
    "spec.template.metadata.deletionTimestamp",
    "spec.template.metadata.managedFields[].time",
];

const POD: &[&str] = &[
    "status.startTime",
    "status.conditions[].lastProbeTime",
    "status.conditions[].lastTransitionTime",
    "status.containerStatuses[].state.running.startedAt",
    "status.containerStatuses[].state.terminated.startedAt",
    "status.containerStatuses[].state.terminated.finishedAt",
    "status.containerStatuses[].lastState.running.startedAt",
    "status.containerStatuses[].lastState.terminated.startedAt",
    "status.containerStatuses[].lastState.terminated.finishedAt",
    "status.initContainerStatuses[].state.running.startedAt",
    "status.initContainerStatuses[].state.terminated.startedAt",
    "status.initContainerStatuses[].state.terminated.finishedAt",
    "status.initContainerStatuses[].lastState.running.startedAt",
    "status.initContainerStatuses[].lastState.terminated.startedAt",
    "status.initContainerStatuses[].lastState.terminated.finishedAt",
    "status.ephemeralContainerStatuses[].state.running.startedAt",
    "status.ephemeralContainerStatuses[].state.terminated.startedAt",
    "status.ephemeralContainerStatuses[].state.terminated.finishedAt",
];

const NODE: &[&str] = &[
    "status.conditions[].lastHeartbeatTime",
    "status.conditions[].lastTransitionTime",
];

const TRANSITION: &[&str] = &["status.conditions[].lastTransitionTime"];

const DEPLOYMENT: &[&str] = &[
    "status.conditions[].lastUpdateTime",
    "status.conditions[].lastTransitionTime",
];

const EVENT_TIME: &[&str] = &["firstTimestamp", "lastTimestamp"];
const EVENT_MICRO: &[&str] = &["eventTime", "series.lastObservedTime"];
const LEASE_MICRO: &[&str] = &["spec.acquireTime", "spec.renewTime"];

/// The `(Time paths, MicroTime paths)` of a built-in kind beyond its metadata; `None` for a
/// kind without a typed form here (custom resources decode into unstructured maps upstream).
fn paths(kind: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    Some(match kind {
        "Pod" => (POD, &[]),
        "Node" => (NODE, &[]),
        "Namespace" | "Service" | "CustomResourceDefinition" | "DaemonSet" | "ReplicaSet" => {
            (TRANSITION, &[])
        }
        "Deployment" => (DEPLOYMENT, &[]),
        "Event" => (EVENT_TIME, EVENT_MICRO),
        "Lease" => (&[], LEASE_MICRO),
        "ConfigMap" | "Secret" | "Endpoints" | "ServiceAccount" => (&[], &[]),
        _ => return None,
    })
}

fn has_template(kind: &str) -> bool {
    matches!(kind, "Deployment" | "ReplicaSet" | "DaemonSet")
}

/// Calls `f` on every value at `path` (dotted keys, `[]` for every element of an array).
fn visit(
    v: &mut Value,
    path: &str,
    f: &mut dyn FnMut(&mut Value) -> Result<(), String>,
) -> Result<(), String> {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let (key, each) = match head.strip_suffix("[]") {
        Some(k) => (k, true),
        None => (head, false),
    };
    let Some(child) = v.as_object_mut().and_then(|m| m.get_mut(key)) else {
        return Ok(());
    };
    let mut step = |x: &mut Value| match rest {
        Some(r) => visit(x, r, f),
        None => f(x),
    };
    if each {
        if let Some(items) = child.as_array_mut() {
            for item in items {
                step(item)?;
            }
        }
        Ok(())
    } else {
        step(child)
    }
}

/// What Go's decoder says of a JSON value that is not a string where a time is expected.
fn not_a_string(v: &Value) -> String {
    let what = match v {
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::String(_) | Value::Null => "string",
    };
    format!("json: cannot unmarshal {what} into Go value of type string")
}

fn rewrite(v: &mut Value, micro: bool) -> Result<(), String> {
    match v {
        Value::Null => Ok(()),
        Value::String(s) => {
            let t = gotime::parse(s, micro)?;
            if let Some(out) = t.format(micro) {
                *s = out;
            }
            Ok(())
        }
        other => Err(not_a_string(other)),
    }
}

/// Decodes every Time and MicroTime field of a built-in `kind` in place, as upstream does;
/// `Err` is the decoder's message for the first field that does not decode.
pub(crate) fn normalize(kind: &str, obj: &mut Value) -> Result<(), String> {
    let Some((times, micros)) = paths(kind) else {
        return Ok(());
    };
    let template: &[&str] = if has_template(kind) {
        TEMPLATE_META
    } else {
        &[]
    };
    for (list, micro) in [
        (META, false),
        (template, false),
        (times, false),
        (micros, true),
    ] {
        for p in list {
            visit(obj, p, &mut |x| rewrite(x, micro))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lease_times_are_micro_and_conditions_are_seconds() {
        let mut lease =
            json!({"spec": {"renewTime": "2024-01-01T00:00:00.123456Z", "acquireTime": null}});
        normalize("Lease", &mut lease).unwrap();
        assert_eq!(lease["spec"]["renewTime"], "2024-01-01T00:00:00.123456Z");
        let mut bad = json!({"spec": {"renewTime": "2024-01-01T00:00:00Z"}});
        assert!(normalize("Lease", &mut bad).is_err());
        let mut node =
            json!({"status": {"conditions": [{"lastHeartbeatTime": "2024-01-01T00:00:00.5Z"}]}});
        normalize("Node", &mut node).unwrap();
        assert_eq!(
            node["status"]["conditions"][0]["lastHeartbeatTime"],
            "2024-01-01T00:00:00Z"
        );
        let mut num = json!({"metadata": {"creationTimestamp": 5}});
        assert_eq!(
            normalize("ConfigMap", &mut num).unwrap_err(),
            "json: cannot unmarshal number into Go value of type string"
        );
    }
}
