//! Service environment variables, as the kubelet makes them (`getServiceEnvVarMap` in
//! `pkg/kubelet/kubelet_pods.go`, `FromServices` in `pkg/kubelet/envvars/envvars.go`): the
//! `default/kubernetes` Service always, and every Service of the pod's namespace when
//! `enableServiceLinks` (default true); headless Services and those without a cluster IP give
//! none.
//!
//! The kubelet reads Services from an informer cache. Upstream KubeEdge's edged hands the
//! kubelet a fake clientset for Services, so its pods get none; here edged lists them from the
//! cloud when a container is created, through the DynamicController's Application protocol
//! (what MetaServer clients use), and keeps what it got in the meta store (type `service`, as
//! the DynamicController's pushes are stored). Offline, or when the cloud does not answer, the
//! stored Services are used.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kubeedge_proto::{
    Application, ApplicationKey, ApplicationStatus, ApplicationVerb, Content, Message,
};
use tracing::debug;

use super::link::{Link, LinkError};
use crate::meta::{MetaOp, MetaRecord};

/// The meta store's type for Services.
const SERVICE: &str = "service";
/// How long a list from the cloud may take before the stored Services are used.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);
/// After the cloud did not answer (e.g. its DynamicController is off), how long Services come
/// from the store only, so that container starts are not held up each time.
const QUIET: Duration = Duration::from_secs(60);

/// Services for container environments: from the cloud when it answers, else stored.
#[derive(Debug, Default)]
pub(crate) struct Services {
    quiet_until: Mutex<Option<Instant>>,
}

/// Why the cloud's answer could not be used.
#[derive(Debug, thiserror::Error)]
enum ListError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("the cloud's answer does not decode: {0}")]
    Decode(String),
    #[error("the cloud refused the list: {0}")]
    Rejected(String),
}

fn application(node: &str, namespace: &str, name: Option<&str>) -> Result<Message, ListError> {
    let key = ApplicationKey {
        group: String::new(),
        version: "v1".into(),
        resource: "services".into(),
        namespace: Some(namespace.to_owned()),
        name: name.map(str::to_owned),
    };
    let verb = if name.is_some() {
        ApplicationVerb::Get
    } else {
        ApplicationVerb::List
    };
    let mut app = Application::new(key.to_string(), verb, node);
    app.status = ApplicationStatus::InApplying;
    app.set_option(&serde_json::json!({}))
        .map_err(|e| ListError::Decode(e.to_string()))?;
    let content =
        Content::json(&app.with_identifier()).map_err(|e| ListError::Decode(e.to_string()))?;
    Ok(Message::application(content))
}

/// The items of a ServiceList.
#[derive(Debug, serde::Deserialize)]
struct ServiceItems {
    #[serde(default)]
    items: Vec<Service>,
}

/// The store key of a Service.
fn store_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{SERVICE}/{name}")
}

fn record(svc: &Service) -> Option<MetaRecord> {
    let ns = svc.metadata.namespace.as_deref()?;
    let name = svc.metadata.name.as_deref()?;
    Some(MetaRecord {
        key: store_key(ns, name),
        resource_type: SERVICE.into(),
        value: serde_json::to_string(svc).ok()?,
    })
}

impl Services {
    fn quiet(&self) -> bool {
        let q = self
            .quiet_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        q.is_some_and(|t| Instant::now() < t)
    }

    fn set_quiet(&self) {
        *self
            .quiet_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now() + QUIET);
    }

    /// Ask the cloud; the answer's body, or None for NotFound.
    async fn ask(
        link: &Link,
        node: &str,
        namespace: &str,
        name: Option<&str>,
    ) -> Result<Option<Vec<u8>>, ListError> {
        let reply = link
            .request(application(node, namespace, name)?, LIST_TIMEOUT)
            .await?;
        let answer: Application = reply
            .content
            .decode()
            .map_err(|e| ListError::Decode(e.to_string()))?;
        if answer.is_approved() {
            return Ok(Some(answer.resp_body.unwrap_or_default()));
        }
        if answer.error.err_status.code == 404 {
            return Ok(None);
        }
        Err(ListError::Rejected(answer.reason))
    }

    /// Refresh the stored Services of `namespace` (and `default/kubernetes`) from the cloud.
    async fn refresh(&self, link: &Link, node: &str, namespace: &str) -> Result<(), ListError> {
        let body = Self::ask(link, node, namespace, None)
            .await?
            .unwrap_or_default();
        let list: ServiceItems =
            serde_json::from_slice(&body).map_err(|e| ListError::Decode(e.to_string()))?;
        let mut ops = Vec::new();
        let mut keep = HashSet::new();
        for mut svc in list.items {
            svc.metadata
                .namespace
                .get_or_insert_with(|| namespace.to_owned());
            if let Some(r) = record(&svc) {
                keep.insert(r.key.clone());
                ops.push(MetaOp::Upsert(r));
            }
        }
        let prefix = format!("{namespace}/{SERVICE}/");
        for r in link.db().list(SERVICE).await.map_err(LinkError::from)? {
            if r.key.starts_with(&prefix) && !keep.contains(&r.key) {
                ops.push(MetaOp::Delete { key: r.key });
            }
        }
        if namespace != "default" {
            let key = store_key("default", "kubernetes");
            match Self::ask(link, node, "default", Some("kubernetes")).await? {
                Some(body) => {
                    let svc: Service = serde_json::from_slice(&body)
                        .map_err(|e| ListError::Decode(e.to_string()))?;
                    ops.extend(record(&svc).map(MetaOp::Upsert));
                }
                None => ops.push(MetaOp::Delete { key }),
            }
        }
        link.db().apply(ops).await.map_err(LinkError::from)?;
        Ok(())
    }

    /// The Services a container of `pod` sees: `default/kubernetes`, and those of its
    /// namespace with `enableServiceLinks`.
    async fn visible(&self, link: &Link, node: &str, pod: &Pod) -> Result<Vec<Service>, LinkError> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        debug!(
            namespace = ns,
            online = link.online(),
            quiet = self.quiet(),
            "service env"
        );
        if link.online() && !self.quiet() {
            if let Err(e) = self.refresh(link, node, ns).await {
                debug!(namespace = ns, error = %e, "services not listed from the cloud; using the stored ones");
                if matches!(e, ListError::Link(_)) {
                    self.set_quiet();
                }
            }
        }
        let mut master = None;
        let mut own = Vec::new();
        for r in link.db().list(SERVICE).await? {
            let Ok(svc) = serde_json::from_str::<Service>(&r.value) else {
                continue;
            };
            let Some((svc_ns, _)) = r.key.split_once('/') else {
                continue;
            };
            let name = svc.metadata.name.as_deref().unwrap_or_default();
            if svc_ns == "default" && name == "kubernetes" {
                master = Some(svc);
            } else if svc_ns == ns && links {
                own.push(svc);
            }
        }
        // One per name: a namespace's own `kubernetes` Service wins over the master's.
        if !own
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some("kubernetes"))
        {
            own.extend(master);
        }
        Ok(own)
    }

    /// The service environment variables of a container of `pod`.
    pub(crate) async fn env(
        &self,
        link: &Link,
        node: &str,
        pod: &Pod,
    ) -> Result<BTreeMap<String, String>, LinkError> {
        Ok(from_services(&self.visible(link, node, pod).await?))
    }
}

/// A Service name as a variable name: upper case, `.` and `-` as `_`, `_` before a digit.
fn var_name(name: &str) -> String {
    let v = name.replace(['.', '-'], "_").to_uppercase();
    if v.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{v}")
    } else {
        v
    }
}

/// The variables of `services` (the kubelet's `FromServices`).
pub(crate) fn from_services(services: &[Service]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let ip = spec.cluster_ip.as_deref().unwrap_or_default();
        let ports = spec.ports.as_deref().unwrap_or_default();
        if ip.is_empty() || ip == "None" || ports.is_empty() {
            continue;
        }
        let prefix = var_name(svc.metadata.name.as_deref().unwrap_or_default());
        env.insert(format!("{prefix}_SERVICE_HOST"), ip.to_owned());
        env.insert(format!("{prefix}_SERVICE_PORT"), ports[0].port.to_string());
        for p in ports {
            if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
                env.insert(
                    format!("{prefix}_SERVICE_PORT_{}", var_name(n)),
                    p.port.to_string(),
                );
            }
        }
        // Docker-links style.
        for (i, p) in ports.iter().enumerate() {
            let proto = p
                .protocol
                .as_deref()
                .filter(|p| !p.is_empty())
                .unwrap_or("TCP");
            let lower = proto.to_lowercase();
            let url = format!("{lower}://{ip}:{}", p.port);
            if i == 0 {
                env.insert(format!("{prefix}_PORT"), url.clone());
            }
            let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
            env.insert(format!("{pp}_PROTO"), lower);
            env.insert(format!("{pp}_PORT"), p.port.to_string());
            env.insert(format!("{pp}_ADDR"), ip.to_owned());
            env.insert(pp, url);
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "ports": ports}
        }))
        .unwrap()
    }

    #[test]
    fn variables_as_the_kubelet_names_them() {
        let env = from_services(&[
            svc(
                "kubernetes",
                "10.96.0.1",
                json!([{"name": "https", "port": 443}]),
            ),
            svc(
                "my-web.v2",
                "10.0.0.7",
                json!([{"port": 80}, {"name": "dns-udp", "port": 53, "protocol": "UDP"}]),
            ),
            svc("headless", "None", json!([{"port": 1}])),
            svc("9lives", "10.0.0.9", json!([{"port": 9}])),
        ]);
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://10.96.0.1:443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP"), Some("tcp://10.96.0.1:443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_PROTO"), Some("tcp"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_ADDR"), Some("10.96.0.1"));
        assert_eq!(get("MY_WEB_V2_SERVICE_PORT"), Some("80"));
        assert_eq!(get("MY_WEB_V2_SERVICE_PORT_DNS_UDP"), Some("53"));
        assert_eq!(get("MY_WEB_V2_PORT"), Some("tcp://10.0.0.7:80"));
        assert_eq!(get("MY_WEB_V2_PORT_53_UDP"), Some("udp://10.0.0.7:53"));
        assert_eq!(get("MY_WEB_V2_PORT_53_UDP_PROTO"), Some("udp"));
        assert_eq!(get("_9LIVES_SERVICE_HOST"), Some("10.0.0.9"));
        assert!(!env.keys().any(|k| k.starts_with("HEADLESS")));
        assert_eq!(env.len(), 8 + 12 + 7);
    }
}
