//! The endpoints controller: for every Service with a selector, an Endpoints object of the same
//! name with the ready (and not-ready) addresses of the matching pods and the target ports
//! resolved per pod (numeric, or named container ports).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client};

use super::informer::Informers;
use super::queue::{Key, Requeue, WorkQueue};
use super::reconcile::{Cache, Reconcile};
use super::{api_code, matching, pod, ControlPlaneError};

const COMPONENT: &str = "endpoints-controller";
/// Marks the Endpoints this controller writes (and may delete when the Service goes).
const MANAGED_BY: (&str, &str) = ("endpoints.kubernetes.io/managed-by", "endpoint-controller");

fn managed(ep: &Endpoints) -> bool {
    ep.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY.0))
        .is_some_and(|v| v == MANAGED_BY.1)
}

/// The endpoints controller.
pub(crate) struct Controller {
    client: Client,
    services: Store<Service>,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
    queue: WorkQueue<Key>,
}

impl Controller {
    pub(crate) fn new(client: &Client, inf: &mut Informers) -> Arc<Self> {
        let this = Arc::new(Self {
            client: client.clone(),
            services: inf.services.store(),
            pods: inf.pods.store(),
            endpoints: inf.endpoints.store(),
            queue: WorkQueue::new(),
        });
        let q = this.queue.clone();
        inf.services.on(move |c| q.add(Key::of(c.object())));
        let q = this.queue.clone();
        inf.endpoints.on(move |c| q.add(Key::of(c.object())));
        let i = Arc::clone(&this);
        inf.pods.on(move |c| {
            // Every service of the namespace that selects the pod before or after the change.
            let pods = [Some(c.object()), c.previous()];
            let ns = c.object().metadata.namespace.clone().unwrap_or_default();
            for svc in i.services.state() {
                if svc.metadata.namespace.as_deref() != Some(ns.as_str()) {
                    continue;
                }
                let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
                    continue;
                };
                if pods
                    .iter()
                    .flatten()
                    .any(|p| matching::map_matches(sel, p.metadata.labels.as_ref()))
                {
                    i.queue.add(Key::of(svc.as_ref()));
                }
            }
        });
        this
    }
}

/// The container port a service port targets on one pod; `None` when the pod lacks it.
fn target_port(pod: &Pod, target: Option<&IntOrString>, port: i32) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => match name.parse::<i32>() {
            Ok(p) => Some(p),
            Err(_) => pod
                .spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port),
        },
    }
}

/// A pod's resolved ports: (name, port, protocol) per service port.
type PortList = Vec<(String, i32, String)>;

/// The subsets for a service: pods grouped by their resolved port list, sorted for a stable
/// comparison with what is stored.
pub(crate) fn subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let mut groups: BTreeMap<PortList, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    for p in pods {
        let Some(ip) = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        let ports: PortList = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|sp| {
                target_port(p, sp.target_port.as_ref(), sp.port).map(|tp| {
                    (
                        sp.name.clone().unwrap_or_default(),
                        tp,
                        sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    )
                })
            })
            .collect();
        if ports.is_empty() && !spec.ports.as_ref().is_none_or(Vec::is_empty) {
            continue;
        }
        let addr = EndpointAddress {
            ip,
            hostname: None,
            node_name: pod::node_name(p).map(str::to_owned),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: p.metadata.name.clone(),
                namespace: p.metadata.namespace.clone(),
                uid: p.metadata.uid.clone(),
                ..ObjectReference::default()
            }),
        };
        let g = groups.entry(ports).or_default();
        if publish_not_ready || pod::is_ready(p) {
            g.0.push(addr);
        } else {
            g.1.push(addr);
        }
    }
    groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then(|| {
                    ports
                        .into_iter()
                        .map(|(name, port, protocol)| EndpointPort {
                            name: (!name.is_empty()).then_some(name),
                            port,
                            protocol: Some(protocol),
                            app_protocol: None,
                        })
                        .collect()
                }),
            }
        })
        .collect()
}

impl Reconcile for Controller {
    const NAME: &'static str = COMPONENT;

    fn queue(&self) -> &WorkQueue<Key> {
        &self.queue
    }

    fn caches(&self) -> Vec<Cache> {
        vec![
            Cache::of(&self.services, "services"),
            Cache::of(&self.pods, "pods"),
            Cache::of(&self.endpoints, "endpoints"),
        ]
    }

    async fn reconcile(&self, key: &Key) -> Result<Requeue, ControlPlaneError> {
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &key.namespace);
        let existing = self.endpoints.get(&key.object_ref());
        let Some(svc) = self.services.get(&key.object_ref()) else {
            // The service is gone: so are its endpoints.
            if existing.as_deref().is_some_and(managed) {
                match api.delete(&key.name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if api_code(&e) == Some(404) => {}
                    Err(e) => {
                        return Err(ControlPlaneError::api(format!("delete endpoints {key}"), e))
                    }
                }
            }
            return Ok(None);
        };
        let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.clone()) else {
            // No selector: the endpoints are the user's.
            return Ok(None);
        };
        let pods: Vec<Arc<Pod>> = self.pods.state_filter(|p| {
            p.metadata.namespace.as_deref() == Some(key.namespace.as_str())
                && pod::is_active(p)
                && matching::map_matches(&selector, p.metadata.labels.as_ref())
        });
        let subsets = subsets(&svc, &pods);
        let want = (!subsets.is_empty()).then_some(subsets);
        match existing {
            Some(ep) if ep.subsets == want => Ok(None),
            Some(ep) => {
                let mut new = (*ep).clone();
                new.subsets = want;
                match api.replace(&key.name, &PostParams::default(), &new).await {
                    Ok(_) => Ok(None),
                    Err(e) if api_code(&e) == Some(409) => {
                        Ok(Some(std::time::Duration::from_millis(50)))
                    }
                    Err(e) => Err(ControlPlaneError::api(format!("update endpoints {key}"), e)),
                }
            }
            None => {
                let ep = Endpoints {
                    metadata: ObjectMeta {
                        name: Some(key.name.clone()),
                        namespace: Some(key.namespace.clone()),
                        labels: Some({
                            let mut l = svc.metadata.labels.clone().unwrap_or_default();
                            l.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
                            l
                        }),
                        ..ObjectMeta::default()
                    },
                    subsets: want,
                };
                match api.create(&PostParams::default(), &ep).await {
                    Ok(_) => Ok(None),
                    Err(e) if api_code(&e) == Some(409) => {
                        Ok(Some(std::time::Duration::from_millis(50)))
                    }
                    Err(e) => Err(ControlPlaneError::api(format!("create endpoints {key}"), e)),
                }
            }
        }
    }
}
