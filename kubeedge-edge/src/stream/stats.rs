//! The kubelet's resource metrics from the container runtime's stats: `/stats/summary`
//! (`stats/v1alpha1` Summary, what `kubectl top` reads through the metrics API) and
//! `/metrics/resource` (the Prometheus text metrics-server scrapes). CPU rates
//! (`usageNanoCores`) come from the runtime when it computes them (containerd), else from
//! two samples: the previous request's when recent, or two taken a second apart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use super::kubelet::{Kubelet, KubeletError};
use crate::edged::ContainerRuntime;

/// A previous CPU sample older than this is not used for a rate.
const MAX_SAMPLE_AGE: Duration = Duration::from_secs(60);
/// The interval of a fresh two-sample rate.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// CPU samples by container id (`""` for the node): when, and core-nanoseconds used.
#[derive(Debug, Default, Clone)]
pub(super) struct Samples(Arc<Mutex<HashMap<String, (Instant, u64)>>>);

impl Samples {
    /// The rate since the previous sample of `key` (recorded now), if recent.
    fn rate(&self, key: &str, now: Instant, used: u64) -> Option<u64> {
        let mut m = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let prev = m.insert(key.to_owned(), (now, used));
        let (t, u) = prev?;
        let dt = now.checked_duration_since(t)?;
        if dt.is_zero() || dt > MAX_SAMPLE_AGE || used < u {
            return None;
        }
        Some(((used - u) as f64 / dt.as_secs_f64()) as u64)
    }
}

/// One container's figures.
#[derive(Debug)]
struct Usage {
    name: String,
    cpu_core_ns: u64,
    nano_cores: u64,
    working_set: u64,
    usage: Option<u64>,
}

/// One pod's containers.
#[derive(Debug)]
struct PodUsage {
    namespace: String,
    name: String,
    containers: Vec<Usage>,
}

/// Node CPU core-nanoseconds used (from `/proc/stat`) and memory working set (MemTotal less
/// MemFree and the inactive file pages, from `/proc/meminfo`).
fn node_usage() -> (u64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: u64 = stat
        .lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .enumerate()
                // user nice system (idle iowait skipped) irq softirq steal
                .filter(|(i, _)| !matches!(i, 3 | 4))
                .take(7)
                .filter_map(|(_, v)| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb = |k: &str| -> u64 {
        mem.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
            * 1024
    };
    let total = kb("MemTotal:");
    let usage = total.saturating_sub(kb("MemFree:"));
    // USER_HZ is 100 on Linux: a jiffy is 10 ms.
    (
        cpu * 10_000_000,
        usage.saturating_sub(kb("Inactive(file):")),
        usage,
    )
}

impl<R: ContainerRuntime> Kubelet<R> {
    /// Every running container's usage, by pod.
    async fn pod_usage(&self, samples: &Samples, now: Instant) -> Vec<PodUsage> {
        let mut pods = Vec::new();
        let statuses = self.pod_statuses();
        for (key, st) in statuses {
            let Some((ns, name)) = key.split_once('/') else {
                continue;
            };
            let mut containers = Vec::new();
            for cs in st.container_statuses.iter().flatten() {
                let running = cs.state.as_ref().is_some_and(|s| s.running.is_some());
                let Some(id) = cs.container_id.as_deref().filter(|_| running) else {
                    continue;
                };
                let id = id.split_once("://").map_or(id, |(_, r)| r);
                let Ok(s) = self.runtime().stats(id).await else {
                    continue;
                };
                let rate = samples.rate(id, now, s.cpu_usage_core_nano_seconds);
                containers.push(Usage {
                    name: cs.name.clone(),
                    cpu_core_ns: s.cpu_usage_core_nano_seconds,
                    nano_cores: s.cpu_usage_nano_cores.or(rate).unwrap_or(0),
                    working_set: s.memory_working_set_bytes,
                    usage: s.memory_usage_bytes,
                });
            }
            if !containers.is_empty() {
                pods.push(PodUsage {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                    containers,
                });
            }
        }
        pods
    }

    /// Sample everything; when a rate is missing, sample again one window later.
    async fn sample(&self, samples: &Samples) -> (Vec<PodUsage>, (u64, u64, u64, u64)) {
        let needs_second = {
            let m = samples
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            m.get("").is_none_or(|(t, _)| t.elapsed() > MAX_SAMPLE_AGE)
        };
        if needs_second {
            let now = Instant::now();
            let _ = self.pod_usage(samples, now).await;
            let _ = samples.rate("", now, node_usage().0);
            tokio::time::sleep(RATE_WINDOW).await;
        }
        let now = Instant::now();
        let pods = self.pod_usage(samples, now).await;
        let (cpu, ws, usage) = node_usage();
        let rate = samples.rate("", now, cpu).unwrap_or(0);
        (pods, (cpu, rate, ws, usage))
    }

    /// `GET /stats/summary`.
    pub(super) async fn summary(&self, node: &str, samples: &Samples) -> Value {
        let (pods, (cpu, rate, ws, usage)) = self.sample(samples).await;
        let time = jiff::Timestamp::try_from(SystemTime::now())
            .map(|t| t.to_string())
            .unwrap_or_default();
        let pods: Vec<Value> = pods
            .iter()
            .map(|p| {
                let containers: Vec<Value> = p
                    .containers
                    .iter()
                    .map(|c| json!({
                        "name": c.name, "startTime": time,
                        "cpu": {"time": time, "usageNanoCores": c.nano_cores, "usageCoreNanoSeconds": c.cpu_core_ns},
                        "memory": {"time": time, "workingSetBytes": c.working_set, "usageBytes": c.usage.unwrap_or(c.working_set)},
                    }))
                    .collect();
                let sum = |f: fn(&Usage) -> u64| p.containers.iter().map(f).sum::<u64>();
                json!({
                    "podRef": {"name": p.name, "namespace": p.namespace, "uid": ""},
                    "startTime": time, "containers": containers,
                    "cpu": {"time": time, "usageNanoCores": sum(|c| c.nano_cores), "usageCoreNanoSeconds": sum(|c| c.cpu_core_ns)},
                    "memory": {"time": time, "workingSetBytes": sum(|c| c.working_set)},
                })
            })
            .collect();
        json!({
            "node": {
                "nodeName": node, "startTime": time,
                "cpu": {"time": time, "usageNanoCores": rate, "usageCoreNanoSeconds": cpu},
                "memory": {"time": time, "workingSetBytes": ws, "usageBytes": usage},
            },
            "pods": pods,
        })
    }

    /// `GET /metrics/resource`, the kubelet's Prometheus text.
    pub(super) async fn resource_metrics(&self, samples: &Samples) -> String {
        let (pods, (cpu, _, ws, _)) = self.sample(samples).await;
        let ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
            out.push_str(&format!(
                "# HELP {name} [STABLE] {help}\n# TYPE {name} {kind}\n"
            ));
            for (labels, v) in rows {
                out.push_str(&format!("{name}{labels} {v} {ms}\n"));
            }
        };
        let label = |p: &PodUsage, c: &Usage| {
            format!(
                "{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}}",
                c.name, p.namespace, p.name
            )
        };
        let per = |f: &dyn Fn(&Usage) -> f64| -> Vec<(String, f64)> {
            pods.iter()
                .flat_map(|p| p.containers.iter().map(move |c| (label(p, c), f(c))))
                .collect()
        };
        family(
            "container_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the container in core-seconds",
            per(&|c| c.cpu_core_ns as f64 / 1e9),
        );
        family(
            "container_memory_working_set_bytes",
            "gauge",
            "Current working set of the container in bytes",
            per(&|c| c.working_set as f64),
        );
        family(
            "node_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the node in core-seconds",
            vec![(String::new(), cpu as f64 / 1e9)],
        );
        family(
            "node_memory_working_set_bytes",
            "gauge",
            "Current working set of the node in bytes",
            vec![(String::new(), ws as f64)],
        );
        family(
            "scrape_error",
            "gauge",
            "1 if there was an error while getting container metrics, 0 otherwise",
            vec![(String::new(), 0.0)],
        );
        out
    }
}

/// Serve a metrics path; other paths are 404, as on the kubelet.
pub(super) async fn serve<R: ContainerRuntime>(
    kubelet: &Kubelet<R>,
    node: &str,
    samples: &Samples,
    path: &str,
) -> Result<Vec<u8>, KubeletError> {
    match path {
        "/stats/summary" | "/stats/summary/" => {
            Ok(serde_json::to_vec(&kubelet.summary(node, samples).await).unwrap_or_default())
        }
        "/metrics/resource" => Ok(kubelet.resource_metrics(samples).await.into_bytes()),
        other => Err(KubeletError {
            code: 404,
            message: format!("404 page not found: {other}"),
        }),
    }
}
