use super::*;

fn plan(init: &[&str], main: &[&str], policy: RestartPolicy) -> PodPlan {
    let c = |n: &&str| ContainerPlan {
        name: (*n).to_owned(),
        ..ContainerPlan::default()
    };
    PodPlan {
        init: init.iter().map(c).collect(),
        containers: main.iter().map(c).collect(),
        restart_policy: policy,
        grace: Duration::from_secs(5),
    }
}

const B: Backoff = Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(4),
};

struct World {
    t0: Instant,
    sandbox: Option<(String, bool)>,
    containers: BTreeMap<String, Seen>,
}

impl World {
    fn new() -> Self {
        Self {
            t0: Instant::now(),
            sandbox: None,
            containers: BTreeMap::new(),
        }
    }
    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }
    fn obs(&self, secs: f64) -> Input {
        Input::Observed(Observation {
            now: self.at(secs),
            sandbox: self.sandbox.clone(),
            containers: self.containers.clone(),
        })
    }
    fn run(&mut self, name: &str, attempt: u32, since: f64) {
        self.containers.insert(
            name.into(),
            Seen {
                id: format!("{name}-{attempt}"),
                attempt,
                run: Run::Running {
                    since: self.at(since),
                },
            },
        );
    }
    fn exit(&mut self, name: &str, code: i64, at: f64) {
        let at = self.at(at);
        let s = self.containers.get_mut(name).unwrap();
        s.run = Run::Exited { code, at };
    }
}

fn start(name: &str, attempt: u32) -> Action {
    Action::Start {
        container: name.into(),
        attempt,
    }
}

#[test]
fn sandbox_then_init_in_order_then_main() {
    let mut w = World::new();
    let lc = PodLifecycle::new(plan(&["i1", "i2"], &["app"], RestartPolicy::Always), B);
    let (lc, a) = lc.step(w.obs(0.0));
    assert_eq!(a, vec![Action::StartSandbox]);
    assert_eq!(lc.phase(), "Pending");
    w.sandbox = Some(("sb".into(), true));
    let (lc, a) = lc.step(w.obs(0.1));
    assert_eq!(a, vec![start("i1", 0)], "init containers one at a time");
    w.run("i1", 0, 0.1);
    let (lc, a) = lc.step(w.obs(0.2));
    assert!(a.is_empty());
    w.exit("i1", 0, 0.3);
    let (lc, a) = lc.step(w.obs(0.3));
    assert_eq!(a, vec![start("i2", 0)]);
    assert!(!lc.initialized());
    w.run("i2", 0, 0.3);
    w.exit("i2", 0, 0.4);
    let (lc, a) = lc.step(w.obs(0.4));
    assert_eq!(a, vec![start("app", 0)]);
    assert!(lc.initialized());
    w.run("app", 0, 0.4);
    let (lc, a) = lc.step(w.obs(0.5));
    assert!(a.is_empty());
    assert_eq!(lc.phase(), "Running");
    assert!(lc.track("app").unwrap().ready, "no readiness probe: ready");
}

#[test]
fn crash_loop_backoff_doubles_and_counts_restarts() {
    let mut w = World::new();
    w.sandbox = Some(("sb".into(), true));
    let lc = PodLifecycle::new(plan(&[], &["app"], RestartPolicy::Always), B);
    let (lc, a) = lc.step(w.obs(0.0));
    assert_eq!(a, vec![start("app", 0)]);
    w.run("app", 0, 0.0);
    w.exit("app", 1, 0.5);
    // First crash: restart at once.
    let (lc, a) = lc.step(w.obs(0.5));
    assert_eq!(
        a,
        vec![start("app", 1)],
        "the exited instance is kept for lastState"
    );
    assert_eq!(lc.track("app").unwrap().restart_count, 1);
    w.containers.clear();
    w.run("app", 1, 0.6);
    w.exit("app", 1, 1.0);
    // Second crash: back off 1 s.
    let (lc, a) = lc.step(w.obs(1.0));
    assert!(a.is_empty());
    let waiting = lc.track("app").unwrap().waiting.clone().unwrap();
    assert_eq!(waiting.0, "CrashLoopBackOff");
    assert_eq!(lc.next_wakeup(), Some(w.at(2.0)));
    let (lc, a) = lc.step(w.obs(1.9));
    assert!(a.is_empty());
    let (lc, a) = lc.step(w.obs(2.0));
    assert_eq!(a, vec![start("app", 2)]);
    w.containers.clear();
    w.run("app", 2, 2.0);
    w.exit("app", 1, 2.1);
    // Third: 2 s.
    let (lc, _) = lc.step(w.obs(2.1));
    assert_eq!(lc.next_wakeup(), Some(w.at(4.1)));
    assert_eq!(lc.phase(), "Running");
}

#[test]
fn restart_policies() {
    for (policy, code, restarts) in [
        (RestartPolicy::Never, 1, false),
        (RestartPolicy::OnFailure, 0, false),
        (RestartPolicy::OnFailure, 2, true),
        (RestartPolicy::Always, 0, true),
    ] {
        let mut w = World::new();
        w.sandbox = Some(("sb".into(), true));
        let lc = PodLifecycle::new(plan(&[], &["app"], policy), B);
        let (lc, _) = lc.step(w.obs(0.0));
        w.run("app", 0, 0.0);
        w.exit("app", code, 1.0);
        let (lc, a) = lc.step(w.obs(1.0));
        assert_eq!(
            a.contains(&start("app", 1)),
            restarts,
            "{policy:?} exit {code}"
        );
        if !restarts {
            let expect = if code == 0 { "Succeeded" } else { "Failed" };
            assert_eq!(lc.phase(), expect);
        }
    }
}

#[test]
fn failed_init_container_with_never_fails_the_pod() {
    let mut w = World::new();
    w.sandbox = Some(("sb".into(), true));
    let lc = PodLifecycle::new(plan(&["init"], &["app"], RestartPolicy::Never), B);
    let (lc, _) = lc.step(w.obs(0.0));
    w.run("init", 0, 0.0);
    w.exit("init", 3, 0.5);
    let (lc, a) = lc.step(w.obs(0.5));
    assert!(a.is_empty());
    assert_eq!(lc.phase(), "Failed");
}

#[test]
fn liveness_failures_kill_and_readiness_sets_ready() {
    let probe = ProbePlan {
        initial_delay: Duration::from_secs(1),
        period: Duration::from_secs(1),
        success_threshold: 1,
        failure_threshold: 2,
    };
    let mut p = plan(&[], &["app"], RestartPolicy::Always);
    p.containers[0].liveness = Some(probe);
    p.containers[0].readiness = Some(probe);
    let mut w = World::new();
    w.sandbox = Some(("sb".into(), true));
    let lc = PodLifecycle::new(p, B);
    let (lc, _) = lc.step(w.obs(0.0));
    w.run("app", 0, 0.0);
    let (lc, a) = lc.step(w.obs(0.5));
    assert!(a.is_empty(), "initial delay");
    assert!(
        !lc.track("app").unwrap().ready,
        "not ready before a probe passes"
    );
    let (lc, a) = lc.step(w.obs(1.0));
    assert_eq!(a.len(), 2, "liveness and readiness probes: {a:?}");
    let probe_in = |kind, success, t: f64| Input::Probe {
        container: "app".into(),
        kind,
        success,
        now: w.at(t),
    };
    let (lc, _) = lc.step(probe_in(ProbeKind::Readiness, true, 1.0));
    let (lc, _) = lc.step(probe_in(ProbeKind::Liveness, false, 1.0));
    let (lc, _) = lc.step(w.obs(1.5));
    assert!(lc.track("app").unwrap().ready);
    let (lc, a) = lc.step(w.obs(2.0));
    assert_eq!(a.len(), 2);
    let (lc, _) = lc.step(probe_in(ProbeKind::Readiness, false, 2.0));
    assert!(
        lc.track("app").unwrap().ready,
        "one failure is under the threshold"
    );
    let (lc, _) = lc.step(probe_in(ProbeKind::Readiness, false, 2.0));
    assert!(
        !lc.track("app").unwrap().ready,
        "two failed readiness probes: not ready"
    );
    let (lc, a) = lc.step(probe_in(ProbeKind::Liveness, false, 2.0));
    assert_eq!(
        a,
        vec![Action::Kill {
            container: "app".into(),
            id: "app-0".into(),
            grace: Duration::from_secs(5)
        }],
        "two liveness failures: killed"
    );
    w.exit("app", 137, 2.2);
    let (_, a) = lc.step(w.obs(2.2));
    assert!(a.contains(&start("app", 1)), "then restarted: {a:?}");
}

#[test]
fn delete_kills_with_grace_then_finishes() {
    let mut w = World::new();
    w.sandbox = Some(("sb".into(), true));
    let lc = PodLifecycle::new(plan(&[], &["a", "b"], RestartPolicy::Always), B);
    let (lc, _) = lc.step(w.obs(0.0));
    w.run("a", 0, 0.0);
    w.run("b", 0, 0.0);
    let (lc, _) = lc.step(w.obs(0.1));
    let (lc, a) = lc.step(Input::Delete {
        grace: Duration::from_secs(3),
        now: w.at(1.0),
    });
    assert_eq!(a.len(), 2);
    assert!(matches!(&a[0], Action::Kill { grace, .. } if *grace == Duration::from_secs(3)));
    // A kill under way is not repeated.
    let (lc, a) = lc.step(w.obs(1.5));
    assert!(a.is_empty(), "{a:?}");
    w.exit("a", 0, 2.0);
    w.exit("b", 143, 2.0);
    let (lc, a) = lc.step(w.obs(2.0));
    assert_eq!(a.last(), Some(&Action::Finished));
    assert!(a.contains(&Action::Remove { id: "sb".into() }));
    assert_eq!(lc.stage, Stage::Terminated);
    // Nothing restarts after that.
    let (_, a) = lc.step(w.obs(3.0));
    assert!(a.is_empty());
}

#[test]
fn adoption_keeps_containers_and_restart_counts() {
    let mut w = World::new();
    w.sandbox = Some(("sb".into(), true));
    w.run("app", 7, 0.0);
    let lc = PodLifecycle::new(plan(&["init"], &["app"], RestartPolicy::Always), B);
    let (lc, a) = lc.step(w.obs(10.0));
    assert!(a.is_empty(), "a running container is adopted as is: {a:?}");
    assert_eq!(lc.track("app").unwrap().restart_count, 7);
    assert!(lc.initialized(), "main containers exist: init is done");
}

#[test]
fn start_failures_back_off() {
    let mut w = World::new();
    w.sandbox = Some(("sb".into(), true));
    let lc = PodLifecycle::new(plan(&[], &["app"], RestartPolicy::Always), B);
    let (lc, _) = lc.step(w.obs(0.0));
    let (lc, _) = lc.step(Input::StartFailed {
        container: "app".into(),
        reason: "ErrImagePull".into(),
        message: "no such image".into(),
        now: w.at(0.0),
    });
    assert_eq!(
        lc.track("app").unwrap().waiting.as_ref().unwrap().0,
        "ErrImagePull"
    );
    let (lc, a) = lc.step(w.obs(0.5));
    assert!(a.is_empty());
    let (_, a) = lc.step(w.obs(1.0));
    assert_eq!(a, vec![start("app", 0)]);
}

#[test]
fn dead_sandbox_starts_over() {
    let mut w = World::new();
    w.sandbox = Some(("sb".into(), false));
    w.run("app", 0, 0.0);
    let lc = PodLifecycle::new(plan(&[], &["app"], RestartPolicy::Always), B);
    let (lc, a) = lc.step(w.obs(1.0));
    assert_eq!(
        a,
        vec![
            Action::Remove { id: "app-0".into() },
            Action::Remove { id: "sb".into() },
            Action::StartSandbox
        ]
    );
    let (_, a) = lc.step(Input::SandboxFailed {
        message: "port taken".into(),
        now: w.at(1.0),
    });
    assert!(a.is_empty());
}
