//! Glue between the hub and the event bus / device twin: uploads of non-twin topics, connect
//! events for the twin, and the twin's reports (sent as requests while online, kept in the
//! durable upstream outbox while the cloud is away or does not answer).

use std::sync::Arc;
use std::time::Duration;

use kubeedge_proto::{Content, Group, Message, Operation, Route, Source};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::hub::{self, ConnectionState};
use crate::meta::MetaManager;

/// How long a best-effort upstream message may wait for room in the hub queue.
const SEND_WAIT: Duration = Duration::from_secs(2);
/// How long a report waits for the cloud's answer before it goes to the outbox.
const REPORT_WAIT: Duration = Duration::from_secs(10);

async fn next<T>(rx: &mut mpsc::Receiver<T>, cancel: &CancellationToken) -> Option<T> {
    tokio::select! {
        _ = cancel.cancelled() => None,
        m = rx.recv() => m,
    }
}

async fn send_best_effort(client: &hub::Client, msg: Message) {
    let resource = msg.route.resource.clone();
    match tokio::time::timeout(SEND_WAIT, client.send(msg)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(resource = %resource, error = %e, "upstream message dropped"),
        Err(_) => debug!(resource = %resource, "hub queue full: upstream message dropped"),
    }
}

/// Event bus uploads (non-twin topics) to the cloud, best effort (each waits a bounded time
/// for room in the hub's queue), until `rx` closes or `cancel` fires.
pub async fn uploads(
    mut rx: mpsc::Receiver<Message>,
    client: hub::Client,
    cancel: CancellationToken,
) {
    while let Some(msg) = next(&mut rx, &cancel).await {
        send_best_effort(&client, msg).await;
    }
}

/// The node-connection event modules get when the cloud link comes up.
pub fn connected_event() -> Message {
    Message::new(
        Route::new(
            Source::EdgeHub,
            Group::Twin,
            Operation::Connect,
            "node/connection",
        ),
        Content::string("cloud_connected"),
    )
}

/// Tell the twin each time the link comes up (it then asks for the membership detail).
pub async fn connect_events(
    client: hub::Client,
    twin: mpsc::Sender<Message>,
    cancel: CancellationToken,
) {
    let mut state = client.state();
    let mut seen = 0;
    loop {
        let now = *state.borrow_and_update();
        if let ConnectionState::Connected(n) = now {
            if n != seen {
                seen = n;
                if twin.send(connected_event()).await.is_err() {
                    return;
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = state.changed() => if r.is_err() { return },
        }
    }
}

fn is_report(msg: &Message) -> bool {
    msg.route.resource.ends_with("/twin/edge_updated")
}

/// The twin's cloud-bound messages: reports (`…/twin/edge_updated`) are sent as requests
/// (at most 256 in flight, tracked by `tracker`) and put in `meta`'s durable upstream outbox
/// when the cloud does not answer; everything else is sent best effort.
pub async fn twin_reports(
    mut rx: mpsc::Receiver<Message>,
    client: hub::Client,
    meta: MetaManager,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let in_flight = Arc::new(Semaphore::new(256));
    while let Some(msg) = next(&mut rx, &cancel).await {
        if !is_report(&msg) {
            send_best_effort(&client, msg).await;
            continue;
        }
        let online = matches!(*client.state().borrow(), ConnectionState::Connected(_));
        if !online {
            if let Err(e) = meta.report(msg).await {
                warn!(error = %e, "cannot keep a device report for later");
            }
            continue;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let (client, meta) = (client.clone(), meta.clone());
        tracker.spawn(async move {
            let _permit = permit;
            if let Err(e) = client.request(msg.clone(), REPORT_WAIT).await {
                debug!(resource = %msg.route.resource, error = %e, "report not answered: kept in the outbox");
                if let Err(e) = meta.report(msg).await {
                    warn!(error = %e, "cannot keep a device report for later");
                }
            }
        });
    }
}
