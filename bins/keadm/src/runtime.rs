//! The container runtime of `keadm join`: which one the flags ask for (both upstream
//! spellings), a check that it answers before anything is written, its cgroup driver, and the
//! edgecore.yaml keys that select it.
//!
//! - v1.12: `--runtimetype=docker|remote` (`-r`), `--remote-runtime-endpoint` (`-p`).
//! - v1.16 and later: `-p/--remote-runtime-endpoint` alone (no `--runtimetype`).
//! - No flag: upstream's default containerd socket, or Docker when only Docker answers.

use anyhow::{bail, Result};
use kubeedge_edge::config::DEFAULT_CRI_ENDPOINT;
use kubeedge_edge::edged::{probe_cri, probe_docker, CgroupDriver, RuntimeError, RuntimeProbe};
use serde_yaml::Value;

use crate::yaml::set;

/// Where edged reaches Docker (edgecore's `dockerAddress` default).
pub(crate) const DOCKER_ENDPOINT: &str = "unix:///var/run/docker.sock";

/// What the flags ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// The Docker engine.
    Docker,
    /// The CRI runtime at this endpoint.
    Cri(String),
    /// Nothing said: containerd at upstream's default, else Docker.
    Default,
}

/// The runtime join configures, and what it said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Runtime {
    /// The Docker engine at [`DOCKER_ENDPOINT`].
    Docker,
    /// A CRI runtime at this endpoint.
    Cri(String),
}

impl Runtime {
    /// How it is named in messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Docker => format!("docker at {DOCKER_ENDPOINT}"),
            Self::Cri(ep) => format!("CRI runtime at {ep}"),
        }
    }

    /// Write the runtime keys into `cfg` in current upstream's spelling: the CRI endpoint as
    /// `tailoredKubeletConfig.containerRuntimeEndpoint` and `imageServiceEndpoint` (what
    /// v1.16+ keadm writes); Docker, which current upstream has no key for (it reaches Docker
    /// through cri-dockerd), as v1.12's `containerRuntime: docker`. The cgroup driver goes to
    /// `tailoredKubeletConfig.cgroupDriver`.
    pub(crate) fn write(&self, cfg: &mut Value, driver: CgroupDriver) {
        let s = |v: &str| Value::String(v.to_owned());
        let tkc = |k: &'static str| ["modules", "edged", "tailoredKubeletConfig", k];
        match self {
            Self::Docker => set(cfg, &["modules", "edged", "containerRuntime"], s("docker")),
            Self::Cri(ep) => {
                set(cfg, &tkc("containerRuntimeEndpoint"), s(ep));
                set(cfg, &tkc("imageServiceEndpoint"), s(ep));
            }
        }
        set(cfg, &tkc("cgroupDriver"), s(driver.as_str()));
    }
}

/// The request the flags make; `--runtimetype` other than docker or remote is refused.
pub(crate) fn request(runtimetype: Option<&str>, endpoint: Option<&str>) -> Result<Request> {
    let endpoint = endpoint.filter(|e| !e.is_empty());
    Ok(match (runtimetype, endpoint) {
        (Some("docker"), Some(ep)) => {
            println!("note: --remote-runtime-endpoint={ep} is for remote runtimes; edged drives Docker at {DOCKER_ENDPOINT}");
            Request::Docker
        }
        (Some("docker"), None) => Request::Docker,
        (Some("remote"), ep) => Request::Cri(ep.unwrap_or(DEFAULT_CRI_ENDPOINT).to_owned()),
        (Some(other), _) => bail!("--runtimetype must be docker or remote, not {other:?}"),
        (None, Some(ep)) => Request::Cri(ep.to_owned()),
        (None, None) => Request::Default,
    })
}

/// Why `e` happened, on one line, without the endpoint the caller already names.
fn reason(e: &RuntimeError, endpoint: &str) -> String {
    let text = match e {
        RuntimeError::Unavailable(m) => m.clone(),
        e => e.to_string(),
    };
    let text = text.replace(&format!("{endpoint}: "), "");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Ask the requested runtime whether it answers (CRI `Version`, or Docker's version and
/// info); an error names the endpoint and says why, on one line.
pub(crate) async fn check(req: &Request) -> Result<(Runtime, RuntimeProbe)> {
    match req {
        Request::Cri(ep) => match probe_cri(ep).await {
            Ok(p) => Ok((Runtime::Cri(ep.clone()), p)),
            Err(e) => bail!(
                "container runtime endpoint {ep} does not answer as a CRI runtime: {}",
                reason(&e, ep)
            ),
        },
        Request::Docker => match probe_docker(DOCKER_ENDPOINT).await {
            Ok(p) => Ok((Runtime::Docker, p)),
            Err(e) => bail!(
                "the Docker engine at {DOCKER_ENDPOINT} does not answer: {}",
                reason(&e, DOCKER_ENDPOINT)
            ),
        },
        Request::Default => {
            let cri = match probe_cri(DEFAULT_CRI_ENDPOINT).await {
                Ok(p) => return Ok((Runtime::Cri(DEFAULT_CRI_ENDPOINT.to_owned()), p)),
                Err(e) => reason(&e, DEFAULT_CRI_ENDPOINT),
            };
            match probe_docker(DOCKER_ENDPOINT).await {
                Ok(p) => {
                    println!("containerd does not answer at {DEFAULT_CRI_ENDPOINT} ({cri}); using Docker");
                    Ok((Runtime::Docker, p))
                }
                Err(e) => bail!(
                    "no container runtime answers: containerd at {DEFAULT_CRI_ENDPOINT}: {cri}; docker at {DOCKER_ENDPOINT}: {}; pass --remote-runtime-endpoint",
                    reason(&e, DOCKER_ENDPOINT)
                ),
            }
        }
    }
}

/// The cgroup driver to configure: the runtime's when it says (a `--cgroupdriver` that
/// disagrees gets a warning and loses), else the flag's, else cgroupfs (upstream's default).
pub(crate) fn cgroup_driver(
    flag: Option<&str>,
    runtime: Option<CgroupDriver>,
) -> Result<(CgroupDriver, Option<String>)> {
    let flag = match flag {
        None => None,
        Some("cgroupfs") => Some(CgroupDriver::Cgroupfs),
        Some("systemd") => Some(CgroupDriver::Systemd),
        Some(other) => bail!("--cgroupdriver must be cgroupfs or systemd, not {other:?}"),
    };
    Ok(match (flag, runtime) {
        (Some(f), Some(r)) if f != r => (
            r,
            Some(format!(
                "warning: --cgroupdriver={} disagrees with the container runtime, which uses {}: using {}",
                f.as_str(),
                r.as_str(),
                r.as_str()
            )),
        ),
        (_, Some(r)) => (r, None),
        (Some(f), None) => (f, None),
        (None, None) => (CgroupDriver::Cgroupfs, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_upstream_spellings() {
        let ep = "unix:///run/x.sock";
        assert_eq!(request(None, None).unwrap(), Request::Default);
        assert_eq!(request(None, Some(ep)).unwrap(), Request::Cri(ep.into()));
        assert_eq!(
            request(Some("remote"), Some(ep)).unwrap(),
            Request::Cri(ep.into())
        );
        assert_eq!(
            request(Some("remote"), None).unwrap(),
            Request::Cri(DEFAULT_CRI_ENDPOINT.into())
        );
        assert_eq!(request(Some("docker"), None).unwrap(), Request::Docker);
        assert_eq!(request(Some("docker"), Some(ep)).unwrap(), Request::Docker);
        assert!(request(Some("cri-o"), None).is_err());
    }

    #[test]
    fn the_runtime_decides_the_cgroup_driver() {
        use CgroupDriver::{Cgroupfs, Systemd};
        assert_eq!(cgroup_driver(None, None).unwrap(), (Cgroupfs, None));
        assert_eq!(
            cgroup_driver(Some("systemd"), None).unwrap(),
            (Systemd, None)
        );
        assert_eq!(cgroup_driver(None, Some(Systemd)).unwrap(), (Systemd, None));
        assert_eq!(
            cgroup_driver(Some("cgroupfs"), Some(Cgroupfs)).unwrap(),
            (Cgroupfs, None)
        );
        let (d, warning) = cgroup_driver(Some("systemd"), Some(Cgroupfs)).unwrap();
        assert_eq!(d, Cgroupfs);
        assert!(warning.unwrap().contains("disagrees"));
        assert!(cgroup_driver(Some("none"), None).is_err());
    }

    #[test]
    fn keys_in_current_upstream_spelling() {
        let mut cfg = Value::Null;
        Runtime::Cri("unix:///c.sock".into()).write(&mut cfg, CgroupDriver::Systemd);
        let text = serde_yaml::to_string(&cfg).unwrap();
        let edged: kubeedge_edge::config::Edged =
            serde_yaml::from_value(cfg["modules"]["edged"].clone()).unwrap();
        assert_eq!(
            edged.runtime.choice(),
            kubeedge_edge::config::RuntimeChoice::Remote("unix:///c.sock".into()),
            "{text}"
        );
        let tkc = &cfg["modules"]["edged"]["tailoredKubeletConfig"];
        assert_eq!(tkc["imageServiceEndpoint"], "unix:///c.sock");
        assert_eq!(tkc["cgroupDriver"], "systemd");

        let mut cfg = Value::Null;
        Runtime::Docker.write(&mut cfg, CgroupDriver::Cgroupfs);
        let edged: kubeedge_edge::config::Edged =
            serde_yaml::from_value(cfg["modules"]["edged"].clone()).unwrap();
        assert_eq!(
            edged.runtime.choice(),
            kubeedge_edge::config::RuntimeChoice::Docker
        );
    }
}
