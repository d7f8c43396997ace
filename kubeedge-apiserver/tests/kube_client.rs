//! kube-rs drives the server unchanged: over HTTPS and in-process (`kube::Client::new(service)`).

mod common;

use std::time::Duration;

use anyhow::{ensure, Context as _};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::Client;
use kubeedge_apiserver::SqliteConfig;
use serde_json::json;

fn cm(name: &str, parity: &str) -> anyhow::Result<ConfigMap> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"parity": parity}},
        "data": {"k": name},
    }))?)
}

async fn next_event(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin),
) -> anyhow::Result<WatchEvent<ConfigMap>> {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .context("no watch event within 10 s")??
            .context("watch ended")?;
        if !matches!(ev, WatchEvent::Bookmark(_)) {
            return Ok(ev);
        }
    }
}

fn name_of(ev: &WatchEvent<ConfigMap>) -> String {
    match ev {
        WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
            o.metadata.name.clone().unwrap_or_default()
        }
        other => format!("{other:?}"),
    }
}

async fn list_and_select(client: &Client) -> anyhow::Result<()> {
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for i in 0..5 {
        let parity = if i % 2 == 0 { "even" } else { "odd" };
        cms.create(&PostParams::default(), &cm(&format!("cm-{i}"), parity)?)
            .await?;
    }
    let p1 = cms.list(&ListParams::default().limit(2)).await?;
    ensure!(p1.items.len() == 2, "page 1: {}", p1.items.len());
    let token = p1.metadata.continue_.clone().context("continue token")?;
    let p2 = cms
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await?;
    ensure!(
        p2.items.len() == 3 && p2.metadata.continue_.is_none(),
        "page 2: {}",
        p2.items.len()
    );
    for (sel, want) in [
        ("parity=even", 3),
        ("parity!=even", 2),
        ("parity in (odd)", 2),
        ("parity notin (odd,even)", 0),
        ("parity", 5),
        ("!parity", 0),
    ] {
        let got = cms
            .list(&ListParams::default().labels(sel))
            .await?
            .items
            .len();
        ensure!(got == want, "{sel}: {got} != {want}");
    }
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=cm-3"))
        .await?;
    ensure!(by_name.items.len() == 1, "field selector");
    Ok(())
}

async fn watch_and_resume(client: &Client) -> anyhow::Result<()> {
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let rv0 = cms
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .context("rv")?;
    let mut stream = cms
        .watch(&WatchParams::default().timeout(20), &rv0)
        .await?
        .boxed();
    let created = cms.create(&PostParams::default(), &cm("w", "odd")?).await?;
    let rv_created = created.metadata.resource_version.clone().context("rv")?;
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "1"}})),
    )
    .await?;
    cms.delete("w", &Default::default()).await?;
    let evs = [
        next_event(&mut stream).await?,
        next_event(&mut stream).await?,
        next_event(&mut stream).await?,
    ];
    ensure!(
        matches!(evs[0], WatchEvent::Added(_))
            && matches!(evs[1], WatchEvent::Modified(_))
            && matches!(evs[2], WatchEvent::Deleted(_)),
        "{evs:?}"
    );
    ensure!(evs.iter().all(|e| name_of(e) == "w"), "{evs:?}");
    drop(stream);
    // Resume from the creation: the modification and the deletion are replayed.
    let mut resumed = cms
        .watch(&WatchParams::default().timeout(20), &rv_created)
        .await?
        .boxed();
    let a = next_event(&mut resumed).await?;
    let b = next_event(&mut resumed).await?;
    ensure!(
        matches!(a, WatchEvent::Modified(_)) && matches!(b, WatchEvent::Deleted(_)),
        "{a:?} {b:?}"
    );
    // A label-selected watch sees an object leave the selection as DELETED.
    let rv1 = cms
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .context("rv")?;
    let mut sel = cms
        .watch(
            &WatchParams::default().labels("parity=even").timeout(20),
            &rv1,
        )
        .await?
        .boxed();
    cms.patch(
        "cm-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"parity": "odd"}}})),
    )
    .await?;
    let ev = next_event(&mut sel).await?;
    ensure!(
        matches!(ev, WatchEvent::Deleted(_)) && name_of(&ev) == "cm-0",
        "{ev:?}"
    );
    Ok(())
}

async fn gone(client: &Client) -> anyhow::Result<()> {
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for i in 0..20 {
        cms.create(&PostParams::default(), &cm(&format!("g-{i}"), "odd")?)
            .await?;
    }
    let mut stream = cms
        .watch(&WatchParams::default().timeout(10), "1")
        .await?
        .boxed();
    match next_event(&mut stream).await? {
        WatchEvent::Error(e) => ensure!(e.code == 410, "{e:?}"),
        other => anyhow::bail!("expected 410 Gone, got {other:?}"),
    }
    Ok(())
}

async fn patches_and_status(client: &Client) -> anyhow::Result<()> {
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80}]},
                {"name": "side", "image": "side:1"}]}}}
    }))?;
    deploys.create(&PostParams::default(), &d).await?;
    let pp = PatchParams::default();
    // Strategic: containers merge by name, env merges by name.
    let p = deploys
        .patch(
            "web",
            &pp,
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "B", "value": "2"}]}]}}}})),
        )
        .await?;
    let spec = p.spec.context("spec")?.template.spec.context("pod spec")?;
    ensure!(
        spec.containers.len() == 2,
        "strategic merge kept both containers"
    );
    let env: Vec<_> = spec.containers[0]
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.name)
        .collect();
    ensure!(env == ["A", "B"], "{env:?}");
    // Merge: a list is replaced wholesale.
    let p = deploys
        .patch("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 4}})))
        .await?;
    ensure!(p.spec.as_ref().and_then(|s| s.replicas) == Some(4), "merge");
    // JSON patch.
    let p = deploys
        .patch(
            "web",
            &pp,
            &Patch::<()>::Json(serde_json::from_value::<json_patch::Patch>(json!([
        {"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "side:2"},
        {"op": "add", "path": "/metadata/labels/patched", "value": "yes"}]))?),
        )
        .await?;
    ensure!(
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("patched"))
            .map(String::as_str)
            == Some("yes"),
        "json patch"
    );
    // A failing test op is 422.
    let bad = deploys
        .patch(
            "web",
            &pp,
            &Patch::<()>::Json(serde_json::from_value::<json_patch::Patch>(
                json!([{"op": "test", "path": "/spec/replicas", "value": 9}]),
            )?),
        )
        .await;
    ensure!(
        matches!(&bad, Err(kube::Error::Api(s)) if s.code == 422),
        "{bad:?}"
    );
    // Status: only the status subresource writes status.
    let s = deploys
        .patch_status(
            "web",
            &pp,
            &Patch::Merge(
                json!({"status": {"replicas": 4, "readyReplicas": 3}, "spec": {"replicas": 1}}),
            ),
        )
        .await?;
    ensure!(
        s.status.as_ref().and_then(|s| s.ready_replicas) == Some(3),
        "status written"
    );
    ensure!(
        s.spec.as_ref().and_then(|s| s.replicas) == Some(4),
        "spec untouched by a status write"
    );
    let m = deploys
        .patch(
            "web",
            &pp,
            &Patch::Merge(json!({"status": {"readyReplicas": 0}})),
        )
        .await?;
    ensure!(
        m.status.as_ref().and_then(|s| s.ready_replicas) == Some(3),
        "status untouched by a main write"
    );
    // Scale subresource.
    let sc = deploys.get_scale("web").await?;
    ensure!(
        sc.spec.as_ref().and_then(|s| s.replicas) == Some(4),
        "scale get"
    );
    deploys
        .patch_scale("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 7}})))
        .await?;
    ensure!(
        deploys.get("web").await?.spec.and_then(|s| s.replicas) == Some(7),
        "scale patch"
    );
    // Stale update: 409.
    let mut stale = deploys.get("web").await?;
    deploys
        .patch(
            "web",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"bump": "1"}}})),
        )
        .await?;
    stale
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("x".into(), "y".into());
    let conflict = deploys.replace("web", &PostParams::default(), &stale).await;
    ensure!(
        matches!(&conflict, Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "Conflict"),
        "{conflict:?}"
    );
    Ok(())
}

fn small_history() -> SqliteConfig {
    let mut c = SqliteConfig::default();
    c.history = 5;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_over_https() -> anyhow::Result<()> {
    let srv = common::TestServer::start_full(Default::default(), small_history()).await?;
    let client = srv.client().await?;
    list_and_select(&client).await?;
    watch_and_resume(&client).await?;
    patches_and_status(&client).await?;
    gone(&client).await?;
    // Token authentication works too.
    let token_client = common::client_from(&srv.token_kubeconfig).await?;
    Api::<ConfigMap>::default_namespaced(token_client)
        .list(&ListParams::default())
        .await?;
    srv.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_in_process() -> anyhow::Result<()> {
    let (_dir, _svc, client) = common::in_process(small_history()).await?;
    list_and_select(&client).await?;
    watch_and_resume(&client).await?;
    patches_and_status(&client).await?;
    gone(&client).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_over_plain_http_on_loopback() -> anyhow::Result<()> {
    let (_dir, store) = common::store(SqliteConfig::default()).await?;
    let service = kubeedge_apiserver::ApiService::new(store, Default::default()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kubeedge_apiserver::serve_insecure(
        listener,
        service,
        async {
            let _ = stopped.await;
        },
    ));
    let client = Client::try_from(kube::Config::new(url.parse()?))?;
    list_and_select(&client).await?;
    watch_and_resume(&client).await?;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server).await???;
    Ok(())
}

async fn start_https(
    dir: &std::path::Path,
) -> anyhow::Result<(
    std::net::SocketAddr,
    kubeedge_apiserver::Pki,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
)> {
    let store = kubeedge_apiserver::SqliteStore::open(dir.join("state.db"))?;
    let service = kubeedge_apiserver::ApiService::new(store, Default::default()).await?;
    let pki = kubeedge_apiserver::Pki::load_or_generate(&dir.join("pki"), &[])?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let tls = pki.server_tls()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = kubeedge_apiserver::serve(listener, service, tls, Default::default(), async {
            let _ = stopped.await;
        })
        .await;
    });
    Ok((addr, pki, stop, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_ca_and_state_survive_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (addr, pki, stop, task) = start_https(dir.path()).await?;
    let admin = pki.issue_client_cert("admin", Some("system:masters"))?;
    let kc = dir.path().join("admin.kubeconfig");
    kubeedge_apiserver::write_kubeconfig(
        &kc,
        &format!("https://{addr}"),
        &pki.ca_pem(),
        Some(&admin),
        None,
    )?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for f in [kc.clone(), dir.path().join("pki/ca.key")] {
            let mode = std::fs::metadata(&f)?.permissions().mode() & 0o777;
            ensure!(mode == 0o600, "{} has mode {mode:o}", f.display());
        }
    }
    let cms: Api<ConfigMap> = Api::default_namespaced(common::client_from(&kc).await?);
    cms.create(&PostParams::default(), &cm("kept", "odd")?)
        .await?;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), task).await??;
    drop(cms);

    // Same directory: same CA, so the old client certificate still authenticates.
    let (addr2, pki2, stop2, task2) = start_https(dir.path()).await?;
    ensure!(pki2.ca_pem() == pki.ca_pem(), "CA reloaded");
    kubeedge_apiserver::write_kubeconfig(
        &kc,
        &format!("https://{addr2}"),
        &pki2.ca_pem(),
        Some(&admin),
        None,
    )?;
    let cms: Api<ConfigMap> = Api::default_namespaced(common::client_from(&kc).await?);
    ensure!(cms.get("kept").await?.data.is_some(), "state kept");
    let _ = stop2.send(());
    tokio::time::timeout(Duration::from_secs(10), task2).await??;
    Ok(())
}
