//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`, as kube-apiserver serves it
//! (`pkg/registry/core/pod/rest/log.go`, `pod.LogLocation`): the options validated, the
//! container chosen (`ValidateContainer`), then the node's kubelet asked for
//! `/containerLogs/{ns}/{pod}/{container}` and its body streamed back as `text/plain`. A pod
//! not yet on a node has empty logs; a kubelet's refusal keeps its status and words.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{json, Value};

use super::{target_name, ApiError, Ctx, Inner, Res, Target};
use crate::body::ResponseBody;
use crate::store::Store;

pub(super) async fn log<S: Store>(inner: &Inner<S>, t: &Target, ctx: &Ctx) -> Res {
    let name = target_name(t);
    let query = options(ctx, name)?;
    let pod = super::read::load_target(inner, t).await?;
    let container = validate_container(ctx.q("container").unwrap_or_default(), &pod, name)?;
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if node.is_empty() {
        return Ok(text(ResponseBody::full(Bytes::new())));
    }
    let Some(proxy) = &inner.config.node_proxy else {
        return Err(ApiError::new(
            503,
            "ServiceUnavailable",
            format!("no connection to node {node:?} is configured for pods/log"),
        ));
    };
    let ns = t.namespace.as_deref().unwrap_or_default();
    let path = format!("/containerLogs/{ns}/{name}/{container}");
    let path = if query.is_empty() {
        path
    } else {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&query)
            .finish();
        format!("{path}?{q}")
    };
    match proxy.0.get_stream(node, &path).await {
        Ok(body) => Ok(text(ResponseBody::from_stream(body))),
        Err(e) => Err(ApiError::new(e.code, reason(e.code), e.message)),
    }
}

fn text(body: ResponseBody) -> http::Response<ResponseBody> {
    let mut r = http::Response::new(body);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

/// The status reason kube-apiserver gives a kubelet's non-2xx answer
/// (`errors.NewGenericServerResponse`); an unreachable node has none.
pub(super) fn reason(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "",
    }
}

/// `PodLogOptions` from the query, validated as `ValidatePodLogOptions` does; the kubelet
/// query (sorted, as Go's `url.Values.Encode` writes it).
fn options(ctx: &Ctx, name: &str) -> Result<BTreeMap<&'static str, String>, ApiError> {
    let mut out = BTreeMap::new();
    for key in ["follow", "previous", "timestamps"] {
        if let Some(v) = ctx.q(key) {
            let on = go_bool(v).ok_or_else(|| {
                ApiError::bad_request(format!("invalid value {v:?} for {key}: not a boolean"))
            })?;
            if on {
                out.insert(key, "true".to_owned());
            }
        }
    }
    let mut invalid = Vec::new();
    for (key, min) in [("sinceSeconds", 1), ("tailLines", 0), ("limitBytes", 1)] {
        if let Some(v) = ctx.q(key) {
            let n: i64 = v.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid value {v:?} for {key}: not an integer"))
            })?;
            if n < min {
                let rule = if min == 0 {
                    "must be greater than or equal to 0"
                } else {
                    "must be greater than 0"
                };
                invalid.push((key, format!("{key}: Invalid value: {n}: {rule}")));
            } else {
                out.insert(key, n.to_string());
            }
        }
    }
    if let Some(v) = ctx.q("sinceTime") {
        let t: jiff::Timestamp = v.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid value {v:?} for sinceTime: not RFC 3339"))
        })?;
        if ctx.q("sinceSeconds").is_some() {
            invalid.push((
                "",
                "at most one of `sinceTime` or `sinceSeconds` may be specified".to_owned(),
            ));
        }
        out.insert("sinceTime", t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    }
    if invalid.is_empty() {
        return Ok(out);
    }
    let causes: Vec<Value> = invalid
        .iter()
        .map(|(field, msg)| json!({"reason": "FieldValueInvalid", "field": field, "message": msg}))
        .collect();
    let msgs: Vec<&str> = invalid.iter().map(|(_, m)| m.as_str()).collect();
    let message = if msgs.len() == 1 {
        msgs[0].to_owned()
    } else {
        format!("[{}]", msgs.join(", "))
    };
    Err(ApiError::new(
        422,
        "Invalid",
        format!("PodLogOptions {name:?} is invalid: {message}"),
    )
    .details(json!({"name": name, "kind": "PodLogOptions", "causes": causes})))
}

/// Go's `strconv.ParseBool`, as the parameter codec reads booleans.
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// kube-apiserver's `ValidateContainer`: the named container must exist (init and ephemeral
/// containers count); with none named, a pod of exactly one container uses it.
pub(super) fn validate_container(
    container: &str,
    pod: &Value,
    pod_name: &str,
) -> Result<String, ApiError> {
    let names = |key: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect()
    };
    let (init, main, ephemeral) = (
        names("initContainers"),
        names("containers"),
        names("ephemeralContainers"),
    );
    if container.is_empty() {
        return match main.len() {
            1 => Ok(main[0].clone()),
            0 => Err(ApiError::bad_request(format!(
                "pod {pod_name} does not have a container"
            ))),
            _ => {
                let all: Vec<String> = init.into_iter().chain(main).chain(ephemeral).collect();
                Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    all.join(" ")
                )))
            }
        };
    }
    if init
        .iter()
        .chain(&main)
        .chain(&ephemeral)
        .any(|n| n == container)
    {
        Ok(container.to_owned())
    } else {
        Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {pod_name}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_chosen_as_kube_apiserver_chooses_them() {
        let pod = json!({"spec": {
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "a"}, {"name": "b"}],
        }});
        assert_eq!(
            validate_container("b", &pod, "p").ok().as_deref(),
            Some("b")
        );
        assert_eq!(
            validate_container("init", &pod, "p").ok().as_deref(),
            Some("init")
        );
        let e = validate_container("", &pod, "p").expect_err("ambiguous");
        assert_eq!(
            e.message,
            "a container name must be specified for pod p, choose one of: [init a b]"
        );
        let e = validate_container("c", &pod, "p").expect_err("unknown");
        assert_eq!(e.message, "container c is not valid for pod p");
        let one = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(
            validate_container("", &one, "p").ok().as_deref(),
            Some("only")
        );
    }
}
