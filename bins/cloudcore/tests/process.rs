//! The cloudcore binary as a process: `--defaultconfig`/`--minconfig` print configs it reads
//! back; embedded mode starts, writes an admin kubeconfig the stock kubectl uses, keeps the
//! certificates and token in the `kubeedge` secrets, and exits 0 on SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Result};
use kubeedge_bench::wait_until;

/// A cloudcore process, killed when dropped.
struct Cloudcore(Child);

impl Drop for Cloudcore {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cloudcore"))
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()?)
}

#[test]
fn default_and_min_configs_are_upstream_shaped() -> Result<()> {
    for flag in ["--defaultconfig", "--minconfig"] {
        let out = bin().arg(flag).output()?;
        ensure!(out.status.success(), "{flag}: {out:?}");
        let text = String::from_utf8(out.stdout)?;
        ensure!(
            text.contains("apiVersion: cloudcore.config.kubeedge.io/v1alpha1"),
            "{flag}: {text}"
        );
        ensure!(text.contains("kind: CloudCore"), "{flag}");
        for key in [
            "cloudHub:",
            "websocket:",
            "port: 10000",
            "port: 10002",
            "tlsCAFile:",
        ] {
            ensure!(text.contains(key), "{flag}: {key} missing");
        }
        ensure!(
            !text.contains("kubeConfig: /"),
            "{flag}: defaults run the embedded control plane"
        );
    }
    Ok(())
}

#[test]
fn embedded_mode_serves_kubectl_and_stops_on_sigterm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let yaml = format!(
        "apiVersion: cloudcore.config.kubeedge.io/v1alpha1\nkind: CloudCore\nkubeAPIConfig:\n  kubeConfig: \"\"\n  master: \"\"\nmodules:\n  cloudHub:\n    advertiseAddress: [127.0.0.1]\n    tlsCAFile: {d}/ca/rootCA.crt\n    tlsCAKeyFile: {d}/ca/rootCA.key\n    tlsCertFile: {d}/certs/server.crt\n    tlsPrivateKeyFile: {d}/certs/server.key\n    websocket: {{enable: true, address: 127.0.0.1, port: 0}}\n    https: {{enable: true, address: 127.0.0.1, port: 0}}\n  dynamicController: {{enable: true}}\n  someFutureModule: {{enable: false}}\n",
        d = d.display()
    );
    let config = d.join("cloudcore.yaml");
    std::fs::write(&config, yaml)?;
    let kubeconfig = d.join("admin.kubeconfig");
    let mut child = Cloudcore(
        bin()
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(d.join("data"))
            .arg("--apiserver-listen")
            .arg("127.0.0.1:0")
            .arg("--kubeconfig-out")
            .arg(&kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(wait_until(
        "kubeconfig written",
        Duration::from_secs(20),
        || kubeconfig.exists(),
    ))?;
    // kubectl works; the token secret appears once the PKI is ready.
    rt.block_on(wait_until(
        "kubectl get ns",
        Duration::from_secs(20),
        || {
            kubectl(&kubeconfig, &["get", "ns", "-o", "name"])
                .map(|o| {
                    o.status.success()
                        && String::from_utf8_lossy(&o.stdout).contains("namespace/kubeedge")
                })
                .unwrap_or(false)
        },
    ))?;
    rt.block_on(wait_until("token secret", Duration::from_secs(20), || {
        kubectl(
            &kubeconfig,
            &[
                "-n",
                "kubeedge",
                "get",
                "secret",
                "tokensecret",
                "-o",
                "jsonpath={.data.tokendata}",
            ],
        )
        .map(|o| o.status.success() && !o.stdout.is_empty())
        .unwrap_or(false)
    }))?;
    for s in ["casecret", "cloudcoresecret"] {
        let out = kubectl(&kubeconfig, &["-n", "kubeedge", "get", "secret", s])?;
        ensure!(out.status.success(), "{s}: {out:?}");
    }
    let crds = kubectl(&kubeconfig, &["get", "crd", "-o", "name"])?;
    ensure!(
        String::from_utf8_lossy(&crds.stdout).contains("objectsyncs.reliablesyncs.kubeedge.io"),
        "{crds:?}"
    );

    // SIGTERM (the shell's builtin kill): a clean exit, status 0.
    let pid = child.0.id();
    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()?;
    ensure!(status.success());
    let start = std::time::Instant::now();
    let code = loop {
        if let Some(s) = child.0.try_wait()? {
            break s;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(15),
            "cloudcore did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    ensure!(code.success(), "exit status {code:?}");
    Ok(())
}
