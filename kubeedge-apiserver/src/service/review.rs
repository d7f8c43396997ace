//! The review kinds, answered and never stored: SelfSubjectReview (who am I),
//! SelfSubjectAccessReview, SubjectAccessReview and LocalSubjectAccessReview (may this user do
//! that; `kubectl auth can-i`), and SelfSubjectRulesReview (what may I do here;
//! `kubectl auth can-i --list`).

use serde_json::{json, Value};

use super::authorize::{decide, rules_for};
use super::target::Target;
use super::{json_response, parse_body, ApiError, Ctx, Inner, Res};
use crate::authz::{effective_groups, Attributes, Decision};
use crate::objects::Cause;
use crate::serve::UserInfo;
use crate::store::Store;

fn s(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The attributes a review's spec asks about (`AuthorizationAttributesFrom`): exactly one of
/// `resourceAttributes` and `nonResourceAttributes`.
fn attributes(spec: &Value, user: String, groups: Vec<String>) -> Result<Attributes, Cause> {
    let res = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let non = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    let mut a = Attributes {
        user,
        groups,
        ..Attributes::default()
    };
    match (res, non) {
        (Some(r), None) => {
            a.resource_request = true;
            a.verb = s(r, "verb");
            a.api_group = s(r, "group");
            a.api_version = s(r, "version");
            if a.api_version.is_empty() {
                a.api_version = "*".into();
            }
            a.resource = s(r, "resource");
            a.subresource = s(r, "subresource");
            a.namespace = s(r, "namespace");
            a.name = s(r, "name");
        }
        (None, Some(n)) => {
            a.verb = s(n, "verb");
            a.path = s(n, "path");
        }
        (Some(_), Some(_)) | (None, None) => {
            return Err(Cause::invalid_raw(
                "spec.resourceAttributes",
                "null",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ))
        }
    }
    Ok(a)
}

async fn access<S: Store>(inner: &Inner<S>, a: &Attributes) -> Result<Value, ApiError> {
    let (d, reason) = decide(inner, a).await?;
    let mut status = json!({"allowed": d == Decision::Allow});
    if d == Decision::Deny {
        status["denied"] = json!(true);
    }
    if !reason.is_empty() {
        status["reason"] = json!(reason);
    }
    Ok(status)
}

async fn rules<S: Store>(
    inner: &Inner<S>,
    user: &UserInfo,
    namespace: &str,
) -> Result<Value, ApiError> {
    let rules = rules_for(inner, user, namespace).await?;
    let (urls, res): (Vec<_>, Vec<_>) = rules.into_iter().partition(|r| !r.urls.is_empty());
    let resource_rules: Vec<Value> = res
        .iter()
        .map(|r| {
            let mut v =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            v
        })
        .collect();
    let non_resource_rules: Vec<Value> = urls
        .iter()
        .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.urls}))
        .collect();
    Ok(
        json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
        "incomplete": false}),
    )
}

/// Answers a review POST.
pub(super) async fn review<S: Store>(inner: &Inner<S>, t: &Target, ctx: &Ctx, body: &[u8]) -> Res {
    let mut v = parse_body(ctx, body)?;
    let me = ctx.user.clone().unwrap_or_else(|| UserInfo {
        name: "system:apiserver".into(),
        groups: vec![crate::authz::MASTERS.into()],
    });
    let spec = v.get("spec").cloned().unwrap_or_else(|| json!({}));
    let invalid = |c: Cause| ApiError::invalid(&t.def, "", &[c]);
    let status = match t.def.kind.as_str() {
        "SelfSubjectReview" => {
            json!({"userInfo": {"username": me.name, "groups": effective_groups(&me)}})
        }
        "SelfSubjectRulesReview" => rules(inner, &me, &s(&spec, "namespace")).await?,
        "SelfSubjectAccessReview" => {
            let a = attributes(&spec, me.name.clone(), effective_groups(&me)).map_err(invalid)?;
            access(inner, &a).await?
        }
        _ => {
            // SubjectAccessReview, LocalSubjectAccessReview: the user and groups as given.
            let user = s(&spec, "user");
            let groups: Vec<String> = spec
                .get("groups")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|g| g.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if user.is_empty() && groups.is_empty() {
                return Err(invalid(Cause::invalid(
                    "spec.user",
                    "",
                    "at least one of user or group must be specified",
                )));
            }
            let a = attributes(&spec, user, groups).map_err(invalid)?;
            if let Some(ns) = &t.namespace {
                if !a.resource_request || a.namespace != *ns {
                    return Err(ApiError::bad_request(format!(
                        "spec.resourceAttributes.namespace must match namespace: {ns}"
                    )));
                }
            }
            access(inner, &a).await?
        }
    };
    if let Some(m) = v.as_object_mut() {
        m.insert("status".into(), status);
    }
    Ok(json_response(201, &stamp(t, v)))
}

fn stamp(t: &Target, mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.insert(
            "apiVersion".into(),
            Value::String(t.def.api_version(&t.version)),
        );
        m.insert("kind".into(), Value::String(t.def.kind.clone()));
        if !m.get("metadata").is_some_and(Value::is_object) {
            m.insert("metadata".into(), json!({}));
        }
    }
    v
}
