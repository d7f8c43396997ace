//! What the API answers with: `metav1.Status` errors ([`ApiError`]) and JSON bodies.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use serde_json::{json, Value};

use crate::body::ResponseBody;
use crate::error::StoreError;
use crate::objects::Cause;
use crate::registry::ResourceDef;

/// A failure rendered as a `metav1.Status`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(super) code: u16,
    reason: &'static str,
    pub(super) message: String,
    details: Option<Value>,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(super) fn not_found_path() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// Kubernetes' 403 for a request its authorizers did not allow.
    pub(crate) fn forbidden(a: &crate::authz::Attributes, reason: &str) -> Self {
        let mut d = serde_json::Map::new();
        for (k, v) in [
            ("name", &a.name),
            ("group", &a.api_group),
            ("kind", &a.resource),
        ] {
            if !v.is_empty() {
                d.insert(k.into(), Value::String(v.clone()));
            }
        }
        Self::new(403, "Forbidden", a.forbidden_message(reason)).details(Value::Object(d))
    }

    pub(super) fn details(mut self, d: Value) -> Self {
        self.details = Some(d);
        self
    }

    pub(super) fn invalid(def: &ResourceDef, name: &str, causes: &[Cause]) -> Self {
        Self::invalid_as(def, &def.kind, name, causes)
    }

    /// A 422 naming `kind` (upstream's qualified kind: `Kind.group`, or the plural resource
    /// for the generic store's own errors) with its field causes.
    pub(super) fn invalid_as(def: &ResourceDef, kind: &str, name: &str, causes: &[Cause]) -> Self {
        let mut msgs: Vec<String> = Vec::new();
        for c in causes {
            let m = format!("{}: {}", c.field, c.message);
            if !msgs.contains(&m) {
                msgs.push(m);
            }
        }
        let msg = if msgs.len() > 1 {
            format!("[{}]", msgs.join(", "))
        } else {
            msgs.join("")
        };
        let qualified = if def.group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{}", def.group)
        };
        Self::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {msg}"),
        )
        .details(json!({
            "name": name, "group": def.group, "kind": kind,
            "causes": causes.iter().map(|c| json!({"reason": c.kind, "message": c.message, "field": c.field})).collect::<Vec<_>>(),
        }))
    }

    pub(super) fn store(def: &ResourceDef, name: &str, e: StoreError) -> Self {
        let what = if def.group.is_empty() {
            def.plural.clone()
        } else {
            format!("{}.{}", def.plural, def.group)
        };
        let d = json!({"name": name, "group": def.group, "kind": def.plural});
        match e {
            StoreError::NotFound(_) => {
                Self::new(404, "NotFound", format!("{what} \"{name}\" not found")).details(d)
            }
            StoreError::AlreadyExists(_) => {
                Self::new(409, "AlreadyExists", format!("{what} \"{name}\" already exists")).details(d)
            }
            StoreError::Conflict { .. } => Self::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on {what} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
            )
            .details(d),
            StoreError::Gone { requested, .. } => Self::new(
                410,
                "Expired",
                format!("too old resource version: {requested}"),
            ),
            other => store_internal(other),
        }
    }

    pub(crate) fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }

    pub(crate) fn into_response(self) -> Response<ResponseBody> {
        json_response(self.code, &self.status())
    }
}

/// A store failure that is not about the object: 503 while the store cannot serve (retryable),
/// 500 otherwise.
pub(super) fn store_internal(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(why) => ApiError::new(503, "ServiceUnavailable", why),
        e => {
            tracing::error!(error = %e, "store failure");
            ApiError::new(500, "InternalError", format!("storage failure: {e}"))
        }
    }
}

pub(crate) fn json_response(code: u16, v: &Value) -> Response<ResponseBody> {
    bytes_response(
        code,
        Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
        "application/json",
    )
}

pub(super) fn bytes_response(code: u16, b: Bytes, ctype: &str) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(b));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}
