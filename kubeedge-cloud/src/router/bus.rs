//! `eventbus → rest` Rules, as upstream's router runs them: the Rule's node is asked to
//! subscribe to `<namespace>/<topic>` on its MQTT broker (a `subscribe` from
//! `router_eventbus`, which upstream edges keep in their `sub_topics`); what an app publishes
//! there comes up as a `bus`/`upload` message, and is POSTed to the Rule's REST endpoint
//! (`targetResource.resource`) with the header `NodeName`, counted in the Rule's status.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use kubeedge_proto::{Content, Group, Message, Operation, Route, Source};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{rules, Router};

/// `(node, topic)` pairs a namespace's Rules subscribe to.
type Subscriptions = BTreeSet<(String, String)>;

impl Router {
    /// Whether `msg` is an app's publish that `eventbus` Rules may take.
    pub fn takes(msg: &Message) -> bool {
        msg.route.source == Some(Source::Bus)
            && msg.route.group == Some(Group::User)
            && msg.route.is_operation(&Operation::Upload)
    }

    /// Hands the publish `msg` from `node` to the REST endpoints of the matching Rules.
    pub async fn upload(&self, node: &str, msg: Message) {
        // `<namespace>/<topic>`, as the subscription named it.
        let resource = msg.route.resource.clone();
        let resource = resource
            .strip_prefix(&format!("node/{node}/"))
            .unwrap_or(&resource);
        let Some((ns, topic)) = resource.split_once('/') else {
            debug!(%node, %resource, "bus upload without a namespace: dropped");
            return;
        };
        let Ok(all) = rules::load(&self.inner.client, ns).await else {
            return;
        };
        let body = Bytes::from(msg.content.bytes().into_owned());
        for rule in all.iter().filter(|r| {
            r.source.kind == "eventbus"
                && r.source_resource.get("topic").map(String::as_str) == Some(topic)
                && r.source_resource.get("node_name").map(String::as_str) == Some(node)
        }) {
            let result = match (
                rule.target.as_ref().map(|t| t.kind.as_str()),
                rule.target_resource.get("resource"),
            ) {
                (Some("rest"), Some(url)) => self.post(url, node, body.clone()).await,
                (Some(kind), _) => Err(format!(
                    "rule {:?}: an eventbus source cannot go to a {kind:?} target",
                    rule.name
                )),
                (None, _) => Err(format!(
                    "rule {:?}: its target RuleEndpoint {:?} does not exist",
                    rule.name, rule.target_name
                )),
            };
            if let Err(e) = &result {
                debug!(rule = %rule.name, error = %e, "eventbus to rest failed");
            }
            self.count(rule, result);
        }
    }

    /// POSTs `body` to `url` (plain HTTP) within `restTimeout`.
    async fn post(&self, url: &str, node: &str, body: Bytes) -> Result<(), String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("bad resource {url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("{url:?}: only http:// REST targets are served"));
        }
        let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?;
        let addr = format!("{host}:{}", uri.port_u16().unwrap_or(80));
        let req = http::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(http::header::HOST, addr.as_str())
            .header("NodeName", node)
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let call = async {
            let tcp = tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("{url}: {status}"))
            }
        };
        tokio::time::timeout(self.inner.config.rest_timeout, call)
            .await
            .unwrap_or_else(|_| Err(format!("{url}: no answer within restTimeout")))
    }

    /// Keeps each `eventbus` Rule's node subscribed to its topic, until `cancel`.
    pub async fn run_subscriptions(self, cancel: CancellationToken) {
        let api: Api<DynamicObject> =
            Api::all_with(self.inner.client.clone(), &rules::resource("Rule", "rules"));
        let events = watcher(api, watcher::Config::default());
        let mut events = std::pin::pin!(events);
        let mut sent: BTreeMap<String, Subscriptions> = BTreeMap::new();
        loop {
            let ev = tokio::select! {
                () = cancel.cancelled() => return,
                ev = events.next() => match ev {
                    Some(ev) => ev,
                    None => return,
                },
            };
            let ns = match &ev {
                Ok(
                    watcher::Event::Apply(o)
                    | watcher::Event::InitApply(o)
                    | watcher::Event::Delete(o),
                ) => o.metadata.namespace.clone().unwrap_or_default(),
                _ => continue,
            };
            let Ok(all) = rules::load(&self.inner.client, &ns).await else {
                continue;
            };
            let want: Subscriptions = all
                .iter()
                .filter(|r| r.source.kind == "eventbus")
                .filter_map(|r| {
                    Some((
                        r.source_resource.get("node_name")?.clone(),
                        format!("{ns}/{}", r.source_resource.get("topic")?),
                    ))
                })
                .collect();
            let had = sent.remove(&ns).unwrap_or_default();
            for (node, topic) in want.difference(&had) {
                self.subscription(node, topic, Operation::Subscribe).await;
            }
            for (node, topic) in had.difference(&want) {
                self.subscription(node, topic, Operation::Unsubscribe).await;
            }
            sent.insert(ns, want);
        }
    }

    async fn subscription(&self, node: &str, topic: &str, op: Operation) {
        let msg = Message::new(
            Route::new(Source::RouterEventBus, Group::User, op.clone(), topic),
            Content::string(""),
        );
        match self.inner.down.send(node, msg).await {
            Ok(_) => info!(%node, %topic, op = ?op, "eventbus rule subscription sent"),
            Err(e) => debug!(%node, %topic, error = %e, "eventbus subscription not sent"),
        }
    }
}
