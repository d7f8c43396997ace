//! POST `pods/<name>/binding`: how a scheduler assigns a pod to a node. Sets `spec.nodeName` and
//! the `PodScheduled=True` condition in one compare-and-swap write, as upstream does; a pod that
//! is already bound (or being deleted) is a 409.

use serde_json::{json, Value};

use super::*;

pub(super) async fn bind<S: Store>(inner: &Inner<S>, t: &Target, ctx: &Ctx, body: &[u8]) -> Res {
    let name = target_name(t);
    let b = parse_body(ctx, body)?;
    if let Some(k) = b.get("kind").and_then(Value::as_str) {
        if k != "Binding" {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind (Binding)"
            )));
        }
    }
    let node = b
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if node.is_empty() {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!("Binding \"{name}\" is invalid: target.name: Required value"),
        ));
    }
    if let Some(bn) = meta_str(&b, "name").filter(|n| !n.is_empty()) {
        if bn != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({bn}) does not match the name on the URL ({name})"
            )));
        }
    }
    let want_uid = meta_str(&b, "uid")
        .filter(|u| !u.is_empty())
        .map(str::to_owned);
    let main = Target {
        def: Arc::clone(&t.def),
        version: t.version.clone(),
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        sub: None,
    };
    for _ in 0..16 {
        let old = load(inner, &main).await?;
        let mut v = old.value().map_err(store_internal)?;
        if let Some(uid) = &want_uid {
            if meta_str(&v, "uid") != Some(uid.as_str()) {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!("Operation cannot be fulfilled on pods/binding \"{name}\": the UID in the binding does not match the pod"),
                ));
            }
        }
        if v.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        if let Some(cur) = v
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{cur}\""),
            ));
        }
        if ctx.dry_run() {
            break;
        }
        if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("nodeName".into(), Value::String(node.clone()));
        }
        set_scheduled(&mut v);
        match inner
            .store
            .write(WriteOp::Update {
                key: old.key.clone(),
                value: v,
                expected_rv: Some(old.rv),
            })
            .await
        {
            Ok(_) => break,
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::store(&t.def, name, e)),
        }
    }
    Ok(json_response(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// Replaces any `PodScheduled` condition with `True`.
fn set_scheduled(v: &mut Value) {
    let Some(m) = v.as_object_mut() else { return };
    let status = m.entry("status").or_insert_with(|| json!({}));
    let Some(s) = status.as_object_mut() else {
        return;
    };
    let conds = s.entry("conditions").or_insert_with(|| json!([]));
    if let Some(list) = conds.as_array_mut() {
        list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
        list.push(
            json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
            "lastTransitionTime": time::now()}),
        );
    }
}
