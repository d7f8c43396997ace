//! The embedded control plane against a real kubeedge-apiserver, with fake nodes registered
//! through the API (Ready, edge-labelled, renewing their Lease and running the pods bound to
//! them), and the stock kubectl over HTTPS.

mod cp;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use cp::{fast_config, wait_for, Cluster, AGENT, EDGE};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Endpoints, Event, Namespace, Node, Pod, Service, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde::Deserialize as _;
use serde_json::json;

const SEED: &str = include_str!("../../kubeedge-apiserver/tests/manifests/nginx-deploy.yaml");

/// The seed's Deployment and Service.
fn seed() -> Result<(Deployment, Service)> {
    let mut deploy = None;
    let mut svc = None;
    for doc in serde_yaml::Deserializer::from_str(SEED) {
        let v = serde_json::Value::deserialize(doc)?;
        match v["kind"].as_str() {
            Some("Deployment") => deploy = Some(serde_json::from_value(v)?),
            Some("Service") => svc = Some(serde_json::from_value(v)?),
            _ => {}
        }
    }
    Ok((
        deploy.context("seed deployment")?,
        svc.context("seed service")?,
    ))
}

fn edge_labels() -> [(&'static str, &'static str); 2] {
    [(EDGE, ""), (AGENT, "")]
}

async fn pods_of(client: &kube::Client, selector: &str) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::default_namespaced(client.clone());
    Ok(api
        .list(&ListParams::default().labels(selector))
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref().and_then(|s| s.node_name.clone())
}

fn image_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// Waits until the deployment reports `n` replicas updated, ready and available, with exactly
/// `n` running pods of `image` on the given nodes.
async fn rolled_out(
    client: &kube::Client,
    n: i32,
    image: &str,
    nodes: &BTreeSet<String>,
) -> Result<Deployment> {
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    wait_for(&format!("{n} replicas of {image} rolled out"), || async {
        let d = deploys.get("nginx-deployment").await.ok()?;
        let st = d.status.clone()?;
        let done = st.observed_generation >= d.metadata.generation
            && st.replicas == Some(n)
            && st.updated_replicas == Some(n)
            && st.ready_replicas == Some(n)
            && st.available_replicas == Some(n);
        let pods = pods_of(client, "app=nginx").await.ok()?;
        let good = pods.len() == usize::try_from(n).ok()?
            && pods.iter().all(|p| {
                ready(p) && image_of(p) == image && node_of(p).is_some_and(|x| nodes.contains(&x))
            });
        (done && good).then_some(d)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_deployment_binds_scales_rolls_out_and_is_collected() -> Result<()> {
    let c = Cluster::start(fast_config()).await?;
    let _e1 = c.node("edge-1", &edge_labels()).await?;
    let _e2 = c.node("edge-2", &edge_labels()).await?;
    // A control-plane-like node the seed's pods must avoid: tainted NoSchedule.
    let _cp = c
        .node_with(
            "cloud-1",
            &[("node-role.kubernetes.io/control-plane", "")],
            json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
            json!({"cpu": "4", "memory": "8Gi", "pods": "110"}),
        )
        .await?;
    let edges: BTreeSet<String> = ["edge-1".to_owned(), "edge-2".to_owned()].into();
    let (deploy, svc) = seed()?;
    let deploys: Api<Deployment> = Api::default_namespaced(c.client.clone());
    let services: Api<Service> = Api::default_namespaced(c.client.clone());
    deploys.create(&PostParams::default(), &deploy).await?;
    services.create(&PostParams::default(), &svc).await?;

    // Replicas 2: both bound to the edge nodes (spread), counted by the RS and the Deployment.
    let d = rolled_out(&c.client, 2, "nginx:1.25", &edges).await?;
    let pods = pods_of(&c.client, "app=nginx").await?;
    let on: BTreeSet<String> = pods.iter().filter_map(node_of).collect();
    ensure!(on == edges, "spread over {on:?}");
    let rss: Api<ReplicaSet> = Api::default_namespaced(c.client.clone());
    let list = rss.list(&ListParams::default()).await?.items;
    ensure!(list.len() == 1, "{} replicasets", list.len());
    let rs_status = list[0].status.clone().context("rs status")?;
    ensure!(
        rs_status.replicas == 2
            && rs_status.ready_replicas == Some(2)
            && rs_status.available_replicas == Some(2),
        "{rs_status:?}"
    );
    let annotations = d.metadata.annotations.clone().unwrap_or_default();
    ensure!(
        annotations
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str)
            == Some("1")
    );
    // Events from the scheduler.
    let events: Api<Event> = Api::default_namespaced(c.client.clone());
    wait_for("Scheduled events", || async {
        let evs = events.list(&ListParams::default()).await.ok()?.items;
        (evs.iter()
            .filter(|e| e.reason.as_deref() == Some("Scheduled"))
            .count()
            >= 2)
            .then_some(())
    })
    .await?;
    // The Service's endpoints are the two ready pod IPs on port 80.
    let eps: Api<Endpoints> = Api::default_namespaced(c.client.clone());
    let ips = |n: usize| {
        let eps = eps.clone();
        async move {
            let ep = eps.get_opt("nginx-svc").await.ok()??;
            let subsets = ep.subsets.clone()?;
            let addrs: Vec<String> = subsets
                .iter()
                .flat_map(|s| s.addresses.iter().flatten().map(|a| a.ip.clone()))
                .collect();
            let port_ok = subsets.iter().all(|s| {
                s.ports
                    .as_ref()
                    .is_some_and(|p| p.iter().all(|p| p.port == 80))
            });
            (addrs.len() == n && port_ok).then_some(addrs)
        }
    };
    wait_for("2 endpoints", || ips(2)).await?;

    // Scale to 4.
    deploys
        .patch_scale(
            "nginx-deployment",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await?;
    rolled_out(&c.client, 4, "nginx:1.25", &edges).await?;
    wait_for("4 endpoints", || ips(4)).await?;

    // Roll out a new image: a second ReplicaSet takes over, the first keeps 0 replicas. With
    // 25% (1 of 4) maxSurge and maxUnavailable, there are never more than 5 pods, and never
    // fewer than 3 ready ones.
    let watch = tokio::spawn(rollout_bounds(c.client.clone()));
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.26"}]}}}});
    deploys
        .patch(
            "nginx-deployment",
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await?;
    let d = rolled_out(&c.client, 4, "nginx:1.26", &edges).await?;
    watch.abort();
    let (most, fewest_ready) = *ROLLOUT.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    ensure!(
        most == 5 && fewest_ready >= 3,
        "rollout went to {most} pods, {fewest_ready} ready"
    );
    ensure!(
        d.metadata
            .annotations
            .unwrap_or_default()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str)
            == Some("2"),
        "revision"
    );
    let list = rss.list(&ListParams::default()).await?.items;
    ensure!(
        list.len() == 2,
        "{} replicasets after the rollout",
        list.len()
    );
    let by_rev = |rev: &str| {
        list.iter()
            .find(|rs| {
                rs.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("deployment.kubernetes.io/revision"))
                    .map(String::as_str)
                    == Some(rev)
            })
            .and_then(|rs| rs.spec.as_ref().and_then(|s| s.replicas))
    };
    ensure!(
        by_rev("1") == Some(0) && by_rev("2") == Some(4),
        "replicas by revision"
    );
    wait_for("4 endpoints after rollout", || ips(4)).await?;

    // Delete the Deployment: ReplicaSets and pods are collected.
    deploys
        .delete("nginx-deployment", &DeleteParams::background())
        .await?;
    wait_for("everything collected", || async {
        let rs = rss.list(&ListParams::default()).await.ok()?.items;
        let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
        let left = pods.list(&ListParams::default()).await.ok()?.items;
        (rs.is_empty() && left.is_empty()).then_some(())
    })
    .await?;
    wait_for("0 endpoints", || async {
        let ep = eps.get_opt("nginx-svc").await.ok()??;
        ep.subsets.is_none().then_some(())
    })
    .await?;
    c.stop().await
}

/// (most active pods, fewest ready active pods) seen during the rollout.
static ROLLOUT: std::sync::Mutex<(usize, usize)> = std::sync::Mutex::new((0, usize::MAX));

/// Follows the seed's pods through a watch and records the rollout bounds in [`ROLLOUT`].
async fn rollout_bounds(client: kube::Client) {
    use futures_util::StreamExt as _;
    use kube::runtime::{watcher, WatchStreamExt as _};
    let api: Api<Pod> = Api::default_namespaced(client);
    let mut seen: std::collections::BTreeMap<String, Pod> = Default::default();
    let stream = watcher(api, watcher::Config::default().labels("app=nginx")).default_backoff();
    futures_util::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                seen.insert(p.metadata.name.clone().unwrap_or_default(), p);
            }
            Ok(watcher::Event::Delete(p)) => {
                seen.remove(p.metadata.name.as_deref().unwrap_or_default());
            }
            _ => continue,
        }
        let active: Vec<&Pod> = seen
            .values()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let ready_n = active.iter().filter(|p| ready(p)).count();
        if let Ok(mut r) = ROLLOUT.lock() {
            r.0 = r.0.max(active.len());
            if active.len() >= 4 || r.1 != usize::MAX {
                r.1 = r.1.min(ready_n);
            }
        }
    }
}

fn daemonset(name: &str, operator: &str) -> Result<DaemonSet> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": EDGE, "operator": operator}]}
                    ]}}},
                    "containers": [{"name": "agent", "image": format!("{name}:1.0")}],
                },
            },
        },
    }))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_places_one_pod_per_matching_node() -> Result<()> {
    let c = Cluster::start(fast_config()).await?;
    let _e1 = c.node("edge-1", &edge_labels()).await?;
    let _e2 = c.node("edge-2", &edge_labels()).await?;
    let _c1 = c.node("cloud-1", &[]).await?;
    let dss: Api<DaemonSet> = Api::default_namespaced(c.client.clone());
    // Like the seed's edgemesh-agent (edge nodes only) and kube-proxy (kept off edge nodes).
    dss.create(
        &PostParams::default(),
        &daemonset("edgemesh-agent", "Exists")?,
    )
    .await?;
    dss.create(
        &PostParams::default(),
        &daemonset("kube-proxy", "DoesNotExist")?,
    )
    .await?;
    let placed = |name: &'static str, want: Vec<&'static str>| {
        let (client, dss) = (c.client.clone(), dss.clone());
        async move {
            let pods = pods_of(&client, &format!("app={name}")).await.ok()?;
            let mut nodes: Vec<String> = pods.iter().filter_map(node_of).collect();
            nodes.sort();
            let st = dss.get(name).await.ok()?.status?;
            let n = i32::try_from(want.len()).ok()?;
            let ok = nodes == want
                && pods.iter().all(ready)
                && st.desired_number_scheduled == n
                && st.current_number_scheduled == n
                && st.number_ready == n
                && st.updated_number_scheduled == Some(n)
                && st.number_available == Some(n);
            ok.then_some(())
        }
    };
    wait_for("edgemesh-agent on both edge nodes", || {
        placed("edgemesh-agent", vec!["edge-1", "edge-2"])
    })
    .await?;
    wait_for("kube-proxy on the cloud node", || {
        placed("kube-proxy", vec!["cloud-1"])
    })
    .await?;
    // A new edge node gets its daemon pod.
    let _e3 = c.node("edge-3", &edge_labels()).await?;
    wait_for("edgemesh-agent on the new node", || {
        placed("edgemesh-agent", vec!["edge-1", "edge-2", "edge-3"])
    })
    .await?;
    // A template change rolls through every node.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "edgemesh-agent:1.1"}]}}}});
    dss.patch(
        "edgemesh-agent",
        &PatchParams::default(),
        &Patch::Strategic(patch),
    )
    .await?;
    wait_for("edgemesh-agent updated", || async {
        let pods = pods_of(&c.client, "app=edgemesh-agent").await.ok()?;
        (pods.len() == 3
            && pods
                .iter()
                .all(|p| ready(p) && image_of(p) == "edgemesh-agent:1.1"))
        .then_some(())
    })
    .await?;
    c.stop().await
}

fn pod(name: &str, spec: serde_json::Value) -> Result<Pod> {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c", "image": "busybox:1.36"}]);
    }
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name}, "spec": spec}),
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_filters_and_reports_unschedulable_pods() -> Result<()> {
    let c = Cluster::start(fast_config()).await?;
    let small = json!({"cpu": "1", "memory": "1Gi", "pods": "110"});
    let _a = c
        .node_with(
            "edge-a",
            &[(EDGE, ""), ("zone", "a")],
            json!([]),
            small.clone(),
        )
        .await?;
    let _b = c
        .node_with(
            "edge-b",
            &[(EDGE, ""), ("zone", "b")],
            json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
            small.clone(),
        )
        .await?;
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    let cpu = |m: &str| json!({"containers": [{"name": "c", "image": "busybox:1.36", "resources": {"requests": {"cpu": m}}}]});
    let bound = |name: &'static str| {
        let pods = pods.clone();
        async move { pods.get(name).await.ok().and_then(|p| node_of(&p)) }
    };
    // Taints: only a tolerating pod lands on edge-b.
    let mut tolerating = cpu("600m");
    tolerating["tolerations"] =
        json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]);
    tolerating["nodeSelector"] = json!({"zone": "b"});
    pods.create(&PostParams::default(), &pod("gpu", tolerating)?)
        .await?;
    ensure!(wait_for("gpu bound", || bound("gpu")).await? == "edge-b");
    // Resources: 600m fits on edge-a once; the second cannot fit anywhere.
    pods.create(&PostParams::default(), &pod("first", cpu("600m"))?)
        .await?;
    ensure!(wait_for("first bound", || bound("first")).await? == "edge-a");
    pods.create(&PostParams::default(), &pod("second", cpu("600m"))?)
        .await?;
    let cond = wait_for("second unschedulable", || async {
        let p = pods.get("second").await.ok()?;
        p.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    })
    .await?;
    ensure!(cond.reason.as_deref() == Some("Unschedulable"), "{cond:?}");
    ensure!(
        cond.message.as_deref() == Some("0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: gpu}."),
        "{:?}",
        cond.message
    );
    let events: Api<Event> = Api::default_namespaced(c.client.clone());
    wait_for("FailedScheduling event", || async {
        let evs = events.list(&ListParams::default()).await.ok()?.items;
        evs.into_iter().find(|e| {
            e.reason.as_deref() == Some("FailedScheduling")
                && e.involved_object.name.as_deref() == Some("second")
                && e.type_.as_deref() == Some("Warning")
        })
    })
    .await?;
    // Required node affinity with DoesNotExist keeps a pod off edge nodes: nothing fits.
    let off_edge = json!({"containers": [{"name": "c", "image": "calico:3"}], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": EDGE, "operator": "DoesNotExist"}]}]}}}});
    pods.create(&PostParams::default(), &pod("calico", off_edge)?)
        .await?;
    wait_for("calico unschedulable", || async {
        let p = pods.get("calico").await.ok()?;
        p.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    })
    .await?;
    // A new node with room: the pending pods are retried and bound there.
    let _c = c
        .node_with(
            "cloud-c",
            &[("zone", "c")],
            json!([]),
            json!({"cpu": "2", "memory": "1Gi", "pods": "110"}),
        )
        .await?;
    ensure!(wait_for("second bound", || bound("second")).await? == "cloud-c");
    ensure!(wait_for("calico bound", || bound("calico")).await? == "cloud-c");
    let p = pods.get("second").await?;
    let sched = p.status.and_then(|s| s.conditions).unwrap_or_default();
    ensure!(
        sched
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True"),
        "{sched:?}"
    );
    c.stop().await
}

fn taint_set(n: &Node) -> BTreeSet<(String, String)> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.effect))
        .collect()
}

fn ready_status(n: &Node) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_lease_marks_node_unknown_keeps_edge_pods_and_evicts_cloud_pods() -> Result<()> {
    let mut config = fast_config();
    config.node_monitor_grace_period = Duration::from_secs(1);
    config.pod_eviction_timeout = Duration::from_secs(1);
    let c = Cluster::start(config).await?;
    let edge = c.node("edge-1", &edge_labels()).await?;
    let cloud = c.node("cloud-1", &[]).await?;
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    pods.create(
        &PostParams::default(),
        &pod(
            "at-edge",
            json!({"nodeSelector": {"kubernetes.io/hostname": "edge-1"}}),
        )?,
    )
    .await?;
    pods.create(
        &PostParams::default(),
        &pod(
            "at-cloud",
            json!({"nodeSelector": {"kubernetes.io/hostname": "cloud-1"}}),
        )?,
    )
    .await?;
    for name in ["at-edge", "at-cloud"] {
        wait_for("pod running", || async {
            pods.get(name).await.ok().filter(ready)
        })
        .await?;
    }
    let nodes: Api<Node> = Api::all(c.client.clone());
    // Healthy nodes (renewing their lease) stay Ready past the grace period.
    let renewed = wait_for("a second lease renewal", || async {
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(c.client.clone(), "kube-node-lease");
        let l = leases.get("edge-1").await.ok()?;
        let t = l.spec?.renew_time?.0;
        (k8s_openapi::jiff::Timestamp::now().as_millisecond() - t.as_millisecond() < 500)
            .then_some(t)
    })
    .await?;
    let _ = renewed;
    let started = tokio::time::Instant::now();
    edge.stop().await;
    cloud.stop().await;
    for name in ["edge-1", "cloud-1"] {
        wait_for("node Unknown", || async {
            let n = nodes.get(name).await.ok()?;
            (ready_status(&n) == "Unknown").then_some(())
        })
        .await?;
    }
    // Within the grace period plus a few monitor periods.
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let n = nodes.get("edge-1").await?;
    let reason = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.reason.clone());
    ensure!(reason.as_deref() == Some("NodeStatusUnknown"), "{reason:?}");
    let unreachable = "node.kubernetes.io/unreachable".to_owned();
    let edge_taints = wait_for("edge NoSchedule taint", || async {
        let n = nodes.get("edge-1").await.ok()?;
        let t = taint_set(&n);
        (!t.is_empty()).then_some(t)
    })
    .await?;
    ensure!(
        edge_taints == [(unreachable.clone(), "NoSchedule".to_owned())].into(),
        "{edge_taints:?}"
    );
    let cloud_taints = wait_for("cloud taints", || async {
        let n = nodes.get("cloud-1").await.ok()?;
        let t = taint_set(&n);
        (t.len() == 2).then_some(t)
    })
    .await?;
    ensure!(
        cloud_taints
            == [
                (unreachable.clone(), "NoExecute".to_owned()),
                (unreachable, "NoSchedule".to_owned())
            ]
            .into(),
        "{cloud_taints:?}"
    );
    // The cloud pod is evicted after its (default) toleration; by then the edge pod would have
    // been too, were it treated the same.
    wait_for("cloud pod evicted", || async {
        let p = pods.get("at-cloud").await.ok()?;
        p.metadata.deletion_timestamp.is_some().then_some(())
    })
    .await?;
    let p = pods.get("at-edge").await?;
    ensure!(
        p.metadata.deletion_timestamp.is_none(),
        "edge pod marked for deletion"
    );
    ensure!(ready(&p), "edge pod marked not ready");
    ensure!(node_of(&p).as_deref() == Some("edge-1"));
    // The edge node comes back: Ready again and untainted.
    edge.join().await?;
    wait_for("edge node back", || async {
        let n = nodes.get("edge-1").await.ok()?;
        (ready_status(&n) == "True" && taint_set(&n).is_empty()).then_some(())
    })
    .await?;
    ensure!(pods
        .get("at-edge")
        .await?
        .metadata
        .deletion_timestamp
        .is_none());
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_namespaces_service_accounts_and_garbage_collection() -> Result<()> {
    let c = Cluster::start(fast_config()).await?;
    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    for ns in [
        "default",
        "kube-system",
        "kube-node-lease",
        "kube-public",
        "kubeedge",
    ] {
        namespaces
            .get(ns)
            .await
            .with_context(|| format!("namespace {ns}"))?;
        let sas: Api<ServiceAccount> = Api::namespaced(c.client.clone(), ns);
        wait_for("default service account", || async {
            sas.get_opt("default").await.ok().flatten()
        })
        .await?;
    }
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team-a"}}))?,
        )
        .await?;
    let sas: Api<ServiceAccount> = Api::namespaced(c.client.clone(), "team-a");
    wait_for("service account in a new namespace", || async {
        sas.get_opt("default").await.ok().flatten()
    })
    .await?;

    // A pod whose only owner never existed is collected; one with a live owner too keeps it.
    let _n = c.node("edge-1", &edge_labels()).await?;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::default_namespaced(c.client.clone());
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}}))?,
        )
        .await?;
    let live_uid = owner.metadata.uid.clone().context("uid")?;
    let pods: Api<Pod> = Api::default_namespaced(c.client.clone());
    let dangling = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "gone", "uid": "00000000-0000-0000-0000-000000000001"});
    let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": live_uid});
    let mut orphan = pod("orphan", json!({}))?;
    orphan.metadata.owner_references = Some(vec![serde_json::from_value(dangling.clone())?]);
    pods.create(&PostParams::default(), &orphan).await?;
    let mut shared = pod("shared", json!({}))?;
    shared.metadata.owner_references = Some(vec![
        serde_json::from_value(dangling)?,
        serde_json::from_value(live)?,
    ]);
    pods.create(&PostParams::default(), &shared).await?;
    wait_for("orphan collected", || async {
        match pods.get_opt("orphan").await {
            Ok(None) => Some(()),
            Ok(Some(p)) if p.metadata.deletion_timestamp.is_some() => Some(()),
            _ => None,
        }
    })
    .await?;
    let refs = wait_for("dangling reference dropped", || async {
        let p = pods.get("shared").await.ok()?;
        let refs = p.metadata.owner_references.unwrap_or_default();
        (refs.len() == 1).then_some(refs)
    })
    .await?;
    ensure!(refs[0].uid == live_uid, "{refs:?}");
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_namespace_is_emptied_and_finalized() -> Result<()> {
    let c = Cluster::start(fast_config()).await?;
    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    // A finalizer of someone else's keeps the namespace Terminating, so each step is visible.
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "team-b", "finalizers": ["example.com/hold"]}}),
            )?,
        )
        .await?;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(c.client.clone(), "team-b");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "settings"}}))?,
    )
    .await?;
    let sas: Api<ServiceAccount> = Api::namespaced(c.client.clone(), "team-b");
    wait_for("service account", || async {
        sas.get_opt("default").await.ok().flatten()
    })
    .await?;
    namespaces
        .delete("team-b", &DeleteParams::default())
        .await?;
    let ns = wait_for("namespace emptied and finalized", || async {
        let ns = namespaces.get("team-b").await.ok()?;
        let empty = cms
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            && sas
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .is_empty();
        let phase = ns.status.as_ref().and_then(|s| s.phase.clone());
        let spec_finalizers = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.clone())
            .unwrap_or_default();
        (empty && phase.as_deref() == Some("Terminating") && spec_finalizers.is_empty())
            .then_some(ns)
    })
    .await?;
    ensure!(ns.metadata.deletion_timestamp.is_some());
    // The other finalizer goes: the namespace is gone.
    namespaces
        .patch(
            "team-b",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    wait_for("namespace gone", || async {
        namespaces
            .get_opt("team-b")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await?;
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_status_get_rs_ds_ep_and_describe_node() -> Result<()> {
    let c = Cluster::start(fast_config()).await?;
    let _e1 = c.node("edge-1", &edge_labels()).await?;
    let _e2 = c.node("edge-2", &edge_labels()).await?;
    let file = c.write("nginx.yaml", SEED)?;
    c.kubectl(&["apply", "-f", &file]).await?;
    let out = c
        .kubectl(&[
            "rollout",
            "status",
            "deployment/nginx-deployment",
            "--timeout=60s",
        ])
        .await?;
    ensure!(
        out.contains("deployment \"nginx-deployment\" successfully rolled out"),
        "{out}"
    );

    let rs = c.kubectl(&["get", "rs"]).await?;
    let lines: Vec<Vec<&str>> = rs.lines().map(|l| l.split_whitespace().collect()).collect();
    ensure!(
        lines
            .first()
            .is_some_and(|h| h[..4] == ["NAME", "DESIRED", "CURRENT", "READY"]),
        "{rs}"
    );
    ensure!(
        lines.len() == 2
            && lines[1][0].starts_with("nginx-deployment-")
            && lines[1][1..4] == ["2", "2", "2"],
        "{rs}"
    );

    let dss: Api<DaemonSet> = Api::default_namespaced(c.client.clone());
    dss.create(
        &PostParams::default(),
        &daemonset("edgemesh-agent", "Exists")?,
    )
    .await?;
    let out = c
        .kubectl(&[
            "rollout",
            "status",
            "daemonset/edgemesh-agent",
            "--timeout=60s",
        ])
        .await?;
    ensure!(
        out.contains("daemon set \"edgemesh-agent\" successfully rolled out"),
        "{out}"
    );
    let ds = c.kubectl(&["get", "ds"]).await?;
    let lines: Vec<Vec<&str>> = ds.lines().map(|l| l.split_whitespace().collect()).collect();
    ensure!(
        lines.first().is_some_and(|h| h[..6]
            == [
                "NAME",
                "DESIRED",
                "CURRENT",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE"
            ]),
        "{ds}"
    );
    ensure!(
        lines.len() == 2 && lines[1][..6] == ["edgemesh-agent", "2", "2", "2", "2", "2"],
        "{ds}"
    );

    let ep = c.kubectl(&["get", "ep", "nginx-svc"]).await?;
    let row = ep.lines().nth(1).context("endpoints row")?;
    let addrs: Vec<&str> = row
        .split_whitespace()
        .nth(1)
        .context("endpoints column")?
        .split(',')
        .collect();
    ensure!(
        addrs.len() == 2
            && addrs
                .iter()
                .all(|a| a.starts_with("10.244.") && a.ends_with(":80")),
        "{ep}"
    );

    let pods = pods_of(&c.client, "app=nginx").await?;
    let on_edge1: Vec<String> = pods
        .iter()
        .filter(|p| node_of(p).as_deref() == Some("edge-1"))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let describe = c.kubectl(&["describe", "node", "edge-1"]).await?;
    for want in [
        "Name:               edge-1",
        "Roles:              agent,edge",
        "Ready",
        "KubeletReady",
        "Non-terminated Pods:",
        "edgemesh-agent-",
        "Taints:             <none>",
        "Unschedulable:      false",
        "InternalIP:  192.0.2.",
    ] {
        ensure!(
            describe.contains(want),
            "describe node lacks {want:?}:\n{describe}"
        );
    }
    for p in &on_edge1 {
        ensure!(
            describe.contains(p.as_str()),
            "describe node lacks pod {p}:\n{describe}"
        );
    }
    c.stop().await
}
