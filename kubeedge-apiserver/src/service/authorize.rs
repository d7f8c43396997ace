//! The authorization step of a request, after authentication: impersonation (`Impersonate-*`
//! headers, each impersonated name checked with the `impersonate` verb), then the decision on
//! what the request asks (`system:masters`, the Node authorizer, RBAC from
//! [`super::policy`]'s snapshot), and for writes NodeRestriction and RBAC's escalation check.
//! In-process callers (no authenticated user) are trusted unless they impersonate.

use std::collections::HashMap;

use http::HeaderMap;
use serde_json::Value;

use super::policy::RBAC_GROUP;
use super::{ApiError, Inner};
use crate::authz::rbac;
use crate::authz::{admission, effective_groups, escalation, node, Attributes, Decision, MASTERS};
use crate::serve::UserInfo;
use crate::store::Store;

/// The user a request runs as: the authenticated one, or the one it impersonates when the
/// authenticated user may.
async fn acting_user<S: Store>(
    inner: &Inner<S>,
    user: UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let all = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    };
    let target = all("impersonate-user").into_iter().next();
    let groups = all("impersonate-group");
    let extras: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| {
            let key = k.as_str().strip_prefix("impersonate-extra-")?;
            Some((key.to_owned(), v.to_str().ok()?.to_owned()))
        })
        .collect();
    let uid = all("impersonate-uid").into_iter().next();
    let Some(target) = target else {
        if !groups.is_empty() || !extras.is_empty() || uid.is_some() {
            return Err(ApiError::bad_request(
                "requested impersonation of groups, extra or uid without impersonating a user",
            ));
        }
        return Ok(user);
    };
    let actor = UserInfo {
        name: user.name.clone(),
        groups: effective_groups(&user),
    };
    let ask = |resource: &str, group: &str, sub: &str, ns: &str, name: &str| Attributes {
        user: actor.name.clone(),
        groups: actor.groups.clone(),
        verb: "impersonate".into(),
        resource_request: true,
        api_group: group.into(),
        api_version: "*".into(),
        resource: resource.into(),
        subresource: sub.into(),
        namespace: ns.into(),
        name: name.into(),
        path: String::new(),
        field_selector: String::new(),
    };
    let mut checks = Vec::new();
    let mut implied = Vec::new();
    match target
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, name)) => {
            checks.push(ask("serviceaccounts", "", "", ns, name));
            implied = vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{ns}"),
            ];
        }
        None => checks.push(ask("users", "", "", "", &target)),
    }
    for g in &groups {
        checks.push(ask("groups", "", "", "", g));
    }
    for (k, v) in &extras {
        checks.push(ask("userextras", "authentication.k8s.io", k, "", v));
    }
    if let Some(u) = &uid {
        checks.push(ask("uids", "authentication.k8s.io", "", "", u));
    }
    for a in &checks {
        let (d, why) = decide(inner, a).await?;
        if d != Decision::Allow {
            return Err(ApiError::forbidden(a, &why));
        }
    }
    let mut all_groups = groups;
    for g in implied {
        if !all_groups.contains(&g) {
            all_groups.push(g);
        }
    }
    let as_user = UserInfo {
        name: target,
        groups: all_groups,
    };
    if as_user.name == "system:anonymous" {
        let mut u = as_user;
        if !u.groups.iter().any(|g| g == "system:unauthenticated") {
            u.groups.push("system:unauthenticated".into());
        }
        return Ok(u);
    }
    Ok(as_user)
}

/// The user an in-process request names in `Impersonate-User`/`Impersonate-Group`, if any.
fn trusted_impersonation(headers: &HeaderMap) -> Option<UserInfo> {
    let name = headers.get("impersonate-user")?.to_str().ok()?.to_owned();
    let groups = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    Some(UserInfo { name, groups })
}

/// The union of authorizers, as kube-apiserver's `--authorization-mode=Node,RBAC`:
/// `system:masters` may do everything, then the Node authorizer for nodes, then RBAC. The first
/// decision wins; the reasons of those without an opinion are joined.
pub(super) async fn decide<S: Store>(
    inner: &Inner<S>,
    a: &Attributes,
) -> Result<(Decision, String), ApiError> {
    if a.groups.iter().any(|g| g == MASTERS) {
        return Ok((Decision::Allow, String::new()));
    }
    let mut reasons = Vec::new();
    if let Some(node) = node::node_name(&a.user, &a.groups) {
        let (d, why) = if node.is_empty() {
            (
                Decision::NoOpinion,
                format!("unknown node for user {:?}", a.user),
            )
        } else {
            node::authorize(&inner.store, &node, a)
                .await
                .map_err(super::store_internal)?
        };
        if d != Decision::NoOpinion {
            return Ok((d, why));
        }
        reasons.push(why);
    }
    let policy = inner.authz.policy(&inner.store).await?;
    let (d, why) = policy.authorize(a);
    if d != Decision::NoOpinion {
        return Ok((d, why));
    }
    reasons.push(why);
    reasons.retain(|r| !r.is_empty());
    Ok((Decision::NoOpinion, reasons.join("\n")))
}

/// RBAC's escalation check on a write of a Role, ClusterRole or binding by an authenticated
/// user (`pkg/registry/rbac/*/policybased`): `system:masters` may write anything; otherwise a
/// role needs the `escalate` verb or rules the user holds, and a binding needs the `bind` verb
/// on its role or the role's rules.
pub(super) async fn no_escalation<S: Store>(
    inner: &Inner<S>,
    user: Option<&UserInfo>,
    kind: &str,
    namespace: &str,
    new: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let resource = match kind {
        "Role" => "roles",
        "ClusterRole" => "clusterroles",
        "RoleBinding" => "rolebindings",
        "ClusterRoleBinding" => "clusterrolebindings",
        _ => return Ok(()),
    };
    let Some(user) = user.filter(|_| inner.config.authorization) else {
        return Ok(());
    };
    let groups = effective_groups(user);
    if groups.iter().any(|g| g == MASTERS) {
        return Ok(());
    }
    let s = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let name = s(new, "/metadata/name");
    let forbidden = |msg: String| {
        ApiError::new(
            403,
            "Forbidden",
            format!("{resource}.{RBAC_GROUP} \"{name}\" is forbidden: {msg}"),
        )
        .details(serde_json::json!({"name": name, "group": RBAC_GROUP, "kind": resource}))
    };
    let ask = |verb: &str, resource: &str, ns: &str, name: &str| Attributes {
        user: user.name.clone(),
        groups: groups.clone(),
        verb: verb.into(),
        resource_request: true,
        api_group: RBAC_GROUP.into(),
        api_version: "*".into(),
        resource: resource.into(),
        namespace: ns.into(),
        name: name.into(),
        ..Attributes::default()
    };
    let policy = inner.authz.policy(&inner.store).await?;
    let wanted: Vec<rbac::Rule> = if matches!(kind, "Role" | "ClusterRole") {
        let unchanged = old.is_some_and(|o| {
            o.get("rules") == new.get("rules")
                && o.get("aggregationRule") == new.get("aggregationRule")
        });
        if unchanged
            || decide(inner, &ask("escalate", resource, namespace, &name))
                .await?
                .0
                == Decision::Allow
        {
            return Ok(());
        }
        if new.get("aggregationRule").is_some_and(|a| !a.is_null()) {
            return Err(forbidden(
                "must have cluster-admin privileges to use the aggregationRule".into(),
            ));
        }
        new.get("rules")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(rbac::Rule::from_value).collect())
            .unwrap_or_default()
    } else {
        let (rkind, rname) = (s(new, "/roleRef/kind"), s(new, "/roleRef/name"));
        let role_resource = if rkind == "Role" {
            "roles"
        } else {
            "clusterroles"
        };
        if decide(inner, &ask("bind", role_resource, namespace, &rname))
            .await?
            .0
            == Decision::Allow
        {
            return Ok(());
        }
        match policy.referenced(&rkind, namespace, &rname) {
            Some(r) => r.to_vec(),
            None => {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("{role_resource}.{RBAC_GROUP} \"{rname}\" not found"),
                ))
            }
        }
    };
    let held = policy.rules_for(&user.name, &groups, namespace);
    let missing = escalation::uncovered(&held, &wanted);
    if missing.is_empty() {
        return Ok(());
    }
    Err(forbidden(escalation::message(
        &user.name, &groups, &missing,
    )))
}

/// Whether the request runs as a node.
pub(super) fn is_node(user: Option<&UserInfo>) -> bool {
    user.is_some_and(|u| node::node_name(&u.name, &u.groups).is_some())
}

/// NodeRestriction for a write by a node; other users pass.
pub(super) fn admit(user: Option<&UserInfo>, r: &admission::Request<'_>) -> Result<(), ApiError> {
    let Some(node) = user.and_then(|u| node::node_name(&u.name, &u.groups)) else {
        return Ok(());
    };
    admission::node_restriction(&node, r).map_err(|msg| {
        let gr = if r.group.is_empty() {
            r.resource.to_owned()
        } else {
            format!("{}.{}", r.resource, r.group)
        };
        let name = if r.name.is_empty() {
            r.new
                .and_then(|v| v.pointer("/metadata/name"))
                .and_then(Value::as_str)
                .unwrap_or("Unknown")
        } else {
            r.name
        };
        ApiError::new(
            403,
            "Forbidden",
            format!("{gr} \"{name}\" is forbidden: {msg}"),
        )
        .details(serde_json::json!({"name": name, "group": r.group, "kind": r.resource}))
    })
}

/// The RBAC rules that apply to a user in a namespace (SelfSubjectRulesReview).
pub(super) async fn rules_for<S: Store>(
    inner: &Inner<S>,
    user: &UserInfo,
    namespace: &str,
) -> Result<Vec<rbac::Rule>, ApiError> {
    let policy = inner.authz.policy(&inner.store).await?;
    Ok(policy.rules_for(&user.name, &effective_groups(user), namespace))
}

/// Authorizes a request: returns the user it runs as (impersonation applied), or the 403.
/// In-process requests (no user) are trusted and pass unchanged, unless they impersonate.
pub(super) async fn authorize<S: Store>(
    inner: &Inner<S>,
    user: Option<UserInfo>,
    method: &http::Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Option<UserInfo>, ApiError> {
    if !inner.config.authorization {
        return Ok(user);
    }
    let user = match user {
        Some(user) => acting_user(inner, user, headers).await?,
        // In process: trusted, and free to act as anyone (cloudcore runs a node's requests as
        // that node), which is then authorized like anyone.
        None => match trusted_impersonation(headers) {
            Some(u) => u,
            None => return Ok(None),
        },
    };
    let acting = UserInfo {
        name: user.name.clone(),
        groups: effective_groups(&user),
    };
    let a = Attributes::from_request(&acting, method, path, query);
    let (d, why) = decide(inner, &a).await?;
    if d != Decision::Allow {
        tracing::debug!(user = %a.user, verb = %a.verb, resource = %a.full_resource(), path, "forbidden");
        return Err(ApiError::forbidden(&a, &why));
    }
    Ok(Some(user))
}
