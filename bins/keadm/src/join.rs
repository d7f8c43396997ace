//! `keadm join`: make this host an edge node of a cloudcore, in numbered steps like upstream.
//! Nothing is downloaded (air-gapped sites work): the edgecore binary beside keadm is used.

use std::path::Path;

use anyhow::{bail, Context, Result};
use kubeedge_edge::edged::CgroupDriver;
use kubeedge_proto::JoinToken;
use serde_yaml::Value;

use crate::paths::Paths;
use crate::process;
use crate::runtime::{self, Runtime};
use crate::yaml::{get, get_str, set};

/// The flags of `keadm join`.
#[derive(clap::Args, Debug)]
pub(crate) struct JoinArgs {
    /// The cloudcore websocket address, `IP:PORT` (usually port 10000).
    #[arg(long = "cloudcore-ipport", alias = "cloudcore-ip-port", short = 'e')]
    cloudcore_ipport: String,
    /// The node name (default: this host's name).
    #[arg(long = "edgenode-name", short = 'i')]
    edgenode_name: Option<String>,
    /// The join token from `keadm gettoken`.
    #[arg(long, short = 't')]
    token: String,
    /// The port of cloudcore's certificate server.
    #[arg(long = "certport", short = 's', default_value_t = 10002)]
    certport: u16,
    /// The container runtime, v1.12's spelling: `docker`, or `remote` for a CRI runtime at
    /// `--remote-runtime-endpoint` (current upstream has no such flag: the endpoint alone).
    #[arg(long = "runtimetype", short = 'r')]
    runtimetype: Option<String>,
    /// The CRI runtime's endpoint (default: containerd's
    /// `unix:///run/containerd/containerd.sock`, or Docker when only Docker answers).
    #[arg(long = "remote-runtime-endpoint", short = 'p')]
    remote_runtime_endpoint: Option<String>,
    /// The cgroup driver (cgroupfs or systemd; default cgroupfs). The runtime's own driver
    /// wins when it says which it uses; a flag that disagrees gets a warning.
    #[arg(long = "cgroupdriver")]
    cgroupdriver: Option<String>,
    /// The KubeEdge version to present as; binaries are never downloaded.
    #[arg(long = "kubeedge-version")]
    kubeedge_version: Option<String>,
    /// Set edgecore.yaml keys: `--set modules.edgeStream.enable=true,modules.eventBus.enable=false`.
    #[arg(long = "set", value_delimiter = ',')]
    pub(crate) set: Vec<String>,
    /// Labels for the node, `key=value`, repeatable or comma-separated.
    #[arg(long = "labels", short = 'l', value_delimiter = ',')]
    labels: Vec<String>,
    /// Upstream's cloudcore transport: `websocket` (the default; `quic` is not implemented).
    #[arg(long = "hub-protocol", default_value = "websocket")]
    hub_protocol: String,
    /// Accepted for upstream compatibility (upstream ignores it too); certificates go to
    /// `/etc/kubeedge/certs`.
    #[arg(long = "certpath")]
    certpath: Option<String>,
    /// Accepted for upstream compatibility; nothing is downloaded or pulled.
    #[arg(long = "tarballpath")]
    tarballpath: Option<String>,
    /// Accepted for upstream compatibility; nothing is downloaded or pulled.
    #[arg(long = "image-repository")]
    image_repository: Option<String>,
    /// v1.12's switch for an external MQTT broker; edgecore's embedded broker is used.
    #[arg(long = "with-mqtt", num_args = 0..=1, default_missing_value = "true")]
    with_mqtt: Option<bool>,
}

fn step(n: usize, total: usize, what: &str) {
    println!("[{n}/{total}] {what}");
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .unwrap_or_else(|_| "edge-node".into())
}

/// A DNS-1123 subdomain, as Kubernetes requires of node names.
fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The edgecore.yaml for this join: edgecore's own defaults with the join's settings.
fn edgecore_config(
    paths: &Paths,
    edgecore: &Path,
    args: &JoinArgs,
    node: &str,
    cloud_ip: &str,
    runtime: &Runtime,
    driver: CgroupDriver,
) -> Result<String> {
    let out = std::process::Command::new(edgecore)
        .arg("--defaultconfig")
        .output()
        .with_context(|| format!("run {} --defaultconfig", edgecore.display()))?;
    if !out.status.success() {
        bail!("{} --defaultconfig failed", edgecore.display());
    }
    let mut cfg: Value =
        serde_yaml::from_slice(&out.stdout).context("edgecore's default config")?;
    let s = |v: String| Value::String(v);
    let etc = paths.etc();
    set(
        &mut cfg,
        &["database", "dataSource"],
        s(paths.var_lib().join("edgecore.db").display().to_string()),
    );
    fn at(k: &str) -> [&str; 3] {
        ["modules", "edgeHub", k]
    }
    set(&mut cfg, &at("token"), s(args.token.clone()));
    set(
        &mut cfg,
        &at("httpServer"),
        s(format!("https://{cloud_ip}:{}", args.certport)),
    );
    set(
        &mut cfg,
        &at("tlsCaFile"),
        s(etc.join("ca/rootCA.crt").display().to_string()),
    );
    set(
        &mut cfg,
        &at("tlsCertFile"),
        s(etc.join("certs/server.crt").display().to_string()),
    );
    set(
        &mut cfg,
        &at("tlsPrivateKeyFile"),
        s(etc.join("certs/server.key").display().to_string()),
    );
    set(
        &mut cfg,
        &["modules", "edgeHub", "websocket", "server"],
        s(args.cloudcore_ipport.clone()),
    );
    set(
        &mut cfg,
        &["modules", "edged", "hostnameOverride"],
        s(node.to_owned()),
    );
    set(
        &mut cfg,
        &["modules", "edged", "rootDirectory"],
        s(paths.edged_root().display().to_string()),
    );
    runtime.write(&mut cfg, driver);
    if !args.labels.is_empty() {
        let mut m = serde_yaml::Mapping::new();
        for l in &args.labels {
            let Some((k, v)) = l.split_once('=') else {
                bail!("label {l:?} is not key=value");
            };
            m.insert(s(k.to_owned()), s(v.to_owned()));
        }
        set(
            &mut cfg,
            &["modules", "edged", "nodeLabels"],
            Value::Mapping(m),
        );
    }
    // MetaServer on loopback, as current upstream joins set it up.
    set(
        &mut cfg,
        &["modules", "metaManager", "metaServer", "enable"],
        Value::Bool(true),
    );
    // EdgeStream to cloudcore's tunnel port (upstream's default 10004), with the node
    // certificate: `kubectl logs` works with no further step.
    set(
        &mut cfg,
        &["modules", "edgeStream", "enable"],
        Value::Bool(true),
    );
    set(
        &mut cfg,
        &["modules", "edgeStream", "server"],
        s(format!("{cloud_ip}:10004")),
    );
    crate::yaml::apply_sets(&mut cfg, &args.set)?;
    mesh_default(&mut cfg, &args.set, mesh_can_intercept());
    mesh_dns(&mut cfg);
    serde_yaml::to_string(&cfg).context("encode edgecore.yaml")
}

/// EdgeMesh runs where MetaServer does (it reads the node's Services there), as the seed's
/// `modules.edgeMesh.enable: true`: Services answer on a joined node with no further step. Not
/// when `--set` says otherwise, and not on a node with neither `nft` nor `iptables` (nothing
/// could send cluster IPs to the mesh, and pods' DNS would point at a mesh that cannot start).
fn mesh_default(cfg: &mut Value, sets: &[String], can_intercept: bool) {
    if sets
        .iter()
        .any(|s| s.starts_with("modules.edgeMesh.enable="))
    {
        return;
    }
    let meta =
        get(cfg, &["modules", "metaManager", "metaServer", "enable"]) == Some(&Value::Bool(true));
    set(
        cfg,
        &["modules", "edgeMesh", "enable"],
        Value::Bool(meta && can_intercept),
    );
}

/// Whether `nft` or `iptables` is on the `PATH`.
fn mesh_can_intercept() -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|d| d.join("nft").is_file() || d.join("iptables").is_file())
}

/// With `modules.edgeMesh.enable`, pods resolve through the mesh: `clusterDNS` and
/// `clusterDomain` of `tailoredKubeletConfig` are set where `--set` left them out (upstream's
/// EdgeMesh guide has them set by hand).
fn mesh_dns(cfg: &mut Value) {
    if get(cfg, &["modules", "edgeMesh", "enable"]) != Some(&Value::Bool(true)) {
        return;
    }
    let at = |k: &'static str| ["modules", "edged", "tailoredKubeletConfig", k];
    if get(cfg, &at("clusterDNS")).is_none() {
        let dns = Value::Sequence(vec![Value::String(MESH_DNS.to_owned())]);
        set(cfg, &at("clusterDNS"), dns);
    }
    if get(cfg, &at("clusterDomain")).is_none() {
        set(
            cfg,
            &at("clusterDomain"),
            Value::String("cluster.local".into()),
        );
    }
}

/// EdgeMesh's DNS address (upstream edgemesh's `bridgeDeviceIP`), pods' `clusterDNS` when the
/// mesh is on.
const MESH_DNS: &str = "169.254.96.16";

/// Run `keadm join`.
pub(crate) async fn run(paths: &Paths, args: &JoinArgs) -> Result<()> {
    const TOTAL: usize = 5;
    let node = args.edgenode_name.clone().unwrap_or_else(hostname);
    let config_path = paths.config("edgecore");

    step(1, TOTAL, "Check KubeEdge edgecore process status");
    if config_path.exists() {
        let text = std::fs::read_to_string(&config_path).unwrap_or_default();
        let existing: Value = serde_yaml::from_str(&text).unwrap_or(Value::Null);
        let joined_as = get_str(&existing, &["modules", "edged", "hostnameOverride"])
            .unwrap_or("?")
            .to_owned();
        let server = get_str(&existing, &["modules", "edgeHub", "websocket", "server"])
            .unwrap_or("?")
            .to_owned();
        if joined_as != node || server != args.cloudcore_ipport {
            bail!(
                "this host is already joined as {joined_as:?} to {server}; run `keadm reset` before joining as {node:?} to {}",
                args.cloudcore_ipport
            );
        }
        if process::is_running(paths, "edgecore") {
            println!("edgecore is already running: this node is joined as {node:?} to {server}; nothing to do");
            return Ok(());
        }
        println!(
            "{} exists but edgecore is not running: starting it again",
            config_path.display()
        );
        let bin = process::find_binary("edgecore")?;
        let how = process::start(paths, "edgecore", &bin, &config_path, &[])?;
        println!("edgecore started as {how}");
        return Ok(());
    }

    step(2, TOTAL, "Check the join parameters");
    if !valid_node_name(&node) {
        bail!("invalid node name {node:?}: use lower-case letters, digits, '-' and '.' (a DNS-1123 subdomain)");
    }
    let (cloud_ip, port) = args.cloudcore_ipport.rsplit_once(':').with_context(|| {
        format!(
            "--cloudcore-ipport {:?} is not IP:PORT",
            args.cloudcore_ipport
        )
    })?;
    if cloud_ip.is_empty() || port.parse::<u16>().is_err() {
        bail!(
            "--cloudcore-ipport {:?} is not IP:PORT",
            args.cloudcore_ipport
        );
    }
    let token: JoinToken = args.token.parse().map_err(|e| {
        anyhow::anyhow!("invalid --token (expected `keadm gettoken`'s output): {e}")
    })?;
    let _ = token;
    runtime::cgroup_driver(args.cgroupdriver.as_deref(), None)?;
    let request = runtime::request(
        args.runtimetype.as_deref(),
        args.remote_runtime_endpoint.as_deref(),
    )?;
    if args.hub_protocol != "websocket" {
        bail!(
            "--hub-protocol {:?} is not supported: kubeedge-rs speaks websocket to cloudcore",
            args.hub_protocol
        );
    }
    let ignored = [
        (
            args.certpath.is_some(),
            "--certpath",
            "certificates go to /etc/kubeedge/certs",
        ),
        (
            args.tarballpath.is_some(),
            "--tarballpath",
            "nothing is downloaded",
        ),
        (
            args.image_repository.is_some(),
            "--image-repository",
            "nothing is pulled",
        ),
        (
            args.with_mqtt.is_some(),
            "--with-mqtt",
            "edgecore's embedded MQTT broker serves",
        ),
    ];
    for (_, flag, why) in ignored.iter().filter(|(given, ..)| *given) {
        println!("note: {flag} has no effect: {why}");
    }
    if let Some(v) = &args.kubeedge_version {
        println!("KubeEdge version {v} requested: kubeedge-rs uses its own binaries, nothing is downloaded");
    }

    step(3, TOTAL, "Check the container runtime");
    let (runtime, probe) = runtime::check(&request).await?;
    let (driver, warning) =
        runtime::cgroup_driver(args.cgroupdriver.as_deref(), probe.cgroup_driver)?;
    println!(
        "{} answers: {} {}, cgroup driver {}",
        runtime.describe(),
        probe.version.name,
        probe.version.version,
        driver.as_str()
    );
    if let Some(w) = warning {
        println!("{w}");
    }

    step(4, TOTAL, &format!("Generate {}", config_path.display()));
    let edgecore = process::find_binary("edgecore")?;
    let yaml = edgecore_config(paths, &edgecore, args, &node, cloud_ip, &runtime, driver)?;
    std::fs::create_dir_all(paths.var_lib())
        .with_context(|| format!("create {}", paths.var_lib().display()))?;
    process::write_file(&config_path, &yaml)?;

    step(5, TOTAL, "Start edgecore");
    let how = process::start(paths, "edgecore", &edgecore, &config_path, &[])?;
    println!("edgecore started as {how}");
    println!("\nKubeEdge edgecore is running; node {node:?} joins {} (check with `kubectl get node {node}`)", args.cloudcore_ipport);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Join {
        #[command(flatten)]
        args: JoinArgs,
    }

    fn parse(line: &str) -> JoinArgs {
        use clap::Parser as _;
        let argv = std::iter::once("join").chain(line.split_whitespace());
        Join::try_parse_from(argv).map(|j| j.args).unwrap()
    }

    #[test]
    fn edgemesh_follows_metaserver_unless_set_or_nothing_can_intercept() {
        let meta_on = || -> Value {
            serde_yaml::from_str(
                "modules: {metaManager: {metaServer: {enable: true}}, edgeMesh: {enable: false}}",
            )
            .unwrap()
        };
        let enabled = |cfg: &Value| cfg["modules"]["edgeMesh"]["enable"].clone();
        let mut cfg = meta_on();
        mesh_default(&mut cfg, &[], true);
        assert_eq!(enabled(&cfg), Value::Bool(true));
        let mut cfg = meta_on();
        mesh_default(&mut cfg, &[], false);
        assert_eq!(enabled(&cfg), Value::Bool(false), "no nft, no iptables");
        let mut cfg = meta_on();
        mesh_default(&mut cfg, &["modules.edgeMesh.enable=false".into()], true);
        assert_eq!(enabled(&cfg), Value::Bool(false), "--set wins");
        let mut cfg: Value =
            serde_yaml::from_str("modules: {metaManager: {metaServer: {enable: false}}}").unwrap();
        mesh_default(&mut cfg, &[], true);
        assert_eq!(enabled(&cfg), Value::Bool(false), "no MetaServer, no mesh");
    }

    #[test]
    fn edgemesh_on_points_pods_dns_at_it_unless_set() {
        let mut on: Value = serde_yaml::from_str("modules: {edgeMesh: {enable: true}}").unwrap();
        mesh_dns(&mut on);
        let kubelet = &on["modules"]["edged"]["tailoredKubeletConfig"];
        assert_eq!(kubelet["clusterDNS"][0], Value::String(MESH_DNS.into()));
        assert_eq!(
            kubelet["clusterDomain"],
            Value::String("cluster.local".into())
        );
        let mut own: Value = serde_yaml::from_str(
            "modules: {edgeMesh: {enable: true}, edged: {tailoredKubeletConfig: {clusterDNS: [10.96.0.10]}}}",
        )
        .unwrap();
        mesh_dns(&mut own);
        assert_eq!(
            own["modules"]["edged"]["tailoredKubeletConfig"]["clusterDNS"][0],
            Value::String("10.96.0.10".into())
        );
        let mut off: Value = serde_yaml::from_str("modules: {edgeMesh: {enable: false}}").unwrap();
        mesh_dns(&mut off);
        assert!(off["modules"].get("edged").is_none());
    }

    #[test]
    fn upstream_join_lines_parse() {
        // Current upstream (v1.16+): the endpoint alone, with its short form.
        let a = parse("--cloudcore-ipport=10.0.0.1:10000 --token=t --edgenode-name=n --remote-runtime-endpoint=unix:///run/containerd/containerd.sock --cgroupdriver=systemd --kubeedge-version=v1.22.0 --image-repository=r --hub-protocol=websocket --certpath=/c --tarballpath=/t");
        assert_eq!(
            a.remote_runtime_endpoint.as_deref(),
            Some("unix:///run/containerd/containerd.sock")
        );
        assert_eq!(a.cgroupdriver.as_deref(), Some("systemd"));
        assert_eq!(a.runtimetype, None);
        let a = parse("-e 10.0.0.1:10000 -t t -i n -p unix:///x.sock");
        assert_eq!(a.remote_runtime_endpoint.as_deref(), Some("unix:///x.sock"));
        // v1.12: --runtimetype (-r) with the endpoint, --with-mqtt as a bare switch.
        let a = parse("-e 10.0.0.1:10000 -t t -i n -r remote --remote-runtime-endpoint unix:///x.sock --with-mqtt");
        assert_eq!(a.runtimetype.as_deref(), Some("remote"));
        assert_eq!(a.with_mqtt, Some(true));
        let a = parse("-e 10.0.0.1:10000 -t t --runtimetype=docker --with-mqtt=false");
        assert_eq!(a.runtimetype.as_deref(), Some("docker"));
        assert_eq!(a.with_mqtt, Some(false));
    }

    #[test]
    fn node_names() {
        assert!(valid_node_name("edge-1"));
        assert!(valid_node_name("edge.site-a"));
        assert!(!valid_node_name("Edge"));
        assert!(!valid_node_name("-a"));
        assert!(!valid_node_name(""));
        assert!(!valid_node_name("a/b"));
    }
}
