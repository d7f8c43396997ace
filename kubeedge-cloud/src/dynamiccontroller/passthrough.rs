//! Pass-through Applications: the discovery and health GETs an upstream edge's MetaServer
//! forwards with the bare request path as the key (`/version`, `/healthz`, `/api/v1`,
//! `/apis/<group>/<version>`, `/openapi/v2`, ...), answered by relaying the path to the API
//! server and returning its body unchanged as `RespBody`.
//!
//! Which paths pass: upstream's `pkg/util/pass-through/pass_through.go` (v1.15: `/version`;
//! v1.17 to v1.22 add `/healthz`, `/livez`, `/readyz`; v1.23 adds `/api`, `/api/<version>`,
//! `/apis`, `/apis/<group>`, `/apis/<group>/<version>`, `/openapi/v2`, `/openapi/v3`). The
//! v1.23 rule accepts every earlier version's paths, so it serves all edges.

use kubeedge_proto::ApplicationVerb;

/// The non-resource discovery paths passed through as they are.
const COMMON: &[&str] = &[
    "/api",
    "/apis",
    "/version",
    "/healthz",
    "/livez",
    "/readyz",
    "/openapi/v2",
    "/openapi/v3",
];

/// The API path to relay for a pass-through Application, or `None` when `key` and `verb`
/// are an ordinary Application (only `get` of a discovery path passes).
pub(crate) fn path<'a>(key: &'a str, verb: &ApplicationVerb) -> Option<&'a str> {
    if *verb != ApplicationVerb::Get {
        return None;
    }
    let path = key.strip_suffix('/').unwrap_or(key);
    if path.is_empty() || !path.starts_with('/') {
        return None;
    }
    if COMMON.contains(&path) {
        return Some(path);
    }
    let parts: Vec<&str> = path.split('/').collect();
    let discovery = match parts.get(1).copied() {
        Some("api") => parts.len() == 3,
        Some("apis") => parts.len() == 3 || parts.len() == 4,
        _ => false,
    };
    (discovery && parts.iter().skip(1).all(|p| !p.is_empty())).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_paths_pass_and_resource_keys_do_not() {
        let get = ApplicationVerb::Get;
        for (key, want) in [
            ("/version", Some("/version")),
            ("/healthz", Some("/healthz")),
            ("/livez", Some("/livez")),
            ("/readyz", Some("/readyz")),
            ("/api", Some("/api")),
            ("/api/", Some("/api")),
            ("/api/v1", Some("/api/v1")),
            ("/apis", Some("/apis")),
            ("/apis/apps", Some("/apis/apps")),
            ("/apis/apps/v1", Some("/apis/apps/v1")),
            ("/apis/apps/v1/", Some("/apis/apps/v1")),
            ("/openapi/v2", Some("/openapi/v2")),
            ("/openapi/v3", Some("/openapi/v3")),
            ("/api/v1/pods", None),
            ("/apis/apps/v1/deployments", None),
            ("/core/v1/pods/default/null", None),
            ("/metrics", None),
            ("/", None),
            ("", None),
            ("version", None),
            ("/apis//v1", None),
        ] {
            assert_eq!(path(key, &get), want, "{key:?}");
        }
        assert_eq!(path("/version", &ApplicationVerb::List), None);
        assert_eq!(path("/api", &ApplicationVerb::Create), None);
    }
}
