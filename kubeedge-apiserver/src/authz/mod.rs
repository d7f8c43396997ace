//! Authorization: what a request asks to do ([`Attributes`], read from its method and path as
//! kube-apiserver's `RequestInfoFactory` does) and whether its user may ([`Decision`]).
//!
//! The embedded API server decides as a kube-apiserver started with
//! `--authorization-mode=Node,RBAC` and the NodeRestriction admission plugin: `system:masters`
//! may do everything, then the Node authorizer for `system:node:<name>` users, then RBAC, and
//! writes by nodes pass NodeRestriction. RBAC writes pass the escalation check. Denials carry
//! Kubernetes' message (`User "u" cannot get resource "pods" in API group "" in the namespace
//! "ns"`). [`token`] issues and verifies ServiceAccount tokens.

pub(crate) mod admission;
pub(crate) mod bootstrap;
pub(crate) mod escalation;
pub(crate) mod node;
pub(crate) mod rbac;
pub mod token;
pub(crate) mod validate;

use std::collections::HashMap;

use http::Method;

use crate::serve::UserInfo;

/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group that may do everything, whatever RBAC says.
pub const MASTERS: &str = "system:masters";

/// What a request asks to do, in the terms authorizers decide on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// The user name.
    pub user: String,
    /// The user's groups (with `system:authenticated` for an authenticated user).
    pub groups: Vec<String>,
    /// The verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, `impersonate`, … for resources; the lower-case HTTP method for paths.
    pub verb: String,
    /// Whether this is about a resource (otherwise about `path`).
    pub resource_request: bool,
    /// The API group (`""` for the core group).
    pub api_group: String,
    /// The API version (`*` when any).
    pub api_version: String,
    /// The resource (plural).
    pub resource: String,
    /// The subresource, or `""`.
    pub subresource: String,
    /// The namespace, or `""` at the cluster scope.
    pub namespace: String,
    /// The object's name, or `""`.
    pub name: String,
    /// The request path (for non-resource requests).
    pub path: String,
    /// The raw field selector of a list or watch (`spec.nodeName=n1`), or `""`.
    pub field_selector: String,
}

impl Attributes {
    /// The attributes of an HTTP request by `user`, read from its method, path and query as
    /// kube-apiserver's `RequestInfoFactory` reads them.
    pub fn from_request(
        user: &UserInfo,
        method: &Method,
        path: &str,
        query: &HashMap<String, String>,
    ) -> Self {
        let mut a = Self {
            user: user.name.clone(),
            groups: user.groups.clone(),
            path: path.to_owned(),
            verb: method.as_str().to_ascii_lowercase(),
            ..Self::default()
        };
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let rest = match parts.as_slice() {
            ["api", v, rest @ ..] => {
                a.api_version = (*v).to_owned();
                rest
            }
            ["apis", g, v, rest @ ..] => {
                a.api_group = (*g).to_owned();
                a.api_version = (*v).to_owned();
                rest
            }
            _ => return a,
        };
        if rest.is_empty() {
            return a;
        }
        a.resource_request = true;
        a.verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_owned();
        let mut rest = rest;
        if rest.first() == Some(&"watch") {
            a.verb = "watch".into();
            rest = &rest[1..];
        }
        if rest.first() == Some(&"namespaces") && rest.len() > 1 {
            a.namespace = rest[1].to_owned();
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
        a.resource = rest.first().map(|s| (*s).to_owned()).unwrap_or_default();
        a.name = rest.get(1).map(|s| (*s).to_owned()).unwrap_or_default();
        a.subresource = rest.get(2).map(|s| (*s).to_owned()).unwrap_or_default();
        if a.name.is_empty() {
            match a.verb.as_str() {
                "get" if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) => {
                    a.verb = "watch".into();
                }
                "get" => a.verb = "list".into(),
                "delete" => a.verb = "deletecollection".into(),
                _ => {}
            }
        }
        // A list or watch of one object by `metadata.name` is about that object.
        if matches!(a.verb.as_str(), "list" | "watch") {
            a.field_selector = query.get("fieldSelector").cloned().unwrap_or_default();
            if let Some(name) = query.get("fieldSelector").and_then(|s| {
                s.split(',').find_map(|t| {
                    let v = t.trim().strip_prefix("metadata.name")?;
                    v.strip_prefix("==").or_else(|| v.strip_prefix('='))
                })
            }) {
                a.name = name.to_owned();
            }
        }
        a
    }

    /// `resource` or `resource/subresource`.
    pub fn full_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// Kubernetes' 403 message for a denied request (`forbidden.go`'s wording, with the
    /// authorizer's reason after a colon when there is one).
    pub fn forbidden_message(&self, reason: &str) -> String {
        let what = if self.resource_request {
            let scope = if self.namespace.is_empty() {
                "at the cluster scope".to_owned()
            } else {
                format!("in the namespace \"{}\"", self.namespace)
            };
            format!(
                "User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
                self.user,
                self.verb,
                self.full_resource(),
                self.api_group
            )
        } else {
            format!(
                "User \"{}\" cannot {} path \"{}\"",
                self.user, self.verb, self.path
            )
        };
        let msg = if reason.is_empty() {
            what
        } else {
            format!("{what}: {reason}")
        };
        let msg = msg
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        if !self.resource_request {
            return format!("forbidden: {msg}");
        }
        let gr = if self.api_group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.api_group)
        };
        if self.name.is_empty() {
            format!("{gr} is forbidden: {msg}")
        } else {
            format!("{gr} \"{}\" is forbidden: {msg}", self.name)
        }
    }
}

/// An authorizer's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The request may go ahead.
    Allow,
    /// The request is refused, whatever later authorizers would say.
    Deny,
    /// This authorizer has no opinion; the next one decides (none left: refused).
    NoOpinion,
}

/// The user's groups as authorization sees them: `system:authenticated` is added for every
/// user but `system:anonymous`.
pub(crate) fn effective_groups(user: &UserInfo) -> Vec<String> {
    let mut groups = user.groups.clone();
    if user.name != "system:anonymous" && !groups.iter().any(|g| g == AUTHENTICATED) {
        groups.push(AUTHENTICATED.into());
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: Method, path: &str, query: &[(&str, &str)]) -> Attributes {
        let user = UserInfo {
            name: "u".into(),
            groups: vec![],
        };
        let q = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Attributes::from_request(&user, &method, path, &q)
    }

    #[test]
    fn request_info_follows_kube_apiserver() {
        let a = attrs(Method::GET, "/api/v1/namespaces/ns/pods", &[]);
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("list", "ns"));
        let a = attrs(Method::GET, "/api/v1/pods", &[("watch", "true")]);
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("watch", ""));
        let a = attrs(Method::GET, "/api/v1/watch/namespaces/ns/pods/p", &[]);
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("watch", "p"));
        let a = attrs(Method::PUT, "/api/v1/namespaces/ns/pods/p/status", &[]);
        assert_eq!(a.full_resource(), "pods/status");
        let a = attrs(Method::GET, "/api/v1/namespaces/ns", &[]);
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.namespace.as_str()),
            ("namespaces", "ns", "ns")
        );
        let a = attrs(Method::PUT, "/api/v1/namespaces/ns/finalize", &[]);
        assert_eq!(
            (a.resource.as_str(), a.subresource.as_str()),
            ("namespaces", "finalize")
        );
        let a = attrs(
            Method::DELETE,
            "/apis/apps/v1/namespaces/ns/deployments",
            &[],
        );
        assert_eq!(
            (a.verb.as_str(), a.api_group.as_str()),
            ("deletecollection", "apps")
        );
        let a = attrs(
            Method::GET,
            "/api/v1/namespaces/ns/secrets",
            &[("fieldSelector", "metadata.name=s")],
        );
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("list", "s"));
        let a = attrs(Method::GET, "/apis/apps", &[]);
        assert!(!a.resource_request);
        assert_eq!(a.verb, "get");
    }

    #[test]
    fn forbidden_messages_are_kubernetes_wording() {
        let a = attrs(Method::GET, "/api/v1/namespaces/default/secrets/s1", &[]);
        assert_eq!(
            a.forbidden_message("no relationship found"),
            "secrets \"s1\" is forbidden: User \"u\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found"
        );
        let a = attrs(Method::GET, "/apis/apps/v1/deployments", &[]);
        assert_eq!(
            a.forbidden_message(""),
            "deployments.apps is forbidden: User \"u\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        );
        let a = attrs(Method::GET, "/metrics", &[]);
        assert_eq!(
            a.forbidden_message(""),
            "forbidden: User \"u\" cannot get path \"/metrics\""
        );
    }
}
