//! Which configmaps and secrets a pod uses: volumes (also projected), `env`/`envFrom` of every
//! container, init and ephemeral container, and image pull secrets.

use k8s_openapi::api::core::v1::{Container, EnvFromSource, EnvVar, Pod};

/// Kinds of objects a pod refers to that the edge needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum RefKind {
    ConfigMap,
    Secret,
}

/// A referenced object, in the pod's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ObjRef {
    pub(crate) kind: RefKind,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

fn env_refs(env: &[EnvVar], from: &[EnvFromSource], out: &mut Vec<(RefKind, String)>) {
    for e in env {
        let Some(vf) = &e.value_from else { continue };
        if let Some(r) = &vf.config_map_key_ref {
            out.push((RefKind::ConfigMap, r.name.clone()));
        }
        if let Some(r) = &vf.secret_key_ref {
            out.push((RefKind::Secret, r.name.clone()));
        }
    }
    for f in from {
        if let Some(r) = &f.config_map_ref {
            out.push((RefKind::ConfigMap, r.name.clone()));
        }
        if let Some(r) = &f.secret_ref {
            out.push((RefKind::Secret, r.name.clone()));
        }
    }
}

fn container_refs(c: &Container, out: &mut Vec<(RefKind, String)>) {
    env_refs(
        c.env.as_deref().unwrap_or_default(),
        c.env_from.as_deref().unwrap_or_default(),
        out,
    );
}

/// The configmaps and secrets `pod` uses, sorted, without duplicates.
pub(crate) fn pod_refs(pod: &Pod) -> Vec<ObjRef> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out: Vec<(RefKind, String)> = Vec::new();
    if let Some(spec) = &pod.spec {
        for v in spec.volumes.as_deref().unwrap_or_default() {
            if let Some(cm) = &v.config_map {
                out.push((RefKind::ConfigMap, cm.name.clone()));
            }
            if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
                out.push((RefKind::Secret, s));
            }
            if let Some(p) = &v.projected {
                for src in p.sources.as_deref().unwrap_or_default() {
                    if let Some(cm) = &src.config_map {
                        out.push((RefKind::ConfigMap, cm.name.clone()));
                    }
                    if let Some(s) = &src.secret {
                        out.push((RefKind::Secret, s.name.clone()));
                    }
                }
            }
        }
        for c in &spec.containers {
            container_refs(c, &mut out);
        }
        for c in spec.init_containers.as_deref().unwrap_or_default() {
            container_refs(c, &mut out);
        }
        for c in spec.ephemeral_containers.as_deref().unwrap_or_default() {
            env_refs(
                c.env.as_deref().unwrap_or_default(),
                c.env_from.as_deref().unwrap_or_default(),
                &mut out,
            );
        }
        for s in spec.image_pull_secrets.as_deref().unwrap_or_default() {
            out.push((RefKind::Secret, s.name.clone()));
        }
    }
    let mut refs: Vec<ObjRef> = out
        .into_iter()
        .filter(|(_, n)| !n.is_empty())
        .map(|(kind, name)| ObjRef {
            kind,
            namespace: namespace.clone(),
            name,
        })
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_reference_is_found() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "containers": [{
                    "name": "a",
                    "env": [
                        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}},
                        {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "s-env", "key": "k"}}},
                        {"name": "Z", "value": "plain"}
                    ],
                    "envFrom": [{"configMapRef": {"name": "cm-from"}}, {"secretRef": {"name": "s-from"}}]
                }],
                "initContainers": [{"name": "i", "envFrom": [{"configMapRef": {"name": "cm-init"}}]}],
                "volumes": [
                    {"name": "v1", "configMap": {"name": "cm-vol"}},
                    {"name": "v2", "secret": {"secretName": "s-vol"}},
                    {"name": "v3", "projected": {"sources": [
                        {"configMap": {"name": "cm-proj"}}, {"secret": {"name": "s-proj"}}
                    ]}},
                    {"name": "v4", "configMap": {"name": "cm-vol"}},
                    {"name": "v5", "emptyDir": {}}
                ],
                "imagePullSecrets": [{"name": "s-pull"}]
            }
        }))
        .expect("pod");
        let refs = pod_refs(&pod);
        let names: Vec<(RefKind, &str)> = refs.iter().map(|r| (r.kind, r.name.as_str())).collect();
        assert_eq!(
            names,
            vec![
                (RefKind::ConfigMap, "cm-env"),
                (RefKind::ConfigMap, "cm-from"),
                (RefKind::ConfigMap, "cm-init"),
                (RefKind::ConfigMap, "cm-proj"),
                (RefKind::ConfigMap, "cm-vol"),
                (RefKind::Secret, "s-env"),
                (RefKind::Secret, "s-from"),
                (RefKind::Secret, "s-proj"),
                (RefKind::Secret, "s-pull"),
                (RefKind::Secret, "s-vol"),
            ]
        );
        assert!(pod_refs(&pod).iter().all(|r| r.namespace == "ns"));
    }

    #[test]
    fn a_bare_pod_uses_nothing() {
        assert!(pod_refs(&Pod::default()).is_empty());
    }
}
