//! Entry points for the fuzz targets in `fuzz/` and for this crate's no-panic proptests: thin
//! wrappers over the request-body decoders, which are otherwise private to the crate. Built
//! with the `fuzzing` feature (and in tests). Not a stable API: nothing outside `fuzz/` should
//! use it.
//!
//! Each wrapper runs the same functions a request runs, with the request context (content type,
//! `fieldValidation`, the target resource) reduced to plain arguments.

use serde_json::Value;

use crate::{objects, patch, protobuf, schema};

/// Decodes a `k8s\0`-enveloped protobuf request body into its JSON form, as a
/// `application/vnd.kubernetes.protobuf` create does. An error is the 415's message.
pub fn protobuf_body(body: &[u8]) -> Result<Value, String> {
    protobuf::decode(body).map_err(|e| e.to_string())
}

/// The media type of an object body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json` (and every `+json` patch type).
    Json,
    /// `application/yaml` and `application/apply-patch+yaml`.
    Yaml,
}

/// Decodes a JSON or YAML object body as a create, update or merge-style patch reads it: it
/// must be one JSON object. An error is the 400's message.
pub fn object_body(format: BodyFormat, body: &[u8]) -> Result<Value, String> {
    let v: Value = match format {
        BodyFormat::Json => {
            serde_json::from_slice(body).map_err(|e| format!("invalid json body: {e}"))?
        }
        BodyFormat::Yaml => {
            serde_yaml::from_slice(body).map_err(|e| format!("invalid yaml body: {e}"))?
        }
    };
    if !v.is_object() {
        return Err("the request body must be a json object".into());
    }
    Ok(v)
}

/// A `fieldValidation` query parameter value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Unknown fields are a 400.
    Strict,
    /// Unknown fields are dropped with a warning (the default).
    Warn,
    /// Unknown fields are dropped silently.
    Ignore,
}

/// What a body check decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The object as it would be stored: unknown fields pruned.
    pub object: Value,
    /// The `Warning` headers the request would answer with.
    pub warnings: Vec<String>,
}

/// The kinds [`check_object`] knows: every built-in kind with a typed form, and
/// [`CUSTOM_KIND`], a custom resource checked against [`custom_schema`].
pub const KINDS: &[&str] = &[
    "Pod",
    "Node",
    "Namespace",
    "ConfigMap",
    "Secret",
    "Service",
    "Endpoints",
    "Event",
    "ServiceAccount",
    "Lease",
    "Deployment",
    "ReplicaSet",
    "DaemonSet",
    "CustomResourceDefinition",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    CUSTOM_KIND,
];

/// The kind name [`check_object`] checks against the structural schema of [`custom_schema`].
pub const CUSTOM_KIND: &str = "Widget";

/// A structural CRD schema using every construct the validator knows: nested objects, arrays,
/// `required`, `enum`, `nullable`, `x-kubernetes-int-or-string` and
/// `x-kubernetes-preserve-unknown-fields`.
pub fn custom_schema() -> Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["size"],
                "properties": {
                    "size": {"type": "integer"},
                    "ratio": {"type": "number", "nullable": true},
                    "mode": {"type": "string", "enum": ["a", "b"]},
                    "port": {"x-kubernetes-int-or-string": true},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "parts": {"type": "array", "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "on": {"type": "boolean"}}
                    }},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                }
            },
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
        }
    })
}

/// Checks a decoded object of `kind` (one of [`KINDS`]) the way a create or update does before
/// it stores: the built-in typed form or the custom schema finds wrongly typed fields (an
/// error, the 400's or 422's message) and unknown ones (pruned; under `validation` a 400, a
/// warning or nothing).
pub fn check_object(
    kind: &str,
    validation: FieldValidation,
    mut object: Value,
) -> Result<Checked, String> {
    let unknown = if kind == CUSTOM_KIND {
        let report = schema::validate(&custom_schema(), &mut object);
        if let Some(c) = report.causes.first() {
            return Err(format!("{} invalid: {}", report.causes.len(), c.message));
        }
        report.unknown
    } else {
        objects::check_builtin(kind, &mut object)?
    };
    let listed = unknown.iter().map(|u| format!("unknown field \"{u}\""));
    let warnings = match validation {
        FieldValidation::Strict if !unknown.is_empty() => {
            let list: Vec<String> = listed.collect();
            return Err(format!("strict decoding error: {}", list.join(", ")));
        }
        FieldValidation::Warn => listed.collect(),
        FieldValidation::Strict | FieldValidation::Ignore => Vec::new(),
    };
    Ok(Checked { object, warnings })
}

/// A PATCH request's media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/apply-patch+yaml`: merged like a merge patch.
    ApplyYaml,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
}

/// Applies a PATCH body of `patch_type` to `current`. An error is the 400's or 422's message.
pub fn apply_patch(patch_type: PatchType, current: &Value, body: &[u8]) -> Result<Value, String> {
    let mut out = current.clone();
    match patch_type {
        PatchType::Json => {
            let p: json_patch::Patch =
                serde_json::from_slice(body).map_err(|e| format!("invalid json patch: {e}"))?;
            json_patch::patch(&mut out, &p).map_err(|e| e.to_string())?;
        }
        PatchType::Merge | PatchType::ApplyYaml => {
            let format = if patch_type == PatchType::Merge {
                BodyFormat::Json
            } else {
                BodyFormat::Yaml
            };
            json_patch::merge(&mut out, &object_body(format, body)?);
        }
        PatchType::StrategicMerge => {
            out = patch::strategic_merge(current, &object_body(BodyFormat::Json, body)?)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            // Mostly-JSON text reaches past the parser.
            "[{}\\[\\]\":,a-z0-9$/. -]{0,128}".prop_map(String::into_bytes),
        ]
    }

    proptest! {
        #[test]
        fn object_bodies_never_panic(
            body in bytes(),
            kind in proptest::sample::select(KINDS),
            yaml in any::<bool>(),
        ) {
            let format = if yaml { BodyFormat::Yaml } else { BodyFormat::Json };
            if let Ok(v) = object_body(format, &body) {
                for validation in [FieldValidation::Strict, FieldValidation::Warn, FieldValidation::Ignore] {
                    let _ = check_object(kind, validation, v.clone());
                }
            }
        }

        #[test]
        fn patches_never_panic(body in bytes(), current in bytes()) {
            let current = serde_json::from_slice(&current)
                .unwrap_or_else(|_| serde_json::json!({"spec": {"containers": [{"name": "a"}]}}));
            for t in [PatchType::Json, PatchType::Merge, PatchType::ApplyYaml, PatchType::StrategicMerge] {
                let _ = apply_patch(t, &current, &body);
            }
        }
    }
}
