//! The lifecycle's vocabulary: what a pod asks for ([`PodPlan`]), what the runtime shows
//! ([`Observation`]), what happens ([`Input`]) and what to do about it ([`Action`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Always restart.
    #[default]
    Always,
    /// Restart on a non-zero exit.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// From the pod spec string (unknown values mean `Always`, as the API defaults it).
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("OnFailure") => Self::OnFailure,
            Some("Never") => Self::Never,
            _ => Self::Always,
        }
    }

    pub(super) fn restarts(self, exit_code: i64) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => exit_code != 0,
            Self::Never => false,
        }
    }
}

/// Probe timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbePlan {
    /// Wait after the container starts.
    pub initial_delay: Duration,
    /// Between probes.
    pub period: Duration,
    /// Consecutive successes to count as passing.
    pub success_threshold: u32,
    /// Consecutive failures to count as failing.
    pub failure_threshold: u32,
}

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProbeKind {
    /// startupProbe.
    Startup,
    /// livenessProbe.
    Liveness,
    /// readinessProbe.
    Readiness,
}

pub(super) const KINDS: [ProbeKind; 3] = [
    ProbeKind::Startup,
    ProbeKind::Liveness,
    ProbeKind::Readiness,
];

/// What the lifecycle needs to know of one container of the spec.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerPlan {
    /// Name.
    pub name: String,
    /// startupProbe.
    pub startup: Option<ProbePlan>,
    /// livenessProbe.
    pub liveness: Option<ProbePlan>,
    /// readinessProbe.
    pub readiness: Option<ProbePlan>,
}

impl ContainerPlan {
    pub(super) fn probe(&self, kind: ProbeKind) -> Option<&ProbePlan> {
        match kind {
            ProbeKind::Startup => self.startup.as_ref(),
            ProbeKind::Liveness => self.liveness.as_ref(),
            ProbeKind::Readiness => self.readiness.as_ref(),
        }
    }
}

/// What the lifecycle needs to know of the pod spec.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodPlan {
    /// initContainers, in order.
    pub init: Vec<ContainerPlan>,
    /// containers.
    pub containers: Vec<ContainerPlan>,
    /// restartPolicy.
    pub restart_policy: RestartPolicy,
    /// terminationGracePeriodSeconds.
    pub grace: Duration,
}

/// Crash-loop backoff: the first restart is immediate, then `initial`, doubling up to `max`;
/// a container that has run for `max` without failing starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Cap.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

/// A container as the runtime shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Runtime id.
    pub id: String,
    /// Its restart count label.
    pub attempt: u32,
    /// Its state.
    pub run: Run,
}

/// Run state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// Created, not started.
    Created,
    /// Running since.
    Running {
        /// Start.
        since: Instant,
    },
    /// Exited.
    Exited {
        /// Exit code.
        code: i64,
        /// When.
        at: Instant,
    },
}

/// The runtime's view of the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Now.
    pub now: Instant,
    /// The sandbox: its id and whether it runs.
    pub sandbox: Option<(String, bool)>,
    /// The newest container per spec name.
    pub containers: BTreeMap<String, Seen>,
}

/// An input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The runtime's current view.
    Observed(Observation),
    /// Starting the sandbox failed.
    SandboxFailed {
        /// Why.
        message: String,
        /// Now.
        now: Instant,
    },
    /// Creating or starting a container failed (the failed container is gone).
    StartFailed {
        /// Container name.
        container: String,
        /// `ErrImagePull`, `CreateContainerError`, …
        reason: String,
        /// Detail.
        message: String,
        /// Now.
        now: Instant,
    },
    /// A probe finished.
    Probe {
        /// Container name.
        container: String,
        /// Which probe.
        kind: ProbeKind,
        /// Whether it passed.
        success: bool,
        /// Now.
        now: Instant,
    },
    /// The pod is being deleted: stop it within `grace`.
    Delete {
        /// Grace period.
        grace: Duration,
        /// Now.
        now: Instant,
    },
}

/// An action for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create and start the sandbox.
    StartSandbox,
    /// Remove a container (or the sandbox) by id.
    Remove {
        /// Runtime id.
        id: String,
    },
    /// Create and start a container with this restart count.
    Start {
        /// Container name.
        container: String,
        /// Restart count for its label.
        attempt: u32,
    },
    /// Stop a running container: preStop first when it has one, SIGTERM, SIGKILL after `grace`.
    Kill {
        /// Container name.
        container: String,
        /// Runtime id.
        id: String,
        /// Grace period.
        grace: Duration,
    },
    /// Run a probe.
    Probe {
        /// Container name.
        container: String,
        /// Runtime id.
        id: String,
        /// Which probe.
        kind: ProbeKind,
    },
    /// Every container is stopped and removed: the pod is gone from this node.
    Finished,
}

/// Where the pod is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for the sandbox.
    Starting,
    /// Running init container `n`.
    Init(usize),
    /// Running the containers.
    Main,
    /// Every container ended for good (restartPolicy Never/OnFailure).
    Completed {
        /// All exited 0.
        succeeded: bool,
    },
    /// Stopping.
    Terminating {
        /// Hard deadline.
        deadline: Instant,
    },
    /// Stopped and removed.
    Terminated,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ProbeTrack {
    pub(super) for_id: String,
    pub(super) next_at: Option<Instant>,
    pub(super) in_flight: bool,
    pub(super) successes: u32,
    pub(super) failures: u32,
    pub(super) result: Option<bool>,
}

/// What the lifecycle knows about one container (beyond the runtime's view).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Track {
    /// restartCount.
    pub restart_count: u32,
    /// Why it is waiting, if it is (`CrashLoopBackOff`, `ErrImagePull`, …) and the detail.
    pub waiting: Option<(String, String)>,
    /// Readiness.
    pub ready: bool,
    /// Startup probe passed (or none) and running.
    pub started: bool,
    /// Its current runtime id.
    pub id: Option<String>,
    /// Running now.
    pub running: bool,
    /// Ended for good (not restarted).
    pub done: Option<i64>,
    pub(super) backoff: Duration,
    pub(super) next_start: Option<Instant>,
    pub(super) scheduled_exit: Option<String>,
    pub(super) killing: Option<String>,
    pub(super) probes: BTreeMap<ProbeKind, ProbeTrack>,
}
