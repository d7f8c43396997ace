//! From a PodSpec to what the lifecycle and the runtime need: the [`PodPlan`], and for each
//! container its [`ContainerConfig`] (command, args, env with valueFrom, mounts, ports,
//! limits, securityContext).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::lifecycle::{Backoff, ContainerPlan, PodLifecycle, PodPlan, ProbePlan, RestartPolicy};
use super::link::{Link, LinkError};
use super::runtime::{
    ContainerConfig, Mount, NetworkMode, PidMode, LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_NODE,
    LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID,
};
use super::volumes::{self, HostVolume};

/// Why a container cannot be created from its spec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum SpecError {
    /// A referenced configMap, secret or key does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What.
        what: String,
    },
    /// A volume cannot be set up.
    #[error("volume {volume:?}: {message}")]
    InvalidVolume {
        /// Volume name.
        volume: String,
        /// Why.
        message: String,
    },
    /// A field is invalid.
    #[error("invalid spec: {0}")]
    Invalid(String),
    /// A stored object does not decode.
    #[error("{what} does not decode: {message}")]
    BadObject {
        /// What.
        what: String,
        /// Why.
        message: String,
    },
    /// The store or the cloud failed.
    #[error("looking up a referenced object failed")]
    Link(#[from] LinkError),
}

impl SpecError {
    /// The container waiting reason kubelet reports for it.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::InvalidVolume { .. } => "CreateContainerError",
            _ => "CreateContainerConfigError",
        }
    }
}

/// A downward API field of the pod (`metadata.name`, `metadata.labels['k']`, `status.podIP`, …).
pub(crate) fn field_ref(pod: &Pod, path: &str, (host_ip, pod_ip): (&str, &str)) -> Option<String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_key = |prefix: &str| -> Option<String> {
        let rest = path.strip_prefix(prefix)?.strip_prefix("['")?;
        Some(rest.strip_suffix("']")?.to_owned())
    };
    if let Some(k) = map_key("metadata.labels") {
        return Some(m.labels.as_ref()?.get(&k).cloned().unwrap_or_default());
    }
    if let Some(k) = map_key("metadata.annotations") {
        return Some(m.annotations.as_ref()?.get(&k).cloned().unwrap_or_default());
    }
    let join = |b: Option<&BTreeMap<String, String>>| {
        b.map(|b| {
            b.iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
    };
    Some(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => join(m.labels.as_ref()),
        "metadata.annotations" => join(m.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_owned(),
        "status.podIP" | "status.podIPs" => pod_ip.to_owned(),
        _ => return None,
    })
}

fn probe_plan(p: Option<&Probe>) -> Option<ProbePlan> {
    let p = p?;
    let secs = |v: Option<i32>, d: i32| Duration::from_secs(v.unwrap_or(d).max(0) as u64);
    Some(ProbePlan {
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).max(Duration::from_millis(100)),
        success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
    })
}

fn container_plan(c: &Container) -> ContainerPlan {
    ContainerPlan {
        name: c.name.clone(),
        startup: probe_plan(c.startup_probe.as_ref()),
        liveness: probe_plan(c.liveness_probe.as_ref()),
        readiness: probe_plan(c.readiness_probe.as_ref()),
    }
}

/// The pod's lifecycle plan.
pub(crate) fn plan(pod: &Pod) -> PodPlan {
    let spec = pod.spec.clone().unwrap_or_default();
    PodPlan {
        init: spec
            .init_containers
            .iter()
            .flatten()
            .map(container_plan)
            .collect(),
        containers: spec.containers.iter().map(container_plan).collect(),
        restart_policy: RestartPolicy::parse(spec.restart_policy.as_deref()),
        grace: Duration::from_secs(
            spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64
        ),
    }
}

/// A new lifecycle for `pod`.
pub(crate) fn lifecycle(pod: &Pod, backoff: Backoff) -> PodLifecycle {
    PodLifecycle::new(plan(pod), backoff)
}

/// A spec container by name (init containers included).
pub(crate) fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == name)
}

/// Memory in bytes from a quantity (`64Mi`, `1G`, `128974848`, `129e6`).
pub(crate) fn parse_memory(q: &Quantity) -> Option<i64> {
    let s = q.0.trim();
    let suffixes: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suf, mult) in suffixes {
        if let Some(n) = s.strip_suffix(suf) {
            return n.parse::<f64>().ok().map(|v| (v * mult) as i64);
        }
    }
    if let Some(n) = s.strip_suffix('m') {
        return n.parse::<f64>().ok().map(|v| (v / 1000.0) as i64);
    }
    s.parse::<f64>().ok().map(|v| v as i64)
}

/// CPU in millicores from a quantity (`500m`, `1`, `0.25`).
pub(crate) fn parse_cpu_milli(q: &Quantity) -> Option<i64> {
    let s = q.0.trim();
    if let Some(n) = s.strip_suffix('m') {
        return n.parse::<f64>().ok().map(|v| v as i64);
    }
    s.parse::<f64>().ok().map(|v| (v * 1000.0) as i64)
}

/// Lookups of configMaps and secrets for one container start (each fetched once).
#[derive(Debug, Default)]
pub(crate) struct Refs {
    cache: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
}

impl Refs {
    async fn get(
        &mut self,
        link: &Link,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> Result<Option<&BTreeMap<String, Vec<u8>>>, SpecError> {
        let key = format!("{kind}/{ns}/{name}");
        if !self.cache.contains_key(&key) {
            let v = if kind == "configmap" {
                volumes::configmap_data(link, ns, name).await?
            } else {
                volumes::secret_data(link, ns, name).await?
            };
            self.cache.insert(key.clone(), v);
        }
        Ok(self.cache.get(&key).and_then(Option::as_ref))
    }
}

/// The environment of a container (env and envFrom, valueFrom resolved), in order, then the
/// service variables it does not define itself (the kubelet's `makeEnvironmentVariables`).
pub(crate) async fn environment(
    pod: &Pod,
    c: &Container,
    link: &Link,
    ips: (&str, &str),
    services: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, SpecError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut refs = Refs::default();
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(e) = env.iter_mut().find(|(n, _)| *n == k) {
            e.1 = v;
        } else {
            env.push((k, v));
        }
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, name, optional) = if let Some(cm) = &from.config_map_ref {
            ("configmap", cm.name.clone(), cm.optional.unwrap_or(false))
        } else if let Some(s) = &from.secret_ref {
            ("secret", s.name.clone(), s.optional.unwrap_or(false))
        } else {
            continue;
        };
        match refs.get(link, kind, ns, &name).await? {
            Some(data) => {
                for (k, v) in data {
                    set(
                        &mut env,
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(v).into_owned(),
                    );
                }
            }
            None if optional => {}
            None => {
                return Err(SpecError::NotFound {
                    what: format!("{kind} {ns}/{name}"),
                })
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = match &e.value_from {
            None => expand(e.value.as_deref().unwrap_or_default(), &env, services),
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    field_ref(pod, &f.field_path, ips).ok_or_else(|| {
                        SpecError::Invalid(format!("unsupported fieldPath {:?}", f.field_path))
                    })?
                } else if let Some(r) = &from.resource_field_ref {
                    resource_field(c, &r.resource).ok_or_else(|| {
                        SpecError::Invalid(format!("unsupported resource {:?}", r.resource))
                    })?
                } else {
                    let (kind, name, key, optional) = if let Some(k) = &from.config_map_key_ref {
                        ("configmap", &k.name, &k.key, k.optional.unwrap_or(false))
                    } else if let Some(k) = &from.secret_key_ref {
                        ("secret", &k.name, &k.key, k.optional.unwrap_or(false))
                    } else {
                        continue;
                    };
                    match refs
                        .get(link, kind, ns, name)
                        .await?
                        .and_then(|d| d.get(key.as_str()))
                    {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(SpecError::NotFound {
                                what: format!("key {key:?} of {kind} {ns}/{name}"),
                            })
                        }
                    }
                }
            }
        };
        set(&mut env, e.name.clone(), value);
    }
    for (k, v) in services {
        if !env.iter().any(|(n, _)| n == k) {
            env.push((k.clone(), v.clone()));
        }
    }
    Ok(env)
}

fn resource_field(c: &Container, resource: &str) -> Option<String> {
    let res = c.resources.as_ref();
    let (which, what) = resource.split_once('.')?;
    let map = match which {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return None,
    };
    let q = map.and_then(|m| m.get(what));
    Some(match (what, q) {
        ("cpu", Some(q)) => ((parse_cpu_milli(q)? + 999) / 1000).to_string(),
        ("memory", Some(q)) => parse_memory(q)?.to_string(),
        (_, Some(q)) => q.0.clone(),
        (_, None) => "0".to_owned(),
    })
}

/// `$(VAR)` expansion against the variables defined so far, then the service variables
/// (`$$` escapes).
fn expand(s: &str, env: &[(String, String)], services: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    let found = env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);
                    match found.or_else(|| services.get(name)) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Inputs to [`container_config`] beyond the pod.
#[derive(Debug)]
pub(crate) struct Placement<'a> {
    /// Node name (label).
    pub(crate) node: &'a str,
    /// The sandbox's id (network and IPC are shared with it, PID when the pod says so).
    pub(crate) sandbox_id: &'a str,
    /// `rootDirectory`.
    pub(crate) root: &'a Path,
    /// Node IP and pod IP.
    pub(crate) ips: (&'a str, &'a str),
    /// The restart count for the label.
    pub(crate) attempt: u32,
    /// The service environment variables the pod sees.
    pub(crate) services: &'a BTreeMap<String, String>,
}

/// The labels every container of the pod carries.
pub(crate) fn pod_labels(pod: &Pod, node: &str, container: &str) -> BTreeMap<String, String> {
    let m = &pod.metadata;
    let mut l = BTreeMap::new();
    l.insert(LABEL_POD_UID.into(), m.uid.clone().unwrap_or_default());
    l.insert(LABEL_POD_NAME.into(), m.name.clone().unwrap_or_default());
    l.insert(
        LABEL_POD_NAMESPACE.into(),
        m.namespace.clone().unwrap_or_default(),
    );
    l.insert(LABEL_CONTAINER.into(), container.into());
    l.insert(LABEL_NODE.into(), node.into());
    l
}

/// Docker container name, as kubelet's: `k8s_<container>_<pod>_<ns>_<uid>_<attempt>`.
pub(crate) fn container_name(pod: &Pod, container: &str, attempt: u32) -> String {
    let m = &pod.metadata;
    format!(
        "k8s_{container}_{}_{}_{}_{attempt}",
        m.name.as_deref().unwrap_or_default(),
        m.namespace.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    )
}

/// The PID namespace of the pod's containers (`sandbox` given) or of its sandbox, as the
/// kubelet chooses it: the host's with `hostPID`, the sandbox's with `shareProcessNamespace`,
/// otherwise each container its own.
pub(crate) fn pid_mode(spec: &PodSpec, sandbox: Option<&str>) -> PidMode {
    if spec.host_pid == Some(true) {
        return PidMode::Host;
    }
    match sandbox {
        Some(id) if spec.share_process_namespace == Some(true) => PidMode::Container(id.to_owned()),
        _ => PidMode::Private,
    }
}

/// The runtime config of container `c`.
pub(crate) async fn container_config(
    pod: &Pod,
    c: &Container,
    link: &Link,
    at: &Placement<'_>,
) -> Result<ContainerConfig, SpecError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let image = c
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| SpecError::Invalid(format!("container {:?} has no image", c.name)))?;
    let env = environment(pod, c, link, at.ips, at.services).await?;
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let mut prepared: HashMap<String, HostVolume> = HashMap::new();
    let mut mounts = Vec::new();
    for vm in c.volume_mounts.iter().flatten() {
        if !prepared.contains_key(&vm.name) {
            let v = spec
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == vm.name)
                .ok_or_else(|| SpecError::InvalidVolume {
                    volume: vm.name.clone(),
                    message: "mounted but not defined in spec.volumes".into(),
                })?;
            let hv = volumes::prepare(at.root, pod, v, link, at.ips).await?;
            prepared.insert(vm.name.clone(), hv);
        }
        let hv = &prepared[&vm.name];
        if !vm.mount_path.starts_with('/') {
            return Err(SpecError::InvalidVolume {
                volume: vm.name.clone(),
                message: format!("mountPath {:?} must be absolute", vm.mount_path),
            });
        }
        let mut host = hv.path.clone();
        if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                return Err(SpecError::InvalidVolume {
                    volume: vm.name.clone(),
                    message: format!("subPath {sub:?} must be relative"),
                });
            }
            host = host.join(sub);
        }
        mounts.push(Mount {
            host_path: host.display().to_string(),
            container_path: vm.mount_path.clone(),
            read_only: hv.read_only || vm.read_only.unwrap_or(false),
        });
    }
    // The termination log, as kubelet mounts it.
    let term_dir = volumes::pod_dir(at.root, uid)
        .join("containers")
        .join(&c.name);
    if std::fs::create_dir_all(&term_dir).is_ok() {
        let file = term_dir.join(format!("termination-log-{}", at.attempt));
        if std::fs::write(&file, b"").is_ok() {
            mounts.push(Mount {
                host_path: file.display().to_string(),
                container_path: c
                    .termination_message_path
                    .clone()
                    .unwrap_or_else(|| "/dev/termination-log".into()),
                read_only: false,
            });
        }
    }
    let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let memory_limit = limits.and_then(|l| l.get("memory")).and_then(parse_memory);
    let nano_cpus = limits
        .and_then(|l| l.get("cpu"))
        .and_then(parse_cpu_milli)
        .map(|m| m * 1_000_000);
    let cpu_shares = requests
        .and_then(|l| l.get("cpu"))
        .and_then(parse_cpu_milli)
        .map(|m| (m * 1024 / 1000).max(2));
    let sc = c.security_context.as_ref();
    let psc = spec.security_context.as_ref();
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or(psc.and_then(|s| s.run_as_user));
    let run_as_group = sc
        .and_then(|s| s.run_as_group)
        .or(psc.and_then(|s| s.run_as_group));
    let user = run_as_user.map(|u| match run_as_group {
        Some(g) => format!("{u}:{g}"),
        None => u.to_string(),
    });
    let mut labels = pod_labels(pod, at.node, &c.name);
    labels.insert(LABEL_ATTEMPT.into(), at.attempt.to_string());
    // Command and args expand against the final environment (service variables included).
    let none = BTreeMap::new();
    Ok(ContainerConfig {
        name: container_name(pod, &c.name, at.attempt),
        image,
        entrypoint: c
            .command
            .clone()
            .filter(|v| !v.is_empty())
            .map(|v| v.iter().map(|a| expand(a, &env, &none)).collect()),
        args: c
            .args
            .clone()
            .filter(|v| !v.is_empty())
            .map(|v| v.iter().map(|a| expand(a, &env, &none)).collect()),
        env,
        working_dir: c.working_dir.clone(),
        labels,
        mounts,
        network: NetworkMode::Container(at.sandbox_id.to_owned()),
        ports: Vec::new(),
        share_with: Some(at.sandbox_id.to_owned()),
        pid: pid_mode(&spec, Some(at.sandbox_id)),
        hostname: None,
        dns: None,
        memory_limit,
        nano_cpus,
        cpu_shares,
        user,
        privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        stdin: c.stdin.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_memory(&Quantity("64Mi".into())), Some(64 << 20));
        assert_eq!(parse_memory(&Quantity("1G".into())), Some(1_000_000_000));
        assert_eq!(parse_memory(&Quantity("12345".into())), Some(12345));
        assert_eq!(parse_cpu_milli(&Quantity("500m".into())), Some(500));
        assert_eq!(parse_cpu_milli(&Quantity("0.25".into())), Some(250));
        assert_eq!(parse_cpu_milli(&Quantity("2".into())), Some(2000));
        assert_eq!(parse_memory(&Quantity("x".into())), None);
    }

    #[test]
    fn variable_expansion() {
        let env = vec![("A".to_owned(), "1".to_owned())];
        let mut svc = BTreeMap::new();
        svc.insert("A".to_owned(), "svc".to_owned());
        svc.insert("S".to_owned(), "2".to_owned());
        assert_eq!(expand("x$(A)y", &env, &svc), "x1y");
        assert_eq!(expand("$(S)", &env, &svc), "2");
        assert_eq!(expand("$(B)", &env, &svc), "$(B)");
        assert_eq!(expand("$$(A)", &env, &svc), "$(A)");
        assert_eq!(expand("$", &env, &svc), "$");
        assert_eq!(expand("$(A", &env, &svc), "$(A");
    }

    #[test]
    fn downward_fields() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "x"}},
            "spec": {"nodeName": "n", "containers": []}
        }))
        .unwrap();
        let ips = ("10.0.0.1", "172.17.0.2");
        assert_eq!(field_ref(&pod, "metadata.name", ips).as_deref(), Some("p"));
        assert_eq!(
            field_ref(&pod, "metadata.labels['app']", ips).as_deref(),
            Some("x")
        );
        assert_eq!(
            field_ref(&pod, "status.podIP", ips).as_deref(),
            Some("172.17.0.2")
        );
        assert_eq!(field_ref(&pod, "spec.nodeName", ips).as_deref(), Some("n"));
        assert_eq!(field_ref(&pod, "nope", ips), None);
    }
}
