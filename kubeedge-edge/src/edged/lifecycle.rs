//! The pod lifecycle as a sans-IO state machine: [`PodLifecycle::step`] takes what the runtime
//! shows (or what an action produced) and returns the actions to perform. No I/O and no
//! clock: time comes in with the inputs, so every rule (init order, restart policy, crash
//! backoff, probes and thresholds, graceful termination) is tested without Docker.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

mod model;

pub use model::{
    Action, Backoff, ContainerPlan, Input, Observation, PodPlan, ProbeKind, ProbePlan,
    RestartPolicy, Run, Seen, Stage, Track,
};
use model::{ProbeTrack, KINDS};

/// One pod's lifecycle.
#[derive(Debug, Clone)]
pub struct PodLifecycle {
    /// Stage.
    pub stage: Stage,
    plan: PodPlan,
    backoff: Backoff,
    tracks: BTreeMap<String, Track>,
    sandbox_next: Option<Instant>,
    sandbox_backoff: Duration,
    /// Why the sandbox cannot start, if it cannot.
    pub sandbox_error: Option<String>,
}

fn bump(current: Duration, b: Backoff) -> Duration {
    if current.is_zero() {
        b.initial
    } else {
        (current * 2).min(b.max)
    }
}

impl PodLifecycle {
    /// A new pod.
    pub fn new(plan: PodPlan, backoff: Backoff) -> Self {
        let tracks = plan
            .init
            .iter()
            .chain(&plan.containers)
            .map(|c| (c.name.clone(), Track::default()))
            .collect();
        Self {
            stage: Stage::Starting,
            plan,
            backoff,
            tracks,
            sandbox_next: None,
            sandbox_backoff: Duration::ZERO,
            sandbox_error: None,
        }
    }

    /// The plan.
    pub fn plan(&self) -> &PodPlan {
        &self.plan
    }

    /// A container's track.
    pub fn track(&self, name: &str) -> Option<&Track> {
        self.tracks.get(name)
    }

    /// Whether the init containers are done.
    pub fn initialized(&self) -> bool {
        !matches!(self.stage, Stage::Starting | Stage::Init(_))
    }

    /// The earliest time something is due (a restart, a probe), for the driver's timer.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let mut t: Option<Instant> = self.sandbox_next;
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        if let Stage::Terminating { deadline } = self.stage {
            consider(Some(deadline));
        }
        for tr in self.tracks.values() {
            consider(tr.next_start);
            for p in tr.probes.values() {
                if !p.in_flight {
                    consider(p.next_at);
                }
            }
        }
        t
    }

    /// Advance.
    pub fn step(mut self, input: Input) -> (Self, Vec<Action>) {
        let mut out = Vec::new();
        match input {
            Input::Observed(obs) => self.observe(obs, &mut out),
            Input::SandboxFailed { message, now } => {
                self.sandbox_backoff = bump(self.sandbox_backoff, self.backoff);
                self.sandbox_next = Some(now + self.sandbox_backoff);
                self.sandbox_error = Some(message);
            }
            Input::StartFailed {
                container,
                reason,
                message,
                now,
            } => {
                let b = self.backoff;
                if let Some(t) = self.tracks.get_mut(&container) {
                    t.backoff = bump(t.backoff, b);
                    t.next_start = Some(now + t.backoff);
                    t.waiting = Some((reason, message));
                }
            }
            Input::Probe {
                container,
                kind,
                success,
                now,
            } => self.probed(&container, kind, success, now, &mut out),
            Input::Delete { grace, now } => self.delete(grace, now, &mut out),
        }
        (self, out)
    }

    fn delete(&mut self, grace: Duration, now: Instant, out: &mut Vec<Action>) {
        let deadline = now + grace;
        match self.stage {
            Stage::Terminated => return,
            Stage::Terminating { deadline: d } if d <= deadline => return,
            _ => {}
        }
        self.stage = Stage::Terminating { deadline };
        for (name, t) in &mut self.tracks {
            for p in t.probes.values_mut() {
                p.next_at = None;
            }
            t.next_start = None;
            if let (true, Some(id)) = (t.running, t.id.clone()) {
                t.killing = Some(id.clone());
                out.push(Action::Kill {
                    container: name.clone(),
                    id,
                    grace,
                });
            }
        }
    }

    fn probed(
        &mut self,
        name: &str,
        kind: ProbeKind,
        success: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(plan) = self
            .plan
            .init
            .iter()
            .chain(&self.plan.containers)
            .find(|c| c.name == name)
            .and_then(|c| c.probe(kind).copied())
        else {
            return;
        };
        let grace = self.plan.grace;
        let terminating = matches!(self.stage, Stage::Terminating { .. } | Stage::Terminated);
        let Some(t) = self.tracks.get_mut(name) else {
            return;
        };
        let Some(p) = t.probes.get_mut(&kind) else {
            return;
        };
        p.in_flight = false;
        p.next_at = Some(now + plan.period);
        if success {
            p.successes += 1;
            p.failures = 0;
            if p.successes >= plan.success_threshold.max(1) {
                p.result = Some(true);
            }
        } else {
            p.failures += 1;
            p.successes = 0;
            if p.failures >= plan.failure_threshold.max(1) {
                p.result = Some(false);
            }
        }
        let failed = p.result == Some(false);
        match kind {
            ProbeKind::Readiness => t.ready = t.running && p.result == Some(true),
            ProbeKind::Startup => t.started = t.running && p.result == Some(true),
            ProbeKind::Liveness => {}
        }
        let kill = failed && matches!(kind, ProbeKind::Liveness | ProbeKind::Startup);
        if kill && !terminating && t.running && t.killing.is_none() {
            if let Some(id) = t.id.clone() {
                t.killing = Some(id.clone());
                t.probes.clear();
                t.ready = false;
                out.push(Action::Kill {
                    container: name.to_owned(),
                    id,
                    grace,
                });
            }
        }
    }

    fn observe(&mut self, obs: Observation, out: &mut Vec<Action>) {
        let now = obs.now;
        // The runtime's view first: ids, running, killed-and-gone.
        for (name, t) in &mut self.tracks {
            let seen = obs.containers.get(name);
            t.id = seen.map(|s| s.id.clone());
            t.running = matches!(seen.map(|s| s.run), Some(Run::Running { .. }));
            if let Some(s) = seen {
                t.restart_count = t.restart_count.max(s.attempt);
            }
            if t.killing.is_some() && (!t.running || t.killing != t.id) {
                t.killing = None;
            }
            if !t.running {
                t.ready = false;
                t.started = false;
            }
        }
        match self.stage {
            Stage::Terminated => {}
            Stage::Terminating { deadline } => self.terminate(&obs, deadline, out),
            Stage::Completed { .. } => {}
            Stage::Starting | Stage::Init(_) | Stage::Main => {
                let sandbox_up = matches!(obs.sandbox, Some((_, true)));
                if !sandbox_up {
                    if let Some((id, false)) = &obs.sandbox {
                        // A dead sandbox takes the pod's network with it: start over.
                        for t in self.tracks.values() {
                            if let Some(cid) = &t.id {
                                out.push(Action::Remove { id: cid.clone() });
                            }
                        }
                        out.push(Action::Remove { id: id.clone() });
                    }
                    if self.sandbox_next.is_none_or(|t| t <= now) {
                        self.sandbox_next = None;
                        out.push(Action::StartSandbox);
                    }
                    return;
                }
                self.sandbox_error = None;
                self.sandbox_backoff = Duration::ZERO;
                self.sandbox_next = None;
                if self.stage == Stage::Starting {
                    // Adopted containers tell how far an earlier run got.
                    let main_seen = self
                        .plan
                        .containers
                        .iter()
                        .any(|c| obs.containers.contains_key(&c.name));
                    self.stage = if main_seen || self.plan.init.is_empty() {
                        Stage::Main
                    } else {
                        Stage::Init(0)
                    };
                }
                while let Stage::Init(i) = self.stage {
                    let Some(name) = self.plan.init.get(i).map(|c| c.name.clone()) else {
                        self.stage = Stage::Main;
                        break;
                    };
                    // Init containers run to success: restarted on failure unless Never.
                    let policy = match self.plan.restart_policy {
                        RestartPolicy::Never => RestartPolicy::Never,
                        _ => RestartPolicy::OnFailure,
                    };
                    match self.container(&name, obs.containers.get(&name), policy, now, out) {
                        Some(0) => self.stage = Stage::Init(i + 1),
                        Some(_) => {
                            self.stage = Stage::Completed { succeeded: false };
                            return;
                        }
                        None => return,
                    }
                }
                if self.stage == Stage::Main {
                    let names: Vec<String> = self
                        .plan
                        .containers
                        .iter()
                        .map(|c| c.name.clone())
                        .collect();
                    let mut ended = Vec::new();
                    for name in &names {
                        let policy = self.plan.restart_policy;
                        let seen = obs.containers.get(name);
                        if let Some(code) = self.container(name, seen, policy, now, out) {
                            ended.push(code);
                        }
                    }
                    if !names.is_empty() && ended.len() == names.len() {
                        self.stage = Stage::Completed {
                            succeeded: ended.iter().all(|c| *c == 0),
                        };
                        return;
                    }
                    self.schedule_probes(&obs, out);
                }
            }
        }
    }

    /// Drive one container; returns its exit code once it has ended for good.
    fn container(
        &mut self,
        name: &str,
        seen: Option<&Seen>,
        policy: RestartPolicy,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Option<i64> {
        let b = self.backoff;
        let t = self.tracks.get_mut(name)?;
        if let Some(code) = t.done {
            return Some(code);
        }
        match seen.map(|s| (s.id.clone(), s.attempt, s.run)) {
            None => {
                if t.next_start.is_none_or(|at| at <= now) {
                    t.next_start = None;
                    out.push(Action::Start {
                        container: name.to_owned(),
                        attempt: t.restart_count,
                    });
                }
            }
            Some((id, _, Run::Created)) => {
                // Created but never started (an interrupted start): start over.
                out.push(Action::Remove { id });
            }
            Some((_, _, Run::Running { since })) => {
                t.waiting = None;
                t.scheduled_exit = None;
                if !t.backoff.is_zero() && since + b.max <= now {
                    t.backoff = Duration::ZERO;
                }
            }
            Some((id, attempt, Run::Exited { code, at })) => {
                if !policy.restarts(code) {
                    t.done = Some(code);
                    t.waiting = None;
                    return Some(code);
                }
                if t.scheduled_exit.as_deref() != Some(id.as_str()) {
                    t.scheduled_exit = Some(id.clone());
                    let delay = t.backoff;
                    t.backoff = bump(t.backoff, b);
                    t.next_start = Some(if delay.is_zero() { now } else { at + delay });
                }
                match t.next_start {
                    Some(due) if due > now => {
                        let left = due - now;
                        t.waiting = Some((
                            "CrashLoopBackOff".into(),
                            format!(
                                "back-off {:?} restarting failed container={name}",
                                left.max(Duration::from_millis(1))
                            ),
                        ));
                    }
                    _ => {
                        // The exited instance stays until the next one exits, as kubelet
                        // keeps it: its state is the new one's lastState.
                        t.next_start = None;
                        t.restart_count = attempt + 1;
                        out.push(Action::Start {
                            container: name.to_owned(),
                            attempt: attempt + 1,
                        });
                    }
                }
            }
        }
        None
    }

    fn schedule_probes(&mut self, obs: &Observation, out: &mut Vec<Action>) {
        let now = obs.now;
        for c in &self.plan.containers {
            let Some(t) = self.tracks.get_mut(&c.name) else {
                continue;
            };
            let Some(Seen {
                id,
                run: Run::Running { since },
                ..
            }) = obs.containers.get(&c.name)
            else {
                t.probes.clear();
                continue;
            };
            if t.killing.is_some() {
                continue;
            }
            let startup_ok = c.startup.is_none()
                || t.probes
                    .get(&ProbeKind::Startup)
                    .is_some_and(|p| p.for_id == *id && p.result == Some(true));
            t.started = startup_ok;
            for kind in KINDS {
                let Some(plan) = c.probe(kind) else { continue };
                if kind == ProbeKind::Startup && startup_ok {
                    continue;
                }
                if kind != ProbeKind::Startup && !startup_ok {
                    continue;
                }
                let p = t.probes.entry(kind).or_default();
                if p.for_id != *id {
                    *p = ProbeTrack {
                        for_id: id.clone(),
                        next_at: Some(*since + plan.initial_delay),
                        ..ProbeTrack::default()
                    };
                }
                if !p.in_flight && p.next_at.is_some_and(|at| at <= now) {
                    p.in_flight = true;
                    out.push(Action::Probe {
                        container: c.name.clone(),
                        id: id.clone(),
                        kind,
                    });
                }
            }
            t.ready = match (&c.readiness, t.probes.get(&ProbeKind::Readiness)) {
                (None, _) => startup_ok,
                (Some(_), Some(p)) => startup_ok && p.for_id == *id && p.result == Some(true),
                (Some(_), None) => false,
            };
        }
    }

    fn terminate(&mut self, obs: &Observation, deadline: Instant, out: &mut Vec<Action>) {
        let running: Vec<(String, String)> = obs
            .containers
            .iter()
            .filter(|(_, s)| matches!(s.run, Run::Running { .. }))
            .map(|(n, s)| (n.clone(), s.id.clone()))
            .collect();
        if running.is_empty() {
            for s in obs.containers.values() {
                out.push(Action::Remove { id: s.id.clone() });
            }
            if let Some((id, _)) = &obs.sandbox {
                out.push(Action::Remove { id: id.clone() });
            }
            self.stage = Stage::Terminated;
            out.push(Action::Finished);
            return;
        }
        let left = deadline.saturating_duration_since(obs.now);
        for (name, id) in running {
            let Some(t) = self.tracks.get_mut(&name) else {
                continue;
            };
            // A kill already under way is left alone until the deadline.
            if t.killing.as_deref() == Some(id.as_str()) && !left.is_zero() {
                continue;
            }
            t.killing = Some(id.clone());
            out.push(Action::Kill {
                container: name,
                id,
                grace: left,
            });
        }
    }

    /// The pod phase.
    pub fn phase(&self) -> &'static str {
        match self.stage {
            Stage::Completed { succeeded: true } => "Succeeded",
            Stage::Completed { succeeded: false } => "Failed",
            Stage::Terminated => "Succeeded",
            Stage::Starting | Stage::Init(_) => "Pending",
            Stage::Main | Stage::Terminating { .. } => {
                let any = self.plan.containers.iter().any(|c| {
                    self.tracks
                        .get(&c.name)
                        .is_some_and(|t| t.running || t.restart_count > 0 || t.done.is_some())
                });
                if any {
                    "Running"
                } else {
                    "Pending"
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
