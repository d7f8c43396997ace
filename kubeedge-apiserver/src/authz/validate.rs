//! Validation of the RBAC kinds, as `pkg/apis/rbac/validation/validation.go`: rules need verbs
//! and either resources (with groups) or non-resource URLs (cluster roles only); bindings need
//! a supported `roleRef` and well-formed subjects; `roleRef` never changes.

use serde_json::Value;

use crate::objects::Cause;

const GROUP: &str = "rbac.authorization.k8s.io";

fn required(field: String, detail: &str) -> Cause {
    Cause {
        kind: "FieldValueRequired",
        field,
        message: if detail.is_empty() {
            "Required value".into()
        } else {
            format!("Required value: {detail}")
        },
    }
}

fn not_supported(field: String, value: &str, supported: &[&str]) -> Cause {
    let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
    Cause {
        kind: "FieldValueNotSupported",
        field,
        message: format!(
            "Unsupported value: \"{value}\": supported values: {}",
            list.join(", ")
        ),
    }
}

fn invalid(field: String, shown: String, why: &str) -> Cause {
    Cause {
        kind: "FieldValueInvalid",
        field,
        message: format!("Invalid value: {shown}: {why}"),
    }
}

fn list_len(v: &Value, k: &str) -> usize {
    v.get(k).and_then(Value::as_array).map_or(0, Vec::len)
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn rules(obj: &Value, namespaced: bool, causes: &mut Vec<Cause>) {
    let list = obj.get("rules").and_then(Value::as_array);
    for (i, r) in list.into_iter().flatten().enumerate() {
        let at = |f: &str| format!("rules[{i}].{f}");
        if list_len(r, "verbs") == 0 {
            causes.push(required(
                at("verbs"),
                "verbs must contain at least one value",
            ));
        }
        if list_len(r, "nonResourceURLs") > 0 {
            let shown = serde_json::to_string(&r["nonResourceURLs"]).unwrap_or_default();
            if namespaced {
                causes.push(invalid(
                    at("nonResourceURLs"),
                    shown.clone(),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if list_len(r, "apiGroups") + list_len(r, "resources") + list_len(r, "resourceNames")
                > 0
            {
                causes.push(invalid(
                    at("nonResourceURLs"),
                    shown,
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if list_len(r, "apiGroups") == 0 {
            causes.push(required(
                at("apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if list_len(r, "resources") == 0 {
            causes.push(required(
                at("resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
}

fn binding(obj: &Value, namespaced: bool, causes: &mut Vec<Cause>) {
    let role_ref = obj.get("roleRef").unwrap_or(&Value::Null);
    let group = str_of(role_ref, "apiGroup");
    if group != GROUP {
        causes.push(not_supported("roleRef.apiGroup".into(), group, &[GROUP]));
    }
    let kind = str_of(role_ref, "kind");
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&kind) {
        causes.push(not_supported("roleRef.kind".into(), kind, kinds));
    }
    let name = str_of(role_ref, "name");
    if name.is_empty() {
        causes.push(required("roleRef.name".into(), ""));
    } else if name.contains('/') || name.contains('%') || name == "." || name == ".." {
        causes.push(invalid(
            "roleRef.name".into(),
            format!("\"{name}\""),
            "may not contain '/' or '%'",
        ));
    }
    let subjects = obj.get("subjects").and_then(Value::as_array);
    for (i, s) in subjects.into_iter().flatten().enumerate() {
        let at = |f: &str| format!("subjects[{i}].{f}");
        if str_of(s, "name").is_empty() {
            causes.push(required(at("name"), ""));
        }
        let group = str_of(s, "apiGroup");
        match str_of(s, "kind") {
            "ServiceAccount" => {
                if !group.is_empty() {
                    causes.push(not_supported(at("apiGroup"), group, &[""]));
                }
                if !namespaced && str_of(s, "namespace").is_empty() {
                    causes.push(required(at("namespace"), ""));
                }
            }
            "User" | "Group" => {
                if group != GROUP {
                    causes.push(not_supported(at("apiGroup"), group, &[GROUP]));
                }
            }
            other => causes.push(not_supported(
                at("kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
}

/// The causes that make an RBAC object invalid (none for other kinds).
pub(crate) fn object(kind: &str, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match kind {
        "Role" => rules(obj, true, &mut causes),
        "ClusterRole" => rules(obj, false, &mut causes),
        "RoleBinding" => binding(obj, true, &mut causes),
        "ClusterRoleBinding" => binding(obj, false, &mut causes),
        _ => {}
    }
    causes
}

/// A binding's `roleRef` cannot change.
pub(crate) fn update(kind: &str, old: &Value, new: &Value) -> Vec<Cause> {
    if !matches!(kind, "RoleBinding" | "ClusterRoleBinding")
        || old.get("roleRef") == new.get("roleRef")
    {
        return Vec::new();
    }
    let r = new.get("roleRef").unwrap_or(&Value::Null);
    let shown = format!(
        "rbac.RoleRef{{APIGroup:\"{}\", Kind:\"{}\", Name:\"{}\"}}",
        str_of(r, "apiGroup"),
        str_of(r, "kind"),
        str_of(r, "name")
    );
    vec![invalid("roleRef".into(), shown, "cannot change roleRef")]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_and_bindings_are_checked_as_upstream() {
        let c = object(
            "Role",
            &json!({"rules": [{"verbs": [], "nonResourceURLs": ["/x"]}, {"verbs": ["get"]}]}),
        );
        let fields: Vec<&str> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "rules[0].verbs",
                "rules[0].nonResourceURLs",
                "rules[1].apiGroups",
                "rules[1].resources"
            ]
        );
        let c = object(
            "ClusterRoleBinding",
            &json!({"roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "r"},
                "subjects": [{"kind": "ServiceAccount", "name": "sa"}, {"kind": "Robot", "name": "x"}]}),
        );
        let msgs: Vec<String> = c
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            msgs,
            [
                "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
                "subjects[0].namespace: Required value",
                "subjects[1].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
            ]
        );
        let a = json!({"roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "view"}});
        let b = json!({"roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "edit"}});
        assert!(update("RoleBinding", &a, &a).is_empty());
        assert_eq!(
            update("RoleBinding", &a, &b)[0].message,
            "Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"ClusterRole\", Name:\"edit\"}: cannot change roleRef"
        );
    }
}
