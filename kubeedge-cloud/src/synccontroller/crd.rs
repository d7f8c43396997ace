//! KubeEdge's CustomResourceDefinitions (`kubeedge_proto::api::CRDS`): installed when missing.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kubeedge_proto::api::reliablesyncs::{ClusterObjectSync, ObjectSync};
use tracing::{info, warn};

use crate::error::ControllerError;

/// Every CRD of `kubeedge_proto::api::CRDS` (Device, DeviceModel, ObjectSync,
/// ClusterObjectSync), parsed.
fn definitions() -> Result<Vec<CustomResourceDefinition>, ControllerError> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(kubeedge_proto::api::CRDS) {
        let v = serde_json::Value::deserialize(doc)
            .map_err(|e| ControllerError::Config(format!("crd manifest: {e}")))?;
        if v.is_null() {
            continue;
        }
        out.push(
            serde_json::from_value(v)
                .map_err(|e| ControllerError::Config(format!("crd manifest: {e}")))?,
        );
    }
    Ok(out)
}

/// Create KubeEdge's CRDs (ObjectSync, ClusterObjectSync, Device, DeviceModel) when they are
/// missing, and wait (up to `wait`) until the ObjectSync ones are served. A cluster where cloudcore may not create CRDs (`keadm init`
/// applied them) is fine: a refusal is logged, not an error.
pub async fn ensure_crds(client: &kube::Client, wait: Duration) -> Result<(), ControllerError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in definitions()? {
        let plural = crd.spec.names.plural.clone();
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => info!(crd = %plural, "created kubeedge crd"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(kube::Error::Api(s)) if s.code == 403 => {
                warn!(
                    crd = %plural,
                    "not allowed to create the crd; expecting it to exist"
                );
            }
            Err(e) => return Err(ControllerError::kube(format!("create crd {plural}"), e)),
        }
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let a = Api::<ObjectSync>::all(client.clone())
            .list(&kube::api::ListParams::default().limit(1))
            .await;
        let b = Api::<ClusterObjectSync>::all(client.clone())
            .list(&kube::api::ListParams::default().limit(1))
            .await;
        match (a, b) {
            (Ok(_), Ok(_)) => return Ok(()),
            (Err(e), _) | (_, Err(e)) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ControllerError::kube("objectsync crds not served", e));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
