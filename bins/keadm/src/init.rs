//! `keadm init`: prepare and start the cloud side.
//!
//! - Without `--kube-config`: cloudcore runs on this host with its embedded control plane (a
//!   Kubernetes API on SQLite plus the controllers), started in the background or as a systemd
//!   unit; keadm waits until it serves and says where the admin kubeconfig is.
//! - With `--kube-config`: the CRDs, namespace, RBAC, configuration and a cloudcore Deployment
//!   are applied to that cluster (server-side apply, so running it twice is harmless), or only
//!   printed with `--dry-run`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_yaml::Value;

use crate::paths::Paths;
use crate::process;
use crate::yaml::set;

/// The flags of `keadm init`.
#[derive(clap::Args, Debug)]
pub(crate) struct InitArgs {
    /// The address(es) edge nodes reach cloudcore on (comma-separated); the first is used in
    /// the server certificate and join instructions.
    #[arg(long = "advertise-address", value_delimiter = ',')]
    advertise_address: Vec<String>,
    /// Use this cluster instead of the embedded control plane.
    #[arg(long = "kube-config")]
    kube_config: Option<PathBuf>,
    /// Print what would be applied to the cluster and change nothing.
    #[arg(long = "dry-run")]
    dry_run: bool,
    /// The cloudcore image version for the Deployment on a cluster.
    #[arg(long = "kubeedge-version")]
    kubeedge_version: Option<String>,
    /// How long to wait for the embedded cloudcore to serve.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Where the embedded Kubernetes API listens (HTTPS).
    #[arg(long = "apiserver-listen", default_value = "0.0.0.0:6443")]
    apiserver_listen: String,
    /// Keep the embedded API's objects in this etcd v3 cluster (comma-separated client URLs)
    /// instead of SQLite on this host.
    #[arg(long = "etcd-servers", value_delimiter = ',')]
    etcd_servers: Vec<String>,
    /// TLS to etcd: the CA of its members' certificates, and the client certificate and key
    /// (kube-apiserver's `--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`).
    #[arg(long = "etcd-cafile")]
    etcd_cafile: Option<PathBuf>,
    /// TLS to etcd: the client certificate.
    #[arg(long = "etcd-certfile")]
    etcd_certfile: Option<PathBuf>,
    /// TLS to etcd: the client certificate's key.
    #[arg(long = "etcd-keyfile")]
    etcd_keyfile: Option<PathBuf>,
    /// Set cloudcore.yaml keys: `--set modules.cloudHub.websocket.port=10000,modules.dynamicController.enable=true`.
    #[arg(long = "set", value_delimiter = ',')]
    set: Vec<String>,
}

/// Where the embedded control plane's admin kubeconfig is written.
pub(crate) fn admin_kubeconfig(paths: &Paths) -> PathBuf {
    paths.etc().join("admin.kubeconfig")
}

/// cloudcore.yaml: cloudcore's own defaults with this host's settings.
fn cloudcore_config(paths: &Paths, cloudcore: &Path, args: &InitArgs) -> Result<String> {
    let out = std::process::Command::new(cloudcore)
        .arg("--defaultconfig")
        .output()
        .with_context(|| format!("run {} --defaultconfig", cloudcore.display()))?;
    if !out.status.success() {
        bail!("{} --defaultconfig failed", cloudcore.display());
    }
    let mut cfg: Value =
        serde_yaml::from_slice(&out.stdout).context("cloudcore's default config")?;
    let s = |v: String| Value::String(v);
    let etc = paths.etc();
    let addrs = args.advertise_address.iter().cloned().map(s).collect();
    set(
        &mut cfg,
        &["modules", "cloudHub", "advertiseAddress"],
        Value::Sequence(addrs),
    );
    for (key, file) in [
        ("tlsCAFile", "ca/rootCA.crt"),
        ("tlsCAKeyFile", "ca/rootCA.key"),
        // Not upstream's certs/server.*: an edge node joined on the same host writes its own
        // certificate there, and cloudcore must not take it for its server certificate.
        ("tlsCertFile", "certs/cloudcore.crt"),
        ("tlsPrivateKeyFile", "certs/cloudcore.key"),
    ] {
        set(
            &mut cfg,
            &["modules", "cloudHub", key],
            s(etc.join(file).display().to_string()),
        );
    }
    let kc = args
        .kube_config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    set(&mut cfg, &["kubeAPIConfig", "kubeConfig"], s(kc));
    // keadm join turns on the edge's MetaServer; its list/watch and writes go through the
    // dynamic controller.
    set(
        &mut cfg,
        &["modules", "dynamicController", "enable"],
        Value::Bool(true),
    );
    // CloudStream's tunnel, which the embedded API server's pods/log goes through (upstream's
    // Helm chart turns it on too).
    set(
        &mut cfg,
        &["modules", "cloudStream", "enable"],
        Value::Bool(true),
    );
    crate::yaml::apply_sets(&mut cfg, &args.set)?;
    serde_yaml::to_string(&cfg).context("encode cloudcore.yaml")
}

/// Run `keadm init`.
pub(crate) async fn run(paths: &Paths, args: &InitArgs) -> Result<()> {
    if args.advertise_address.is_empty() {
        bail!("--advertise-address is required: the address edge nodes use to reach cloudcore");
    }
    for a in &args.advertise_address {
        if a.parse::<std::net::IpAddr>().is_err() {
            bail!("--advertise-address {a:?} is not an IP address");
        }
    }
    if args.kube_config.is_some() && !args.etcd_servers.is_empty() {
        bail!("--etcd-servers is for the embedded control plane; a cluster given with --kube-config keeps its own state");
    }
    match &args.kube_config {
        Some(kc) => init_cluster(args, kc).await,
        None => init_embedded(paths, args).await,
    }
}

async fn init_embedded(paths: &Paths, args: &InitArgs) -> Result<()> {
    const TOTAL: usize = 3;
    let config = paths.config("cloudcore");
    let kubeconfig = admin_kubeconfig(paths);
    println!("[1/{TOTAL}] Check KubeEdge cloudcore process status");
    if process::is_running(paths, "cloudcore") {
        println!("cloudcore is already running on this host; nothing to do");
        println!("admin kubeconfig: {}", kubeconfig.display());
        return Ok(());
    }
    let cloudcore = process::find_binary("cloudcore")?;
    println!("[2/{TOTAL}] Generate {}", config.display());
    if config.exists() {
        println!("{} exists: keeping it", config.display());
    } else {
        let yaml = cloudcore_config(paths, &cloudcore, args)?;
        process::write_file(&config, &yaml)?;
    }
    println!("[3/{TOTAL}] Start cloudcore with its embedded control plane");
    let mut extra = vec![
        "--data-dir".to_owned(),
        paths.var_lib().join("cloudcore").display().to_string(),
        "--kubeconfig-out".to_owned(),
        kubeconfig.display().to_string(),
        "--apiserver-listen".to_owned(),
        args.apiserver_listen.clone(),
    ];
    if !args.etcd_servers.is_empty() {
        extra.push(format!("--etcd-servers={}", args.etcd_servers.join(",")));
    }
    for (flag, file) in [
        ("--etcd-cafile", &args.etcd_cafile),
        ("--etcd-certfile", &args.etcd_certfile),
        ("--etcd-keyfile", &args.etcd_keyfile),
    ] {
        if let Some(f) = file {
            // cloudcore may run from another directory: absolute paths.
            let f = std::path::absolute(f).unwrap_or_else(|_| f.clone());
            extra.push(format!("{flag}={}", f.display()));
        }
    }
    let how = process::start(paths, "cloudcore", &cloudcore, &config, &extra)?;
    println!("cloudcore started as {how}");
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let token = loop {
        if kubeconfig.exists() {
            if let Ok(c) = crate::gettoken::client(&kubeconfig).await {
                if let Ok(t) = crate::gettoken::token(c).await {
                    break t;
                }
            }
        }
        if !process::is_running(paths, "cloudcore") {
            bail!(
                "cloudcore exited; see {}",
                paths.log_file("cloudcore").display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "cloudcore did not serve within {} s; see {}",
                args.timeout,
                paths.log_file("cloudcore").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let addr = &args.advertise_address[0];
    let port = std::fs::read_to_string(&config)
        .ok()
        .and_then(|t| serde_yaml::from_str::<Value>(&t).ok())
        .and_then(|v| v["modules"]["cloudHub"]["websocket"]["port"].as_u64())
        .unwrap_or(10000);
    println!("\nKubeEdge cloudcore is running.");
    println!("  admin kubeconfig: {}", kubeconfig.display());
    println!("  kubectl --kubeconfig {} get nodes", kubeconfig.display());
    println!("Join an edge node with:");
    println!("  keadm join --cloudcore-ipport={addr}:{port} --token={token}");
    if !args.etcd_servers.is_empty() {
        let yaml = std::fs::read_to_string(&config)
            .ok()
            .and_then(|t| serde_yaml::from_str::<Value>(&t).ok())
            .unwrap_or(Value::Null);
        print!("{}", ha_instructions(&yaml, args));
    }
    Ok(())
}

/// What an operator puts in front of replicas on one etcd: the ports, the certificate names,
/// and an HAProxy example.
fn ha_instructions(yaml: &Value, args: &InitArgs) -> String {
    let hub = &yaml["modules"]["cloudHub"];
    let port = |v: &Value, default: u64| v.as_u64().unwrap_or(default);
    let api_port = args
        .apiserver_listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(6443);
    let ports = [
        (
            "cloudhub-websocket",
            port(&hub["websocket"]["port"], 10000),
            "keadm join --cloudcore-ipport=<VIP>:PORT",
        ),
        (
            "cloudhub-https",
            port(&hub["https"]["port"], 10002),
            "keadm join --certport=PORT",
        ),
        (
            "cloudstream-tunnel",
            port(&yaml["modules"]["cloudStream"]["tunnelPort"], 10004),
            "edgecore.yaml modules.edgeStream.server=<VIP>:PORT",
        ),
        ("kube-apiserver", api_port, "the server of the kubeconfigs"),
    ];
    let me = args
        .advertise_address
        .first()
        .map_or("<this host>", String::as_str);
    let mut out = format!(
        "\nThis cloudcore is one replica of a control plane on etcd ({}).\n\
         Start the others with the same command on their hosts: one leads the singleton duties\n\
         (Lease kubeedge/cloudcore), each records the edges it holds (Leases kubeedge/node-*),\n\
         and all share the CAs. Give every replica --advertise-address=<VIP>,<its own address>\n\
         (the first replica's certificates are the ones shared, so its list must name the VIP).\n\
         Put these TCP ports of every replica behind one VIP or load balancer:\n",
        args.etcd_servers.join(",")
    );
    for (name, p, how) in &ports {
        out += &format!(
            "  {p:>5}/tcp  {name:<19} {}\n",
            how.replace("PORT", &p.to_string())
        );
    }
    out += "For example, in haproxy.cfg (one server line per replica):\n";
    for (name, p, _) in &ports {
        out += &format!(
            "  frontend {name}\n    bind <VIP>:{p}\n    mode tcp\n    default_backend {name}\n  backend {name}\n    mode tcp\n    option redispatch\n    server replica-1 {me}:{p} check\n"
        );
    }
    out += "A replica that cannot renew its heartbeat (Lease kubeedge/replica-*; it lost etcd)\n\
            ends its edges' sessions, admits none, and answers 503 on /readyz. Bind\n\
            commonConfig.monitorServer.bindAddress where the load balancer reaches it and check\n\
            it there (haproxy: option httpchk GET /readyz, and check port <monitor port>), so that\n\
            the edges go to the other replicas.\n";
    out
}

/// The objects `keadm init --kube-config` applies, in order.
fn cluster_manifests(args: &InitArgs, cloudcore_yaml: &str) -> Result<Vec<serde_json::Value>> {
    use serde::Deserialize as _;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(kubeedge_proto::api::CRDS) {
        let v = serde_json::Value::deserialize(doc).context("CRD manifest")?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    let version = args
        .kubeedge_version
        .clone()
        .unwrap_or_else(|| format!("v{}", env!("CARGO_PKG_VERSION")));
    docs.extend([
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubeedge"}}),
        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "cloudcore", "namespace": "kubeedge"}}),
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "cloudcore"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "cloudcore"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cloudcore"},
            "subjects": [{"kind": "ServiceAccount", "name": "cloudcore", "namespace": "kubeedge"}]}),
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cloudcore", "namespace": "kubeedge"},
            "data": {"cloudcore.yaml": cloudcore_yaml}}),
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "cloudcore", "namespace": "kubeedge", "labels": {"k8s-app": "kubeedge", "kubeedge": "cloudcore"}},
            "spec": {"replicas": 1,
                "selector": {"matchLabels": {"k8s-app": "kubeedge", "kubeedge": "cloudcore"}},
                "template": {"metadata": {"labels": {"k8s-app": "kubeedge", "kubeedge": "cloudcore"}},
                    "spec": {"serviceAccountName": "cloudcore", "hostNetwork": true,
                        "containers": [{"name": "cloudcore", "image": format!("kubeedge-rs/cloudcore:{version}"),
                            "args": ["--config", "/etc/kubeedge/config/cloudcore.yaml"],
                            "ports": [{"containerPort": 10000, "name": "cloudhub"}, {"containerPort": 10002, "name": "https"}],
                            "volumeMounts": [{"name": "conf", "mountPath": "/etc/kubeedge/config"}]}],
                        "volumes": [{"name": "conf", "configMap": {"name": "cloudcore"}}]}}}}),
    ]);
    Ok(docs)
}

async fn init_cluster(args: &InitArgs, kubeconfig: &Path) -> Result<()> {
    let cloudcore = process::find_binary("cloudcore")?;
    // In the Deployment, cloudcore runs in-cluster: no kubeconfig file, upstream's paths.
    let in_cluster = InitArgs {
        advertise_address: args.advertise_address.clone(),
        kube_config: None,
        dry_run: args.dry_run,
        kubeedge_version: args.kubeedge_version.clone(),
        timeout: args.timeout,
        apiserver_listen: args.apiserver_listen.clone(),
        set: args.set.clone(),
        etcd_servers: Vec::new(),
        etcd_cafile: None,
        etcd_certfile: None,
        etcd_keyfile: None,
    };
    let yaml = cloudcore_config(&Paths::for_image(), &cloudcore, &in_cluster)?;
    let docs = cluster_manifests(args, &yaml)?;
    if args.dry_run {
        for d in &docs {
            println!("---\n{}", serde_yaml::to_string(d)?.trim_end());
        }
        return Ok(());
    }
    let client = crate::gettoken::client(&kubeconfig.to_path_buf()).await?;
    let pp = PatchParams::apply("keadm").force();
    for (i, d) in docs.iter().enumerate() {
        let api_version = d["apiVersion"].as_str().unwrap_or_default();
        let kind = d["kind"].as_str().unwrap_or_default();
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let plural = match kind {
            "CustomResourceDefinition" => "customresourcedefinitions".to_owned(),
            "ClusterRoleBinding" => "clusterrolebindings".to_owned(),
            k => format!("{}s", k.to_lowercase()),
        };
        let ar = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: api_version.into(),
            kind: kind.into(),
            plural,
        };
        let api: Api<DynamicObject> = match d["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        api.patch(name, &pp, &Patch::Apply(d))
            .await
            .with_context(|| format!("apply {kind}/{name}"))?;
        println!("[{}/{}] applied {kind} {name}", i + 1, docs.len());
    }
    println!("\nKubeEdge cloudcore is deployed to the cluster (namespace kubeedge).");
    println!(
        "Get a join token with: keadm gettoken --kube-config={}",
        kubeconfig.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha_instructions_name_the_configured_ports() {
        let args = InitArgs {
            advertise_address: vec!["10.0.0.5".into()],
            kube_config: None,
            dry_run: false,
            kubeedge_version: None,
            timeout: 60,
            apiserver_listen: "0.0.0.0:7443".into(),
            set: Vec::new(),
            etcd_servers: vec!["http://10.0.0.9:2379".into()],
            etcd_cafile: None,
            etcd_certfile: None,
            etcd_keyfile: None,
        };
        let yaml: Value = serde_yaml::from_str(
            "modules: {cloudHub: {websocket: {port: 11000}, https: {port: 11002}}, cloudStream: {tunnelPort: 11004}}",
        )
        .expect("yaml");
        let text = ha_instructions(&yaml, &args);
        for want in [
            "control plane on etcd (http://10.0.0.9:2379)",
            "11000/tcp  cloudhub-websocket  keadm join --cloudcore-ipport=<VIP>:11000",
            "11002/tcp  cloudhub-https      keadm join --certport=11002",
            "11004/tcp  cloudstream-tunnel",
            " 7443/tcp  kube-apiserver",
            "server replica-1 10.0.0.5:11000 check",
            "--advertise-address=<VIP>,<its own address>",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
    }
}
