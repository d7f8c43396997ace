//! Routing: a request path resolved to its resource, namespace, name and subresource.

use std::sync::Arc;

use serde_json::Value;

use super::ApiError;
use crate::registry::{Registry, ResourceDef};
use crate::store::ObjectKey;

pub(super) struct Target {
    pub(super) def: Arc<ResourceDef>,
    pub(super) version: String,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    pub(super) sub: Option<String>,
}

pub(super) fn resolve(
    reg: &Registry,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Target, ApiError> {
    let (namespace, rest) = match rest {
        ["namespaces", ns, r, ..] if !(rest.len() == 3 && matches!(*r, "status" | "finalize")) => {
            (Some((*ns).to_owned()), &rest[2..])
        }
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some((*n).to_owned()), None),
        [p, n, s] => (*p, Some((*n).to_owned()), Some((*s).to_owned())),
        _ => return Err(ApiError::not_found_path()),
    };
    let def = reg
        .find(group, version, plural)
        .ok_or_else(ApiError::not_found_path)?;
    if namespace.is_some() && !def.namespaced {
        return Err(ApiError::not_found_path());
    }
    if def.namespaced && namespace.is_none() && name.is_some() {
        return Err(ApiError::not_found_path());
    }
    match sub.as_deref() {
        None => {}
        Some("status") if def.status => {}
        Some("scale") if def.scale.is_some() => {}
        Some("finalize") if def.kind == "Namespace" => {}
        Some("binding") if def.kind == "Pod" => {}
        Some("token") if def.kind == "ServiceAccount" => {}
        Some("log" | "exec" | "attach" | "portforward") if def.kind == "Pod" => {}
        Some(_) => return Err(ApiError::not_found_path()),
    }
    Ok(Target {
        def,
        version: version.to_owned(),
        namespace,
        name,
        sub,
    })
}

pub(super) fn key_of(t: &Target, name: &str) -> ObjectKey {
    ObjectKey::new(
        t.def.store_resource(),
        t.namespace.clone().unwrap_or_default(),
        name,
    )
}

pub(super) fn target_name(t: &Target) -> &str {
    t.name.as_deref().unwrap_or_default()
}

/// Sets `apiVersion` to the requested version (CRDs with several versions share one storage).
pub(super) fn present(t: &Target, mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.insert(
            "apiVersion".into(),
            Value::String(t.def.api_version(&t.version)),
        );
        m.insert("kind".into(), Value::String(t.def.kind.clone()));
    }
    v
}
