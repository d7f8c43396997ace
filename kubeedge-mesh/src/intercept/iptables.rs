//! The iptables form of the rules: one chain of the mesh's own in the `nat` table, rewritten
//! whole by `iptables-restore --noflush` (which replaces only the chains it names), and a jump
//! to it at the top of `PREROUTING` and `OUTPUT`.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::cmd::{must, run};
use super::proto;
use crate::error::MeshError;
use crate::proxy::Redirect;

const HOOKS: [&str; 2] = ["PREROUTING", "OUTPUT"];

/// The `iptables-restore` input that makes `chain` hold exactly `redirects` (IPv4 ones).
pub(super) fn restore_input(chain: &str, redirects: &[Redirect]) -> String {
    let mut s = format!("*nat\n:{chain} - [0:0]\n");
    for r in redirects {
        if let (IpAddr::V4(from), IpAddr::V4(to)) = (r.cluster_ip, r.to.ip()) {
            let p = proto(r.protocol);
            let _ = writeln!(
                s,
                "-A {chain} -d {from}/32 -p {p} -m {p} --dport {} -j DNAT --to-destination {to}:{}",
                r.port,
                r.to.port()
            );
        }
    }
    s.push_str("COMMIT\n");
    s
}

/// Makes `chain` hold exactly `redirects` and be jumped to from both hooks.
pub(super) async fn apply(chain: &str, redirects: &[Redirect]) -> Result<(), MeshError> {
    let input = restore_input(chain, redirects);
    must(&["iptables-restore", "--noflush"], Some(&input)).await?;
    for hook in HOOKS {
        if !run(&["iptables", "-t", "nat", "-C", hook, "-j", chain], None)
            .await?
            .ok
        {
            must(
                &["iptables", "-t", "nat", "-I", hook, "1", "-j", chain],
                None,
            )
            .await?;
        }
    }
    Ok(())
}

/// Removes the jumps and the chain; missing ones are not an error.
pub(super) async fn remove(chain: &str) -> Result<(), MeshError> {
    for hook in HOOKS {
        while run(&["iptables", "-t", "nat", "-D", hook, "-j", chain], None)
            .await?
            .ok
        {}
    }
    run(&["iptables", "-t", "nat", "-F", chain], None).await?;
    run(&["iptables", "-t", "nat", "-X", chain], None).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Protocol;

    #[test]
    fn the_chain_maps_each_cluster_port_to_its_listener() {
        let r = Redirect {
            cluster_ip: [10, 96, 0, 20].into(),
            port: 53,
            protocol: Protocol::Udp,
            to: ([169, 254, 96, 16], 40001).into(),
        };
        let s = restore_input("KUBEEDGE-MESH", &[r]);
        assert!(s.starts_with("*nat\n:KUBEEDGE-MESH - [0:0]\n"), "{s}");
        assert!(
            s.contains("-A KUBEEDGE-MESH -d 10.96.0.20/32 -p udp -m udp --dport 53 -j DNAT --to-destination 169.254.96.16:40001"),
            "{s}"
        );
        assert!(s.ends_with("COMMIT\n"));
    }
}
