//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection` does
//! it: one replica at a time runs the singleton duties (the control plane's controllers, the
//! token refresh); the others campaign every retry period and take over once the holder has
//! not renewed for a lease duration, timed by their own clock (never the holder's).

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Settings of one election. The timings default to client-go's (15 s, 10 s, 2 s).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LeaderElection {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity, written as `holderIdentity`. Keep it stable across restarts of
    /// one replica, so that a restarted leader takes its lease back at once.
    pub identity: String,
    /// How long a lease holds without renewal before others may take it.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives its duties up.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire, and the leader to renew.
    pub retry_period: Duration,
}

impl LeaderElection {
    /// An election for the Lease `namespace/name`, as `identity`, with client-go's timings.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What this replica last saw of the Lease, and when it saw it change.
struct Observed {
    resource_version: Option<String>,
    at: Instant,
}

struct Elector {
    api: Api<Lease>,
    config: LeaderElection,
    observed: Option<Observed>,
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX).max(1)
}

impl Elector {
    /// One attempt to acquire or renew: `Ok(true)` when this replica holds the lease now.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let me = self.config.identity.clone();
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(secs(self.config.lease_duration)),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let rv = lease.metadata.resource_version.clone();
        if self.observed.as_ref().map(|o| &o.resource_version) != Some(&rv) {
            self.observed = Some(Observed {
                resource_version: rv,
                at: Instant::now(),
            });
        }
        let mut spec = lease.spec.take().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let held_for = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
        );
        let observed_at = self.observed.as_ref().map_or_else(Instant::now, |o| o.at);
        if !holder.is_empty() && holder != me && observed_at + held_for > Instant::now() {
            return Ok(false);
        }
        if holder != me {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(me);
        spec.lease_duration_seconds = Some(secs(self.config.lease_duration));
        spec.renew_time = Some(now);
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(l) => {
                self.observed = Some(Observed {
                    resource_version: l.metadata.resource_version,
                    at: Instant::now(),
                });
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up on shutdown, so that another replica takes it without waiting.
    async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        if let Err(e) = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            warn!(error = %e, "could not release the leader lease");
        }
    }

    /// The retry period with client-go's jitter (up to 1.2 times).
    fn pause(&self) -> Duration {
        self.config
            .retry_period
            .mul_f64(1.0 + fastrand::f64() * 0.2)
    }
}

impl LeaderElection {
    /// Campaigns until `cancel`; while this replica leads, runs `duty` with a token that is
    /// cancelled when leadership is lost (the duty must stop then). After a loss it campaigns
    /// again. On `cancel` the duty is stopped and the lease released.
    pub async fn run<F, Fut>(self, client: kube::Client, cancel: CancellationToken, mut duty: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut elector = Elector {
            api: Api::namespaced(client, &self.namespace),
            config: self,
            observed: None,
        };
        loop {
            // Campaign.
            loop {
                match elector.try_acquire_or_renew().await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "leader election: cannot reach the lease"),
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(elector.pause()) => {}
                }
            }
            info!(
                lease = %format!("{}/{}", elector.config.namespace, elector.config.name),
                identity = %elector.config.identity,
                "became the leader"
            );
            let lead = cancel.child_token();
            let task = tokio::spawn(duty(lead.clone()));
            // Renew until the deadline passes without a renewal.
            let mut renewed = Instant::now();
            let deadline = elector.config.renew_deadline;
            let stopping = loop {
                // Wake at the deadline at the latest, not a retry period after it.
                let pause = elector
                    .config
                    .retry_period
                    .min(deadline.saturating_sub(renewed.elapsed()));
                tokio::select! {
                    () = cancel.cancelled() => break true,
                    () = tokio::time::sleep(pause) => {}
                }
                let left = deadline.saturating_sub(renewed.elapsed());
                if left.is_zero() {
                    warn!("leader lease not renewed within the deadline");
                    break false;
                }
                // Timed from the request, not the answer: others time the lease from when they
                // see the write, which is never before the request left.
                let sent = Instant::now();
                match tokio::time::timeout(left, elector.try_acquire_or_renew()).await {
                    Ok(Ok(true)) => renewed = sent,
                    // Held by another (or a conflicting write): retried until the deadline.
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => warn!(error = %e, "leader election: renewal failed"),
                    Err(_) => {}
                }
                if renewed.elapsed() >= deadline {
                    warn!("leader lease not renewed within the deadline");
                    break false;
                }
            };
            lead.cancel();
            let _ = task.await;
            if stopping {
                elector.release().await;
                return;
            }
            info!("stopped leading; campaigning again");
            elector.observed = None;
        }
    }
}
