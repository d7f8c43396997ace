//! The etcd store on a real three-member etcd cluster on loopback: two stores (two API
//! replicas) share it, see each other's writes in their watches, swap on etcd's revisions, keep
//! kube-apiserver's key layout, and lose no event when a member dies.
#![cfg(feature = "etcd")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use common::etcd::EtcdCluster;
use kubeedge_apiserver::{
    EtcdConfig, EtcdStore, Event, EventType, ObjectKey, Scope, Store, StoreError, Subscription,
    WriteOp,
};
use serde_json::{json, Value};

fn pod(ns: &str, name: &str, owner: Option<&str>) -> Value {
    let mut v = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "999"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    if let Some(uid) = owner {
        v["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": "rs", "uid": uid}]);
    }
    v
}

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new("core/pods", ns, name)
}

/// The next event of `sub` (backlog first), within 10 s.
async fn next(sub: &mut Subscription) -> anyhow::Result<Arc<Event>> {
    if !sub.backlog.is_empty() {
        return Ok(sub.backlog.remove(0));
    }
    Ok(
        tokio::time::timeout(Duration::from_secs(10), sub.live.recv())
            .await
            .context("no event within 10 s")??,
    )
}

async fn connect(cluster: &EtcdCluster) -> anyhow::Result<EtcdStore> {
    Ok(EtcdStore::connect(EtcdConfig::new(cluster.endpoints())).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_cluster() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start(3).await?;
    let a = connect(&cluster).await?;
    let b = connect(&cluster).await?;
    let mut watch_b = b.subscribe(Some(b.revision()))?;

    // A creates; B's watch sees it at the same revision, and B reads it.
    let created = a
        .write(WriteOp::Create {
            key: key("default", "web"),
            value: pod("default", "web", Some("rs-uid")),
        })
        .await?;
    let seen = next(&mut watch_b).await?;
    ensure!(seen.kind == EventType::Added && seen.object.rv == created.object.rv);
    ensure!(seen.object.key == key("default", "web"));
    let got = b
        .get(key("default", "web"))
        .await?
        .context("B cannot read A's pod")?;
    ensure!(got.rv == created.object.rv);
    let rv = created.object.rv.to_string();
    ensure!(got.value()?["metadata"]["resourceVersion"] == rv.as_str());

    // Creating again is AlreadyExists on either replica.
    let again = b
        .write(WriteOp::Create {
            key: key("default", "web"),
            value: pod("default", "web", None),
        })
        .await;
    ensure!(
        matches!(again, Err(StoreError::AlreadyExists(_))),
        "{again:?}"
    );

    // Compare-and-swap on etcd's revision: B wins, A's stale swap is a Conflict.
    let mut v = pod("default", "web", None);
    v["metadata"]["labels"] = json!({"by": "b"});
    let updated = b
        .write(WriteOp::Update {
            key: key("default", "web"),
            value: v.clone(),
            expected_rv: Some(created.object.rv),
        })
        .await?;
    ensure!(updated.object.rv > created.object.rv);
    let stale = a
        .write(WriteOp::Update {
            key: key("default", "web"),
            value: v,
            expected_rv: Some(created.object.rv),
        })
        .await;
    ensure!(
        matches!(stale, Err(StoreError::Conflict { actual, .. }) if actual == updated.object.rv),
        "{stale:?}"
    );
    let seen = next(&mut watch_b).await?;
    ensure!(seen.kind == EventType::Modified && seen.object.rv == updated.object.rv);
    ensure!(seen.prev.as_ref().map(|p| p.rv) == Some(created.object.rv));

    // The owner index follows the update (the owner reference was dropped).
    ensure!(a.dependents("rs-uid".into()).await?.is_empty());
    a.write(WriteOp::Create {
        key: key("kube-system", "dns"),
        value: pod("kube-system", "dns", Some("rs-uid")),
    })
    .await?;
    ensure!(b.dependents("rs-uid".into()).await? == [key("kube-system", "dns")]);

    // kube-apiserver's layout, readable with etcdctl, with no resourceVersion inside.
    let raw = cluster
        .etcdctl(&["get", "/registry/pods/default/web", "--print-value-only"])
        .await?;
    let stored: Value = serde_json::from_str(raw.trim())?;
    ensure!(stored["metadata"]["labels"]["by"] == "b", "{raw}");
    ensure!(stored["metadata"].get("resourceVersion").is_none(), "{raw}");

    // Lists: every namespace in key order, one namespace, and pages.
    for name in ["a", "b", "c"] {
        a.write(WriteOp::Create {
            key: key("default", name),
            value: pod("default", name, None),
        })
        .await?;
    }
    let all = b
        .list(
            Scope {
                resource: "core/pods".into(),
                namespace: None,
            },
            None,
            None,
        )
        .await?;
    let names: Vec<_> = all.items.iter().map(|s| s.key.name.as_str()).collect();
    ensure!(names == ["a", "b", "c", "web", "dns"], "{names:?}");
    let scope = Scope {
        resource: "core/pods".into(),
        namespace: Some("default".into()),
    };
    let first = b.list(scope.clone(), None, Some(2)).await?;
    ensure!(first.items.len() == 2 && first.more_after == Some(("default".into(), "b".into())));
    let rest = b.list(scope, first.more_after, Some(2)).await?;
    let names: Vec<_> = rest.items.iter().map(|s| s.key.name.as_str()).collect();
    ensure!(
        names == ["c", "web"] && rest.more_after.is_none(),
        "{names:?}"
    );

    // Delete with a stale precondition fails; then B's watch sees A's delete.
    let gone = a
        .write(WriteOp::Delete {
            key: key("default", "web"),
            expected_rv: Some(created.object.rv),
        })
        .await;
    ensure!(matches!(gone, Err(StoreError::Conflict { .. })), "{gone:?}");
    let deleted = a
        .write(WriteOp::Delete {
            key: key("default", "web"),
            expected_rv: None,
        })
        .await?;
    let mut last = next(&mut watch_b).await?;
    while last.kind != EventType::Deleted {
        last = next(&mut watch_b).await?;
    }
    ensure!(
        last.object.rv == deleted.object.rv
            && last.object.value()?["metadata"]["labels"]["by"] == "b"
    );
    ensure!(b.get(key("default", "web")).await?.is_none());
    let missing = b
        .write(WriteOp::Delete {
            key: key("default", "web"),
            expected_rv: None,
        })
        .await;
    ensure!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );

    // A replica that starts now has no window before its start: a resume from before it is
    // Gone (410 to the API's client, who relists).
    let c = connect(&cluster).await?;
    let old = c.subscribe(Some(created.object.rv));
    ensure!(matches!(old, Err(StoreError::Gone { .. })), "{old:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_loses_no_write_and_no_event() -> anyhow::Result<()> {
    let mut cluster = EtcdCluster::start(3).await?;
    let outcome = write_through_a_member_death(&mut cluster).await;
    // Should it fail, the members' own account says why (an election, a disk, a port).
    outcome.with_context(|| cluster.log_tails(15))
}

async fn write_through_a_member_death(cluster: &mut EtcdCluster) -> anyhow::Result<()> {
    let store = connect(cluster).await?;
    let mut watch = store.subscribe(Some(store.revision()))?;
    let mut revisions = Vec::new();
    let mut failures = 0;
    for i in 0..60 {
        if i == 20 {
            cluster.kill(0).await?;
        }
        if i == 40 {
            cluster.restart(0).await?;
        }
        let name = format!("p{i}");
        // A write in flight when the member died may fail; the caller retries, as the API's
        // clients do on a 500. Nothing is half-written: the retry is a clean create.
        let deadline = Instant::now() + Duration::from_secs(30);
        let ev = loop {
            match store
                .write(WriteOp::Create {
                    key: key("default", &name),
                    value: pod("default", &name, None),
                })
                .await
            {
                Ok(ev) => break ev,
                Err(StoreError::AlreadyExists(_)) => {
                    let got = store.get(key("default", &name)).await?.context("lost")?;
                    break Arc::new(Event {
                        kind: EventType::Added,
                        object: got,
                        prev: None,
                    });
                }
                Err(e) if Instant::now() < deadline => {
                    failures += 1;
                    eprintln!("write p{i} failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).context(format!("write p{i} failed for 30 s")),
            }
        };
        revisions.push(ev.object.rv);
    }
    let mut seen = Vec::new();
    while seen.len() < revisions.len() {
        let ev = next(&mut watch).await?;
        ensure!(ev.kind == EventType::Added);
        seen.push(ev.object.rv);
    }
    ensure!(seen == revisions, "{seen:?} != {revisions:?}");
    // Only a write in flight on the member as it died may fail (the store retries, on another
    // member, what never reached one): the API's clients do not see a dead member.
    ensure!(
        failures <= 2,
        "{failures} writes failed around a member's death"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_revisions_are_compacted_as_kube_apiserver_compacts() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let mut config = EtcdConfig::new(cluster.endpoints());
    config.compaction_interval = Some(Duration::from_millis(100));
    let store = EtcdStore::connect(config).await?;
    let first = store
        .write(WriteOp::Create {
            key: key("default", "x"),
            value: pod("default", "x", None),
        })
        .await?;
    store
        .write(WriteOp::Update {
            key: key("default", "x"),
            value: pod("default", "x", None),
            expected_rv: None,
        })
        .await?;
    let rev = format!("--rev={}", first.object.rv);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match cluster
            .etcdctl(&["get", "/registry/pods/default/x", &rev])
            .await
        {
            Err(e) if e.to_string().contains("compacted") => break,
            _ if tokio::time::Instant::now() > deadline => anyhow::bail!("never compacted"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    // The newest state is intact.
    ensure!(store.get(key("default", "x")).await?.is_some());
    Ok(())
}

/// `GET uri` on `svc` as the user `alice` (in-process impersonation): the status code.
async fn as_alice(
    svc: &kubeedge_apiserver::ApiService<EtcdStore>,
    uri: &str,
) -> anyhow::Result<u16> {
    use tower::ServiceExt as _;
    let req = http::Request::get(uri)
        .header("Impersonate-User", "alice")
        .body(http_body_util::Full::new(bytes::Bytes::new()))?;
    Ok(svc.clone().oneshot(req).await?.status().as_u16())
}

/// `POST uri` of `body` on `svc` as an in-process admin: the status code.
async fn post(
    svc: &kubeedge_apiserver::ApiService<EtcdStore>,
    uri: &str,
    body: serde_json::Value,
) -> anyhow::Result<u16> {
    Ok(post_answer(svc, uri, body).await?.0)
}

/// `POST uri` of `body` on `svc` as an in-process admin: the status code and the answer.
async fn post_answer(
    svc: &kubeedge_apiserver::ApiService<EtcdStore>,
    uri: &str,
    body: serde_json::Value,
) -> anyhow::Result<(u16, String)> {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let req = http::Request::post(uri)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))?;
    let resp = svc.clone().oneshot(req).await?;
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

/// Waits (10 s at most) until `f` gives `want`.
async fn until<F, Fut>(what: &str, want: u16, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u16>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = f().await?;
        if got == want {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_follows_rbac_and_crds_written_through_another() -> anyhow::Result<()> {
    use kubeedge_apiserver::{ApiConfig, ApiService};
    let cluster = EtcdCluster::start(1).await?;
    let a = ApiService::new(connect(&cluster).await?, ApiConfig::default()).await?;
    let b = ApiService::new(connect(&cluster).await?, ApiConfig::default()).await?;
    let cms = "/api/v1/namespaces/default/configmaps";
    anyhow::ensure!(as_alice(&b, cms).await? == 403);

    // A binds alice to `view`; B decides with the new binding.
    let code = post(&a, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "alice-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]
    })).await?;
    anyhow::ensure!(code == 201, "{code}");
    until("alice on B", 200, || as_alice(&b, cms)).await?;

    // A defines a CRD; B serves its resource.
    let code = post(&a, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    })).await?;
    anyhow::ensure!(code == 201, "{code}");
    let widgets = "/apis/example.com/v1/namespaces/default/widgets";
    until("widgets on B", 200, || async {
        use tower::ServiceExt as _;
        let req =
            http::Request::get(widgets).body(http_body_util::Full::new(bytes::Bytes::new()))?;
        Ok(b.clone().oneshot(req).await?.status().as_u16())
    })
    .await?;
    Ok(())
}

/// Quorum lost (two of three members killed): the API answers 503 (retryable, as for any
/// storage outage), not 500, and nothing it answered is lost; with a member back, writes go
/// through again and the earlier objects are intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_503_while_etcd_has_no_quorum() -> anyhow::Result<()> {
    use kubeedge_apiserver::{ApiConfig, ApiService};
    let mut cluster = EtcdCluster::start(3).await?;
    let store = connect(&cluster).await?;
    let svc = ApiService::new(store.clone(), ApiConfig::default()).await?;
    let cm =
        |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    let uri = "/api/v1/namespaces/default/configmaps";
    ensure!(post(&svc, uri, cm("before")).await? == 201);

    cluster.kill(1).await?;
    cluster.kill(2).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    let (code, answer) = loop {
        n += 1;
        let (code, answer) = tokio::time::timeout(
            Duration::from_secs(30),
            post_answer(&svc, uri, cm(&format!("during-{n}"))),
        )
        .await
        .context("a write without quorum hung")??;
        // A write may still land while the last member has not yet noticed it is alone.
        if code != 201 || tokio::time::Instant::now() > deadline {
            break (code, answer);
        }
    };
    ensure!(
        code == 503 && answer.contains("ServiceUnavailable"),
        "a write without quorum: {code} {answer}"
    );

    cluster.restart(1).await?;
    // Quorum is back once the two members elect a leader: writes go through again (409 when
    // an earlier try landed).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let code = post(&svc, uri, cm("after")).await?;
        if code == 201 || code == 409 {
            break;
        }
        ensure!(code == 503, "a write while quorum comes back: {code}");
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no write after quorum came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What was written before the outage is intact (read through the API: a request that
    // meets the still-dead member is answered 503 and retried, as a client would).
    until("the object from before", 200, || async {
        use tower::ServiceExt as _;
        let req = http::Request::get("/api/v1/namespaces/default/configmaps/before")
            .body(http_body_util::Full::new(bytes::Bytes::new()))?;
        Ok(svc.clone().oneshot(req).await?.status().as_u16())
    })
    .await?;
    Ok(())
}

/// A cluster that serves clients only over TLS with a client certificate (kube-apiserver's
/// `--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`): refused without the certificate,
/// served with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reaches_etcd_over_tls_with_a_client_certificate() -> anyhow::Result<()> {
    use kubeedge_apiserver::EtcdTls;
    let cluster = EtcdCluster::start_tls(1).await?;
    let (ca, cert, key_pem) = cluster.client_tls().context("tls material")?;
    ensure!(cluster
        .endpoints()
        .iter()
        .all(|e| e.starts_with("https://")));

    let mut config = EtcdConfig::new(cluster.endpoints());
    config.tls = Some(EtcdTls::new(ca.clone()));
    let refused = tokio::time::timeout(Duration::from_secs(30), EtcdStore::connect(config)).await;
    ensure!(
        !matches!(refused, Ok(Ok(_))),
        "connected without a client certificate"
    );

    let mut config = EtcdConfig::new(cluster.endpoints());
    config.tls = Some(EtcdTls::new(ca).with_client(cert, key_pem));
    let store = EtcdStore::connect(config).await?;
    store
        .write(WriteOp::Create {
            key: key("default", "over-tls"),
            value: pod("default", "over-tls", None),
        })
        .await?;
    ensure!(store.get(key("default", "over-tls")).await?.is_some());
    let keys = cluster
        .etcdctl(&["get", "--prefix", "--keys-only", "/registry/pods/default/"])
        .await?;
    ensure!(keys.contains("/registry/pods/default/over-tls"), "{keys}");
    Ok(())
}

/// A list larger than one gRPC answer (4 MiB) is read in chunks at one revision: every object
/// comes back, whole and paged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_larger_than_one_grpc_answer_comes_back_whole() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let store = connect(&cluster).await?;
    let blob = "x".repeat(100 * 1024);
    for i in 0..60 {
        let name = format!("big-{i:02}");
        store
            .write(WriteOp::Create {
                key: ObjectKey::new("core/configmaps", "default", name.clone()),
                value: json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": "default"}, "data": {"blob": blob}}),
            })
            .await?;
    }
    let scope = Scope {
        resource: "core/configmaps".into(),
        namespace: Some("default".into()),
    };
    let all = store.list(scope.clone(), None, None).await?;
    ensure!(all.items.len() == 60, "{} of 60", all.items.len());
    let page = store.list(scope, None, Some(50)).await?;
    ensure!(page.items.len() == 50, "a page of {}", page.items.len());
    Ok(())
}
