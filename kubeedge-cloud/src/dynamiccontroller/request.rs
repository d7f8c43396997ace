//! An Application as a Kubernetes REST request (sans-IO).

use kubeedge_proto::{Application, ApplicationKey, ApplicationVerb, PatchInfo, StatusError};
use serde_json::Value;

/// How to call the API for an Application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    pub(crate) method: http::Method,
    /// Path and query.
    pub(crate) uri: String,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Vec<u8>,
}

impl Call {
    /// A bare GET of `path` (a pass-through request).
    pub(crate) fn get(path: &str) -> Self {
        Self {
            method: http::Method::GET,
            uri: path.to_owned(),
            content_type: None,
            body: Vec::new(),
        }
    }
}

/// A refusal (boxed: a `StatusError` is large).
pub(crate) type Refusal = Box<StatusError>;

fn bad(msg: impl Into<String>) -> Refusal {
    Box::new(StatusError::failure(400, "BadRequest", msg))
}

fn seg(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `/api/v1[/namespaces/<ns>]/<resource>[/<name>][/<subresource>]` (or `/apis/<g>/<v>/…`).
pub(crate) fn path(key: &ApplicationKey, subresource: &str) -> String {
    let mut p = if key.is_core() {
        format!("/api/{}", seg(&key.version))
    } else {
        format!("/apis/{}/{}", seg(&key.group), seg(&key.version))
    };
    if let Some(ns) = &key.namespace {
        if key.resource != "namespaces" {
            p.push_str(&format!("/namespaces/{}", seg(ns)));
        }
    }
    p.push('/');
    p.push_str(&seg(&key.resource));
    if let Some(name) = &key.name {
        p.push('/');
        p.push_str(&seg(name));
    }
    for s in subresource.split('/').filter(|s| !s.is_empty()) {
        p.push('/');
        p.push_str(&seg(s));
    }
    p
}

/// Query parameters from an options object (ListOptions, GetOptions, CreateOptions, ...):
/// every scalar member except the type meta.
fn query(options: Option<&Value>, watch: bool) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if watch {
        q.append_pair("watch", "true");
    }
    if let Some(Value::Object(m)) = options {
        for (k, v) in m {
            if k == "kind" || k == "apiVersion" || (watch && k == "watch") {
                continue;
            }
            match v {
                Value::String(s) if !s.is_empty() => {
                    q.append_pair(k, s);
                }
                Value::Bool(b) if *b => {
                    q.append_pair(k, "true");
                }
                Value::Number(n) if n.as_i64() != Some(0) => {
                    q.append_pair(k, &n.to_string());
                }
                Value::Array(items) => {
                    for i in items {
                        if let Value::String(s) = i {
                            q.append_pair(k, s);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let q = q.finish();
    if q.is_empty() {
        q
    } else {
        format!("?{q}")
    }
}

/// The list/watch options of a watch Application (labelSelector, fieldSelector).
pub(crate) fn selectors(app: &Application) -> (Option<String>, Option<String>) {
    let opts: Option<Value> = app.option_json().ok().flatten();
    let get = |k: &str| {
        opts.as_ref()
            .and_then(|o| o.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    (get("labelSelector"), get("fieldSelector"))
}

/// The call for `app` (any verb but `watch`).
pub(crate) fn call(app: &Application, key: &ApplicationKey) -> Result<Call, Refusal> {
    let options: Option<Value> = app
        .option_json()
        .map_err(|e| bad(format!("invalid options: {e}")))?;
    let body = app.req_body.clone().unwrap_or_default();
    let json = Some("application/json".to_owned());
    let c = match &app.verb {
        ApplicationVerb::Get => Call {
            method: http::Method::GET,
            uri: path(key, &app.subresource) + &query(options.as_ref(), false),
            content_type: None,
            body: Vec::new(),
        },
        ApplicationVerb::List => Call {
            method: http::Method::GET,
            uri: path(key, "") + &query(options.as_ref(), false),
            content_type: None,
            body: Vec::new(),
        },
        ApplicationVerb::Create => {
            // The name is in the body; POST goes to the collection (or a subresource).
            let mut collection = key.clone();
            if app.subresource.is_empty() {
                collection.name = None;
            }
            Call {
                method: http::Method::POST,
                uri: path(&collection, &app.subresource) + &query(options.as_ref(), false),
                content_type: json,
                body,
            }
        }
        ApplicationVerb::Update | ApplicationVerb::UpdateStatus => {
            let mut key = key.clone();
            if key.name.is_none() {
                key.name = app.req_body_json::<Value>().ok().flatten().and_then(|v| {
                    v.pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
            }
            let sub = if app.verb == ApplicationVerb::UpdateStatus {
                "status"
            } else {
                app.subresource.as_str()
            };
            Call {
                method: http::Method::PUT,
                uri: path(&key, sub) + &query(options.as_ref(), false),
                content_type: json,
                body,
            }
        }
        ApplicationVerb::Delete => Call {
            method: http::Method::DELETE,
            uri: path(key, ""),
            content_type: json,
            body: app.option.clone().unwrap_or_default(),
        },
        ApplicationVerb::Patch => {
            let info: PatchInfo = app
                .option_json()
                .map_err(|e| bad(format!("invalid patch info: {e}")))?
                .ok_or_else(|| bad("patch without patch info"))?;
            let mut key = key.clone();
            if key.name.is_none() && !info.name.is_empty() {
                key.name = Some(info.name.clone());
            }
            let sub = match &info.subresources {
                Some(s) if !s.is_empty() => s.join("/"),
                _ => app.subresource.clone(),
            };
            Call {
                method: http::Method::PATCH,
                uri: path(&key, &sub) + &query(Some(&info.options), false),
                content_type: Some(if info.patch_type.is_empty() {
                    "application/merge-patch+json".to_owned()
                } else {
                    info.patch_type.clone()
                }),
                body: info.data.unwrap_or_default(),
            }
        }
        ApplicationVerb::Watch => return Err(bad("watch is not a single call")),
        other => return Err(bad(format!("unsupported verb {other}"))),
    };
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> ApplicationKey {
        ApplicationKey::parse(k).expect("key")
    }

    #[test]
    fn paths() {
        assert_eq!(
            path(&key("/core/v1/pods/default/null"), ""),
            "/api/v1/namespaces/default/pods"
        );
        assert_eq!(path(&key("/core/v1/pods/null/null"), ""), "/api/v1/pods");
        assert_eq!(
            path(&key("/core/v1/nodes/null/n1"), "status"),
            "/api/v1/nodes/n1/status"
        );
        assert_eq!(
            path(
                &key("/coordination.k8s.io/v1/leases/kube-node-lease/n1"),
                ""
            ),
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"
        );
        assert_eq!(
            path(&key("/core/v1/namespaces/null/kube-system"), ""),
            "/api/v1/namespaces/kube-system"
        );
    }

    #[test]
    fn calls_from_captured_shapes() {
        let mut app = Application::new("/core/v1/pods/default/null", ApplicationVerb::List, "n");
        app.set_option(&serde_json::json!({"labelSelector": "app=x", "limit": 0, "watch": false}))
            .expect("opt");
        let c = call(&app, &app.parsed_key().expect("key")).expect("call");
        assert_eq!(
            c.uri,
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dx"
        );
        let mut app = Application::new("/core/v1/nodes/null/null", ApplicationVerb::Create, "n");
        app.set_option(
            &serde_json::json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}),
        )
        .expect("opt");
        app.req_body = Some(b"{}".to_vec());
        let c = call(&app, &app.parsed_key().expect("key")).expect("call");
        assert_eq!(
            (c.method, c.uri.as_str()),
            (http::Method::POST, "/api/v1/nodes")
        );
        let mut app = Application::new("/core/v1/pods/default/p", ApplicationVerb::Patch, "n");
        app.subresource = "status".into();
        app.set_option(&PatchInfo {
            name: "p".into(),
            patch_type: "application/merge-patch+json".into(),
            data: Some(b"{}".to_vec()),
            options: serde_json::json!({"kind": "PatchOptions"}),
            subresources: Some(vec!["status".into()]),
        })
        .expect("opt");
        let c = call(&app, &app.parsed_key().expect("key")).expect("call");
        assert_eq!(c.uri, "/api/v1/namespaces/default/pods/p/status");
        assert_eq!(
            c.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        let mut app = Application::new("/core/v1/pods/default/p", ApplicationVerb::Patch, "n");
        app.option = Some(b"not json".to_vec());
        assert!(call(&app, &app.parsed_key().expect("key")).is_err());
    }
}
