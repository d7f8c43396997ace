//! [`Interceptor`]: the NAT rules that send `clusterIP:port` to the proxy's listeners.
//!
//! With nftables (preferred) the mesh owns one table (`ip kubeedge-mesh`) with one map from
//! `address . protocol . port` to the listener's `address . port`, and two NAT chains that
//! look it up: `prerouting` (pods, through the node's bridge) and `output` (processes on the
//! node). Both run at priority -105 (`dstnat - 5`), before kube-proxy's and Docker's NAT, so
//! the mesh works whichever of them starts first, or without them. The whole table is replaced
//! in one `nft -f` transaction at each change, so no packet sees half a rule set; removing the
//! mesh removes the table and nothing else.
//!
//! On a node without `nft`, the same rules go into an iptables chain of the mesh's own
//! (`KUBEEDGE-MESH` in the `nat` table, replaced in one `iptables-restore --noflush`), jumped
//! to first from `PREROUTING` and `OUTPUT`; iptables has no priorities, so a kube-proxy that
//! inserts its jump later comes first there.

mod cmd;
mod iface;
mod iptables;

pub use iface::{ensure_interface, remove_interface};

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::catalog::Protocol;
use crate::error::MeshError;
use crate::proxy::Redirect;

/// The table's default name.
pub const TABLE: &str = "kubeedge-mesh";

/// The iptables chain's default name.
pub const CHAIN: &str = "KUBEEDGE-MESH";

/// Which packet filter holds the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    Nftables,
    Iptables,
}

/// The mesh's NAT rules: an nftables table, or an iptables chain.
#[derive(Debug, Clone)]
pub struct Interceptor {
    table: String,
    filter: Filter,
}

impl Default for Interceptor {
    fn default() -> Self {
        Self::new(TABLE)
    }
}

impl Interceptor {
    /// The nftables table `name` (in the `ip` family).
    pub fn new(name: &str) -> Self {
        Self {
            table: name.to_owned(),
            filter: Filter::Nftables,
        }
    }

    /// The iptables chain `name` in the `nat` table.
    pub fn iptables(name: &str) -> Self {
        Self {
            table: name.to_owned(),
            filter: Filter::Iptables,
        }
    }

    /// nftables when the node has `nft`, else iptables (the table named `nft_table`, or the
    /// chain [`CHAIN`]).
    pub async fn detect(nft_table: &str) -> Self {
        let has_nft = cmd::run(&["nft", "--version"], None)
            .await
            .is_ok_and(|r| r.ok);
        if has_nft {
            Self::new(nft_table)
        } else {
            tracing::info!("edgemesh: no nft on this node; intercepting with iptables");
            Self::iptables(CHAIN)
        }
    }

    /// The nft script that makes the table hold exactly `redirects` (IPv4 ones; the table is
    /// `ip`).
    pub fn script(&self, redirects: &[Redirect]) -> String {
        let t = &self.table;
        let mut s = String::new();
        // `add` then `delete` empties an existing table and is harmless for a missing one.
        let _ = writeln!(s, "add table ip {t}\ndelete table ip {t}\ntable ip {t} {{");
        s.push_str("  map services {\n");
        s.push_str("    type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service\n");
        let elements: Vec<String> = redirects
            .iter()
            .filter_map(|r| match (r.cluster_ip, r.to.ip()) {
                (IpAddr::V4(from), IpAddr::V4(to)) => Some(format!(
                    "{from} . {} . {} : {to} . {}",
                    proto(r.protocol),
                    r.port,
                    r.to.port()
                )),
                _ => None,
            })
            .collect();
        if !elements.is_empty() {
            let _ = writeln!(s, "    elements = {{ {} }}", elements.join(", "));
        }
        s.push_str("  }\n");
        for (chain, hook) in [("prerouting", "prerouting"), ("output", "output")] {
            let _ = writeln!(
                s,
                "  chain {chain} {{\n    type nat hook {hook} priority -105; policy accept;\n    \
                 meta l4proto {{ tcp, udp }} dnat ip to ip daddr . meta l4proto . th dport map @services\n  }}"
            );
        }
        s.push_str("}\n");
        s
    }

    /// Makes the table (or chain) hold exactly `redirects`, in one transaction.
    pub async fn apply(&self, redirects: &[Redirect]) -> Result<(), MeshError> {
        match self.filter {
            Filter::Nftables => nft(&self.script(redirects)).await,
            Filter::Iptables => iptables::apply(&self.table, redirects).await,
        }
    }

    /// Removes the table (or the chain and its jumps), and with it every redirect; a missing
    /// one is not an error.
    pub async fn remove(&self) -> Result<(), MeshError> {
        let t = &self.table;
        match self.filter {
            Filter::Nftables => nft(&format!("add table ip {t}\ndelete table ip {t}\n")).await,
            Filter::Iptables => iptables::remove(t).await,
        }
    }
}

pub(crate) fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
        Protocol::Tcp => "tcp",
    }
}

/// Runs `nft -f -` with `script` on its standard input.
async fn nft(script: &str) -> Result<(), MeshError> {
    cmd::must(&["nft", "-f", "-"], Some(script)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_maps_each_cluster_port_to_its_listener() {
        let r = Redirect {
            cluster_ip: [10, 96, 0, 20].into(),
            port: 8080,
            protocol: Protocol::Tcp,
            to: ([169, 254, 96, 16], 40001).into(),
        };
        let s = Interceptor::default().script(&[r]);
        assert!(
            s.contains("10.96.0.20 . tcp . 8080 : 169.254.96.16 . 40001"),
            "{s}"
        );
        assert!(s.contains("type nat hook output priority -105"), "{s}");
        let empty = Interceptor::default().script(&[]);
        assert!(!empty.contains("elements"), "{empty}");
    }
}
