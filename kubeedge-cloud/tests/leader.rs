//! Leader election on a Lease in the real (in-process) API server, with short timings: one
//! replica leads at a time, renews without flapping, and a leader that stops hands over at once
//! by releasing its lease.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Result};
use common::{controlled::api, eventually};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kubeedge_cloud::leader::LeaderElection;
use tokio_util::sync::CancellationToken;

fn election(id: &str) -> LeaderElection {
    let mut e = LeaderElection::new("kubeedge", "cloudcore", id);
    e.lease_duration = Duration::from_millis(1500);
    e.renew_deadline = Duration::from_millis(1000);
    e.retry_period = Duration::from_millis(100);
    e
}

/// Who runs the duty right now, and how many times each started it.
#[derive(Default)]
struct Duties {
    running: Mutex<Vec<String>>,
    started: AtomicUsize,
}

fn spawn(client: &kube::Client, id: &str, duties: &Arc<Duties>) -> CancellationToken {
    let cancel = CancellationToken::new();
    let (d, who) = (Arc::clone(duties), id.to_owned());
    let duty = move |lead: CancellationToken| {
        let (d, who) = (Arc::clone(&d), who.clone());
        async move {
            d.started.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut r) = d.running.lock() {
                r.push(who.clone());
            }
            lead.cancelled().await;
            if let Ok(mut r) = d.running.lock() {
                r.retain(|w| *w != who);
            }
        }
    };
    tokio::spawn(election(id).run(client.clone(), cancel.clone(), duty));
    cancel
}

fn running(d: &Duties) -> Vec<String> {
    d.running.lock().map(|r| r.clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_renews_and_hands_over_on_release() -> Result<()> {
    let (_dir, client) = api().await?;
    common::controlled::namespace(&client, "kubeedge").await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kubeedge");
    let duties = Arc::new(Duties::default());
    let a = spawn(&client, "a", &duties);
    eventually("a leads", || running(&duties) == ["a"]).await?;
    let b = spawn(&client, "b", &duties);

    // The leader renews: the renew time moves on three times, with no transition and no
    // second leader.
    let mut renewals = Vec::new();
    while renewals.len() < 3 {
        let l = leases.get("cloudcore").await?;
        let spec = l.spec.unwrap_or_default();
        ensure!(spec.holder_identity.as_deref() == Some("a"));
        ensure!(spec.lease_transitions == Some(0));
        let t = spec.renew_time.map(|t| t.0);
        if renewals.last() != Some(&t) {
            renewals.push(t);
        }
        ensure!(running(&duties) == ["a"], "{:?}", running(&duties));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A stops: it releases the lease, and B leads well before A's lease would have run out.
    let stopped = tokio::time::Instant::now();
    a.cancel();
    eventually("b leads", || running(&duties) == ["b"]).await?;
    ensure!(
        stopped.elapsed() < Duration::from_millis(1500),
        "{:?}",
        stopped.elapsed()
    );
    let spec = leases.get("cloudcore").await?.spec.unwrap_or_default();
    ensure!(spec.holder_identity.as_deref() == Some("b"));
    ensure!(spec.lease_transitions == Some(1));
    ensure!(duties.started.load(Ordering::SeqCst) == 2);

    // The last leader stops: nobody leads, and the lease is free.
    b.cancel();
    eventually("nobody leads", || running(&duties).is_empty()).await?;
    let mut free = false;
    for _ in 0..100 {
        let spec = leases.get("cloudcore").await?.spec.unwrap_or_default();
        if spec.holder_identity.is_none() {
            free = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(free, "the lease was not released");
    Ok(())
}
