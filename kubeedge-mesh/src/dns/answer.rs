//! What the cluster zone answers, from a catalog [`Snapshot`]: the names of the Kubernetes DNS
//! specification as CoreDNS's `kubernetes` plugin serves them.
//!
//! - `<svc>.<ns>.svc.<zone>`: A/AAAA of the cluster IPs, or of the ready endpoints of a
//!   headless Service; a CNAME for an ExternalName Service; SRV for every named port.
//! - `<host>.<svc>.<ns>.svc.<zone>`: a headless Service's endpoint, by its `hostname` or its
//!   dashed IP (`10-244-1-5`).
//! - `_<port>._<proto>.<svc>.<ns>.svc.<zone>`: SRV for one named port.
//! - `<dashed-ip>.<ns>.pod.<zone>`: that IP (CoreDNS's `pods insecure`, kubeadm's default).
//! - PTR for cluster IPs and endpoint IPs.
//!
//! Any other name in the zone is NXDOMAIN at once; names outside it are forwarded.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};

use crate::catalog::{Backend, Service, ServicePort, Snapshot};

/// The TTL of every answer (CoreDNS's `kubernetes` default).
pub(crate) const TTL: u32 = 5;

/// What a query gets.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// Not ours: ask the node's resolvers.
    Forward,
    /// The name does not exist.
    NxDomain,
    /// These records (none: the name exists without records of this type).
    Records {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
}

impl Outcome {
    fn answers(answers: Vec<Record>) -> Self {
        Self::Records {
            answers,
            additionals: Vec::new(),
        }
    }

    fn no_data() -> Self {
        Self::answers(Vec::new())
    }
}

/// The zone's SOA, sent with negative answers so that resolvers cache them for [`TTL`].
pub(crate) fn soa(zone: &Name) -> Record {
    let name = |prefix: &str| Name::from_ascii(prefix).and_then(|p| p.append_domain(zone));
    let rdata = SOA::new(
        name("ns.dns").unwrap_or_else(|_| zone.clone()),
        name("hostmaster").unwrap_or_else(|_| zone.clone()),
        1,
        7200,
        1800,
        86400,
        TTL,
    );
    Record::from_rdata(zone.clone(), TTL, RData::SOA(rdata))
}

/// The answer to `qname`/`qtype` in `zone` (a lower-case FQDN such as `cluster.local.`).
pub(crate) fn resolve(snap: &Snapshot, zone: &Name, qname: &Name, qtype: RecordType) -> Outcome {
    let lower = qname.to_lowercase();
    let text = lower.to_ascii();
    let text = text.trim_end_matches('.');
    let zone_text = zone.to_ascii();
    let zone_text = zone_text.trim_end_matches('.');
    if text.ends_with(".in-addr.arpa") || text.ends_with(".ip6.arpa") {
        return reverse(snap, zone, &lower, text, qtype);
    }
    let prefix = if text == zone_text {
        ""
    } else if let Some(p) = text
        .strip_suffix(zone_text)
        .and_then(|p| p.strip_suffix('.'))
    {
        p
    } else {
        return Outcome::Forward;
    };
    let labels: Vec<&str> = if prefix.is_empty() {
        Vec::new()
    } else {
        prefix.split('.').collect()
    };
    match labels[..] {
        [] => match qtype {
            RecordType::SOA => Outcome::answers(vec![soa(zone)]),
            _ => Outcome::no_data(),
        },
        ["svc"] | ["pod"] | [_, "svc"] | [_, "pod"] => Outcome::no_data(),
        [svc, ns, "svc"] => match snap.service(ns, svc) {
            None => Outcome::NxDomain,
            Some(s) => service(snap, zone, &lower, s, qtype),
        },
        [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
            match snap.service(ns, svc) {
                Some(s) => named_port(snap, zone, s, &port[1..], &proto[1..], qtype),
                None => Outcome::NxDomain,
            }
        }
        [host, svc, ns, "svc"] => match snap.service(ns, svc) {
            Some(s) if is_headless(s) => {
                let ips: Vec<IpAddr> = snap
                    .backends(ns, svc)
                    .iter()
                    .filter(|b| host_label(b) == host)
                    .map(|b| b.ip)
                    .collect();
                if ips.is_empty() {
                    Outcome::NxDomain
                } else {
                    Outcome::answers(addresses(&lower, &ips, qtype))
                }
            }
            _ => Outcome::NxDomain,
        },
        [dashed, _ns, "pod"] => match undash(dashed) {
            Some(ip) => Outcome::answers(addresses(&lower, &[ip], qtype)),
            None => Outcome::NxDomain,
        },
        _ => Outcome::NxDomain,
    }
}

fn is_headless(s: &Service) -> bool {
    s.cluster_ips.is_empty() && s.external_name.is_none()
}

/// The name a headless Service's endpoint has: its hostname, else its dashed IP.
fn host_label(b: &Backend) -> String {
    b.hostname.clone().unwrap_or_else(|| dash(b.ip))
}

fn dash(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

fn undash(label: &str) -> Option<IpAddr> {
    if label.contains(':') || label.contains('.') {
        return None;
    }
    label
        .replace('-', ".")
        .parse::<Ipv4Addr>()
        .map(IpAddr::V4)
        .or_else(|_| label.replace('-', ":").parse::<Ipv6Addr>().map(IpAddr::V6))
        .ok()
}

/// A/AAAA records of `ips` that match `qtype` (ANY takes both).
fn addresses(name: &Name, ips: &[IpAddr], qtype: RecordType) -> Vec<Record> {
    ips.iter()
        .filter_map(|ip| {
            let rdata = match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(*v4)),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(*v6)),
                _ => return None,
            };
            Some(Record::from_rdata(name.clone(), TTL, rdata))
        })
        .collect()
}

fn service(snap: &Snapshot, zone: &Name, name: &Name, s: &Service, qtype: RecordType) -> Outcome {
    if let Some(ext) = &s.external_name {
        return match Name::from_ascii(format!("{}.", ext.trim_end_matches('.'))) {
            Ok(target) => Outcome::answers(vec![Record::from_rdata(
                name.clone(),
                TTL,
                RData::CNAME(CNAME(target)),
            )]),
            Err(_) => Outcome::no_data(),
        };
    }
    if qtype == RecordType::SRV {
        return srv(snap, zone, s, |_| true);
    }
    if is_headless(s) {
        let mut ips: Vec<IpAddr> = snap
            .backends(&s.namespace, &s.name)
            .iter()
            .map(|b| b.ip)
            .collect();
        ips.sort();
        ips.dedup();
        return Outcome::answers(addresses(name, &ips, qtype));
    }
    Outcome::answers(addresses(name, &s.cluster_ips, qtype))
}

fn named_port(
    snap: &Snapshot,
    zone: &Name,
    s: &Service,
    port: &str,
    proto: &str,
    qtype: RecordType,
) -> Outcome {
    let matches = |p: &ServicePort| {
        !p.name.is_empty() && p.name.eq_ignore_ascii_case(port) && p.protocol.as_str() == proto
    };
    if !s.ports.iter().any(matches) {
        return Outcome::NxDomain;
    }
    match qtype {
        RecordType::SRV | RecordType::ANY => srv(snap, zone, s, matches),
        _ => Outcome::no_data(),
    }
}

/// The service's own name under `zone`.
fn service_name(zone: &Name, s: &Service) -> Option<Name> {
    Name::from_ascii(format!("{}.{}.svc", s.name, s.namespace))
        .and_then(|n| n.append_domain(zone))
        .ok()
}

/// SRV records of the named ports that `keep`: to the Service's own name (with its cluster
/// IPs as additionals), or for a headless Service to each endpoint (with its address).
fn srv(snap: &Snapshot, zone: &Name, s: &Service, keep: impl Fn(&ServicePort) -> bool) -> Outcome {
    let Some(own) = service_name(zone, s) else {
        return Outcome::no_data();
    };
    let ports: Vec<_> = s
        .ports
        .iter()
        .filter(|p| !p.name.is_empty() && keep(p))
        .collect();
    let mut answers = Vec::new();
    let mut additionals = Vec::new();
    if is_headless(s) {
        let backends = snap.backends(&s.namespace, &s.name);
        for b in backends {
            let Ok(target) = Name::from_ascii(host_label(b)).and_then(|h| h.append_domain(&own))
            else {
                continue;
            };
            let mut any = false;
            for p in &ports {
                if let Some(port) = b.port_for(&p.name, p.protocol) {
                    answers.push(srv_record(&own, p, port, &target));
                    any = true;
                }
            }
            if any {
                additionals.extend(addresses(&target, &[b.ip], RecordType::ANY));
            }
        }
    } else {
        for p in &ports {
            answers.push(srv_record(&own, p, p.port, &own));
        }
        if !answers.is_empty() {
            additionals.extend(addresses(&own, &s.cluster_ips, RecordType::ANY));
        }
    }
    Outcome::Records {
        answers,
        additionals,
    }
}

fn srv_record(own: &Name, p: &ServicePort, port: u16, target: &Name) -> Record {
    let name = Name::from_ascii(format!(
        "_{}._{}",
        p.name.to_ascii_lowercase(),
        p.protocol.as_str()
    ))
    .and_then(|n| n.append_domain(own))
    .unwrap_or_else(|_| own.clone());
    Record::from_rdata(
        name,
        TTL,
        RData::SRV(SRV::new(0, 100, port, target.clone())),
    )
}

/// PTR for a cluster IP or an endpoint IP; other addresses are forwarded.
fn reverse(snap: &Snapshot, zone: &Name, qname: &Name, text: &str, qtype: RecordType) -> Outcome {
    let Some(ip) = reverse_ip(text) else {
        return Outcome::Forward;
    };
    let target = if let Some(s) = snap.by_cluster_ip(ip) {
        service_name(zone, s)
    } else if let Some((s, b)) = snap.by_endpoint_ip(ip) {
        service_name(zone, s).and_then(|own| {
            Name::from_ascii(host_label(b))
                .and_then(|h| h.append_domain(&own))
                .ok()
        })
    } else {
        return Outcome::Forward;
    };
    match (target, qtype) {
        (Some(t), RecordType::PTR | RecordType::ANY) => Outcome::answers(vec![Record::from_rdata(
            qname.clone(),
            TTL,
            RData::PTR(PTR(t)),
        )]),
        _ => Outcome::no_data(),
    }
}

/// The address of `4.3.2.1.in-addr.arpa` or of a 32-nibble `ip6.arpa` name.
fn reverse_ip(text: &str) -> Option<IpAddr> {
    if let Some(v4) = text.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<&str> = v4.split('.').collect();
        if octets.len() != 4 {
            return None;
        }
        octets.reverse();
        return octets.join(".").parse::<Ipv4Addr>().ok().map(IpAddr::V4);
    }
    let v6 = text.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<&str> = v6.split('.').collect();
    if nibbles.len() != 32 || nibbles.iter().any(|n| n.len() != 1) {
        return None;
    }
    let hex: String = nibbles.iter().rev().copied().collect();
    let value = u128::from_str_radix(&hex, 16).ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(value)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Backend, Catalog, Change, Protocol, Service, ServicePort, TargetPort};
    use proptest::prelude::*;

    fn snapshot() -> std::sync::Arc<Snapshot> {
        let c = Catalog::new();
        let svc = |name: &str, ips: Vec<IpAddr>| Service {
            namespace: "default".into(),
            name: name.into(),
            cluster_ips: ips,
            external_name: None,
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                target: TargetPort::Number(8080),
            }],
            affinity: None,
            proxied: true,
        };
        let backend = Backend {
            ip: [10, 244, 1, 5].into(),
            hostname: Some("web-0".into()),
            node: None,
            ports: vec![("http".to_owned(), 8080, Protocol::Tcp)].into(),
        };
        c.apply([
            Change::Service(svc("a", vec![[10, 96, 0, 9].into()])),
            Change::Service(svc("web", Vec::new())),
            Change::Endpoints(("default".into(), "web".into()), vec![backend]),
        ]);
        c.snapshot()
    }

    proptest! {
        /// Any name and type gets an outcome, never a panic: labels from the zone's own words,
        /// digits, dashes, underscores and arbitrary text.
        #[test]
        fn any_question_has_an_answer(
            labels in proptest::collection::vec(
                prop_oneof![
                    Just("svc".to_owned()), Just("pod".to_owned()), Just("default".to_owned()),
                    Just("web".to_owned()), Just("a".to_owned()), Just("_http".to_owned()),
                    Just("_tcp".to_owned()), Just("web-0".to_owned()), Just("in-addr".to_owned()),
                    Just("arpa".to_owned()), Just("ip6".to_owned()), "[0-9]{1,3}",
                    "[0-9a-f-]{1,39}", "[a-z_-]{1,20}",
                ],
                0..8,
            ),
            suffix in prop_oneof![Just("cluster.local."), Just("in-addr.arpa."), Just("ip6.arpa."), Just("example.com.")],
            qtype in prop_oneof![
                Just(RecordType::A), Just(RecordType::AAAA), Just(RecordType::SRV),
                Just(RecordType::PTR), Just(RecordType::ANY), Just(RecordType::SOA),
                Just(RecordType::TXT), Just(RecordType::CNAME),
            ],
        ) {
            let zone = Name::from_ascii("cluster.local.").expect("zone");
            let mut text = labels.join(".");
            if !text.is_empty() {
                text.push('.');
            }
            text.push_str(suffix);
            if let Ok(name) = Name::from_ascii(&text) {
                let _ = resolve(&snapshot(), &zone, &name, qtype);
            }
        }
    }

    #[test]
    fn reverse_names_parse_for_both_families() {
        assert_eq!(
            reverse_ip("9.0.96.10.in-addr.arpa"),
            Some([10, 96, 0, 9].into())
        );
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa";
        assert_eq!(reverse_ip(v6), Some("2001:db8::1".parse().expect("ip")));
        assert_eq!(reverse_ip("1.2.3.in-addr.arpa"), None);
        assert_eq!(undash("10-244-1-5"), Some([10, 244, 1, 5].into()));
        assert_eq!(undash("not-an-ip"), None);
    }
}
