//! The iptables manager of upstream's cloudstream, for a real cluster: on each host of a
//! kube-apiserver, the nat chain `TUNNEL-PORT` (jumped to from `OUTPUT` and `PREROUTING`)
//! holds one rule per cloudcore replica, `-p tcp --dport <its kubelet port> -j DNAT --to
//! <its IP>:<streamPort>`, so that the API server's calls to a node's "kubelet" land on the
//! stream server of the cloudcore that node's tunnel is connected to. The record comes from
//! the ConfigMap `kubeedge/tunnelport` ([`negotiate_tunnel_port`](super::negotiate_tunnel_port)).

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{TunnelPortRecord, TUNNEL_PORT_ANNOTATION};

/// The chain holding the DNAT rules.
pub const CHAIN: &str = "TUNNEL-PORT";
const COMMENT: &str = "kubeedge tunnel port";

/// Why the rules could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IptablesError {
    /// The command could not run or failed.
    #[error("{command}: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its error output.
        message: String,
    },
}

/// How to run iptables: the program and leading arguments (`["iptables"]`, or
/// `["ip", "netns", "exec", "<ns>", "iptables"]`).
#[derive(Debug, Clone)]
pub struct Iptables {
    command: Vec<String>,
}

impl Default for Iptables {
    fn default() -> Self {
        Self {
            command: vec!["iptables".into()],
        }
    }
}

impl Iptables {
    /// iptables run as `command` (program first).
    pub fn with_command(command: Vec<String>) -> Self {
        Self { command }
    }

    async fn run(&self, args: &[&str]) -> Result<String, IptablesError> {
        let mut cmd = tokio::process::Command::new(&self.command[0]);
        cmd.args(&self.command[1..]).args(["-w", "5"]).args(args);
        let line = format!("{} {}", self.command.join(" "), args.join(" "));
        let out = cmd.output().await.map_err(|e| IptablesError::Command {
            command: line.clone(),
            message: e.to_string(),
        })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(IptablesError::Command {
                command: line,
                message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    /// Make the nat table hold exactly the DNAT rules of `record` for `stream_port` in
    /// [`CHAIN`], with the jumps to it; rules of replicas no longer recorded are removed.
    pub async fn reconcile(
        &self,
        record: &TunnelPortRecord,
        stream_port: u16,
    ) -> Result<(), IptablesError> {
        if self.run(&["-t", "nat", "-S", CHAIN]).await.is_err() {
            self.run(&["-t", "nat", "-N", CHAIN]).await?;
        }
        for from in ["OUTPUT", "PREROUTING"] {
            let jump = ["-m", "comment", "--comment", COMMENT, "-j", CHAIN];
            let mut check = vec!["-t", "nat", "-C", from];
            check.extend(jump);
            if self.run(&check).await.is_err() {
                let mut add = vec!["-t", "nat", "-A", from];
                add.extend(jump);
                self.run(&add).await?;
            }
        }
        let want: BTreeSet<Vec<String>> = desired(record, stream_port).into_iter().collect();
        let listed = self.run(&["-t", "nat", "-S", CHAIN]).await?;
        let have: BTreeSet<Vec<String>> = listed
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("-A {CHAIN} ")))
            .map(canonical)
            .collect();
        for rule in have.difference(&want) {
            let mut args = vec!["-t", "nat", "-D", CHAIN];
            args.extend(rule.iter().map(String::as_str));
            self.run(&args).await?;
        }
        for rule in want.difference(&have) {
            let mut args = vec!["-t", "nat", "-A", CHAIN];
            args.extend(rule.iter().map(String::as_str));
            self.run(&args).await?;
        }
        Ok(())
    }
}

/// The DNAT rules for `record`, in the form `iptables -S` prints them back.
pub fn desired(record: &TunnelPortRecord, stream_port: u16) -> Vec<Vec<String>> {
    record
        .ip_tunnel_port
        .iter()
        .map(|(ip, port)| {
            canonical(&format!(
                "-p tcp -m tcp --dport {port} -j DNAT --to-destination {ip}:{stream_port}"
            ))
        })
        .collect()
}

fn canonical(rule: &str) -> Vec<String> {
    rule.split_whitespace().map(str::to_owned).collect()
}

/// Keep the rules in step with the ConfigMap `kubeedge/tunnelport` until `cancel`, checking
/// every `every` (upstream's iptables-manager, run on the API server's hosts).
pub async fn run_manager(
    client: kube::Client,
    iptables: Iptables,
    stream_port: u16,
    every: Duration,
    cancel: CancellationToken,
) {
    let cms: kube::Api<ConfigMap> = kube::Api::namespaced(client, "kubeedge");
    let mut last: Option<TunnelPortRecord> = None;
    loop {
        match cms.get_opt("tunnelport").await {
            Ok(cm) => {
                let record: TunnelPortRecord = cm
                    .and_then(|c| c.metadata.annotations)
                    .and_then(|a| a.get(TUNNEL_PORT_ANNOTATION).cloned())
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or_default();
                match iptables.reconcile(&record, stream_port).await {
                    Ok(()) if last.as_ref() != Some(&record) => {
                        info!(
                            replicas = record.ip_tunnel_port.len(),
                            "tunnel port rules in place"
                        );
                        last = Some(record);
                    }
                    Ok(()) => {}
                    Err(e) => warn!(error = %e, "cannot write the tunnel port rules"),
                }
            }
            Err(e) => warn!(error = %e, "cannot read kubeedge/tunnelport"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
