//! The API's Prometheus metrics: request latency and counts by verb, group, resource and
//! subresource (as kube-apiserver's `apiserver_request_duration_seconds`), and the open
//! watches. Labels only ever name resources the registry serves, so a client requesting
//! random paths cannot grow the label set.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::target;
use crate::registry::Registry as Resources;

/// What one request is, for the labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct RequestLabels {
    verb: &'static str,
    group: String,
    resource: String,
    subresource: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CodeLabels {
    verb: &'static str,
    group: String,
    resource: String,
    subresource: String,
    code: u16,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The API's figures. Cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct ApiMetrics {
    latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    requests: Family<CodeLabels, Counter>,
}

impl ApiMetrics {
    pub(super) fn register(registry: &mut Registry, watches: Arc<AtomicUsize>) -> Self {
        let m = Self {
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            requests: Family::default(),
        };
        registry.register(
            "kubeedge_apiserver_request_duration_seconds",
            "Time to the response head, by verb, group, resource and subresource",
            m.latency.clone(),
        );
        registry.register(
            "kubeedge_apiserver_requests",
            "Requests answered, by verb, group, resource, subresource and status code",
            m.requests.clone(),
        );
        registry.register_collector(Box::new(Watches(watches)));
        m
    }

    pub(super) fn observe(&self, labels: RequestLabels, code: u16, took: Duration) {
        self.latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        let RequestLabels {
            verb,
            group,
            resource,
            subresource,
        } = labels;
        self.requests
            .get_or_create(&CodeLabels {
                verb,
                group,
                resource,
                subresource,
                code,
            })
            .inc();
    }
}

/// The verb and resource of a request, as kube-apiserver's RequestInfo names them. Paths that
/// are not a served resource get the method as verb and an empty resource.
pub(super) fn request_labels(
    resources: &Resources,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> RequestLabels {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let resolved = match segs.as_slice() {
        ["api", version, rest @ ..] => target::resolve(resources, "", version, rest).ok(),
        ["apis", group, version, rest @ ..] => {
            target::resolve(resources, group, version, rest).ok()
        }
        _ => None,
    };
    let Some(t) = resolved else {
        return RequestLabels {
            verb: non_resource_verb(method),
            group: String::new(),
            resource: String::new(),
            subresource: String::new(),
        };
    };
    let watch = query.is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
    });
    let sub = t.sub.clone().unwrap_or_default();
    let verb = match (method, t.name.is_some(), sub.as_str()) {
        (_, _, "exec" | "attach" | "portforward") => "connect",
        (&Method::GET, _, _) if watch => "watch",
        (&Method::GET, true, _) => "get",
        (&Method::GET, false, _) => "list",
        (&Method::POST, _, _) => "create",
        (&Method::PUT, _, _) => "update",
        (&Method::PATCH, _, _) => "patch",
        (&Method::DELETE, true, _) => "delete",
        (&Method::DELETE, false, _) => "deletecollection",
        _ => non_resource_verb(method),
    };
    RequestLabels {
        verb,
        group: t.def.group.clone(),
        resource: t.def.plural.clone(),
        subresource: sub,
    }
}

fn non_resource_verb(method: &Method) -> &'static str {
    match *method {
        Method::GET => "get",
        Method::HEAD => "head",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// The open watch streams, read at scrape time.
#[derive(Debug)]
struct Watches(Arc<AtomicUsize>);

impl prometheus_client::collector::Collector for Watches {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let n = i64::try_from(self.0.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        ConstGauge::new(n).encode(encoder.encode_descriptor(
            "kubeedge_apiserver_watches",
            "Watch streams open",
            None,
            MetricType::Gauge,
        )?)
    }
}
