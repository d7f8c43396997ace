//! The authorization step of a request, after authentication: impersonation (`Impersonate-*`
//! headers, each impersonated name checked with the `impersonate` verb), then the decision on
//! what the request asks. In-process callers (no authenticated user) are trusted, as before.
//!
//! RBAC decides from a snapshot of the four RBAC kinds. Every RBAC write through this service
//! rebuilds the snapshot before it is answered, so a binding applies to the request right
//! after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::HeaderMap;
use serde_json::Value;

use super::{ApiError, Inner};
use crate::authz::rbac::{self, Policy};
use crate::authz::{
    admission, bootstrap, effective_groups, escalation, node, Attributes, Decision, MASTERS,
};
use crate::error::StoreError;
use crate::serve::UserInfo;
use crate::store::{ObjectKey, Scope, Store, WriteOp};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The RBAC snapshot and what makes it stale.
#[derive(Debug, Default)]
pub(super) struct Authz {
    /// Bumped by every RBAC write.
    generation: AtomicU64,
    /// The snapshot and the generation it was built at.
    snapshot: tokio::sync::RwLock<(u64, Arc<Policy>)>,
    /// One rebuild at a time.
    rebuild: tokio::sync::Mutex<()>,
}

impl Authz {
    /// Marks the snapshot stale after an RBAC write and rebuilds it now, which also stores
    /// the aggregated ClusterRoles' new rules. A failed rebuild is retried by the next request.
    pub(super) async fn changed<S: Store>(&self, store: &S) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self.policy(store).await {
            tracing::debug!(error = %e.message, "rbac snapshot not rebuilt");
        }
    }

    /// The current snapshot, rebuilt from the store when an RBAC write made it stale.
    async fn policy<S: Store>(&self, store: &S) -> Result<Arc<Policy>, ApiError> {
        let wanted = self.generation.load(Ordering::SeqCst) + 1;
        {
            let s = self.snapshot.read().await;
            if s.0 == wanted {
                return Ok(Arc::clone(&s.1));
            }
        }
        let _one = self.rebuild.lock().await;
        let wanted = self.generation.load(Ordering::SeqCst) + 1;
        {
            let s = self.snapshot.read().await;
            if s.0 == wanted {
                return Ok(Arc::clone(&s.1));
            }
        }
        let cluster_roles = load(store, "clusterroles").await?;
        let policy = Arc::new(Policy::new(
            &cluster_roles,
            &load(store, "roles").await?,
            &load(store, "clusterrolebindings").await?,
            &load(store, "rolebindings").await?,
        ));
        write_aggregated(store, &cluster_roles).await;
        *self.snapshot.write().await = (wanted, Arc::clone(&policy));
        Ok(policy)
    }
}

async fn load<S: Store>(store: &S, resource: &str) -> Result<Vec<Value>, ApiError> {
    let page = store
        .list(
            Scope {
                resource: format!("{RBAC_GROUP}/{resource}"),
                namespace: None,
            },
            None,
            None,
        )
        .await
        .map_err(super::store_internal)?;
    Ok(page.items.iter().filter_map(|s| s.value().ok()).collect())
}

/// Stores the computed rules of aggregated ClusterRoles whose stored rules differ (the
/// aggregation controller's job). A failed write is retried on the next rebuild.
async fn write_aggregated<S: Store>(store: &S, cluster_roles: &[Value]) {
    for (name, rules) in rbac::aggregate(cluster_roles) {
        let Some(stored) = cluster_roles
            .iter()
            .find(|r| r.pointer("/metadata/name").and_then(Value::as_str) == Some(&name))
        else {
            continue;
        };
        let want: Vec<Value> = rules.iter().map(rbac::Rule::to_value).collect();
        let have: Vec<rbac::Rule> = stored
            .get("rules")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(rbac::Rule::from_value).collect())
            .unwrap_or_default();
        if have == rules {
            continue;
        }
        let mut updated = stored.clone();
        updated["rules"] = Value::Array(want);
        let rv = stored
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok());
        let key = ObjectKey::new(format!("{RBAC_GROUP}/clusterroles"), "", &name);
        if let Err(e) = store
            .write(WriteOp::Update {
                key,
                value: updated,
                expected_rv: rv,
            })
            .await
        {
            tracing::debug!(role = %name, error = %e, "aggregated cluster role not written");
        }
    }
}

/// Creates the default ClusterRoles and ClusterRoleBindings, and puts back changed ones whose
/// `autoupdate` annotation is not `"false"`.
pub(super) async fn bootstrap<S: Store>(store: &S) -> Result<(), StoreError> {
    let sets = [
        ("clusterroles", bootstrap::cluster_roles()),
        ("clusterrolebindings", bootstrap::cluster_role_bindings()),
    ];
    for (resource, objects) in sets {
        for mut obj in objects {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let key = ObjectKey::new(format!("{RBAC_GROUP}/{resource}"), "", &name);
            match store.get(key.clone()).await? {
                None => {
                    obj["metadata"]["uid"] = Value::String(uuid::Uuid::new_v4().to_string());
                    obj["metadata"]["creationTimestamp"] = Value::String(crate::time::now());
                    match store.write(WriteOp::Create { key, value: obj }).await {
                        Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                Some(stored) => {
                    let have = stored.value()?;
                    let keep = have
                        .pointer(
                            "/metadata/annotations/rbac.authorization.kubernetes.io~1autoupdate",
                        )
                        .and_then(Value::as_str)
                        == Some("false");
                    // An aggregated role's rules are computed, so only its selectors are put
                    // back.
                    let mut fields = vec!["rules", "aggregationRule", "roleRef", "subjects"];
                    if obj.get("aggregationRule").is_some() {
                        fields.retain(|f| *f != "rules");
                    }
                    let mut updated = have.clone();
                    for k in fields {
                        match (obj.get(k), updated.as_object_mut()) {
                            (Some(v), Some(m)) => {
                                m.insert(k.into(), v.clone());
                            }
                            (None, Some(m)) => {
                                m.remove(k);
                            }
                            _ => {}
                        }
                    }
                    if keep || updated == have {
                        continue;
                    }
                    store
                        .write(WriteOp::Update {
                            key,
                            value: updated,
                            expected_rv: Some(stored.rv),
                        })
                        .await?;
                }
            }
        }
    }
    Ok(())
}

/// The user a request runs as: the authenticated one, or the one it impersonates when the
/// authenticated user may. `None` for in-process callers.
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
