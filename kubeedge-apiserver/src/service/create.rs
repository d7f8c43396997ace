//! POST: names (generateName), uid and timestamps, defaulting, validation (schemas for
//! custom resources, typed forms for built-ins), ClusterIP allocation.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::*;

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let id = uuid::Uuid::new_v4();
    id.as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

pub(super) fn check_type(t: &Target, v: &Value) -> Result<(), ApiError> {
    if let Some(av) = v.get("apiVersion").and_then(Value::as_str) {
        let want = t.def.api_version(&t.version);
        if av != want {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want})"
            )));
        }
    }
    if let Some(k) = v.get("kind").and_then(Value::as_str) {
        if k != t.def.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                t.def.kind
            )));
        }
    }
    if let (Some(ns), Some(bns)) = (&t.namespace, meta_str(v, "namespace")) {
        if !bns.is_empty() && bns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    Ok(())
}

pub(super) async fn create<S: Store>(inner: &Inner<S>, t: &Target, ctx: &Ctx, body: &[u8]) -> Res {
    let mut v = decode_body(t, ctx, body)?;
    check_type(t, &v)?;
    let obj = create_value(inner, t, ctx, &mut v).await?;
    Ok(render(t, ctx, 201, obj))
}

/// Validates a custom resource against its schema, pruning unknown fields; under
/// `fieldValidation=Strict` unknown fields are a 400, under `Warn` (the default) a warning.
pub(super) fn check_schema(t: &Target, ctx: &Ctx, v: &mut Value) -> Result<(), ApiError> {
    let name = meta_str(v, "name").unwrap_or_default().to_owned();
    let report = match t.def.schema(&t.version) {
        Some(schema) => crate::schema::validate(schema, v),
        None if t.def.builtin => crate::schema::Report {
            causes: Vec::new(),
            unknown: objects::check_builtin(&t.def.kind, v).map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: {e}",
                    t.def.kind, t.version, t.def.kind
                ))
            })?,
        },
        None => return Ok(()),
    };
    let found = report
        .unknown
        .iter()
        .map(|u| format!("unknown field \"{u}\""))
        .collect();
    let warnings =
        crate::validation::apply_directive(&t.def.kind, &t.version, ctx.directive(), found)
            .map_err(ApiError::bad_request)?;
    ctx.warn(warnings);
    if !report.causes.is_empty() {
        return Err(ApiError::invalid(&t.def, &name, &report.causes));
    }
    Ok(())
}

pub(super) async fn create_value<S: Store>(
    inner: &Inner<S>,
    t: &Target,
    ctx: &Ctx,
    v: &mut Value,
) -> Result<Value, ApiError> {
    check_schema(t, ctx, v)?;
    let def = &t.def;
    let mut name = meta_str(v, "name").unwrap_or_default().to_owned();
    if name.is_empty() {
        match meta_str(v, "generateName").filter(|g| !g.is_empty()) {
            Some(g) => name = format!("{g}{}", random_suffix()),
            None => {
                return Err(ApiError::invalid(
                    def,
                    "",
                    &[Cause::required("metadata.name")],
                ));
            }
        }
    }
    let name_causes = objects::validate_name(def, &name);
    if !name_causes.is_empty() {
        return Err(ApiError::invalid(def, &name, &name_causes));
    }
    if let Some(ns) = &t.namespace {
        let nskey = ObjectKey::new("core/namespaces", "", ns.clone());
        if inner
            .store
            .get(nskey)
            .await
            .map_err(store_internal)?
            .is_none()
        {
            return Err(
                ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
                    .details(json!({"name": ns, "kind": "namespaces"})),
            );
        }
    }
    if let Some(m) = v.as_object_mut() {
        m.insert(
            "apiVersion".into(),
            Value::String(def.api_version(&t.version)),
        );
        m.insert("kind".into(), Value::String(def.kind.clone()));
    }
    set_meta(v, "name", Value::String(name.clone()));
    if let Some(ns) = &t.namespace {
        set_meta(v, "namespace", Value::String(ns.clone()));
    }
    set_meta(v, "uid", Value::String(uuid::Uuid::new_v4().to_string()));
    set_meta(v, "creationTimestamp", Value::String(time::now()));
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    ] {
        set_meta(v, k, Value::Null);
    }
    if def.has_generation() {
        set_meta(v, "generation", json!(1));
    }
    objects::default(def, v);
    let causes = objects::validate(def, v);
    if !causes.is_empty() {
        return Err(ApiError::invalid(def, &name, &causes));
    }
    authorize::admit(
        ctx.user.as_ref(),
        &admission::Request {
            op: admission::Op::Create,
            group: &def.group,
            resource: &def.plural,
            subresource: "",
            namespace: t.namespace.as_deref().unwrap_or_default(),
            name: &name,
            old: None,
            new: Some(v),
        },
    )?;
    if def.builtin {
        authorize::no_escalation(
            inner,
            ctx.user.as_ref(),
            &def.kind,
            t.namespace.as_deref().unwrap_or_default(),
            v,
            None,
        )
        .await?;
    }
    let _ip_guard = if def.kind == "Service" {
        let guard = inner.service_ips.lock().await;
        allocate_cluster_ip(inner, v).await?;
        Some(guard)
    } else {
        None
    };
    let key = key_of(t, &name);
    let ev = inner
        .store
        .write(WriteOp::Create {
            key,
            value: v.clone(),
        })
        .await
        .map_err(|e| ApiError::store(def, &name, e))?;
    let out = ev.object.value().map_err(store_internal)?;
    if def.kind == "CustomResourceDefinition" {
        inner.registry.set_custom(&name, registry::from_crd(&out));
    }
    Ok(out)
}

fn parse_cidr(s: &str) -> Option<(u32, u32)> {
    let (ip, prefix) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let prefix: u32 = prefix.parse().ok()?;
    if prefix > 30 {
        return None;
    }
    let size = 1u32 << (32 - prefix);
    Some((u32::from(ip) & !(size - 1), size))
}

async fn allocate_cluster_ip<S: Store>(inner: &Inner<S>, v: &mut Value) -> Result<(), ApiError> {
    let ty = v
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if ty == "ExternalName" {
        return Ok(());
    }
    let requested = v
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if requested == "None" {
        if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("clusterIPs".into(), json!(["None"]));
        }
        return Ok(());
    }
    let (base, size) = parse_cidr(&inner.config.service_cidr)
        .ok_or_else(|| ApiError::new(500, "InternalError", "invalid service cidr"))?;
    let all = inner
        .store
        .list(
            Scope {
                resource: "core/services".into(),
                namespace: None,
            },
            None,
            None,
        )
        .await
        .map_err(store_internal)?;
    let mut used = HashSet::new();
    for s in &all.items {
        if let Ok(sv) = s.value() {
            if let Some(ip) = sv.pointer("/spec/clusterIP").and_then(Value::as_str) {
                used.insert(ip.to_owned());
            }
        }
    }
    let ip = if requested.is_empty() {
        let mut found = None;
        // .0 is the network and .1 is kept for the `kubernetes` service, as upstream does.
        for off in 10..size.saturating_sub(1) {
            let cand = Ipv4Addr::from(base + off).to_string();
            if !used.contains(&cand) {
                found = Some(cand);
                break;
            }
        }
        found.ok_or_else(|| {
            ApiError::new(500, "InternalError", "the service cluster ip range is full")
        })?
    } else {
        let ok = requested
            .parse::<Ipv4Addr>()
            .ok()
            .map(u32::from)
            .is_some_and(|ip| ip >= base && ip < base.saturating_add(size));
        if !ok {
            return Err(ApiError::new(422, "Invalid", format!("Service is invalid: spec.clusterIP: Invalid value: \"{requested}\": provided IP is not in the valid range. The range of valid IPs is {}", inner.config.service_cidr)));
        }
        if used.contains(&requested) {
            return Err(ApiError::new(422, "Invalid", format!("Service is invalid: spec.clusterIP: Invalid value: \"{requested}\": provided IP is already allocated")));
        }
        requested
    };
    if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("clusterIP".into(), Value::String(ip.clone()));
        spec.insert("clusterIPs".into(), json!([ip]));
    }
    Ok(())
}
