//! PUT and PATCH: compare-and-swap read-modify-write, the status and scale subresources,
//! JSON merge, JSON patch, strategic merge and (approximate) server-side apply.

use std::sync::Arc;

use serde_json::{json, Value};

use super::*;

use super::create::{check_schema, check_type, create_value};
use crate::validation;

/// Merges a new object over the stored one the way the API server does for updates.
fn prepare_update(t: &Target, old: &Value, new: Value) -> Value {
    let def = &t.def;
    let mut new = match t.sub.as_deref() {
        Some("status") => {
            let mut merged = old.clone();
            if let Some(m) = merged.as_object_mut() {
                match new.get("status") {
                    Some(s) => m.insert("status".into(), s.clone()),
                    None => m.remove("status"),
                };
            }
            merged
        }
        _ => {
            let mut n = new;
            if def.status {
                if let Some(m) = n.as_object_mut() {
                    match old.get("status") {
                        Some(s) => m.insert("status".into(), s.clone()),
                        None => m.remove("status"),
                    };
                }
            }
            n
        }
    };
    if let Some(m) = new.as_object_mut() {
        m.insert(
            "apiVersion".into(),
            Value::String(def.api_version(&t.version)),
        );
        m.insert("kind".into(), Value::String(def.kind.clone()));
    }
    for k in [
        "uid",
        "creationTimestamp",
        "name",
        "namespace",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        set_meta(
            &mut new,
            k,
            old.pointer(&format!("/metadata/{k}"))
                .cloned()
                .unwrap_or(Value::Null),
        );
    }
    if def.kind == "Service" && t.sub.is_none() {
        // An update that leaves the allocated addresses out (or empty) keeps them.
        for k in ["clusterIP", "clusterIPs"] {
            let unset = new.pointer(&format!("/spec/{k}")).is_none_or(|v| {
                v.is_null()
                    || v.as_str().is_some_and(str::is_empty)
                    || v.as_array().is_some_and(Vec::is_empty)
            });
            if unset {
                if let (Some(old_v), Some(spec)) = (
                    old.pointer(&format!("/spec/{k}")).cloned(),
                    new.get_mut("spec").and_then(Value::as_object_mut),
                ) {
                    spec.insert(k.into(), old_v);
                }
            }
        }
    }
    if def.has_generation() {
        let gen = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let gen = if objects::spec_changed(old, &new) {
            gen + 1
        } else {
            gen
        };
        set_meta(&mut new, "generation", json!(gen));
    }
    new
}

/// The outcome of one read-modify-write attempt.
enum Attempt {
    Done(Value),
    Retry,
}

async fn write_update<S: Store>(
    inner: &Inner<S>,
    t: &Target,
    ctx: &Ctx,
    old: &Stored,
    new: Value,
    user_rv: Option<u64>,
) -> Result<Attempt, ApiError> {
    let dry_run = ctx.dry_run();
    let def = &t.def;
    let name = target_name(t);
    let oldv = old.value().map_err(store_internal)?;
    if let Some(rv) = user_rv {
        if rv != old.rv {
            return Err(ApiError::store(
                def,
                name,
                StoreError::Conflict {
                    key: old.key.clone(),
                    expected: rv,
                    actual: old.rv,
                },
            ));
        }
    }
    // NodeRestriction sees the object as sent, before the status strategy drops what a
    // status update may not change (upstream runs admission before the strategy too).
    authorize::admit(
        ctx.user.as_ref(),
        &admission::Request {
            op: admission::Op::Update,
            group: &def.group,
            resource: &def.plural,
            subresource: t.sub.as_deref().unwrap_or_default(),
            namespace: t.namespace.as_deref().unwrap_or_default(),
            name,
            old: Some(&oldv),
            new: Some(&new),
        },
    )?;
    if def.builtin {
        authorize::no_escalation(
            inner,
            ctx.user.as_ref(),
            &def.kind,
            t.namespace.as_deref().unwrap_or_default(),
            &new,
            Some(&oldv),
        )
        .await?;
    }
    let uid_causes = validation::uid_causes(&oldv, &new);
    let mut new = prepare_update(t, &oldv, new);
    check_schema(t, ctx, &mut new)?;
    let mut causes = uid_causes;
    causes.extend(objects::validate(def, &new));
    if def.builtin {
        causes.extend(crate::authz::validate::update(&def.kind, &oldv, &new));
    }
    causes.extend(validation::update_causes(
        def,
        &oldv,
        &new,
        t.sub.as_deref() == Some("status"),
    ));
    if !causes.is_empty() {
        return Err(ApiError::invalid(def, name, &causes));
    }
    if def.kind == "CustomResourceDefinition" && t.sub.is_none() {
        // Re-derive status conditions for the new spec.
        let mut n = new.clone();
        objects::default(def, &mut n);
        return finish_update(inner, t, old, n, dry_run).await;
    }
    finish_update(inner, t, old, new, dry_run).await
}

async fn finish_update<S: Store>(
    inner: &Inner<S>,
    t: &Target,
    old: &Stored,
    new: Value,
    dry_run: bool,
) -> Result<Attempt, ApiError> {
    let name = target_name(t);
    if dry_run {
        return Ok(Attempt::Done(new));
    }
    // The last finalizer of an object being deleted is gone: the deletion completes.
    let finalizers_empty = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if new.pointer("/metadata/deletionTimestamp").is_some()
        && finalizers_empty
        && t.def.kind != "Pod"
    {
        match inner
            .store
            .write(WriteOp::Delete {
                key: old.key.clone(),
                expected_rv: Some(old.rv),
            })
            .await
        {
            Ok(ev) => return Ok(Attempt::Done(ev.object.value().map_err(store_internal)?)),
            Err(StoreError::Conflict { .. }) => return Ok(Attempt::Retry),
            Err(e) => return Err(ApiError::store(&t.def, name, e)),
        }
    }
    match inner
        .store
        .write(WriteOp::Update {
            key: old.key.clone(),
            value: new,
            expected_rv: Some(old.rv),
        })
        .await
    {
        Ok(ev) => {
            let v = ev.object.value().map_err(store_internal)?;
            if t.def.kind == "CustomResourceDefinition" {
                inner.registry.set_custom(name, registry::from_crd(&v));
            }
            Ok(Attempt::Done(v))
        }
        Err(StoreError::Conflict { .. }) => Ok(Attempt::Retry),
        Err(e) => Err(ApiError::store(&t.def, name, e)),
    }
}

pub(super) async fn load<S: Store>(inner: &Inner<S>, t: &Target) -> Result<Stored, ApiError> {
    let name = target_name(t);
    let key = key_of(t, name);
    inner
        .store
        .get(key.clone())
        .await
        .map_err(store_internal)?
        .ok_or_else(|| ApiError::store(&t.def, name, StoreError::NotFound(key)))
}

/// The 422 of a PUT without `metadata.resourceVersion` where the kind needs one.
fn unconditional(t: &Target, name: &str) -> ApiError {
    ApiError::invalid_as(
        &t.def,
        &t.def.plural,
        name,
        &[validation::missing_resource_version()],
    )
}

pub(super) async fn update<S: Store>(inner: &Inner<S>, t: &Target, ctx: &Ctx, body: &[u8]) -> Res {
    let name = target_name(t);
    if t.sub.as_deref() == Some("scale") {
        let v = parse_body(ctx, body)?;
        return scale_update(inner, t, ctx, |_| Ok(v.clone())).await;
    }
    let v = decode_body(t, ctx, body)?;
    check_type(t, &v)?;
    if let Some(n) = meta_str(&v, "name") {
        if n != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
    }
    let user_rv = meta_str(&v, "resourceVersion")
        .filter(|s| !s.is_empty())
        .map(parse_rv)
        .transpose()?;
    if user_rv.is_none() && !validation::allows_unconditional_update(&t.def) {
        // Upstream looks the object up first: a missing one is still a 404.
        load(inner, t).await?;
        return Err(unconditional(t, name));
    }
    for _ in 0..16 {
        let old = load(inner, t).await?;
        if let Attempt::Done(out) = write_update(inner, t, ctx, &old, v.clone(), user_rv).await? {
            return Ok(render(t, ctx, 200, out));
        }
        if user_rv.is_some() {
            break;
        }
    }
    Err(retries_exhausted(t, name))
}

fn apply_patch(t: &Target, ctx: &Ctx, current: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let ct = ctx
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    match ct {
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid json patch: {e}")))?;
            let mut out = current.clone();
            json_patch::patch(&mut out, &p).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the json patch could not be applied: {e}"),
                )
            })?;
            Ok(out)
        }
        "application/merge-patch+json"
        | "application/apply-patch+yaml"
        | "application/apply-patch+json" => {
            let p = parse_body(ctx, body)?;
            let mut out = current.clone();
            json_patch::merge(&mut out, &p);
            Ok(out)
        }
        "application/strategic-merge-patch+json" => {
            if !t.def.builtin {
                return Err(ApiError::new(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"));
            }
            let p = parse_body(ctx, body)?;
            patch::strategic_merge(current, &p).map_err(ApiError::bad_request)
        }
        other => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("unsupported patch type {other:?}"),
        )),
    }
}

pub(super) async fn patch_object<S: Store>(
    inner: &Inner<S>,
    t: &Target,
    ctx: &Ctx,
    body: &[u8],
) -> Res {
    let name = target_name(t);
    let is_apply = ctx.content_type.starts_with("application/apply-patch");
    if t.sub.as_deref() == Some("scale") {
        return scale_update(inner, t, ctx, |scale| apply_patch(t, ctx, scale, body)).await;
    }
    for _ in 0..16 {
        let old = match load(inner, t).await {
            Ok(o) => o,
            Err(e) if e.code == 404 && is_apply && t.sub.is_none() => {
                // Server-side apply of a missing object creates it.
                let mut v = decode_body(t, ctx, body)?;
                check_type(t, &v)?;
                let obj = create_value(inner, t, ctx, &mut v).await?;
                return Ok(render(t, ctx, 201, obj));
            }
            Err(e) => return Err(e),
        };
        let current = present(t, old.value().map_err(store_internal)?);
        let mut patched = apply_patch(t, ctx, &current, body)?;
        if !patched.is_object() {
            return Err(ApiError::bad_request("the patch produced a non-object"));
        }
        if t.def.builtin {
            check_patched_times(&t.def.kind, &mut patched)?;
        }
        let patched_rv = meta_str(&patched, "resourceVersion")
            .filter(|s| !s.is_empty())
            .map(parse_rv)
            .transpose()?;
        if patched_rv.is_none() && !validation::allows_unconditional_update(&t.def) {
            return Err(unconditional(t, name));
        }
        let user_rv = patched_rv.filter(|rv| *rv != old.rv);
        if let Some(n) = meta_str(&patched, "name") {
            if n != name {
                return Err(ApiError::bad_request(
                    "the name of the object may not be changed by a patch",
                ));
            }
        }
        if let Attempt::Done(out) = write_update(inner, t, ctx, &old, patched, user_rv).await? {
            return Ok(render(t, ctx, 200, out));
        }
    }
    Err(retries_exhausted(t, name))
}

/// A patched object whose times do not decode: upstream's patch handler answers 422 with the
/// patched object as the invalid value of `patch` (`handlers/patch.go`).
fn check_patched_times(kind: &str, patched: &mut Value) -> Result<(), ApiError> {
    let shown = patched.to_string();
    validation::normalize_times(kind, patched).map_err(|why| {
            let msg = format!(
                "patch: Invalid value: {}: {why}",
                serde_json::to_string(&shown).unwrap_or_default()
            );
            ApiError::new(422, "Invalid", format!("\"\" is invalid: {msg}")).details(json!({
                "causes": [{"reason": "FieldValueInvalid", "field": "patch", "message": msg.trim_start_matches("patch: ")}]
            }))
        })
}

pub(super) fn scale_of(t: &Target, v: &Value) -> Value {
    let (spec_p, status_p, sel_p) = t.def.scale.clone().unwrap_or_default();
    let sel = sel_p
        .and_then(|p| v.pointer(&p).cloned())
        .map(|s| match s {
            Value::String(s) => s,
            other => LabelSelector::from_object(&other).render(),
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta_str(v, "name"), "namespace": meta_str(v, "namespace"),
            "uid": meta_str(v, "uid"), "resourceVersion": meta_str(v, "resourceVersion"),
            "creationTimestamp": meta_str(v, "creationTimestamp"),
        },
        "spec": {"replicas": v.pointer(&spec_p).and_then(Value::as_i64).unwrap_or(0)},
        "status": {"replicas": v.pointer(&status_p).and_then(Value::as_i64).unwrap_or(0), "selector": sel},
    })
}

fn set_pointer(v: &mut Value, ptr: &str, x: Value) {
    let mut cur = v;
    let parts: Vec<&str> = ptr.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        let Some(m) = cur.as_object_mut() else { return };
        if i + 1 == parts.len() {
            m.insert((*p).to_owned(), x);
            return;
        }
        cur = m.entry((*p).to_owned()).or_insert_with(|| json!({}));
    }
}

async fn scale_update<S: Store>(
    inner: &Inner<S>,
    t: &Target,
    ctx: &Ctx,
    f: impl Fn(&Value) -> Result<Value, ApiError>,
) -> Res {
    let name = target_name(t);
    let (spec_p, _, _) = t.def.scale.clone().unwrap_or_default();
    for _ in 0..16 {
        let old = load(inner, t).await?;
        let oldv = old.value().map_err(store_internal)?;
        let scale = f(&scale_of(t, &oldv))?;
        let replicas = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .ok_or_else(|| ApiError::invalid(&t.def, name, &[Cause::required("spec.replicas")]))?;
        if replicas < 0 {
            return Err(ApiError::invalid(
                &t.def,
                name,
                &[Cause::invalid(
                    "spec.replicas",
                    &replicas.to_string(),
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let user_rv = meta_str(&scale, "resourceVersion")
            .filter(|s| !s.is_empty())
            .map(parse_rv)
            .transpose()?;
        let mut new = oldv.clone();
        set_pointer(&mut new, &spec_p, json!(replicas));
        let main = Target {
            def: Arc::clone(&t.def),
            version: t.version.clone(),
            namespace: t.namespace.clone(),
            name: t.name.clone(),
            sub: None,
        };
        if let Attempt::Done(out) = write_update(inner, &main, ctx, &old, new, user_rv).await? {
            return Ok(json_response(200, &scale_of(t, &out)));
        }
    }
    Err(retries_exhausted(t, name))
}

/// The conflict reported when every compare-and-swap retry lost to a concurrent writer.
fn retries_exhausted(t: &Target, name: &str) -> ApiError {
    ApiError::store(
        &t.def,
        name,
        StoreError::Conflict {
            key: key_of(t, name),
            expected: 0,
            actual: 0,
        },
    )
}
