//! ServiceAccount tokens: the `serviceaccounts/<name>/token` subresource (TokenRequest, what
//! `kubectl create token` and the kubelet ask for) and the authentication of the tokens it
//! issues, as `system:serviceaccount:<ns>:<name>` in `system:serviceaccounts` and
//! `system:serviceaccounts:<ns>`. A token stops working when its ServiceAccount (or the pod it
//! is bound to) is deleted, as upstream's bound tokens do.

use serde_json::{json, Value};

use super::target::{target_name, Target};
use super::{json_response, parse_body, store_internal, ApiError, Ctx, Inner, Res};
use crate::authz::token::{BoundRef, Claims, KubeClaims, ServiceAccountRef, ISSUER};
use crate::serve::UserInfo;
use crate::store::{ObjectKey, Store};

const MIN_SECONDS: i64 = 600;

fn uid_of(v: &Value) -> String {
    v.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

async fn object<S: Store>(
    inner: &Inner<S>,
    resource: &str,
    ns: &str,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    Ok(inner
        .store
        .get(ObjectKey::new(resource, ns, name))
        .await
        .map_err(store_internal)?
        .and_then(|s| s.value().ok()))
}

/// Answers a TokenRequest for the ServiceAccount `t` names.
pub(super) async fn create<S: Store>(inner: &Inner<S>, t: &Target, ctx: &Ctx, body: &[u8]) -> Res {
    let mut req = parse_body(ctx, body)?;
    let ns = t.namespace.clone().unwrap_or_default();
    let name = target_name(t).to_owned();
    let sa = object(inner, "core/serviceaccounts", &ns, &name)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                format!("serviceaccounts \"{name}\" not found"),
            )
            .details(json!({"name": name, "kind": "serviceaccounts"}))
        })?;
    let spec = req.get("spec").cloned().unwrap_or_else(|| json!({}));
    let seconds = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    let invalid = |why: &str| {
        ApiError::new(
            422,
            "Invalid",
            format!("TokenRequest.authentication.k8s.io \"{name}\" is invalid: spec.expirationSeconds: Invalid value: {seconds}: {why}"),
        )
    };
    if seconds < MIN_SECONDS {
        return Err(invalid("may not specify a duration less than 10 minutes"));
    }
    if seconds > 1 << 32 {
        return Err(invalid(
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let mut audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences.push(ISSUER.into());
    }
    let bound = spec.get("boundObjectRef").filter(|v| !v.is_null());
    let node = ctx
        .user
        .as_ref()
        .and_then(|u| crate::authz::node::node_name(&u.name, &u.groups));
    // NodeRestriction: a node asks only for tokens bound to a pod of its own.
    let forbidden = |msg: &str| {
        ApiError::new(
            403,
            "Forbidden",
            format!("serviceaccounts \"{name}\" is forbidden: {msg}"),
        )
    };
    if node.is_some() && bound.and_then(|r| r.get("kind")).and_then(Value::as_str) != Some("Pod") {
        return Err(forbidden("node requested token not bound to a pod"));
    }
    let pod = match bound {
        None => None,
        Some(r) => {
            let (pod, node_name) = bound_pod(inner, &ns, r).await?;
            if let Some(n) = &node {
                if r.get("uid")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .is_empty()
                {
                    return Err(forbidden(
                        "node requested token with a pod binding without a uid",
                    ));
                }
                if node_name != *n {
                    return Err(forbidden(
                        "node requested token bound to a pod scheduled on a different node",
                    ));
                }
            }
            Some(pod)
        }
    };
    let now = jiff::Timestamp::now().as_second();
    let claims = Claims {
        aud: audiences,
        exp: now + seconds,
        iat: now,
        nbf: now,
        iss: ISSUER.into(),
        sub: format!("system:serviceaccount:{ns}:{name}"),
        kubernetes: KubeClaims {
            namespace: ns.clone(),
            serviceaccount: ServiceAccountRef {
                name: name.clone(),
                uid: uid_of(&sa),
            },
            pod,
        },
    };
    let token = inner
        .tokens
        .issue(&claims)
        .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))?;
    let expires = crate::time::now_plus(seconds);
    if let Some(m) = req.as_object_mut() {
        m.insert("apiVersion".into(), json!("authentication.k8s.io/v1"));
        m.insert("kind".into(), json!("TokenRequest"));
        m.insert(
            "metadata".into(),
            json!({"name": name, "namespace": ns, "creationTimestamp": null}),
        );
        m.insert("spec".into(), {
            let mut s = spec;
            s["audiences"] = json!(claims.aud);
            s["expirationSeconds"] = json!(seconds);
            s
        });
        m.insert(
            "status".into(),
            json!({"token": token, "expirationTimestamp": expires}),
        );
    }
    Ok(json_response(201, &req))
}

/// The pod a token is to be bound to (it must exist, with the UID given) and its node.
async fn bound_pod<S: Store>(
    inner: &Inner<S>,
    ns: &str,
    r: &Value,
) -> Result<(BoundRef, String), ApiError> {
    let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default();
    if s("kind") != "Pod" {
        return Err(ApiError::bad_request(format!(
            "cannot bind token to object of kind {:?}: only Pod is supported",
            s("kind")
        )));
    }
    let pod = object(inner, "core/pods", ns, s("name"))
        .await?
        .ok_or_else(|| {
            ApiError::new(404, "NotFound", format!("pods \"{}\" not found", s("name")))
        })?;
    let uid = uid_of(&pod);
    if !s("uid").is_empty() && s("uid") != uid {
        return Err(ApiError::new(409, "Conflict", format!("the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated", s("uid"))));
    }
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok((
        BoundRef {
            name: s("name").to_owned(),
            uid,
        },
        node,
    ))
}

/// The ServiceAccount a bearer token stands for; 401 when it does not verify or its
/// ServiceAccount (or bound pod) is gone.
pub(super) async fn authenticate<S: Store>(
    inner: &Inner<S>,
    token: &str,
) -> Result<UserInfo, ApiError> {
    let unauthorized = || ApiError::new(401, "Unauthorized", "Unauthorized");
    let claims = inner
        .tokens
        .verify(token, jiff::Timestamp::now().as_second())
        .map_err(|e| {
            tracing::debug!(error = %e, "service account token refused");
            unauthorized()
        })?;
    let k = &claims.kubernetes;
    let sa = object(
        inner,
        "core/serviceaccounts",
        &k.namespace,
        &k.serviceaccount.name,
    )
    .await?;
    if sa.map(|v| uid_of(&v)) != Some(k.serviceaccount.uid.clone()) {
        return Err(unauthorized());
    }
    if let Some(p) = &k.pod {
        let pod = object(inner, "core/pods", &k.namespace, &p.name).await?;
        if pod.map(|v| uid_of(&v)) != Some(p.uid.clone()) {
            return Err(unauthorized());
        }
    }
    Ok(UserInfo {
        name: claims.sub.clone(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{}", k.namespace),
        ],
    })
}
