//! `kubectl logs` on edge pods, end to end: `keadm init` (cloudcore with the embedded API and
//! CloudStream), `keadm join` (edgecore with EdgeStream, real Docker), the stock kubectl. No
//! certificate or iptables step: the tunnel uses the node certificate from the join.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use kubeedge_bench::cluster::{wait_for, Cluster};
use kubeedge_bench::BUSYBOX_IMAGE;

const LIMIT: Duration = Duration::from_secs(90);

fn joined(node: &str) -> Result<Cluster> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(kubeedge_bench::ensure_busybox_image())?;
    let mut cluster = Cluster::init()?;
    let ws = cluster.ws;
    let out = cluster.join(node, ws)?;
    ensure!(out.contains("[5/5]"), "keadm join steps: {out}");
    wait_for(&format!("node {node} Ready"), LIMIT, || {
        cluster.node_ready(node)
    })
    .with_context(|| cluster.logs_tail(30))?;
    Ok(cluster)
}

/// A pod on the edge node: `talker` prints `line 1..3` then one line a second; `crasher`
/// prints `run <n>` (n counts its runs through a file in an emptyDir) and exits 1.
fn pod(node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: chatty, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  volumes: [{{name: state, emptyDir: {{}}}}]
  containers:
  - name: talker
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "echo line 1; echo line 2; echo line 3; i=4; while true; do sleep 1; echo line $i; i=$((i+1)); done"]
  - name: crasher
    image: {BUSYBOX_IMAGE}
    volumeMounts: [{{name: state, mountPath: /state}}]
    command: ["sh", "-c", "n=$(cat /state/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /state/n; echo run $n; sleep 2; exit 1"]
"#
    )
}

/// The lines `child` prints, as they come (a thread reads its stdout).
fn lines_of(child: &mut std::process::Child) -> Result<mpsc::Receiver<String>> {
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// A joined node running the `chatty` pod, its talker already talking.
fn chatty(node: &str) -> Result<Cluster> {
    let cluster = joined(node)?;
    cluster.apply(&pod(node))?;
    wait_for("talker running", LIMIT, || {
        let (ok, out) = kubectl_any(&cluster, &["logs", "chatty", "-c", "talker"])?;
        Ok(ok && out.contains("line 1"))
    })
    .with_context(|| cluster.logs_tail(40))?;
    Ok(cluster)
}

/// kubectl's combined output and whether it succeeded.
fn kubectl_any(cluster: &Cluster, args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(args)
        .output()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

#[test]
fn kubectl_logs_tail_timestamps_limit_follow_previous_and_errors() -> Result<()> {
    let node = "streams-logs";
    let cluster = joined(node)?;
    cluster.apply(&pod(node))?;
    wait_for("talker has written 3 lines", LIMIT, || {
        let (ok, out) = kubectl_any(&cluster, &["logs", "chatty", "-c", "talker"])?;
        Ok(ok && out.contains("line 3"))
    })
    .with_context(|| cluster.logs_tail(40))?;

    // Whole log, then the last line only, then with timestamps, then cut at 6 bytes.
    let all = cluster.kubectl(&["logs", "chatty", "-c", "talker"])?;
    ensure!(all.starts_with("line 1\nline 2\nline 3\n"), "{all:?}");
    let tail = cluster.kubectl(&["logs", "chatty", "-c", "talker", "--tail=1"])?;
    ensure!(
        tail.lines().count() == 1 && tail.starts_with("line "),
        "{tail:?}"
    );
    let ts = cluster.kubectl(&["logs", "chatty", "-c", "talker", "--timestamps"])?;
    let first = ts.lines().next().unwrap_or_default();
    let (stamp, text) = first.split_once(' ').context("timestamp and text")?;
    ensure!(
        text == "line 1" && stamp.ends_with('Z') && stamp.contains('T'),
        "{first:?}"
    );
    let cut = cluster.kubectl(&["logs", "chatty", "-c", "talker", "--limit-bytes=6"])?;
    ensure!(cut == "line 1", "{cut:?}");

    // -f: lines written after the command started reach it while it runs.
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["logs", "-f", "chatty", "-c", "talker", "--tail=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let rx = lines_of(&mut child)?;
    let started = Instant::now();
    let mut seen = Vec::new();
    while seen.len() < 3 && started.elapsed() < LIMIT {
        if let Ok(l) = rx.recv_timeout(Duration::from_secs(5)) {
            seen.push(l);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    ensure!(seen.len() == 3, "logs -f printed {seen:?}");
    let numbers: Vec<u64> = seen
        .iter()
        .filter_map(|l| l.strip_prefix("line ")?.parse().ok())
        .collect();
    ensure!(
        numbers.len() == 3 && numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "logs -f lines in order: {seen:?}"
    );

    // --previous: the crasher's last run, once it has restarted.
    wait_for("crasher restarted", LIMIT, || {
        let (ok, out) = kubectl_any(&cluster, &["logs", "chatty", "-c", "crasher", "--previous"])?;
        Ok(ok && out.starts_with("run "))
    })?;
    let (ok, now) = kubectl_any(&cluster, &["logs", "chatty", "-c", "crasher"])?;
    ensure!(ok && now.starts_with("run "), "{now}");
    // -f on a container that exits: kubectl ends with it, successfully (the crasher runs 2 s).
    wait_for("crasher running again", LIMIT, || {
        let st = cluster.kubectl(&[
            "get",
            "pod",
            "chatty",
            "-o",
            "jsonpath={.status.containerStatuses[?(@.name==\"crasher\")].state.running}",
        ])?;
        Ok(!st.is_empty())
    })?;
    let started = Instant::now();
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["logs", "-f", "chatty", "-c", "crasher"])
        .output()?;
    ensure!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).starts_with("run ")
            && started.elapsed() < Duration::from_secs(30),
        "logs -f of an exiting container: {out:?} after {:?}",
        started.elapsed()
    );

    // Refusals read as kube-apiserver and the kubelet word them.
    // kubectl picks the first container itself; the API, asked with none, names them all.
    let (ok, out) = kubectl_any(&cluster, &["logs", "chatty"])?;
    ensure!(
        ok && out.contains("Defaulted container \"talker\""),
        "{out}"
    );
    let (ok, out) = kubectl_any(
        &cluster,
        &["get", "--raw", "/api/v1/namespaces/default/pods/chatty/log"],
    )?;
    ensure!(
        !ok && out.contains(
            "a container name must be specified for pod chatty, choose one of: [talker crasher]"
        ),
        "{out}"
    );
    let (ok, out) = kubectl_any(&cluster, &["logs", "chatty", "-c", "nope"])?;
    ensure!(
        !ok && out.contains("container nope is not valid for pod chatty"),
        "{out}"
    );
    let (ok, out) = kubectl_any(&cluster, &["logs", "missing"])?;
    ensure!(!ok && out.contains("pods \"missing\" not found"), "{out}");
    let (ok, out) = kubectl_any(&cluster, &["logs", "chatty", "-c", "talker", "--previous"])?;
    ensure!(
        !ok && out.contains("previous terminated container \"talker\" in pod \"chatty\" not found"),
        "{out}"
    );
    Ok(())
}

/// kubectl with `stdin` fed in; (exit code, stdout, stderr).
fn kubectl_stdin(cluster: &Cluster, args: &[&str], stdin: &[u8]) -> Result<(i32, Vec<u8>, String)> {
    kubectl_bin_stdin("kubectl", cluster, args, stdin)
}

/// kubectl 1.27, which speaks SPDY/3.1 for exec, attach and port-forward.
const KUBECTL_SPDY: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

/// `bin` (a kubectl) with `stdin` fed in; (exit code, stdout, stderr).
fn kubectl_bin_stdin(
    bin: &str,
    cluster: &Cluster,
    args: &[&str],
    stdin: &[u8],
) -> Result<(i32, Vec<u8>, String)> {
    use std::io::Write as _;
    let mut child = Command::new(bin)
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut input = child.stdin.take().context("stdin")?;
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output()?;
    let _ = writer.join();
    Ok((
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn kubectl_exec_stdout_exit_codes_stdin_bytes_and_errors() -> Result<()> {
    let node = "streams-exec";
    let cluster = chatty(node)?;

    let out = cluster.kubectl(&[
        "exec",
        "chatty",
        "-c",
        "talker",
        "--",
        "echo",
        "hello from the edge",
    ])?;
    ensure!(out == "hello from the edge\n", "{out:?}");

    // stdout and stderr stay apart (kubectl cp's tar stream depends on it).
    let (code, out, err) = kubectl_stdin(
        &cluster,
        &[
            "exec",
            "chatty",
            "-c",
            "talker",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2",
        ],
        b"",
    )?;
    ensure!(
        code == 0 && out == b"out\n" && err.contains("err"),
        "{:?} / {err:?}",
        String::from_utf8_lossy(&out)
    );

    // The command's exit code is kubectl's.
    let (code, _, err) = kubectl_stdin(
        &cluster,
        &["exec", "chatty", "-c", "talker", "--", "sh", "-c", "exit 3"],
        b"",
    )?;
    ensure!(code == 3, "exit {code}: {err}");

    // 1 MiB of random bytes through stdin come back unchanged.
    let data: Vec<u8> = (0..1024 * 1024).map(|_| fastrand::u8(..)).collect();
    let (code, out, err) = kubectl_stdin(
        &cluster,
        &["exec", "-i", "chatty", "-c", "talker", "--", "cat"],
        &data,
    )?;
    ensure!(code == 0, "exit {code}: {err}");
    ensure!(
        out.len() == data.len() && out == data,
        "{} bytes back of {}",
        out.len(),
        data.len()
    );

    // Refusals: a container that has exited (its pod still running), a missing pod or
    // container.
    cluster.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: half, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: up, image: {BUSYBOX_IMAGE}, command: ["sleep", "3600"]}}
  - {{name: done, image: {BUSYBOX_IMAGE}, command: ["true"]}}
"#
    ))?;
    wait_for("half's done container exited", LIMIT, || {
        let st = cluster.kubectl(&[
            "get",
            "pod",
            "half",
            "-o",
            "jsonpath={.status.containerStatuses[?(@.name==\"done\")].state.terminated.reason}",
        ])?;
        Ok(st == "Completed")
    })?;
    let (ok, out) = kubectl_any(&cluster, &["exec", "half", "-c", "done", "--", "true"])?;
    ensure!(
        !ok && out.contains("container is not created or running"),
        "exec into an exited container: {out}"
    );
    let (ok, out) = kubectl_any(&cluster, &["exec", "missing", "--", "true"])?;
    ensure!(!ok && out.contains("pods \"missing\" not found"), "{out}");
    let (ok, out) = kubectl_any(&cluster, &["exec", "chatty", "-c", "nope", "--", "true"])?;
    ensure!(
        !ok && out.contains("container nope is not valid for pod chatty"),
        "{out}"
    );
    Ok(())
}

#[test]
fn kubectl_exec_tty_attach_and_cp_both_ways() -> Result<()> {
    let node = "streams-tty";
    let cluster = chatty(node)?;
    let kc = cluster.kubeconfig.display().to_string();

    // -it under a pseudo-terminal (script): the command sees a terminal.
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("kubectl --kubeconfig {kc} exec -it chatty -c talker -- sh -c 'tty; exit 4'"),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(text.contains("/dev/pts/"), "exec -it: {text:?}");
    ensure!(
        out.status.code() == Some(4),
        "exec -it exit: {:?} {text:?}",
        out.status
    );

    // attach follows the main process's output.
    let mut child = Command::new("kubectl")
        .args(["--kubeconfig", &kc, "attach", "chatty", "-c", "talker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let rx = lines_of(&mut child)?;
    let line = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.context("attach printed nothing")?;
    ensure!(line.starts_with("line "), "attach: {line:?}");

    // cp both ways (tar through exec).
    let dir = tempfile::tempdir()?;
    let local = dir.path().join("up.txt");
    std::fs::write(&local, "through the tunnel\n")?;
    cluster.kubectl(&[
        "cp",
        &local.display().to_string(),
        "chatty:/tmp/up.txt",
        "-c",
        "talker",
    ])?;
    let back = dir.path().join("down.txt");
    cluster.kubectl(&[
        "cp",
        "chatty:/tmp/up.txt",
        &back.display().to_string(),
        "-c",
        "talker",
    ])?;
    ensure!(std::fs::read_to_string(&back)? == "through the tunnel\n");
    Ok(())
}

#[test]
fn kubectl_1_27_exec_and_attach_over_spdy() -> Result<()> {
    if !std::path::Path::new(KUBECTL_SPDY).exists() {
        anyhow::bail!("{KUBECTL_SPDY} is missing (it ships beside the stock kubectl)");
    }
    let node = "streams-spdy";
    let cluster = chatty(node)?;
    let spdy = |args: &[&str], stdin: &[u8]| kubectl_bin_stdin(KUBECTL_SPDY, &cluster, args, stdin);

    let (code, out, err) = spdy(
        &["exec", "chatty", "-c", "talker", "--", "echo", "over spdy"],
        b"",
    )?;
    ensure!(
        code == 0 && out == b"over spdy\n",
        "exit {code}: {:?} {err}",
        String::from_utf8_lossy(&out)
    );
    let (code, _, err) = spdy(
        &["exec", "chatty", "-c", "talker", "--", "sh", "-c", "exit 5"],
        b"",
    )?;
    ensure!(code == 5, "exit {code}: {err}");
    let data: Vec<u8> = (0..1024 * 1024).map(|_| fastrand::u8(..)).collect();
    let (code, out, err) = spdy(
        &["exec", "-i", "chatty", "-c", "talker", "--", "cat"],
        &data,
    )?;
    ensure!(
        code == 0 && out == data,
        "exit {code}, {} bytes back: {err}",
        out.len()
    );

    // attach follows the main process's output (the talker's lines).
    let mut attach = Command::new(KUBECTL_SPDY)
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["attach", "chatty", "-c", "talker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let lines = lines_of(&mut attach)?;
    let line = lines.recv_timeout(Duration::from_secs(30));
    let _ = attach.kill();
    let _ = attach.wait();
    ensure!(
        line.as_deref().is_ok_and(|l| l.starts_with("line ")),
        "attach over spdy: {line:?}"
    );

    // -it under a pseudo-terminal.
    let kc = cluster.kubeconfig.display().to_string();
    let out = Command::new("script")
        .args([
            "-qec",
            &format!(
                "{KUBECTL_SPDY} --kubeconfig {kc} exec -it chatty -c talker -- sh -c 'tty; exit 6'"
            ),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("/dev/pts/") && out.status.code() == Some(6),
        "exec -it: {:?} {text:?}",
        out.status
    );
    Ok(())
}

/// A pod serving `pong` over HTTP on port 8080.
fn web_pod(node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "mkdir -p /www && echo pong > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#
    )
}

/// `bin port-forward pod/web :8080`, then curl through the local port it prints.
fn get_through_port_forward(bin: &str, cluster: &Cluster) -> Result<String> {
    let mut child = Command::new(bin)
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["port-forward", "pod/web", ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let rx = lines_of(&mut child)?;
    let result: Result<String> = (|| {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .context("port-forward printed nothing")?;
        let port: u16 = line
            .strip_prefix("Forwarding from 127.0.0.1:")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("unexpected: {line:?}"))?;
        let mut answers = String::new();
        // Two requests with curl: each is its own forwarded connection (a new stream pair).
        for _ in 0..2 {
            let out = Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "20",
                    &format!("http://127.0.0.1:{port}/"),
                ])
                .output()?;
            ensure!(out.status.success(), "curl: {out:?}");
            answers.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        Ok(answers)
    })();
    let _ = child.kill();
    let out = child.wait_with_output();
    result.with_context(|| {
        format!(
            "{:?}",
            out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        )
    })
}

#[test]
fn kubectl_port_forward_websocket_and_spdy() -> Result<()> {
    let node = "streams-pf";
    let cluster = joined(node)?;
    cluster.apply(&web_pod(node))?;
    wait_for("web running", LIMIT, || {
        let out = cluster.kubectl(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"])?;
        Ok(out == "Running")
    })
    .with_context(|| cluster.logs_tail(40))?;
    let got = get_through_port_forward("kubectl", &cluster)?;
    ensure!(got.matches("pong").count() == 2, "kubectl 1.32: {got:?}");
    if std::path::Path::new(KUBECTL_SPDY).exists() {
        let got = get_through_port_forward(KUBECTL_SPDY, &cluster)?;
        ensure!(got.matches("pong").count() == 2, "kubectl 1.27: {got:?}");
    }
    Ok(())
}

/// Open file descriptors of `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Processes in the container of `node`'s pod `pod`, container `name`.
fn processes_in(node: &str, name: &str) -> Result<usize> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "id=$(docker ps -q --filter label=io.kubeedge-rs.node={node} --filter label=io.kubernetes.container.name={name}); docker exec $id ls /proc"
        ))
        .output()?;
    ensure!(out.status.success(), "{out:?}");
    // Minus the ls itself.
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|e| e.chars().all(|c| c.is_ascii_digit()))
        .count()
        .saturating_sub(1))
}

#[test]
fn a_cut_link_ends_kubectl_streams_within_two_heartbeats_and_leaks_nothing() -> Result<()> {
    use kubeedge_bench::cluster::LinkProxy;
    use std::io::Write as _;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(kubeedge_bench::ensure_busybox_image())?;
    let node = "streams-cut";
    let mut cluster = Cluster::init()?;
    let proxy = LinkProxy::start(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        cluster.tunnel_port,
    )))?;
    cluster
        .join_sets
        .push(format!("modules.edgeStream.server={}", proxy.addr));
    let ws = cluster.ws;
    cluster.join(node, ws)?;
    wait_for("node Ready", LIMIT, || cluster.node_ready(node))?;
    cluster.apply(&pod(node))?;
    let logs_work = || -> Result<bool> {
        let (ok, out) = kubectl_any(&cluster, &["logs", "chatty", "-c", "talker", "--tail=1"])?;
        Ok(ok && out.starts_with("line "))
    };
    wait_for("logs through the proxied tunnel", LIMIT, logs_work)
        .with_context(|| cluster.logs_tail(40))?;
    let (edge, cloud) = (
        cluster.pid("edgecore").context("edgecore")?,
        cluster.pid("cloudcore").context("cloudcore")?,
    );
    let (edge_fds, cloud_fds) = (fds(edge), fds(cloud));
    let procs = processes_in(node, "talker")?;

    let kc = cluster.kubeconfig.display().to_string();
    let mut logs = Command::new("kubectl")
        .args([
            "--kubeconfig",
            &kc,
            "logs",
            "-f",
            "chatty",
            "-c",
            "talker",
            "--tail=1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut exec = Command::new("kubectl")
        .args([
            "--kubeconfig",
            &kc,
            "exec",
            "-i",
            "chatty",
            "-c",
            "talker",
            "--",
            "cat",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut logs_out = BufReader::new(logs.stdout.take().context("logs stdout")?);
    let mut line = String::new();
    logs_out.read_line(&mut line)?;
    ensure!(line.starts_with("line "), "logs -f: {line:?}");
    let mut stdin = exec.stdin.take().context("exec stdin")?;
    stdin.write_all(b"echo\n")?;
    let mut exec_out = BufReader::new(exec.stdout.take().context("exec stdout")?);
    let mut echoed = String::new();
    exec_out.read_line(&mut echoed)?;
    ensure!(echoed == "echo\n", "exec -i: {echoed:?}");
    ensure!(
        processes_in(node, "talker")? == procs + 1,
        "cat runs in the container"
    );
    // Keep draining logs -f so that it is not blocked on a full pipe.
    std::thread::spawn(move || for _ in logs_out.lines() {});

    let cut = Instant::now();
    proxy.set_cut(true);
    let deadline = Duration::from_secs(20);
    let mut ended = (None, None);
    while cut.elapsed() < deadline && (ended.0.is_none() || ended.1.is_none()) {
        if ended.0.is_none() && logs.try_wait()?.is_some() {
            ended.0 = Some(cut.elapsed());
        }
        if ended.1.is_none() && exec.try_wait()?.is_some() {
            ended.1 = Some(cut.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = logs.kill();
    let _ = exec.kill();
    let (Some(l), Some(e)) = ended else {
        anyhow::bail!("streams still open {deadline:?} after the cut: {ended:?}");
    };
    // Two 5 s heartbeats, and kubectl's own teardown.
    ensure!(
        l <= Duration::from_secs(13) && e <= Duration::from_secs(13),
        "ended after {l:?} / {e:?}"
    );
    drop(stdin);

    proxy.set_cut(false);
    wait_for("logs again once the link is back", LIMIT, logs_work)?;
    wait_for("nothing leaked", LIMIT, || {
        Ok(fds(edge) <= edge_fds && fds(cloud) <= cloud_fds && processes_in(node, "talker")? == procs)
    })
    .with_context(|| {
        format!(
            "fds edgecore {} (was {edge_fds}), cloudcore {} (was {cloud_fds}), processes {:?} (was {procs})",
            fds(edge),
            fds(cloud),
            processes_in(node, "talker").ok()
        )
    })?;
    Ok(())
}

#[test]
fn kubectl_top_node_and_pod_from_the_edge_stats() -> Result<()> {
    let node = "streams-top";
    let cluster = chatty(node)?;
    // The metrics API is discovered like metrics-server's.
    let groups = cluster.kubectl(&["api-versions"])?;
    ensure!(
        groups.lines().any(|l| l == "metrics.k8s.io/v1beta1"),
        "{groups}"
    );

    let top = cluster.kubectl(&["top", "node", "--no-headers"])?;
    let row: Vec<&str> = top.split_whitespace().collect();
    ensure!(
        row.first() == Some(&node) && row.len() >= 5,
        "top node: {top:?}"
    );
    ensure!(
        row[1].ends_with('m') && row[3].ends_with("Mi"),
        "top node: {top:?}"
    );

    let top = cluster.kubectl(&["top", "pod", "chatty", "--containers", "--no-headers"])?;
    let rows: Vec<Vec<&str>> = top
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    ensure!(
        rows.iter()
            .any(|r| r.get(1) == Some(&"talker") && r.get(3).is_some_and(|m| m.ends_with("Mi"))),
        "top pod: {top:?}"
    );
    let (ok, out) = kubectl_any(&cluster, &["top", "pod", "missing"])?;
    ensure!(!ok && out.contains("not found"), "{out}");
    Ok(())
}
