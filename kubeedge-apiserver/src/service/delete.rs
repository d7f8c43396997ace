//! DELETE: preconditions, graceful pod deletion, finalizers, ownerReference cascade,
//! namespace and CRD contents, deletecollection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{json, Value};

use super::*;

#[derive(Default)]
struct DeleteOpts {
    propagation: Option<String>,
    grace: Option<i64>,
    uid: Option<String>,
    rv: Option<u64>,
    dry_run: bool,
}

fn delete_opts(ctx: &Ctx, body: &[u8]) -> Result<DeleteOpts, ApiError> {
    let mut o = DeleteOpts {
        propagation: ctx.q("propagationPolicy").map(str::to_owned),
        grace: ctx.q("gracePeriodSeconds").and_then(|g| g.parse().ok()),
        dry_run: ctx.dry_run(),
        ..DeleteOpts::default()
    };
    if !body.iter().all(u8::is_ascii_whitespace) {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid delete options: {e}")))?;
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            o.propagation = Some(p.to_owned());
        }
        if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
            o.grace = Some(g);
        }
        o.uid = v
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        o.rv = v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(parse_rv)
            .transpose()?;
        if v.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"))
        {
            o.dry_run = true;
        }
    }
    if let Some(p) = &o.propagation {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::bad_request(format!(
                "invalid propagationPolicy {p:?}"
            )));
        }
    }
    Ok(o)
}

pub(super) async fn delete<S: Store>(inner: &Inner<S>, t: &Target, ctx: &Ctx, body: &[u8]) -> Res {
    let opts = delete_opts(ctx, body)?;
    if authorize::is_node(ctx.user.as_ref()) {
        let old = load(inner, t).await?.value().map_err(store_internal)?;
        authorize::admit(
            ctx.user.as_ref(),
            &admission::Request {
                op: admission::Op::Delete,
                group: &t.def.group,
                resource: &t.def.plural,
                subresource: "",
                namespace: t.namespace.as_deref().unwrap_or_default(),
                name: target_name(t),
                old: Some(&old),
                new: None,
            },
        )?;
    }
    let out = delete_one(inner, t, target_name(t), &opts).await?;
    Ok(render(t, ctx, 200, out))
}

fn box_delete<'a, S: Store>(
    inner: &'a Inner<S>,
    t: &'a Target,
    name: &'a str,
    opts: &'a DeleteOpts,
) -> Pin<Box<dyn Future<Output = Result<Value, ApiError>> + Send + 'a>> {
    Box::pin(delete_one(inner, t, name, opts))
}

async fn delete_one<S: Store>(
    inner: &Inner<S>,
    t: &Target,
    name: &str,
    opts: &DeleteOpts,
) -> Result<Value, ApiError> {
    let def = &t.def;
    let tn = Target {
        def: Arc::clone(def),
        version: t.version.clone(),
        namespace: t.namespace.clone(),
        name: Some(name.to_owned()),
        sub: None,
    };
    for _ in 0..16 {
        let old = load(inner, &tn).await?;
        let v = old.value().map_err(store_internal)?;
        if let Some(uid) = &opts.uid {
            if meta_str(&v, "uid") != Some(uid.as_str()) {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&v, "uid").unwrap_or_default()
                    ),
                ));
            }
        }
        if let Some(rv) = opts.rv {
            if rv != old.rv {
                return Err(ApiError::new(409, "Conflict", format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", old.rv)));
            }
        }
        if opts.dry_run {
            return Ok(v);
        }
        let has_finalizers = v
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        let bound_pod = def.kind == "Pod"
            && v.pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
        let grace = opts.grace.unwrap_or_else(|| {
            v.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30)
        });
        let graceful = bound_pod && grace > 0;
        if (has_finalizers || graceful) && !(bound_pod && grace == 0 && !has_finalizers) {
            // Mark for deletion: finalizers (or the node's kubelet) complete it.
            if v.pointer("/metadata/deletionTimestamp").is_some() && !graceful {
                return Ok(v);
            }
            let mut new = v.clone();
            set_meta(
                &mut new,
                "deletionTimestamp",
                Value::String(time::now_plus(if graceful { grace } else { 0 })),
            );
            set_meta(
                &mut new,
                "deletionGracePeriodSeconds",
                json!(if graceful { grace } else { 0 }),
            );
            match inner
                .store
                .write(WriteOp::Update {
                    key: old.key.clone(),
                    value: new,
                    expected_rv: Some(old.rv),
                })
                .await
            {
                Ok(ev) => return ev.object.value().map_err(store_internal),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::store(def, name, e)),
            }
        }
        // Contents first, so nothing is left behind in a deleted namespace or CRD.
        if def.kind == "Namespace" {
            delete_namespace_contents(inner, name).await?;
        }
        if def.kind == "CustomResourceDefinition" {
            if let Some(crdef) = registry::from_crd(&v) {
                let all = inner
                    .store
                    .list(
                        Scope {
                            resource: crdef.store_resource(),
                            namespace: None,
                        },
                        None,
                        None,
                    )
                    .await
                    .map_err(store_internal)?;
                for s in all.items {
                    delete_if_present(&inner.store, s.key).await?;
                }
            }
        }
        let ev = match inner
            .store
            .write(WriteOp::Delete {
                key: old.key.clone(),
                expected_rv: Some(old.rv),
            })
            .await
        {
            Ok(ev) => ev,
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::store(def, name, e)),
        };
        if def.kind == "CustomResourceDefinition" {
            inner.registry.set_custom(name, None);
        }
        if let Some(uid) = meta_str(&v, "uid") {
            cascade(inner, uid, opts.propagation.as_deref() == Some("Orphan")).await?;
        }
        return ev.object.value().map_err(store_internal);
    }
    Err(ApiError::store(
        def,
        name,
        StoreError::Conflict {
            key: key_of(&tn, name),
            expected: 0,
            actual: 0,
        },
    ))
}

/// Deletes (or orphans) the dependents of a deleted owner, recursively.
async fn cascade<S: Store>(inner: &Inner<S>, uid: &str, orphan: bool) -> Result<(), ApiError> {
    let deps = inner
        .store
        .dependents(uid.to_owned())
        .await
        .map_err(store_internal)?;
    for key in deps {
        let Some(def) = inner
            .registry
            .all()
            .into_iter()
            .find(|d| d.store_resource() == key.resource)
        else {
            continue;
        };
        let version = def.versions.first().cloned().unwrap_or_default();
        let t = Target {
            def,
            version,
            namespace: if key.namespace.is_empty() {
                None
            } else {
                Some(key.namespace.clone())
            },
            name: Some(key.name.clone()),
            sub: None,
        };
        if orphan {
            for _ in 0..16 {
                let Some(s) = inner.store.get(key.clone()).await.map_err(store_internal)? else {
                    break;
                };
                let mut v = s.value().map_err(store_internal)?;
                if let Some(refs) = v
                    .pointer_mut("/metadata/ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                }
                match inner
                    .store
                    .write(WriteOp::Update {
                        key: key.clone(),
                        value: v,
                        expected_rv: Some(s.rv),
                    })
                    .await
                {
                    Ok(_) | Err(StoreError::NotFound(_)) => break,
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(store_internal(e)),
                }
            }
            continue;
        }
        let opts = DeleteOpts {
            propagation: Some("Background".into()),
            grace: Some(0),
            ..DeleteOpts::default()
        };
        match box_delete(inner, &t, &key.name, &opts).await {
            Ok(_) => {}
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn delete_namespace_contents<S: Store>(inner: &Inner<S>, ns: &str) -> Result<(), ApiError> {
    for def in inner.registry.all().into_iter().filter(|d| d.namespaced) {
        let page = inner
            .store
            .list(
                Scope {
                    resource: def.store_resource(),
                    namespace: Some(ns.to_owned()),
                },
                None,
                None,
            )
            .await
            .map_err(store_internal)?;
        for s in page.items {
            delete_if_present(&inner.store, s.key).await?;
        }
    }
    Ok(())
}

pub(super) async fn delete_collection<S: Store>(
    inner: &Inner<S>,
    t: &Target,
    ctx: &Ctx,
    body: &[u8],
) -> Res {
    let opts = delete_opts(ctx, body)?;
    let filter = Filter::from(ctx)?;
    let page = inner
        .store
        .list(scope_of(t), None, None)
        .await
        .map_err(store_internal)?;
    let mut items = Vec::new();
    for s in page.items {
        let v = s.value().map_err(store_internal)?;
        if !filter.matches(&v) {
            continue;
        }
        let tn = Target {
            def: Arc::clone(&t.def),
            version: t.version.clone(),
            namespace: if s.key.namespace.is_empty() {
                None
            } else {
                Some(s.key.namespace.clone())
            },
            name: None,
            sub: None,
        };
        match delete_one(inner, &tn, &s.key.name, &opts).await {
            Ok(v) => items.push(present(t, v)),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        200,
        &json!({
            "kind": format!("{}List", t.def.kind), "apiVersion": t.def.api_version(&t.version),
            "metadata": {"resourceVersion": inner.store.revision().to_string()}, "items": items,
        }),
    ))
}

/// Delete one object; one that is already gone is fine.
async fn delete_if_present<S: Store>(store: &S, key: ObjectKey) -> Result<(), ApiError> {
    match store
        .write(WriteOp::Delete {
            key,
            expected_rv: None,
        })
        .await
    {
        Ok(_) | Err(StoreError::NotFound(_)) => Ok(()),
        Err(e) => Err(store_internal(e)),
    }
}
