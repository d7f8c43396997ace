//! Pod facts the controllers share: activity, readiness, availability, ownership, resource
//! requests, and Kubernetes quantities.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;

/// `true` for a pod that is neither finished nor being deleted (it counts as a replica).
pub(crate) fn is_active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && !is_terminal(p)
}

/// `true` once the pod succeeded or failed.
pub(crate) fn is_terminal(p: &Pod) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

/// The pod's phase (`Pending` when unset).
pub(crate) fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The bound node, if any.
pub(crate) fn node_name(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// The time the pod became Ready, if it is Ready.
pub(crate) fn ready_since(p: &Pod) -> Option<Option<Timestamp>> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (c.status == "True").then(|| c.last_transition_time.as_ref().map(|t| t.0))
}

/// `true` when the Ready condition is True.
pub(crate) fn is_ready(p: &Pod) -> bool {
    ready_since(p).is_some()
}

/// `true` when the pod has been Ready for at least `min_ready_seconds`.
pub(crate) fn is_available(p: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(p) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => now.as_second() - since.as_second() >= i64::from(min_ready_seconds),
    }
}

/// The owner reference with `controller: true`.
pub(crate) fn controller_of(m: &ObjectMeta) -> Option<&OwnerReference> {
    m.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// `true` when `m` is controlled by the object with `uid`.
pub(crate) fn controlled_by(m: &ObjectMeta, uid: &str) -> bool {
    controller_of(m).is_some_and(|r| r.uid == uid)
}

/// A controller owner reference to `o`.
pub(crate) fn owner_ref<K: Resource<DynamicType = ()>>(o: &K) -> OwnerReference {
    let m = o.meta();
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Resource amounts in thousandths of a unit (millicores, millibytes), by resource name.
pub(crate) type Resources = BTreeMap<String, i128>;

/// Parses a Kubernetes quantity (`100m`, `0.5`, `128Mi`, `1G`, `1e3`) into thousandths,
/// rounding up. `None` when malformed.
pub(crate) fn parse_quantity(s: &str) -> Option<i128> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let (sign, s) = match s.as_bytes()[0] {
        b'-' => (-1, &s[1..]),
        b'+' => (1, &s[1..]),
        _ => (1, s),
    };
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(num_end);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let digits = format!("{int_part}{frac_part}");
    if digits.len() > 30 {
        return None;
    }
    let mantissa: i128 = digits.parse().ok()?;
    let mut den: i128 = 10i128.checked_pow(u32::try_from(frac_part.len()).ok()?)?;
    // (numerator, denominator) of the suffix's factor, times 1000 for thousandths.
    let (mut num, d): (i128, i128) = match suffix {
        "n" => (1, 1_000_000),
        "u" => (1, 1_000),
        "m" => (1, 1),
        "" => (1_000, 1),
        "k" => (1_000_000, 1),
        "M" => (1_000_000_000, 1),
        "G" => (1_000_000_000_000, 1),
        "T" => (1_000_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000_000, 1),
        "Ki" => (1_000 << 10, 1),
        "Mi" => (1_000 << 20, 1),
        "Gi" => (1_000 << 30, 1),
        "Ti" => (1_000 << 40, 1),
        "Pi" => (1_000 << 50, 1),
        "Ei" => (1_000 << 60, 1),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().ok()?;
            if exp.unsigned_abs() > 24 {
                return None;
            }
            let p = 10i128.pow(exp.unsigned_abs());
            if exp >= 0 {
                (1_000 * p, 1)
            } else {
                (1_000, p)
            }
        }
        _ => return None,
    };
    den = den.checked_mul(d)?;
    num = mantissa.checked_mul(num)?;
    let v = (num + den - 1) / den;
    Some(sign * v)
}

fn quantity(q: &Quantity) -> i128 {
    parse_quantity(&q.0).unwrap_or(0)
}

fn add_all(into: &mut Resources, from: Option<&BTreeMap<String, Quantity>>) {
    for (k, v) in from.into_iter().flatten() {
        *into.entry(k.clone()).or_insert(0) += quantity(v);
    }
}

/// The requests of one container: `requests`, falling back to `limits` per resource (the
/// API server's defaulting).
fn container_requests(c: &k8s_openapi::api::core::v1::Container) -> Resources {
    let mut r = Resources::new();
    if let Some(res) = &c.resources {
        add_all(&mut r, res.requests.as_ref());
        for (k, v) in res.limits.iter().flatten() {
            r.entry(k.clone()).or_insert_with(|| quantity(v));
        }
    }
    r
}

/// A pod's effective requests: the sum over containers, at least the largest init container,
/// plus the pod overhead. Excludes the pod count itself.
pub(crate) fn pod_requests(spec: &PodSpec) -> Resources {
    let mut sum = Resources::new();
    for c in &spec.containers {
        for (k, v) in container_requests(c) {
            *sum.entry(k).or_insert(0) += v;
        }
    }
    for c in spec.init_containers.iter().flatten() {
        for (k, v) in container_requests(c) {
            let e = sum.entry(k).or_insert(0);
            *e = (*e).max(v);
        }
    }
    add_all(&mut sum, spec.overhead.as_ref());
    sum
}

/// What a node offers to pods: `allocatable`, else `capacity`.
pub(crate) fn allocatable(n: &Node) -> Resources {
    let mut r = Resources::new();
    if let Some(st) = &n.status {
        add_all(&mut r, st.allocatable.as_ref().or(st.capacity.as_ref()));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for (s, want) in [
            ("100m", 100),
            ("1", 1000),
            ("0.5", 500),
            ("2", 2000),
            ("128Mi", 128 * 1024 * 1024 * 1000),
            ("1G", 1_000_000_000_000),
            ("1e3", 1_000_000),
            ("1k", 1_000_000),
            ("1n", 1),
            ("110", 110_000),
            ("-1", -1000),
        ] {
            assert_eq!(parse_quantity(s), Some(want), "{s}");
        }
        for bad in ["", "m", "1x", "1.2.3", "abc"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }
}
