//! Defaults every cluster has: the default namespaces (created at start), a `default`
//! ServiceAccount in every active namespace, and the `default/kubernetes` Service.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Namespace, Service, ServiceAccount,
    ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::PostParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::informer::Informers;
use super::queue::{Key, Requeue, WorkQueue};
use super::reconcile::{Cache, Reconcile};
use super::{api_code, ControlPlaneError};

/// Creates the namespaces that are missing.
pub(crate) async fn ensure_namespaces(
    client: &Client,
    names: &[String],
) -> Result<(), ControlPlaneError> {
    let api: Api<Namespace> = Api::all(client.clone());
    for name in names {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => tracing::info!(namespace = %name, "namespace created"),
            Err(e) if api_code(&e) == Some(409) => {}
            Err(e) => {
                return Err(ControlPlaneError::api(
                    format!("create namespace {name}"),
                    e,
                ))
            }
        }
    }
    Ok(())
}

/// Keeps a `default` ServiceAccount in every namespace that is not terminating.
pub(crate) struct ServiceAccounts {
    client: Client,
    namespaces: Store<Namespace>,
    queue: WorkQueue<Key>,
}

impl ServiceAccounts {
    pub(crate) fn new(client: &Client, inf: &mut Informers) -> Arc<Self> {
        let this = Arc::new(Self {
            client: client.clone(),
            namespaces: inf.namespaces.store(),
            queue: WorkQueue::new(),
        });
        let q = this.queue.clone();
        inf.namespaces.on(move |c| q.add(Key::of(c.object())));
        this
    }
}

impl Reconcile for ServiceAccounts {
    const NAME: &'static str = "serviceaccount-controller";

    fn queue(&self) -> &WorkQueue<Key> {
        &self.queue
    }

    fn caches(&self) -> Vec<Cache> {
        vec![Cache::of(&self.namespaces, "namespaces")]
    }

    async fn reconcile(&self, key: &Key) -> Result<Requeue, ControlPlaneError> {
        let Some(ns) = self.namespaces.get(&ObjectRef::new(&key.name)) else {
            return Ok(None);
        };
        if ns.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &key.name);
        let exists = api
            .get_opt("default")
            .await
            .map_err(|e| {
                ControlPlaneError::api(format!("get serviceaccount {}/default", key.name), e)
            })?
            .is_some();
        if exists {
            return Ok(None);
        }
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".into()),
                namespace: Some(key.name.clone()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => Ok(None),
            // Exists already, or the namespace is going away.
            Err(e) if matches!(api_code(&e), Some(409 | 404 | 403)) => Ok(None),
            Err(e) => Err(ControlPlaneError::api(
                format!("create serviceaccount {}/default", key.name),
                e,
            )),
        }
    }
}

/// The `default/kubernetes` Service and its Endpoints, as kube-apiserver keeps them
/// (`pkg/controlplane/controller/kubernetesservice/controller.go` and the endpoint
/// reconciler in `pkg/controlplane/reconcilers/`): ClusterIP the first address of the service
/// range, port `https` 443/TCP to the API server's secure port, labels `component: apiserver`
/// and `provider: kubernetes`, no selector; the Endpoints hold the API server's advertised
/// address. Pods get `KUBERNETES_SERVICE_HOST`/`_PORT` from it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KubernetesService {
    /// The Service's ClusterIP (the first address of the service range: `10.96.0.1` for
    /// kubeedge-apiserver's default `10.96.0.0/12`).
    pub cluster_ip: std::net::IpAddr,
    /// Where the API server is reached (its advertised address and secure port). A loopback
    /// address is not written into the Endpoints (Kubernetes refuses it there).
    pub endpoint: std::net::SocketAddr,
    /// How often both are checked again (kube-apiserver: 10 s).
    pub resync: std::time::Duration,
}

impl KubernetesService {
    /// The Service for the API server at `endpoint`, with `cluster_ip`.
    pub fn new(cluster_ip: std::net::IpAddr, endpoint: std::net::SocketAddr) -> Self {
        Self {
            cluster_ip,
            endpoint,
            resync: std::time::Duration::from_secs(10),
        }
    }

    fn service(&self) -> Service {
        Service {
            metadata: self.meta(),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                cluster_ip: Some(self.cluster_ip.to_string()),
                cluster_ips: Some(vec![self.cluster_ip.to_string()]),
                session_affinity: Some("None".into()),
                ports: Some(vec![ServicePort {
                    name: Some("https".into()),
                    protocol: Some("TCP".into()),
                    port: 443,
                    target_port: Some(IntOrString::Int(i32::from(self.endpoint.port()))),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn endpoints(&self) -> Option<Endpoints> {
        if self.endpoint.ip().is_loopback() || self.endpoint.ip().is_unspecified() {
            return None;
        }
        Some(Endpoints {
            metadata: self.meta(),
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![EndpointAddress {
                    ip: self.endpoint.ip().to_string(),
                    ..EndpointAddress::default()
                }]),
                ports: Some(vec![EndpointPort {
                    name: Some("https".into()),
                    port: i32::from(self.endpoint.port()),
                    protocol: Some("TCP".into()),
                    ..EndpointPort::default()
                }]),
                ..EndpointSubset::default()
            }]),
        })
    }

    fn meta(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some("kubernetes".into()),
            namespace: Some("default".into()),
            labels: Some(
                [("component", "apiserver"), ("provider", "kubernetes")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    /// Creates the Service when it is missing (a taken ClusterIP gets any free one, with a
    /// warning) and keeps the Endpoints on the API server's address.
    pub(crate) async fn ensure(&self, client: &Client) -> Result<(), ControlPlaneError> {
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        let get = services
            .get_opt("kubernetes")
            .await
            .map_err(|e| ControlPlaneError::api("get service default/kubernetes", e))?;
        if get.is_none() {
            let mut svc = self.service();
            match services.create(&PostParams::default(), &svc).await {
                Ok(_) => {
                    tracing::info!(cluster_ip = %self.cluster_ip, "service default/kubernetes created")
                }
                Err(e) if api_code(&e) == Some(409) => {}
                Err(e) if api_code(&e) == Some(422) => {
                    tracing::warn!(cluster_ip = %self.cluster_ip, error = %e, "the kubernetes service's ClusterIP is taken: allocating another");
                    if let Some(spec) = svc.spec.as_mut() {
                        spec.cluster_ip = None;
                        spec.cluster_ips = None;
                    }
                    services
                        .create(&PostParams::default(), &svc)
                        .await
                        .map_err(|e| {
                            ControlPlaneError::api("create service default/kubernetes", e)
                        })?;
                }
                Err(e) => {
                    return Err(ControlPlaneError::api(
                        "create service default/kubernetes",
                        e,
                    ))
                }
            }
        }
        let Some(want) = self.endpoints() else {
            return Ok(());
        };
        let api: Api<Endpoints> = Api::namespaced(client.clone(), "default");
        let have = api
            .get_opt("kubernetes")
            .await
            .map_err(|e| ControlPlaneError::api("get endpoints default/kubernetes", e))?;
        let result = match have {
            None => api.create(&PostParams::default(), &want).await.map(|_| ()),
            Some(h) if h.subsets == want.subsets => Ok(()),
            Some(h) => {
                let mut e = want;
                e.metadata.resource_version = h.metadata.resource_version;
                api.replace("kubernetes", &PostParams::default(), &e)
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(()),
            // Another writer got there first: the next round compares again.
            Err(e) if api_code(&e) == Some(409) => Ok(()),
            Err(e) => Err(ControlPlaneError::api(
                "write endpoints default/kubernetes",
                e,
            )),
        }
    }

    /// [`Self::ensure`] every `resync` until `cancel` (kube-apiserver reconciles its
    /// endpoints every 10 s, and recreates the Service when it is deleted).
    pub(crate) async fn run(
        self,
        client: Client,
        cancel: CancellationToken,
    ) -> Result<(), ControlPlaneError> {
        let every = self.resync;
        loop {
            if let Err(e) = self.ensure(&client).await {
                tracing::warn!(error = %e, "service default/kubernetes not reconciled");
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}
