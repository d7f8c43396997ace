//! What `keadm join` asks a container runtime before it writes anything: whether it answers
//! (its name and version) and which cgroup driver it uses, so that edged is configured with
//! the runtime's driver rather than a flag that may disagree with it.
//!
//! On a CRI runtime the driver comes from `RuntimeConfig` (the kubelet's
//! `KubeletCgroupDriverFromCRI` path); a runtime without it (`Unimplemented`, containerd 1.6
//! and 1.7) is asked for its verbose `Status`, whose `config` info holds the CRI plugin's
//! configuration: the default runtime's runc option `SystemdCgroup` (or the old top-level
//! `systemdCgroup`), runc's own default being cgroupfs. On Docker it is `docker info`'s
//! `CgroupDriver`.

use std::time::Duration;

use bollard::Docker;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::Value;
use tonic::transport::Channel;

use super::runtime::{ContainerRuntime, Result, RuntimeError, RuntimeVersion};
use super::CriRuntime;

/// The bound of each probe call: a runtime that takes longer is not one to join with.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The cgroup driver a runtime manipulates cgroups with (the kubelet's `cgroupDriver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CgroupDriver {
    /// `cgroupfs`.
    Cgroupfs,
    /// `systemd`.
    Systemd,
}

impl CgroupDriver {
    /// The kubelet's spelling: `cgroupfs` or `systemd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cgroupfs => "cgroupfs",
            Self::Systemd => "systemd",
        }
    }
}

/// What a runtime said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeProbe {
    /// Its name and version.
    pub version: RuntimeVersion,
    /// Its cgroup driver, when it says.
    pub cgroup_driver: Option<CgroupDriver>,
}

async fn bounded<T>(fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(PROBE_TIMEOUT, fut)
        .await
        .unwrap_or(Err(RuntimeError::Timeout(PROBE_TIMEOUT)))
}

/// Ask the CRI runtime at `endpoint` (`unix:///path` or a path) for its version and cgroup
/// driver. A runtime that does not answer `Version`, or a socket that is not a CRI server, is
/// an error that names the endpoint; a runtime that answers but does not tell its driver gives
/// `cgroup_driver: None`.
pub async fn probe_cri(endpoint: &str) -> Result<RuntimeProbe> {
    let rt = CriRuntime::new(endpoint, super::DEFAULT_LOG_ROOT);
    let version = bounded(rt.version()).await?;
    let client = RuntimeServiceClient::new(super::cri::unix_channel(endpoint, PROBE_TIMEOUT));
    let cgroup_driver = bounded(cri_cgroup_driver(client)).await.unwrap_or(None);
    Ok(RuntimeProbe {
        version,
        cgroup_driver,
    })
}

async fn cri_cgroup_driver(
    mut client: RuntimeServiceClient<Channel>,
) -> Result<Option<CgroupDriver>> {
    let refused = |s: tonic::Status| RuntimeError::Unsupported(s.message().to_owned());
    match client.runtime_config(cri::RuntimeConfigRequest {}).await {
        Ok(r) => {
            // As the kubelet: no `linux` section means the runtime did not say.
            return Ok(r.into_inner().linux.map(|l| {
                if l.cgroup_driver == cri::CgroupDriver::Cgroupfs as i32 {
                    CgroupDriver::Cgroupfs
                } else {
                    CgroupDriver::Systemd
                }
            }));
        }
        Err(s) if s.code() == tonic::Code::Unimplemented => {}
        Err(s) => return Err(refused(s)),
    }
    let status = client
        .status(cri::StatusRequest { verbose: true })
        .await
        .map_err(refused)?
        .into_inner();
    Ok(status
        .info
        .get("config")
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
        .and_then(|c| driver_from_cri_config(&c)))
}

/// The cgroup driver in containerd's CRI plugin configuration (its verbose `Status` info
/// `config`): the default runtime's `options.SystemdCgroup`, or the legacy top-level
/// `systemdCgroup`; runc's default, cgroupfs, when neither is set. `None` when the JSON is not
/// such a configuration.
pub fn driver_from_cri_config(config: &Value) -> Option<CgroupDriver> {
    let containerd = config.get("containerd")?;
    let default = containerd
        .get("defaultRuntimeName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("runc");
    let option = containerd
        .get("runtimes")
        .and_then(|r| r.get(default))
        .and_then(|r| r.get("options"))
        .and_then(|o| o.get("SystemdCgroup"))
        .and_then(Value::as_bool);
    let legacy = config.get("systemdCgroup").and_then(Value::as_bool);
    if option.or(legacy).unwrap_or(false) {
        Some(CgroupDriver::Systemd)
    } else {
        Some(CgroupDriver::Cgroupfs)
    }
}

/// Ask the Docker engine at `endpoint` (`unix:///var/run/docker.sock` or a path) for its
/// version and cgroup driver (`docker info`'s `CgroupDriver`).
pub async fn probe_docker(endpoint: &str) -> Result<RuntimeProbe> {
    let unavailable = |e: bollard::errors::Error| {
        RuntimeError::Unavailable(format!("{endpoint}: {}", one_line(&e.to_string())))
    };
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    let timeout = PROBE_TIMEOUT.as_secs();
    let docker = Docker::connect_with_unix(path, timeout, bollard::API_DEFAULT_VERSION)
        .map_err(unavailable)?;
    let (version, info) = bounded(async {
        let docker = docker.negotiate_version().await.map_err(unavailable)?;
        let v = docker.version().await.map_err(unavailable)?;
        let i = docker.info().await.map_err(unavailable)?;
        Ok((v, i))
    })
    .await?;
    use bollard::models::SystemInfoCgroupDriverEnum as D;
    Ok(RuntimeProbe {
        version: RuntimeVersion {
            name: "docker".into(),
            version: version.version.unwrap_or_default(),
        },
        cgroup_driver: match info.cgroup_driver {
            Some(D::SYSTEMD) => Some(CgroupDriver::Systemd),
            Some(D::CGROUPFS) => Some(CgroupDriver::Cgroupfs),
            _ => None,
        },
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_from_containerd_config() {
        let cfg = |j: &str| serde_json::from_str::<Value>(j).unwrap();
        // containerd 1.6 as scripts/lib.sh configures it: no options, runc's cgroupfs.
        let plain = cfg(
            r#"{"containerd":{"defaultRuntimeName":"runc","runtimes":{"runc":{"runtimeType":"io.containerd.runc.v2","options":null}}}}"#,
        );
        assert_eq!(driver_from_cri_config(&plain), Some(CgroupDriver::Cgroupfs));
        let systemd = cfg(
            r#"{"containerd":{"defaultRuntimeName":"runc","runtimes":{"runc":{"options":{"SystemdCgroup":true}}}}}"#,
        );
        assert_eq!(
            driver_from_cri_config(&systemd),
            Some(CgroupDriver::Systemd)
        );
        // Only the default runtime's options count.
        let other = cfg(
            r#"{"containerd":{"defaultRuntimeName":"crun","runtimes":{"runc":{"options":{"SystemdCgroup":true}},"crun":{}}}}"#,
        );
        assert_eq!(driver_from_cri_config(&other), Some(CgroupDriver::Cgroupfs));
        let legacy = cfg(r#"{"systemdCgroup":true,"containerd":{}}"#);
        assert_eq!(driver_from_cri_config(&legacy), Some(CgroupDriver::Systemd));
        assert_eq!(driver_from_cri_config(&cfg(r#"{"x":1}"#)), None);
    }
}
