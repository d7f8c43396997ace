//! `as=Table` rendering: the columns `kubectl get` and `kubectl get -o wide` print.

use serde_json::{json, Value};

use crate::registry::{Printer, ResourceDef};
use crate::time;

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn or_none(x: &str) -> Value {
    Value::String(if x.is_empty() {
        "<none>".into()
    } else {
        x.into()
    })
}

fn age(obj: &Value) -> Value {
    Value::String(time::age(s(obj, "/metadata/creationTimestamp")))
}

fn col(name: &str, ty: &str, priority: i64, desc: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": desc, "priority": priority})
}

fn count(v: &Value, ptr: &str) -> usize {
    match v.pointer(ptr) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn int(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn pod_status(p: &Value) -> String {
    if p.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let mut reason = s(p, "/status/reason").to_owned();
    if reason.is_empty() {
        reason = s(p, "/status/phase").to_owned();
    }
    if let Some(cs) = p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
    {
        for c in cs.iter().rev() {
            let w = s(c, "/state/waiting/reason");
            let t = s(c, "/state/terminated/reason");
            if !w.is_empty() {
                reason = w.to_owned();
            } else if !t.is_empty() {
                reason = t.to_owned();
            }
        }
    }
    if reason.is_empty() {
        "Pending".into()
    } else {
        reason
    }
}

fn node_status(n: &Value) -> String {
    let mut st = "Unknown".to_owned();
    if let Some(conds) = n.pointer("/status/conditions").and_then(Value::as_array) {
        for c in conds {
            if s(c, "/type") == "Ready" {
                st = match s(c, "/status") {
                    "True" => "Ready".into(),
                    "False" => "NotReady".into(),
                    _ => "Unknown".into(),
                };
            }
        }
    }
    if n.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        st.push_str(",SchedulingDisabled");
    }
    st
}

fn node_roles(n: &Value) -> String {
    let mut roles: Vec<String> = n
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .filter_map(|(k, v)| {
                    if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                        Some(r.to_owned())
                    } else if k == "kubernetes.io/role" {
                        v.as_str().map(str::to_owned)
                    } else {
                        None
                    }
                })
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    roles.join(",")
}

fn node_address(n: &Value, ty: &str) -> String {
    n.pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| s(x, "/type") == ty))
        .map(|x| s(x, "/address").to_owned())
        .unwrap_or_default()
}

fn service_ports(svc: &Value) -> String {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(np) => format!("{}:{np}/{proto}", int(p, "/port")),
                        None => format!("{}/{proto}", int(p, "/port")),
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn selector_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::Object(m))
            if m.contains_key("matchLabels") || m.contains_key("matchExpressions") =>
        {
            crate::selector::LabelSelector::from_object(&Value::Object(m.clone())).render()
        }
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    }
}

fn containers_and_images(obj: &Value, ptr: &str) -> (String, String) {
    let cs = obj
        .pointer(ptr)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// Evaluates a simple JSONPath (`.spec.x`, `.status.conditions[0].type`) for CRD columns.
fn json_path(obj: &Value, path: &str) -> Value {
    let mut cur = obj;
    for part in path.trim_start_matches('.').split('.') {
        if part.is_empty() {
            continue;
        }
        let (field, index) = match part.split_once('[') {
            Some((f, rest)) => (f, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        match cur.get(field) {
            Some(v) => cur = v,
            None => return Value::Null,
        }
        if let Some(i) = index {
            match cur.get(i) {
                Some(v) => cur = v,
                None => return Value::Null,
            }
        }
    }
    cur.clone()
}

/// The column definitions for a resource.
pub(crate) fn columns(def: &ResourceDef) -> Vec<Value> {
    let name = col(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    );
    let age_c = col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created.");
    let mut cols = vec![name];
    match &def.printer {
        Printer::Pod => cols.extend([
            col("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
            col("Status", "string", 0, "The aggregate status of the containers in this pod."),
            col("Restarts", "string", 0, "The number of times the containers in this pod have been restarted."),
            age_c,
            col("IP", "string", 1, "IP address allocated to the pod."),
            col("Node", "string", 1, "Name of the node the pod is assigned to."),
            col("Nominated Node", "string", 1, "Name of the node the pod is nominated to."),
            col("Readiness Gates", "string", 1, "Pod readiness gates."),
        ]),
        Printer::Node => cols.extend([
            col("Status", "string", 0, "The status of the node"),
            col("Roles", "string", 0, "The roles of the node"),
            age_c,
            col("Version", "string", 0, "Kubelet Version reported by the node."),
            col("Internal-IP", "string", 1, "List of internal IPs."),
            col("External-IP", "string", 1, "List of external IPs."),
            col("OS-Image", "string", 1, "OS Image reported by the node."),
            col("Kernel-Version", "string", 1, "Kernel Version reported by the node."),
            col("Container-Runtime", "string", 1, "Container Runtime Version reported by the node."),
        ]),
        Printer::Namespace => cols.extend([col("Status", "string", 0, "The status of the namespace"), age_c]),
        Printer::Service => cols.extend([
            col("Type", "string", 0, "The type of the service."),
            col("Cluster-IP", "string", 0, "The cluster IP of the service."),
            col("External-IP", "string", 0, "The external IPs of the service."),
            col("Port(s)", "string", 0, "The ports of the service."),
            age_c,
            col("Selector", "string", 1, "The label selector of the service."),
        ]),
        Printer::Deployment => cols.extend([
            col("Ready", "string", 0, "Number of the pod with ready state"),
            col("Up-to-date", "string", 0, "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
            col("Available", "string", 0, "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
            age_c,
            col("Containers", "string", 1, "Names of each container in the template."),
            col("Images", "string", 1, "Images referenced by each container in the template."),
            col("Selector", "string", 1, "Label selector for pods."),
        ]),
        Printer::ReplicaSet => cols.extend([
            col("Desired", "integer", 0, "Number of desired pods."),
            col("Current", "integer", 0, "Number of actual replicas."),
            col("Ready", "integer", 0, "Number of ready replicas."),
            age_c,
            col("Containers", "string", 1, "Names of each container in the template."),
            col("Images", "string", 1, "Images referenced by each container in the template."),
            col("Selector", "string", 1, "Label selector for pods."),
        ]),
        Printer::DaemonSet => cols.extend([
            col("Desired", "integer", 0, "The desired number of daemon pods."),
            col("Current", "integer", 0, "The current number of daemon pods."),
            col("Ready", "integer", 0, "The number of daemon pods that are ready."),
            col("Up-to-date", "integer", 0, "The number of updated daemon pods."),
            col("Available", "integer", 0, "The number of available daemon pods."),
            col("Node Selector", "string", 0, "The node selector of the daemon set."),
            age_c,
        ]),
        Printer::ConfigMap => cols.extend([col("Data", "integer", 0, "Number of data entries."), age_c]),
        Printer::Secret => cols.extend([
            col("Type", "string", 0, "The type of the secret"),
            col("Data", "integer", 0, "Number of data entries."),
            age_c,
        ]),
        Printer::Endpoints => cols.extend([col("Endpoints", "string", 0, "Endpoints of the service"), age_c]),
        Printer::Event => {
            // Upstream leads with LAST SEEN and shows the name only with -o wide.
            cols = vec![
                col("Last Seen", "string", 0, "Time of the last occurrence"),
                col("Type", "string", 0, "Type of the event"),
                col("Reason", "string", 0, "Reason of the event"),
                col("Object", "string", 0, "The involved object"),
                col("Message", "string", 0, "The message of the event"),
                col("Name", "string", 1, "Name must be unique within a namespace."),
            ];
        }
        Printer::Lease => cols.extend([col("Holder", "string", 0, "The holder of the lease"), age_c]),
        Printer::Crd => cols.push(col("Created At", "date", 0, "Creation time")),
        Printer::Custom(custom) => {
            for (n, t, _, p) in custom {
                cols.push(col(n, t, *p, ""));
            }
            cols.push(age_c);
        }
        Printer::Default => cols.push(age_c),
    }
    cols
}

/// The cells of one row.
pub(crate) fn cells(def: &ResourceDef, o: &Value) -> Vec<Value> {
    let name = Value::String(s(o, "/metadata/name").to_owned());
    let mut c = vec![name];
    match &def.printer {
        Printer::Pod => {
            let total = count(o, "/spec/containers");
            let statuses = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let ready = statuses
                .map(|cs| {
                    cs.iter()
                        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                        .count()
                })
                .unwrap_or(0);
            let restarts: i64 = statuses
                .map(|cs| cs.iter().map(|c| int(c, "/restartCount")).sum())
                .unwrap_or(0);
            c.extend([
                Value::String(format!("{ready}/{total}")),
                Value::String(pod_status(o)),
                json!(restarts),
                age(o),
                or_none(s(o, "/status/podIP")),
                or_none(s(o, "/spec/nodeName")),
                or_none(s(o, "/status/nominatedNodeName")),
                or_none(""),
            ]);
        }
        Printer::Node => {
            let roles = node_roles(o);
            c.extend([
                Value::String(node_status(o)),
                or_none(&roles),
                age(o),
                Value::String(s(o, "/status/nodeInfo/kubeletVersion").to_owned()),
                or_none(&node_address(o, "InternalIP")),
                or_none(&node_address(o, "ExternalIP")),
                or_none(s(o, "/status/nodeInfo/osImage")),
                or_none(s(o, "/status/nodeInfo/kernelVersion")),
                or_none(s(o, "/status/nodeInfo/containerRuntimeVersion")),
            ]);
        }
        Printer::Namespace => {
            let phase = s(o, "/status/phase");
            c.extend([
                Value::String(if phase.is_empty() {
                    "Active".into()
                } else {
                    phase.into()
                }),
                age(o),
            ]);
        }
        Printer::Service => {
            let ext: Vec<&str> = o
                .pointer("/spec/externalIPs")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let ty = s(o, "/spec/type");
            let ext = if ext.is_empty() && ty == "LoadBalancer" {
                "<pending>".to_owned()
            } else {
                ext.join(",")
            };
            c.extend([
                Value::String(if ty.is_empty() {
                    "ClusterIP".into()
                } else {
                    ty.into()
                }),
                or_none(s(o, "/spec/clusterIP")),
                or_none(&ext),
                or_none(&service_ports(o)),
                age(o),
                or_none(&selector_string(o.pointer("/spec/selector"))),
            ]);
        }
        Printer::Deployment => {
            let (names, images) = containers_and_images(o, "/spec/template/spec/containers");
            c.extend([
                Value::String(format!(
                    "{}/{}",
                    int(o, "/status/readyReplicas"),
                    int(o, "/spec/replicas")
                )),
                json!(int(o, "/status/updatedReplicas")),
                json!(int(o, "/status/availableReplicas")),
                age(o),
                Value::String(names),
                Value::String(images),
                Value::String(selector_string(o.pointer("/spec/selector"))),
            ]);
        }
        Printer::ReplicaSet => {
            let (names, images) = containers_and_images(o, "/spec/template/spec/containers");
            c.extend([
                json!(int(o, "/spec/replicas")),
                json!(int(o, "/status/replicas")),
                json!(int(o, "/status/readyReplicas")),
                age(o),
                Value::String(names),
                Value::String(images),
                Value::String(selector_string(o.pointer("/spec/selector"))),
            ]);
        }
        Printer::DaemonSet => c.extend([
            json!(int(o, "/status/desiredNumberScheduled")),
            json!(int(o, "/status/currentNumberScheduled")),
            json!(int(o, "/status/numberReady")),
            json!(int(o, "/status/updatedNumberScheduled")),
            json!(int(o, "/status/numberAvailable")),
            or_none(&selector_string(
                o.pointer("/spec/template/spec/nodeSelector"),
            )),
            age(o),
        ]),
        Printer::ConfigMap => {
            c.extend([json!(count(o, "/data") + count(o, "/binaryData")), age(o)])
        }
        Printer::Secret => c.extend([
            Value::String(s(o, "/type").to_owned()),
            json!(count(o, "/data")),
            age(o),
        ]),
        Printer::Endpoints => {
            let mut eps = Vec::new();
            if let Some(subsets) = o.get("subsets").and_then(Value::as_array) {
                for ss in subsets {
                    let ports: Vec<i64> = ss
                        .get("ports")
                        .and_then(Value::as_array)
                        .map(|p| p.iter().map(|p| int(p, "/port")).collect())
                        .unwrap_or_default();
                    for a in ss
                        .get("addresses")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        for p in &ports {
                            eps.push(format!("{}:{p}", s(a, "/ip")));
                        }
                    }
                }
            }
            c.extend([or_none(&eps.join(",")), age(o)]);
        }
        Printer::Event => {
            let last = [
                s(o, "/lastTimestamp"),
                s(o, "/eventTime"),
                s(o, "/metadata/creationTimestamp"),
            ]
            .into_iter()
            .find(|x| !x.is_empty())
            .unwrap_or_default();
            c = vec![
                Value::String(time::age(last)),
                Value::String(s(o, "/type").to_owned()),
                Value::String(s(o, "/reason").to_owned()),
                Value::String(format!(
                    "{}/{}",
                    s(o, "/involvedObject/kind").to_ascii_lowercase(),
                    s(o, "/involvedObject/name")
                )),
                Value::String(s(o, "/message").to_owned()),
                Value::String(s(o, "/metadata/name").to_owned()),
            ];
        }
        Printer::Lease => c.extend([or_none(s(o, "/spec/holderIdentity")), age(o)]),
        Printer::Crd => c.push(Value::String(
            s(o, "/metadata/creationTimestamp").to_owned(),
        )),
        Printer::Custom(custom) => {
            for (_, _, path, _) in custom {
                c.push(json_path(o, path));
            }
            c.push(age(o));
        }
        Printer::Default => c.push(age(o)),
    }
    c
}

/// One table row, carrying the object as asked by `includeObject`.
pub(crate) fn row(def: &ResourceDef, obj: &Value, include: &str) -> Value {
    let object = match include {
        "None" => Value::Null,
        "Object" => obj.clone(),
        _ => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    };
    let mut r = json!({"cells": cells(def, obj)});
    if !object.is_null() {
        r["object"] = object;
    }
    r
}

/// A whole table.
pub(crate) fn table(
    def: &ResourceDef,
    objs: &[Value],
    include: &str,
    rv: u64,
    cont: Option<String>,
) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = Value::String(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns(def),
        "rows": objs.iter().map(|o| row(def, o, include)).collect::<Vec<_>>(),
    })
}
