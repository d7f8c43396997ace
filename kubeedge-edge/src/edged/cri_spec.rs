//! The CRI requests edged's [`ContainerConfig`]s become, and the CRI states read back: the
//! trait's sandbox container becomes a `PodSandboxConfig` (metadata from the pod labels, the
//! kubelet's log directory, port mappings for hostPort, the node's network namespace for
//! `hostNetwork`), the other containers a `ContainerConfig` whose metadata (name, attempt)
//! and log path (`<container>/<attempt>.log`) follow the kubelet.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, SystemTime};

use k8s_cri::v1 as cri;

use super::cri_logs;
use super::runtime::{
    ContainerConfig, ContainerState, NetworkMode, PidMode, Result, RuntimeError, LABEL_ATTEMPT,
    LABEL_CONTAINER, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID,
};

pub(crate) fn from_nanos(ns: i64) -> Option<SystemTime> {
    (ns > 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64))
}

pub(crate) fn btree(m: HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

pub(crate) fn label<'a>(c: &'a ContainerConfig, key: &str) -> &'a str {
    c.labels.get(key).map(String::as_str).unwrap_or_default()
}

/// The attempt of a sandbox from its trait name (`…-<attempt>`).
fn name_attempt(name: &str) -> u32 {
    name.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The kubelet's `namespacesForPod`: the network the node's or the pod's, IPC the pod's, and
/// PID the node's (`hostPID`), the pod's (`shareProcessNamespace`: the trait's
/// [`PidMode::Container`]) or the container's own.
fn namespaces(host: bool, pid: &PidMode) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: if host {
            cri::NamespaceMode::Node
        } else {
            cri::NamespaceMode::Pod
        } as i32,
        pid: match pid {
            PidMode::Host => cri::NamespaceMode::Node,
            PidMode::Container(_) => cri::NamespaceMode::Pod,
            _ => cri::NamespaceMode::Container,
        } as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn user_ids(user: Option<&str>) -> (Option<cri::Int64Value>, Option<cri::Int64Value>) {
    let Some(u) = user else { return (None, None) };
    let mut it = u.splitn(2, ':');
    let id = |s: Option<&str>| {
        s.and_then(|v| v.parse().ok())
            .map(|value| cri::Int64Value { value })
    };
    (id(it.next()), id(it.next()))
}

pub(crate) fn spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    }
}

pub(crate) fn container_state(s: &cri::ContainerStatus) -> ContainerState {
    use cri::ContainerState as S;
    match S::try_from(s.state) {
        Ok(S::ContainerCreated) => ContainerState::Created,
        Ok(S::ContainerRunning) => ContainerState::Running {
            started_at: from_nanos(s.started_at).unwrap_or(SystemTime::UNIX_EPOCH),
        },
        Ok(S::ContainerExited) => ContainerState::Exited {
            exit_code: i64::from(s.exit_code),
            started_at: from_nanos(s.started_at),
            finished_at: from_nanos(s.finished_at),
            oom_killed: s.reason == "OOMKilled",
            error: if s.reason == "Completed" || s.reason == "Error" {
                String::new()
            } else {
                s.message.clone()
            },
        },
        _ => ContainerState::Other("unknown".into()),
    }
}

fn sandbox_linux(options: cri::NamespaceOption) -> Option<cri::LinuxPodSandboxConfig> {
    Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(options),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn is_host(c: &cri::PodSandboxConfig) -> bool {
    c.linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .is_some_and(|o| o.network == cri::NamespaceMode::Node as i32)
}

/// The `RunPodSandbox` config of the trait's sandbox container `c`.
pub(crate) fn sandbox_config(c: &ContainerConfig, log_root: &Path) -> cri::PodSandboxConfig {
    let (ns, name, uid) = (
        label(c, LABEL_POD_NAMESPACE),
        label(c, LABEL_POD_NAME),
        label(c, LABEL_POD_UID),
    );
    let log_directory = cri_logs::pod_log_dir(log_root, ns, name, uid);
    let port_mappings = c
        .ports
        .iter()
        .map(|p| cri::PortMapping {
            protocol: match p.protocol.as_str() {
                "udp" => cri::Protocol::Udp,
                "sctp" => cri::Protocol::Sctp,
                _ => cri::Protocol::Tcp,
            } as i32,
            container_port: i32::from(p.container_port),
            host_port: i32::from(p.host_port),
            host_ip: p.host_ip.clone(),
        })
        .collect();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_owned(),
            uid: uid.to_owned(),
            namespace: ns.to_owned(),
            attempt: name_attempt(&c.name),
        }),
        hostname: c.hostname.clone().unwrap_or_default(),
        log_directory: log_directory.to_string_lossy().into_owned(),
        port_mappings,
        labels: c.labels.clone().into_iter().collect(),
        linux: sandbox_linux(namespaces(c.network == NetworkMode::Host, &c.pid)),
        dns_config: c.dns.as_ref().map(|d| cri::DnsConfig {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        }),
        ..Default::default()
    }
}

/// The sandbox config rebuilt from a sandbox's status (for `CreateContainer`).
pub(crate) fn sandbox_config_from_status(
    s: cri::PodSandboxStatus,
    log_root: &Path,
) -> cri::PodSandboxConfig {
    let md = s.metadata.unwrap_or_default();
    let options = s
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.clone())
        .unwrap_or_else(|| namespaces(false, &PidMode::Private));
    let log_directory = cri_logs::pod_log_dir(log_root, &md.namespace, &md.name, &md.uid);
    cri::PodSandboxConfig {
        log_directory: log_directory.to_string_lossy().into_owned(),
        labels: s.labels,
        annotations: s.annotations,
        linux: sandbox_linux(options),
        metadata: Some(md),
        ..Default::default()
    }
}

/// The sandbox a container joins (its `share_with`, else its network's container).
pub(crate) fn sandbox_id_of(c: &ContainerConfig) -> Result<String> {
    match (&c.share_with, &c.network) {
        (Some(id), _) | (None, NetworkMode::Container(id)) => Ok(id.clone()),
        _ => Err(RuntimeError::Refused {
            status: 400,
            message: format!("container {} names no pod sandbox", c.name),
        }),
    }
}

/// The `CreateContainer` config of container `c` in a sandbox configured as `sandbox`.
pub(crate) fn container_config(
    c: ContainerConfig,
    sandbox: &cri::PodSandboxConfig,
) -> cri::ContainerConfig {
    let name = label(&c, LABEL_CONTAINER).to_owned();
    let attempt = label(&c, LABEL_ATTEMPT).parse().unwrap_or(0);
    let (run_as_user, run_as_group) = user_ids(c.user.as_deref());
    let resources = cri::LinuxContainerResources {
        cpu_period: if c.nano_cpus.is_some() { 100_000 } else { 0 },
        cpu_quota: c.nano_cpus.map(|n| n / 10_000).unwrap_or(0),
        cpu_shares: c.cpu_shares.unwrap_or(0),
        memory_limit_in_bytes: c.memory_limit.unwrap_or(0),
        ..Default::default()
    };
    cri::ContainerConfig {
        log_path: cri_logs::container_log_path(&name, attempt),
        metadata: Some(cri::ContainerMetadata { name, attempt }),
        image: Some(spec(&c.image)),
        command: c.entrypoint.unwrap_or_default(),
        args: c.args.unwrap_or_default(),
        working_dir: c.working_dir.unwrap_or_default(),
        envs: c
            .env
            .into_iter()
            .map(|(key, value)| cri::KeyValue { key, value })
            .collect(),
        mounts: c
            .mounts
            .into_iter()
            .map(|m| cri::Mount {
                container_path: m.container_path,
                host_path: m.host_path,
                readonly: m.read_only,
                ..Default::default()
            })
            .collect(),
        labels: c.labels.into_iter().collect(),
        stdin: c.stdin,
        tty: c.tty,
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(resources),
            security_context: Some(cri::LinuxContainerSecurityContext {
                privileged: c.privileged,
                namespace_options: Some(namespaces(is_host(sandbox), &c.pid)),
                run_as_user,
                run_as_group,
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_metadata_log_path_and_limits() {
        let mut sb = ContainerConfig {
            name: "k8s_POD_web_default_u1_0-3".into(),
            network: NetworkMode::Host,
            ..Default::default()
        };
        for (k, v) in [
            (LABEL_POD_NAMESPACE, "default"),
            (LABEL_POD_NAME, "web"),
            (LABEL_POD_UID, "u1"),
        ] {
            sb.labels.insert(k.into(), v.into());
        }
        let s = sandbox_config(&sb, Path::new("/var/log/pods"));
        assert_eq!(s.metadata.as_ref().map(|m| m.attempt), Some(3));
        assert_eq!(s.log_directory, "/var/log/pods/default_web_u1");
        assert!(is_host(&s));

        let mut c = ContainerConfig {
            nano_cpus: Some(500_000_000),
            user: Some("1000:2000".into()),
            ..Default::default()
        };
        c.labels.insert(LABEL_CONTAINER.into(), "app".into());
        c.labels.insert(LABEL_ATTEMPT.into(), "2".into());
        let cc = container_config(c, &s);
        assert_eq!(cc.log_path, "app/2.log");
        let linux = cc.linux.unwrap_or_default();
        let r = linux.resources.unwrap_or_default();
        assert_eq!((r.cpu_period, r.cpu_quota), (100_000, 50_000), "half a CPU");
        let sc = linux.security_context.unwrap_or_default();
        assert_eq!(sc.run_as_user.map(|u| u.value), Some(1000));
        assert_eq!(sc.run_as_group.map(|g| g.value), Some(2000));
        let ns = sc.namespace_options.unwrap_or_default();
        assert_eq!(
            ns.network,
            cri::NamespaceMode::Node as i32,
            "hostNetwork pod"
        );
        assert_eq!(
            ns.pid,
            cri::NamespaceMode::Container as i32,
            "its own PID 1"
        );
        let shared = ContainerConfig {
            pid: PidMode::Container("sandbox".into()),
            ..Default::default()
        };
        let sc = container_config(shared, &s)
            .linux
            .and_then(|l| l.security_context)
            .unwrap_or_default();
        let pid = sc.namespace_options.map(|o| o.pid);
        assert_eq!(
            pid,
            Some(cri::NamespaceMode::Pod as i32),
            "shareProcessNamespace"
        );
        assert!(sandbox_id_of(&ContainerConfig::default()).is_err());
    }
}
