//! A worker's view of the runtime: what its pod's sandbox and containers are doing now, as
//! the lifecycle's [`Observation`].

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use tracing::info;

use super::super::lifecycle::{Observation, Run, Seen};
use super::super::runtime::{
    ContainerRuntime, ContainerState, RuntimeError, LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_NODE,
    LABEL_POD_UID, SANDBOX,
};

use super::{to_instant, Worker};

impl<R: ContainerRuntime> Worker<R> {
    pub(super) async fn observe(&mut self) -> Result<Observation, RuntimeError> {
        let rt = &self.shared.runtime;
        let uid = self.uid().to_owned();
        let node = self.shared.cfg.node_name.clone();
        let list = rt
            .list_containers(&[(LABEL_POD_UID, &uid), (LABEL_NODE, &node)])
            .await?;
        let plan = self.lc.plan();
        let known: Vec<String> = plan
            .init
            .iter()
            .chain(&plan.containers)
            .map(|c| c.name.clone())
            .collect();
        let mut groups: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for c in list {
            let name = c.label(LABEL_CONTAINER).unwrap_or_default().to_owned();
            if name != SANDBOX && !known.contains(&name) {
                info!(pod = %self.key, container = %name, "removing a container not in the spec");
                rt.remove_container(&c.id).await?;
                continue;
            }
            groups.entry(name).or_default().push(c);
        }
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut containers = BTreeMap::new();
        self.infos.clear();
        self.previous.clear();
        let mut sandbox = None;
        for (name, mut group) in groups {
            let attempt = |c: &super::super::runtime::ContainerSummary| -> u32 {
                c.label(LABEL_ATTEMPT)
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0)
            };
            group.sort_by_key(|c| std::cmp::Reverse((c.running, attempt(c), c.created)));
            let newest = group.remove(0);
            // Keep one previous instance for lastState; anything else is a duplicate.
            for (i, extra) in group.iter().enumerate() {
                if i > 0 || extra.running || name == SANDBOX {
                    info!(pod = %self.key, container = %name, id = %extra.id, "removing a duplicate container");
                    rt.remove_container(&extra.id).await?;
                } else if let Ok(info) = rt.inspect_container(&extra.id).await {
                    self.previous.insert(name.clone(), info);
                }
            }
            let info = match rt.inspect_container(&newest.id).await {
                Ok(i) => i,
                Err(RuntimeError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            if name == SANDBOX {
                let running = matches!(info.state, ContainerState::Running { .. });
                sandbox = Some((info.id.clone(), running));
                self.sandbox = Some(info);
                continue;
            }
            let run = match &info.state {
                ContainerState::Running { started_at } => Run::Running {
                    since: to_instant(now, wall, *started_at),
                },
                ContainerState::Exited {
                    exit_code,
                    finished_at,
                    ..
                } => Run::Exited {
                    code: *exit_code,
                    at: finished_at.map_or(now, |t| to_instant(now, wall, t)),
                },
                ContainerState::Created | ContainerState::Other(_) => Run::Created,
            };
            containers.insert(
                name.clone(),
                Seen {
                    id: info.id.clone(),
                    attempt: attempt(&newest),
                    run,
                },
            );
            self.infos.insert(name, info);
        }
        if sandbox.is_none() {
            self.sandbox = None;
        }
        Ok(Observation {
            now,
            sandbox,
            containers,
        })
    }
}
