//! `metrics.k8s.io/v1beta1` (`NodeMetrics`, `PodMetrics`), what metrics-server serves and
//! `kubectl top` reads, answered here from each node's kubelet `/stats/summary` through the
//! [`NodeProxy`](crate::NodeProxy): nothing more to install. A node that does not answer is
//! left out, as metrics-server leaves it out.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::Method;
use serde_json::{json, Value};

use super::read::Filter;
use super::{json_response, store_internal, ApiError, Ctx, Inner, Res, Target};
use crate::error::StoreError;
use crate::store::{ObjectKey, Scope, Store};

/// How long a node has to answer.
const NODE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest summary read from a node.
const MAX_SUMMARY: usize = 8 * 1024 * 1024;
const API_VERSION: &str = "metrics.k8s.io/v1beta1";

pub(super) async fn metrics<S: Store>(inner: &Inner<S>, t: &Target, ctx: &Ctx, m: &Method) -> Res {
    if m != Method::GET {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {m}"),
        ));
    }
    let filter = Filter::from(ctx)?;
    let nodes_kind = t.def.kind == "NodeMetrics";
    let scope = Scope {
        resource: if nodes_kind {
            "core/nodes"
        } else {
            "core/pods"
        }
        .into(),
        namespace: t.namespace.clone(),
    };
    let objects: Vec<Value> = inner
        .store
        .list(scope, None, None)
        .await
        .map_err(store_internal)?
        .items
        .iter()
        .filter_map(|s| s.value().ok())
        .filter(|v| t.name.is_none() || name_of(v) == t.name.as_deref().unwrap_or_default())
        .filter(|v| filter.matches(v))
        .collect();
    let nodes: Vec<String> = if nodes_kind {
        objects.iter().map(|v| name_of(v).to_owned()).collect()
    } else {
        let mut n: Vec<String> = objects
            .iter()
            .filter_map(|p| p.pointer("/spec/nodeName").and_then(Value::as_str))
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        n.sort();
        n.dedup();
        n
    };
    let summaries = summaries(inner, &nodes).await;
    let now = jiff::Timestamp::now().to_string();
    let items: Vec<Value> = if nodes_kind {
        summaries
            .iter()
            .filter_map(|(name, s)| {
                let n = s.get("node")?;
                Some(json!({
                    "kind": "NodeMetrics", "apiVersion": API_VERSION,
                    "metadata": {"name": name, "creationTimestamp": now},
                    "timestamp": now, "window": "1s",
                    "usage": usage(n),
                }))
            })
            .collect()
    } else {
        objects
            .iter()
            .filter_map(|pod| pod_metrics(pod, &summaries, &now))
            .collect()
    };
    if let Some(name) = &t.name {
        return items
            .into_iter()
            .next()
            .map(|v| json_response(200, &v))
            .ok_or_else(|| {
                let key = ObjectKey::new(
                    t.def.store_resource(),
                    t.namespace.clone().unwrap_or_default(),
                    name,
                );
                ApiError::store(&t.def, name, StoreError::NotFound(key))
            });
    }
    Ok(json_response(
        200,
        &json!({"kind": format!("{}List", t.def.kind), "apiVersion": API_VERSION, "metadata": {}, "items": items}),
    ))
}

fn name_of(v: &Value) -> &str {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `{"cpu": "<n>n", "memory": "<k>Ki"}` from a summary's `cpu` and `memory`.
fn usage(stats: &Value) -> Value {
    let n = |p: &str| stats.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    json!({
        "cpu": format!("{}n", n("/cpu/usageNanoCores")),
        "memory": format!("{}Ki", n("/memory/workingSetBytes") / 1024),
    })
}

/// A pod's `PodMetrics` from its node's summary, when the summary has it.
fn pod_metrics(pod: &Value, summaries: &BTreeMap<String, Value>, now: &str) -> Option<Value> {
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str)?;
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = name_of(pod);
    let stats = summaries
        .get(node)?
        .get("pods")?
        .as_array()?
        .iter()
        .find(|p| {
            p.pointer("/podRef/name").and_then(Value::as_str) == Some(name)
                && p.pointer("/podRef/namespace").and_then(Value::as_str) == Some(ns)
        })?;
    let containers: Vec<Value> = stats
        .get("containers")?
        .as_array()?
        .iter()
        .map(|c| json!({"name": c.get("name").cloned().unwrap_or_default(), "usage": usage(c)}))
        .collect();
    Some(json!({
        "kind": "PodMetrics", "apiVersion": API_VERSION,
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": now,
                     "labels": pod.pointer("/metadata/labels").cloned().unwrap_or(json!({}))},
        "timestamp": now, "window": "1s", "containers": containers,
    }))
}

/// Each node's `/stats/summary`, asked concurrently; nodes that fail are left out.
async fn summaries<S: Store>(inner: &Inner<S>, nodes: &[String]) -> BTreeMap<String, Value> {
    let Some(proxy) = &inner.config.node_proxy else {
        return BTreeMap::new();
    };
    let asks = nodes.iter().map(|node| {
        let proxy = proxy.0.clone();
        async move {
            let read = async {
                let mut body = proxy.get_stream(node, "/stats/summary").await.ok()?;
                let mut buf: Vec<u8> = Vec::new();
                while let Some(chunk) = body.next().await {
                    let chunk: Bytes = chunk;
                    if buf.len() + chunk.len() > MAX_SUMMARY {
                        return None;
                    }
                    buf.extend_from_slice(&chunk);
                }
                serde_json::from_slice::<Value>(&buf).ok()
            };
            let s = tokio::time::timeout(NODE_TIMEOUT, read)
                .await
                .ok()
                .flatten();
            if s.is_none() {
                tracing::debug!(node, "no stats summary from the node");
            }
            (node.clone(), s)
        }
    });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .filter_map(|(n, s)| Some((n, s?)))
        .collect()
}
