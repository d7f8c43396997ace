//! Watch streams: initial events, resume from the history window, selector transitions,
//! bookmarks, timeouts, and release when the client goes away.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::body::{Step, WatchSource};
use crate::store::{Event, EventType};

pub(super) fn watch<S: Store>(inner: &Arc<Inner<S>>, t: &Target, ctx: &Ctx) -> Res {
    let filter = Filter::from(ctx)?;
    let rv = ctx
        .q("resourceVersion")
        .filter(|r| *r != "0")
        .map(parse_rv)
        .transpose()?;
    let send_initial = ctx.flag("sendInitialEvents") || rv.is_none();
    let timeout = ctx
        .q("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let sub = match inner.store.subscribe(if send_initial { None } else { rv }) {
        Ok(s) => s,
        Err(StoreError::Gone { requested, .. }) => {
            // Like upstream: 200, then one ERROR event carrying 410 Expired.
            let status = ApiError::new(
                410,
                "Expired",
                format!("too old resource version: {requested}"),
            )
            .status();
            let line = format!("{}\n", json!({"type": "ERROR", "object": status}));
            return Ok(bytes_response(200, Bytes::from(line), "application/json"));
        }
        Err(e) => return Err(store_internal(e)),
    };
    inner.watches.fetch_add(1, Ordering::SeqCst);
    let guard = WatchGuard(Arc::clone(&inner.watches));
    let state = WatchState {
        store_list: if send_initial {
            Some(Box::new(StoreLister {
                inner: Arc::clone(inner),
            }))
        } else {
            None
        },
        def: Arc::clone(&t.def),
        version: t.version.clone(),
        namespace: t.namespace.clone(),
        filter,
        table: ctx.table,
        include: ctx.include.clone(),
        bookmarks: ctx.flag("allowWatchBookmarks"),
        initial_end_marker: ctx.flag("sendInitialEvents"),
        bookmark_interval: inner.config.bookmark_interval,
        next_bookmark: Instant::now() + inner.config.bookmark_interval,
        deadline: Instant::now() + timeout,
        min_rv: rv.unwrap_or(0),
        last_rv: rv.unwrap_or(sub.rv),
        backlog: sub.backlog.into(),
        live: sub.live,
        pending: VecDeque::new(),
        done: false,
        table_header_sent: false,
        _guard: guard,
    };
    let mut r = Response::new(ResponseBody::stream(Box::new(state)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

struct WatchGuard(Arc<AtomicUsize>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        tracing::debug!("watch closed");
    }
}

/// Lists the initial state of a watch without naming the store type inside `WatchState`.
type ListFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(u64, Vec<Stored>), StoreError>> + Send + 'a>>;

trait InitialLister: Send + Sync {
    fn list(&self, scope: Scope) -> ListFuture<'_>;
}

struct StoreLister<S> {
    inner: Arc<Inner<S>>,
}

impl<S: Store> InitialLister for StoreLister<S> {
    fn list(&self, scope: Scope) -> ListFuture<'_> {
        Box::pin(async move {
            let page = self.inner.store.list(scope, None, None).await?;
            Ok((page.rv, page.items))
        })
    }
}

struct WatchState {
    store_list: Option<Box<dyn InitialLister>>,
    def: Arc<ResourceDef>,
    version: String,
    namespace: Option<String>,
    filter: Filter,
    table: bool,
    include: String,
    bookmarks: bool,
    initial_end_marker: bool,
    bookmark_interval: Duration,
    next_bookmark: Instant,
    deadline: Instant,
    /// Events at or below this revision were already covered (by the initial list or the
    /// client's own list).
    min_rv: u64,
    last_rv: u64,
    backlog: VecDeque<Arc<Event>>,
    live: broadcast::Receiver<Arc<Event>>,
    pending: VecDeque<Bytes>,
    done: bool,
    table_header_sent: bool,
    _guard: WatchGuard,
}

impl WatchState {
    fn frame(&mut self, ty: &str, obj: &Stored, parsed: Option<Value>) {
        let multi = self.def.versions.len() > 1;
        if !self.table && !multi {
            let mut b = BytesMut::with_capacity(obj.raw.len() + 32);
            b.extend_from_slice(b"{\"type\":\"");
            b.extend_from_slice(ty.as_bytes());
            b.extend_from_slice(b"\",\"object\":");
            b.extend_from_slice(&obj.raw);
            b.extend_from_slice(b"}\n");
            self.pending.push_back(b.freeze());
            return;
        }
        let v = match parsed.map(Ok).unwrap_or_else(|| obj.value()) {
            Ok(v) => v,
            Err(_) => return,
        };
        let mut v = v;
        if let Some(m) = v.as_object_mut() {
            m.insert(
                "apiVersion".into(),
                Value::String(self.def.api_version(&self.version)),
            );
        }
        let object = if self.table {
            let mut t = table::table(&self.def, &[v], &self.include, obj.rv, None);
            if self.table_header_sent {
                t["columnDefinitions"] = json!([]);
            }
            self.table_header_sent = true;
            t
        } else {
            v
        };
        let line = format!("{}\n", json!({"type": ty, "object": object}));
        self.pending.push_back(Bytes::from(line));
    }

    fn bookmark(&mut self, initial_end: bool) {
        let mut meta = json!({"resourceVersion": self.last_rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({"kind": self.def.kind, "apiVersion": self.def.api_version(&self.version), "metadata": meta});
        self.pending.push_back(Bytes::from(format!(
            "{}\n",
            json!({"type": "BOOKMARK", "object": object})
        )));
    }

    fn in_scope(&self, s: &Stored) -> bool {
        s.key.resource == self.def.store_resource()
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == s.key.namespace)
    }

    fn process(&mut self, ev: &Event) {
        if ev.object.rv <= self.min_rv {
            return;
        }
        self.last_rv = ev.object.rv;
        if !self.in_scope(&ev.object) {
            return;
        }
        if self.filter.is_empty() {
            self.frame(ev.kind.as_str(), &ev.object, None);
            return;
        }
        let Ok(now) = ev.object.value() else { return };
        let was = ev
            .prev
            .as_ref()
            .and_then(|p| p.value().ok())
            .is_some_and(|p| self.filter.matches(&p));
        let is = self.filter.matches(&now);
        let ty = match (ev.kind, was, is) {
            (EventType::Deleted, true, _) => "DELETED",
            (EventType::Deleted, false, _) => return,
            (_, false, true) => "ADDED",
            (EventType::Added, _, true) | (EventType::Modified, true, true) => ev.kind.as_str(),
            (_, true, false) => "DELETED",
            _ => return,
        };
        self.frame(ty, &ev.object, Some(now));
    }

    async fn step(mut self: Box<Self>) -> Option<(Bytes, Box<dyn WatchSource>)> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some((b, self));
            }
            if self.done {
                return None;
            }
            if let Some(lister) = self.store_list.take() {
                let scope = Scope {
                    resource: self.def.store_resource(),
                    namespace: self.namespace.clone(),
                };
                match lister.list(scope).await {
                    Ok((rv, items)) => {
                        self.min_rv = self.min_rv.max(rv);
                        self.last_rv = self.last_rv.max(rv);
                        for s in items {
                            if self.filter.is_empty() {
                                self.frame("ADDED", &s, None);
                            } else if let Ok(v) = s.value() {
                                if self.filter.matches(&v) {
                                    self.frame("ADDED", &s, Some(v));
                                }
                            }
                        }
                        if self.initial_end_marker {
                            self.bookmark(true);
                        }
                    }
                    Err(e) => {
                        let status = store_internal(e).status();
                        self.pending.push_back(Bytes::from(format!(
                            "{}\n",
                            json!({"type": "ERROR", "object": status})
                        )));
                        self.done = true;
                    }
                }
                continue;
            }
            if let Some(ev) = self.backlog.pop_front() {
                self.process(&ev);
                continue;
            }
            let wake_bookmark = if self.bookmarks {
                self.next_bookmark
            } else {
                self.deadline
            };
            tokio::select! {
                _ = tokio::time::sleep_until(self.deadline) => return None,
                _ = tokio::time::sleep_until(wake_bookmark), if self.bookmarks => {
                    self.next_bookmark = Instant::now() + self.bookmark_interval;
                    self.bookmark(false);
                }
                r = self.live.recv() => match r {
                    Ok(ev) => self.process(&ev),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        tracing::warn!("watch fell behind, closing it with 410");
                        let status = ApiError::new(410, "Expired", "the watch fell behind; resume from a newer resource version").status();
                        self.pending.push_back(Bytes::from(format!("{}\n", json!({"type": "ERROR", "object": status}))));
                        self.done = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }
}

impl WatchSource for WatchState {
    fn next(self: Box<Self>) -> Step {
        Box::pin(self.step())
    }
}
