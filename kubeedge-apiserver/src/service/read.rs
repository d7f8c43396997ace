//! The read verbs: get and list (selectors, pagination with continue tokens, `as=Table`).

use base64::Engine as _;
use bytes::BytesMut;
use serde_json::{json, Value};

use super::update::scale_of;
use super::{
    bytes_response, json_response, key_of, present, render, store_internal, target_name, ApiError,
    Ctx, Inner, Res, Target,
};
use crate::error::StoreError;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Scope, Store};
use crate::table;

/// The target object as stored; 404 in the API's words when it is not there.
pub(super) async fn load_target<S: Store>(inner: &Inner<S>, t: &Target) -> Result<Value, ApiError> {
    let name = target_name(t);
    let stored = inner
        .store
        .get(key_of(t, name))
        .await
        .map_err(store_internal)?
        .ok_or_else(|| ApiError::store(&t.def, name, StoreError::NotFound(key_of(t, name))))?;
    stored.value().map_err(store_internal)
}

pub(super) async fn get<S: Store>(
    inner: &Inner<S>,
    t: &Target,
    ctx: &Ctx,
    sub: Option<&str>,
) -> Res {
    let v = load_target(inner, t).await?;
    if sub == Some("scale") {
        return Ok(json_response(200, &scale_of(t, &v)));
    }
    Ok(render(t, ctx, 200, v))
}

pub(super) struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    pub(super) fn from(ctx: &Ctx) -> Result<Self, ApiError> {
        Ok(Self {
            labels: LabelSelector::parse(ctx.q("labelSelector").unwrap_or_default())
                .map_err(ApiError::bad_request)?,
            fields: FieldSelector::parse(ctx.q("fieldSelector").unwrap_or_default())
                .map_err(ApiError::bad_request)?,
        })
    }
    pub(super) fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
    pub(super) fn matches(&self, v: &Value) -> bool {
        self.labels.matches(v) && self.fields.matches(v)
    }
}

pub(super) fn scope_of(t: &Target) -> Scope {
    Scope {
        resource: t.def.store_resource(),
        namespace: t.namespace.clone(),
    }
}

fn encode_continue(rv: u64, after: &(String, String)) -> String {
    let v = json!({"rv": rv, "ns": after.0, "name": after.1});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn decode_continue(s: &str) -> Result<(String, String), ApiError> {
    let bad = || ApiError::bad_request("invalid continue token");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v.get("ns")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_owned(),
        v.get("name")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_owned(),
    ))
}

pub(super) async fn list<S: Store>(inner: &Inner<S>, t: &Target, ctx: &Ctx) -> Res {
    let filter = Filter::from(ctx)?;
    let limit = match ctx.q("limit") {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        )
        .filter(|l| *l > 0),
        None => None,
    };
    let after = ctx.q("continue").map(decode_continue).transpose()?;
    let page = inner
        .store
        .list(scope_of(t), after, limit)
        .await
        .map_err(store_internal)?;
    let cont = page
        .more_after
        .as_ref()
        .map(|a| encode_continue(page.rv, a));
    let multi_version = t.def.versions.len() > 1;
    if !ctx.table && filter.is_empty() && !multi_version {
        // Fast path: splice the stored JSON without re-encoding it.
        let mut meta = json!({"resourceVersion": page.rv.to_string()});
        if let Some(c) = &cont {
            meta["continue"] = Value::String(c.clone());
        }
        let mut out = BytesMut::with_capacity(
            page.items.iter().map(|s| s.raw.len() + 1).sum::<usize>() + 256,
        );
        out.extend_from_slice(
            format!(
                "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
                t.def.kind,
                t.def.api_version(&t.version),
                meta
            )
            .as_bytes(),
        );
        for (i, s) in page.items.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b",");
            }
            out.extend_from_slice(&s.raw);
        }
        out.extend_from_slice(b"]}");
        return Ok(bytes_response(200, out.freeze(), "application/json"));
    }
    let mut items = Vec::with_capacity(page.items.len());
    for s in &page.items {
        let v = s.value().map_err(store_internal)?;
        if filter.matches(&v) {
            items.push(present(t, v));
        }
    }
    if ctx.table {
        return Ok(json_response(
            200,
            &table::table(&t.def, &items, &ctx.include, page.rv, cont),
        ));
    }
    let mut meta = json!({"resourceVersion": page.rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = Value::String(c);
    }
    Ok(json_response(
        200,
        &json!({"kind": format!("{}List", t.def.kind), "apiVersion": t.def.api_version(&t.version), "metadata": meta, "items": items}),
    ))
}
