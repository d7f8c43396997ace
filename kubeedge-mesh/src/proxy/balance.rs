//! [`Balancer`]: which endpoint a new connection of one Service port tries first.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How a Service port spreads its connections over its endpoints (upstream edgemesh's
/// `ROUND_ROBIN`, its default, and `RANDOM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Each new connection starts at the next endpoint.
    #[default]
    RoundRobin,
    /// Each new connection starts at a random endpoint.
    Random,
}

/// How long an endpoint that did not take a connection is tried last: a node that went away
/// costs one connection the connect timeout, not every connection until its Endpoints change.
const FAILED_FOR: Duration = Duration::from_secs(10);

/// The balancing state of one Service port, over endpoints `K`.
#[derive(Debug)]
pub(crate) struct Balancer<K> {
    mode: Balance,
    next: AtomicUsize,
    /// `sessionAffinity: ClientIP`: each client's endpoint and when it was last used.
    sticky: Mutex<HashMap<IpAddr, (K, Instant)>>,
    /// Endpoints that refused or did not answer, and when.
    failed: Mutex<HashMap<K, Instant>>,
}

impl<K: Clone + Eq + Hash> Balancer<K> {
    pub(crate) fn new(mode: Balance) -> Self {
        Self {
            mode,
            next: AtomicUsize::new(0),
            sticky: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// `addr` did not take a connection: it goes last for a while.
    pub(crate) fn failed(&self, addr: K) {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(addr, Instant::now());
    }

    /// Every candidate, in the order to try them: the client's endpoint first while its
    /// affinity holds, then from the balancing start onwards (a failed endpoint is skipped for
    /// the next, as kube-proxy's userspace proxy does).
    pub(crate) fn order(
        &self,
        client: IpAddr,
        candidates: &[K],
        affinity: Option<Duration>,
    ) -> Vec<K> {
        if candidates.is_empty() {
            return Vec::new();
        }
        let start = match self.mode {
            Balance::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % candidates.len(),
            Balance::Random => fastrand::usize(..candidates.len()),
        };
        let mut order: Vec<K> = candidates[start..]
            .iter()
            .chain(&candidates[..start])
            .cloned()
            .collect();
        let failed: Vec<K> = {
            let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
            failed.retain(|_, at| at.elapsed() < FAILED_FOR);
            failed.keys().cloned().collect()
        };
        if !failed.is_empty() {
            // Stable: the balancing order among the healthy ones stays.
            order.sort_by_key(|a| failed.contains(a));
        }
        if let Some(ttl) = affinity {
            let mut sticky = self.sticky.lock().unwrap_or_else(PoisonError::into_inner);
            sticky.retain(|_, (_, used)| used.elapsed() < ttl);
            // A client's endpoint that just failed does not keep it.
            if let Some((addr, _)) = sticky.get(&client).filter(|(a, _)| !failed.contains(a)) {
                if let Some(i) = order.iter().position(|a| a == addr) {
                    let a = order.remove(i);
                    order.insert(0, a);
                }
            }
        }
        order
    }

    /// `client` was served by `addr`: with affinity, its next connections go there too.
    pub(crate) fn served(&self, client: IpAddr, addr: K, affinity: Option<Duration>) {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&addr);
        if affinity.is_some() {
            self.sticky
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(client, (addr, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn addrs(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 80)))
            .collect()
    }

    #[test]
    fn round_robin_starts_each_connection_at_the_next_endpoint() {
        let b = Balancer::new(Balance::RoundRobin);
        let c = addrs(3);
        let firsts: Vec<_> = (0..6)
            .map(|_| b.order([1, 1, 1, 1].into(), &c, None)[0])
            .collect();
        assert_eq!(firsts, [c[0], c[1], c[2], c[0], c[1], c[2]]);
        assert_eq!(
            b.order([1, 1, 1, 1].into(), &c, None).len(),
            3,
            "the rest follow"
        );
    }

    #[test]
    fn an_endpoint_that_failed_goes_last_for_a_while() {
        let b = Balancer::new(Balance::RoundRobin);
        let c = addrs(3);
        b.failed(c[0]);
        for _ in 0..6 {
            let order = b.order([1, 1, 1, 1].into(), &c, None);
            assert_eq!(order.last(), Some(&c[0]), "{order:?}");
            assert_eq!(order.len(), 3);
        }
        b.served([1, 1, 1, 1].into(), c[0], None);
        let firsts: std::collections::HashSet<_> = (0..3)
            .map(|_| b.order([1, 1, 1, 1].into(), &c, None)[0])
            .collect();
        assert!(firsts.contains(&c[0]), "back in turn once it served");
    }

    #[test]
    fn client_ip_affinity_keeps_a_client_on_its_endpoint_until_it_expires() {
        let b = Balancer::new(Balance::Random);
        let c = addrs(5);
        let client: IpAddr = [192, 168, 0, 7].into();
        let ttl = Some(Duration::from_secs(60));
        let first = b.order(client, &c, ttl)[0];
        b.served(client, first, ttl);
        for _ in 0..50 {
            assert_eq!(b.order(client, &c, ttl)[0], first);
        }
        // Gone from the endpoints: another one serves.
        let rest: Vec<_> = c.iter().copied().filter(|a| *a != first).collect();
        assert_ne!(b.order(client, &rest, ttl)[0], first);
        // Expired: balanced again.
        let expired = Some(Duration::ZERO);
        let spread: std::collections::HashSet<_> =
            (0..100).map(|_| b.order(client, &c, expired)[0]).collect();
        assert!(spread.len() > 1);
    }
}
