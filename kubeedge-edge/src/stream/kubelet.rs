//! What the kubelet's server answers on `/containerLogs`, from edged's pod statuses and the
//! container runtime: the container is found as the kubelet finds it (its status's
//! `containerID`, or with `previous` the last terminated one), and a refusal carries the
//! kubelet's HTTP status and words, so that the API server shows what it shows for a kubelet.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt as _};
use k8s_openapi::api::core::v1::ContainerStatus;

use crate::edged::runtime::LogOptions;
use crate::edged::{ContainerRuntime, EdgedHandle};

/// A refusal, as the kubelet's server writes it: an HTTP status and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct KubeletError {
    /// The HTTP status (400 bad request, 404 not found, 500 runtime failure).
    pub code: u16,
    /// The message (the response body).
    pub message: String,
}

impl KubeletError {
    fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The API server's `Status` for this refusal (what kube-apiserver makes of a kubelet's
    /// non-2xx answer: the code, its reason, the body as the message).
    pub fn status_json(&self) -> serde_json::Value {
        let reason = match self.code {
            400 => "BadRequest",
            403 => "Forbidden",
            404 => "NotFound",
            _ => "InternalError",
        };
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": reason, "code": self.code,
        })
    }
}

/// `kubectl logs` options from the kubelet URL's query (`PodLogOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// `follow`.
    pub follow: bool,
    /// `previous`: the last terminated instance.
    pub previous: bool,
    /// `timestamps`.
    pub timestamps: bool,
    /// `tailLines`.
    pub tail_lines: Option<u64>,
    /// `sinceSeconds` or `sinceTime`, as Unix seconds.
    pub since: Option<i64>,
    /// `limitBytes`.
    pub limit_bytes: Option<u64>,
}

impl LogQuery {
    /// Parse a raw query string; a value that does not parse is refused with 400, as the
    /// kubelet refuses it.
    pub fn parse(raw_query: &str) -> Result<Self, KubeletError> {
        let mut q = Self::default();
        let bad = |k: &str, v: &str| {
            KubeletError::new(
                400,
                format!("Unable to decode query: {k}={v:?} is not valid"),
            )
        };
        let mut since_seconds: Option<i64> = None;
        let mut since_time: Option<i64> = None;
        for (k, v) in form_urlencoded::parse(raw_query.as_bytes()) {
            let flag = || go_bool(&v).ok_or_else(|| bad(&k, &v));
            let positive = || {
                v.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| bad(&k, &v))
            };
            match &*k {
                "follow" => q.follow = flag()?,
                "previous" => q.previous = flag()?,
                "timestamps" => q.timestamps = flag()?,
                "tailLines" => q.tail_lines = Some(positive()?.unsigned_abs()),
                "limitBytes" => match positive()? {
                    0 => return Err(KubeletError::new(400, "limitBytes: must be greater than 0")),
                    n => q.limit_bytes = Some(n.unsigned_abs()),
                },
                "sinceSeconds" => match positive()? {
                    0 => {
                        return Err(KubeletError::new(
                            400,
                            "sinceSeconds: must be greater than 0",
                        ))
                    }
                    n => since_seconds = Some(n),
                },
                "sinceTime" => {
                    let t: jiff::Timestamp = v.parse().map_err(|_| bad(&k, &v))?;
                    since_time = Some(t.as_second());
                }
                _ => {}
            }
        }
        if since_seconds.is_some() && since_time.is_some() {
            return Err(KubeletError::new(
                400,
                "at most one of `sinceTime` or `sinceSeconds` may be specified",
            ));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        q.since = since_time.or(since_seconds.map(|s| now.saturating_sub(s)));
        Ok(q)
    }
}

/// Go's `strconv.ParseBool`.
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// The kubelet's read side for one node: pod statuses from edged, bytes from the runtime.
#[derive(Debug)]
pub struct Kubelet<R> {
    runtime: Arc<R>,
    pods: EdgedHandle,
    node: Arc<str>,
    samples: super::stats::Samples,
}

impl<R> Clone for Kubelet<R> {
    fn clone(&self) -> Self {
        Self {
            runtime: self.runtime.clone(),
            pods: self.pods.clone(),
            node: self.node.clone(),
            samples: self.samples.clone(),
        }
    }
}

impl<R: ContainerRuntime> Kubelet<R> {
    /// Serve from `runtime`, finding containers through edged's `pods`.
    pub fn new(runtime: Arc<R>, pods: EdgedHandle) -> Self {
        Self {
            runtime,
            pods,
            node: Arc::from(""),
            samples: super::stats::Samples::default(),
        }
    }

    /// The same, serving node `name` (the name its `/stats/summary` reports).
    pub fn for_node(mut self, name: &str) -> Self {
        self.node = Arc::from(name);
        self
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Every pod's latest status (`namespace/name`).
    pub(super) fn pod_statuses(&self) -> Vec<(String, k8s_openapi::api::core::v1::PodStatus)> {
        self.pods
            .statuses()
            .borrow()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// `/stats/summary` or `/metrics/resource`.
    pub async fn metrics(&self, path: &str) -> Result<Vec<u8>, KubeletError> {
        super::stats::serve(self, &self.node, &self.samples, path).await
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<R> {
        &self.runtime
    }

    /// The runtime id of `container` in pod `namespace/pod`, as the kubelet's
    /// `validateContainerLogStatus` picks it: the current instance (or, while it waits to
    /// restart, the last terminated one), or with `previous` the last terminated one.
    pub fn container_id(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<String, KubeletError> {
        let cs = self.container_status(
            namespace,
            pod,
            container,
            || KubeletError::new(404, format!("pod {pod:?} does not exist")),
            || {
                KubeletError::new(
                    400,
                    format!("container {container:?} in pod {pod:?} is not available"),
                )
            },
        )?;
        pick(&cs, pod, previous).map(|id| strip_scheme(&id).to_owned())
    }

    /// The status of `container` (a main or an init container) of `namespace/pod`, or the
    /// caller's error for a missing pod or container (logs and exec word them differently).
    fn container_status(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        no_pod: impl FnOnce() -> KubeletError,
        no_container: impl FnOnce() -> KubeletError,
    ) -> Result<ContainerStatus, KubeletError> {
        let status = self
            .pods
            .status(&format!("{namespace}/{pod}"))
            .ok_or_else(no_pod)?;
        status
            .container_statuses
            .into_iter()
            .flatten()
            .chain(status.init_container_statuses.into_iter().flatten())
            .find(|c| c.name == container)
            .ok_or_else(no_container)
    }

    /// The runtime id of `container` in `namespace/pod` when it runs (exec and attach need a
    /// running container, as the CRI does).
    pub fn running_container_id(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<String, KubeletError> {
        let cs = self.container_status(
            namespace,
            pod,
            container,
            || KubeletError::new(404, "pod does not exist"),
            || KubeletError::new(404, format!("container not found ({container:?})")),
        )?;
        let running = cs.state.as_ref().is_some_and(|s| s.running.is_some());
        match cs.container_id.as_deref().filter(|id| !id.is_empty()) {
            Some(id) if running => Ok(strip_scheme(id).to_owned()),
            _ => Err(KubeletError::new(
                500,
                "Internal error occurred: error executing command in container: container is not created or running",
            )),
        }
    }

    /// The log bytes of `container` in `namespace/pod` with the query's options.
    pub fn logs(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        q: &LogQuery,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>, KubeletError> {
        let id = self.container_id(namespace, pod, container, q.previous)?;
        let opts = LogOptions {
            follow: q.follow,
            tail: q.tail_lines,
            since: q.since,
            timestamps: q.timestamps,
        };
        let stream = self
            .runtime
            .logs(&id, opts)
            .map(|r| r.map_err(|e| std::io::Error::other(e.to_string())));
        Ok(match q.limit_bytes {
            Some(limit) => limit_bytes(stream.boxed(), limit),
            None => stream.boxed(),
        })
    }
}

/// The container id the kubelet reads logs of, from the container's status.
fn pick(cs: &ContainerStatus, pod: &str, previous: bool) -> Result<String, KubeletError> {
    let name = &cs.name;
    let last = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.container_id.clone())
        .filter(|id| !id.is_empty());
    if previous {
        return last.ok_or_else(|| {
            KubeletError::new(
                400,
                format!("previous terminated container {name:?} in pod {pod:?} not found"),
            )
        });
    }
    let state = cs.state.clone().unwrap_or_default();
    if let Some(w) = state.waiting {
        if let Some(id) = last {
            return Ok(id);
        }
        let reason = w.reason.unwrap_or_default();
        return Err(KubeletError::new(
            400,
            if matches!(&*reason, "ErrImagePull" | "ImagePullBackOff") {
                format!(
                    "container {name:?} in pod {pod:?} is waiting to start: image can't be pulled"
                )
            } else {
                format!("container {name:?} in pod {pod:?} is waiting to start: {reason}")
            },
        ));
    }
    cs.container_id
        .clone()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            KubeletError::new(
                400,
                format!("container {name:?} in pod {pod:?} is waiting to start: ContainerCreating"),
            )
        })
}

/// `docker://abc` -> `abc`.
fn strip_scheme(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, rest)| rest)
}

/// At most `limit` bytes of `stream` (the last chunk cut short).
fn limit_bytes(
    stream: BoxStream<'static, std::io::Result<Bytes>>,
    limit: u64,
) -> BoxStream<'static, std::io::Result<Bytes>> {
    futures_util::stream::unfold((stream, limit), |(mut s, left)| async move {
        if left == 0 {
            return None;
        }
        match s.next().await? {
            Ok(mut b) => {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(b.len());
                b.truncate(take);
                Some((Ok(b), (s, left - take as u64)))
            }
            Err(e) => Some((Err(e), (s, 0))),
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parses_like_the_kubelet() {
        let q = LogQuery::parse("follow=true&previous=1&tailLines=10&limitBytes=5&timestamps=T")
            .expect("parses");
        assert!(q.follow && q.previous && q.timestamps);
        assert_eq!((q.tail_lines, q.limit_bytes), (Some(10), Some(5)));
        let t = LogQuery::parse("sinceTime=2026-01-02T03:04:05Z").expect("parses");
        assert_eq!(t.since, Some(1_767_323_045));
        for bad in [
            "follow=yes",
            "tailLines=-1",
            "limitBytes=0",
            "sinceSeconds=0",
        ] {
            assert_eq!(LogQuery::parse(bad).map_err(|e| e.code), Err(400), "{bad}");
        }
        assert!(LogQuery::parse("sinceSeconds=5&sinceTime=2026-01-02T03:04:05Z").is_err());
    }

    #[test]
    fn the_container_is_picked_as_the_kubelet_picks_it() {
        let cs: ContainerStatus = serde_json::from_value(serde_json::json!({
            "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 1,
            "containerID": "docker://new",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "containerID": "docker://old"}},
        }))
        .expect("status");
        assert_eq!(pick(&cs, "p", false).as_deref(), Ok("docker://old"));
        assert_eq!(pick(&cs, "p", true).as_deref(), Ok("docker://old"));
        let fresh: ContainerStatus = serde_json::from_value(serde_json::json!({
            "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}},
        }))
        .expect("status");
        let e = pick(&fresh, "p", false).expect_err("waiting");
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                400,
                "container \"c\" in pod \"p\" is waiting to start: ContainerCreating"
            )
        );
        let e = pick(&fresh, "p", true).expect_err("no previous");
        assert_eq!(
            e.message,
            "previous terminated container \"c\" in pod \"p\" not found"
        );
        assert_eq!(strip_scheme("containerd://x"), "x");
    }
}
