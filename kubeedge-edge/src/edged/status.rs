//! Pod status: built from the lifecycle and the runtime's view, and reported through the
//! podpatch path (PROTOCOL.md §4.2: `<ns>/podpatch/<name>`, op `patch`, content a JSON *string*
//! holding `{"metadata":{"uid":…},"status":{…}}`). Reports are coalesced: an unchanged status
//! is not sent again, and the durable outbox keeps only the latest per pod.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::admission::{Rejection, REJECTED};
use super::lifecycle::{PodLifecycle, Stage};
use super::runtime::{self, ContainerInfo};

fn time(t: SystemTime) -> Option<Time> {
    let ts = jiff::Timestamp::try_from(t).ok()?;
    // Kubernetes times have second precision.
    jiff::Timestamp::from_second(ts.as_second()).ok().map(Time)
}

/// Now, as a Kubernetes time.
pub(crate) fn now() -> Option<Time> {
    time(SystemTime::now())
}

/// What the worker knows beyond the lifecycle.
#[derive(Debug)]
pub(crate) struct View<'a> {
    /// Inspected containers by spec name (the newest instance).
    pub(crate) containers: BTreeMap<String, &'a ContainerInfo>,
    /// The previous instance of each restarted container (for lastState).
    pub(crate) previous: BTreeMap<String, &'a ContainerInfo>,
    /// Node IP.
    pub(crate) host_ip: &'a str,
    /// Pod IP.
    pub(crate) pod_ip: &'a str,
    /// When the pod started on this node (the sandbox's creation).
    pub(crate) start_time: Option<SystemTime>,
    /// Image ids by image reference.
    pub(crate) image_ids: &'a BTreeMap<String, String>,
    /// The sandbox runs (the pod's network is set up).
    pub(crate) sandbox_ready: bool,
    /// The scheme of container IDs (`docker`, `containerd`): `<scheme>://<id>`.
    pub(crate) id_scheme: &'a str,
}

fn state_of(info: &ContainerInfo, scheme: &str) -> ContainerState {
    match &info.state {
        runtime::ContainerState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time(*started_at),
            }),
            ..Default::default()
        },
        runtime::ContainerState::Exited {
            exit_code,
            started_at,
            finished_at,
            oom_killed,
            error,
        } => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: i32::try_from(*exit_code).unwrap_or(-1),
                reason: Some(
                    if *oom_killed {
                        "OOMKilled"
                    } else if !error.is_empty() {
                        "StartError"
                    } else if *exit_code == 0 {
                        "Completed"
                    } else {
                        "Error"
                    }
                    .into(),
                ),
                message: Some(error.clone()).filter(|e| !e.is_empty()),
                started_at: started_at.and_then(time),
                finished_at: finished_at.and_then(time),
                container_id: Some(format!("{scheme}://{}", info.id)),
                signal: None,
            }),
            ..Default::default()
        },
        runtime::ContainerState::Created | runtime::ContainerState::Other(_) => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        },
    }
}

fn condition(kind: &str, ok: bool, previous: Option<&PodStatus>) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    // Keep the transition time while the status holds.
    let since = previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .or_else(now);
    PodCondition {
        type_: kind.into(),
        status: status.into(),
        last_transition_time: since,
        ..Default::default()
    }
}

/// The pod's status.
pub(crate) fn pod_status(
    pod: &Pod,
    lc: &PodLifecycle,
    view: &View<'_>,
    previous: Option<&PodStatus>,
) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let statuses = |list: &[k8s_openapi::api::core::v1::Container]| -> Vec<ContainerStatus> {
        list.iter()
            .map(|c| {
                let track = lc.track(&c.name);
                let info = view.containers.get(&c.name);
                let image = c.image.clone().unwrap_or_default();
                let mut state = info
                    .map(|i| state_of(i, view.id_scheme))
                    .unwrap_or_else(|| ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some("ContainerCreating".into()),
                            message: None,
                        }),
                        ..Default::default()
                    });
                let mut last = view
                    .previous
                    .get(&c.name)
                    .map(|i| state_of(i, view.id_scheme));
                if let Some((reason, message)) = track.and_then(|t| t.waiting.clone()) {
                    // A waiting container shows its last run as lastState.
                    if state.terminated.is_some() {
                        last = Some(state.clone());
                    }
                    state = ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(reason),
                            message: Some(message),
                        }),
                        ..Default::default()
                    };
                }
                ContainerStatus {
                    name: c.name.clone(),
                    image: image.clone(),
                    image_id: view
                        .image_ids
                        .get(&image)
                        .map(|id| match view.id_scheme {
                            // The kubelet's dockershim form; CRI runtimes report the id as is.
                            "docker" => format!("docker-pullable://{id}"),
                            _ => id.clone(),
                        })
                        .unwrap_or_default(),
                    container_id: info.map(|i| format!("{}://{}", view.id_scheme, i.id)),
                    ready: track.is_some_and(|t| t.ready),
                    started: Some(track.is_some_and(|t| t.started && t.running)),
                    restart_count: track.map(|t| t.restart_count as i32).unwrap_or(0),
                    state: Some(state),
                    last_state: last,
                    ..Default::default()
                }
            })
            .collect()
    };
    let containers = statuses(&spec.containers);
    let init = statuses(spec.init_containers.as_deref().unwrap_or_default());
    let running = !matches!(lc.stage, Stage::Terminated | Stage::Completed { .. });
    let ready = running && !containers.is_empty() && containers.iter().all(|c| c.ready);
    let initialized = lc.initialized();
    let phase = lc.phase();
    let pod_ip = Some(view.pod_ip.to_owned()).filter(|s| !s.is_empty());
    let host_ip = Some(view.host_ip.to_owned()).filter(|s| !s.is_empty());
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(vec![
            condition("PodReadyToStartContainers", view.sandbox_ready, previous),
            condition("PodScheduled", true, previous),
            condition("Initialized", initialized, previous),
            condition("ContainersReady", ready, previous),
            condition("Ready", ready, previous),
        ]),
        container_statuses: Some(containers),
        init_container_statuses: Some(init).filter(|i| !i.is_empty()),
        pod_ips: pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        pod_ip,
        host_ips: host_ip.clone().map(|ip| vec![HostIP { ip }]),
        host_ip,
        start_time: view.start_time.and_then(time),
        qos_class: Some(qos(&spec).into()),
        ..Default::default()
    }
}

/// The status of a pod admission refused, as `kubelet.rejectPod` sets it: `Failed` with the
/// predicate's reason, the message prefixed, the QoS class kept; the start time is the
/// status manager's (set once).
pub(crate) fn rejected(pod: &Pod, r: &Rejection, previous: Option<&PodStatus>) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    PodStatus {
        phase: Some("Failed".into()),
        reason: Some(r.reason.clone()),
        message: Some(format!("{REJECTED}{}", r.message)),
        conditions: Some(vec![condition("PodScheduled", true, previous)]),
        start_time: previous.and_then(|p| p.start_time.clone()).or_else(now),
        qos_class: Some(qos(&spec).into()),
        ..Default::default()
    }
}

fn qos(spec: &k8s_openapi::api::core::v1::PodSpec) -> &'static str {
    let mut any = false;
    let mut all_guaranteed = true;
    for c in &spec.containers {
        let r = c.resources.as_ref();
        let limits = r.and_then(|r| r.limits.as_ref());
        let requests = r.and_then(|r| r.requests.as_ref());
        if limits.is_some_and(|l| !l.is_empty()) || requests.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        let full = ["cpu", "memory"]
            .iter()
            .all(|k| limits.is_some_and(|l| l.contains_key(*k)));
        if !full {
            all_guaranteed = false;
        }
    }
    if !any {
        "BestEffort"
    } else if all_guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// A status without its volatile times, to tell whether anything changed.
pub(crate) fn fingerprint(s: &PodStatus) -> String {
    let mut s = s.clone();
    for c in s.conditions.iter_mut().flatten() {
        c.last_transition_time = None;
        c.last_probe_time = None;
    }
    serde_json::to_string(&s).unwrap_or_default()
}

/// The podpatch message for `pod` with `status`.
pub(crate) fn podpatch(pod: &Pod, status: &PodStatus) -> kubeedge_proto::Message {
    let m = &pod.metadata;
    kubeedge_proto::report::pod_patch(
        m.namespace.as_deref().unwrap_or("default"),
        m.name.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default(),
        &serde_json::to_value(status).unwrap_or_default(),
    )
}
