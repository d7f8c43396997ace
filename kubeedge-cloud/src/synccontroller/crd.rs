//! The `reliablesyncs.kubeedge.io` CustomResourceDefinitions (as upstream's
//! `objectsync_v1alpha1.yaml` and `cluster_objectsync_v1alpha1.yaml` define them).

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kubeedge_proto::api::reliablesyncs::{ClusterObjectSync, ObjectSync};
use tracing::{info, warn};

use crate::error::ControllerError;

fn definition(plural: &str, kind: &str, scope: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.reliablesyncs.kubeedge.io")},
        "spec": {
            "group": "reliablesyncs.kubeedge.io",
            "names": {
                "kind": kind,
                "listKind": format!("{kind}List"),
                "plural": plural,
                "singular": kind.to_ascii_lowercase(),
            },
            "scope": scope,
            "versions": [{
                "name": "v1alpha1",
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": {
                            "type": "object",
                            "properties": {
                                "objectAPIVersion": {"type": "string"},
                                "objectKind": {"type": "string"},
                                "objectName": {"type": "string"},
                            },
                        },
                        "status": {
                            "type": "object",
                            "properties": {"objectResourceVersion": {"type": "string"}},
                        },
                    },
                }},
            }],
        },
    })
}

/// Create the ObjectSync and ClusterObjectSync CRDs when they are missing, and wait (up to
/// `wait`) until they are served. A cluster where cloudcore may not create CRDs (`keadm init`
/// applied them) is fine: a refusal is logged, not an error.
pub async fn ensure_crds(client: &kube::Client, wait: Duration) -> Result<(), ControllerError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (plural, kind, scope) in [
        ("objectsyncs", "ObjectSync", "Namespaced"),
        ("clusterobjectsyncs", "ClusterObjectSync", "Cluster"),
    ] {
        let crd: CustomResourceDefinition = serde_json::from_value(definition(plural, kind, scope))
            .map_err(|e| ControllerError::Config(format!("crd {plural}: {e}")))?;
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => info!(crd = plural, "created reliablesyncs crd"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(kube::Error::Api(s)) if s.code == 403 => {
                warn!(
                    crd = plural,
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
