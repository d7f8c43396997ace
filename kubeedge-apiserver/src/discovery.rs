//! Discovery documents (legacy, unaggregated form: kubectl 1.30+ falls back to it when the
//! response is plain `application/json`), `/version`, and minimal OpenAPI documents.

use bytes::Bytes;
use http::{header, Response};
use serde_json::{json, Value};

use crate::body::ResponseBody;
use crate::registry::Registry;

pub(crate) const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub(crate) fn version(git_version: &str) -> Value {
    let (major, minor) = git_version
        .trim_start_matches('v')
        .split_once('.')
        .map(|(a, b)| {
            (
                a.to_owned(),
                b.split('.').next().unwrap_or_default().to_owned(),
            )
        })
        .unwrap_or_else(|| ("1".into(), "33".into()));
    json!({
        "major": major, "minor": minor, "gitVersion": git_version,
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "rust", "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

pub(crate) fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

pub(crate) fn group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .group_versions()
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub(crate) fn group(reg: &Registry, name: &str) -> Option<Value> {
    reg.group_versions()
        .iter()
        .find(|(g, _)| g == name && !g.is_empty())
        .map(|(g, vs)| {
            let mut v = group_json(g, vs);
            v["kind"] = json!("APIGroup");
            v["apiVersion"] = json!("v1");
            v
        })
}

pub(crate) fn resource_list(reg: &Registry, group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in reg.all() {
        if r.group != group || !r.versions.iter().any(|v| v == version) {
            continue;
        }
        let mut main = json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            main["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            main["categories"] = json!(r.categories);
        }
        resources.push(main);
        if r.status {
            resources.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
        }
        if r.scale.is_some() {
            resources.push(json!({"name": format!("{}/scale", r.plural), "singularName": "", "namespaced": r.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

pub(crate) fn root_paths(reg: &Registry) -> Value {
    let mut paths = vec![
        "/api".to_owned(),
        "/api/v1".into(),
        "/apis".into(),
        "/healthz".into(),
        "/livez".into(),
        "/readyz".into(),
        "/openapi/v2".into(),
        "/openapi/v3".into(),
        "/version".into(),
    ];
    for (g, vs) in reg.group_versions() {
        if g.is_empty() {
            continue;
        }
        paths.push(format!("/apis/{g}"));
        for v in vs {
            paths.push(format!("/apis/{g}/{v}"));
        }
    }
    json!({"paths": paths})
}

/// `/openapi/v2`: kubectl asks for the protobuf form and decodes it with gnostic. We answer
/// with a minimal valid document (`swagger: "2.0"` and an empty `info`), which kubectl accepts:
/// it then finds no schema for any kind, so client-side validation passes everything and
/// `kubectl apply` computes strategic merge patches from its compiled-in types.
pub(crate) fn openapi_v2(accept: &str) -> Response<ResponseBody> {
    if accept.contains("protobuf") {
        // Field 1 (swagger, string) = "2.0"; field 2 (info, message) = { title: "kubeedge-rs", version: "v1" }.
        let mut pb = vec![0x0a, 3, b'2', b'.', b'0'];
        let title = b"kubeedge-rs";
        let ver = b"v1";
        let info_len = 2 + title.len() + 2 + ver.len();
        pb.extend_from_slice(&[0x12, u8::try_from(info_len).unwrap_or(0)]);
        pb.extend_from_slice(&[0x0a, u8::try_from(title.len()).unwrap_or(0)]);
        pb.extend_from_slice(title);
        pb.extend_from_slice(&[0x12, u8::try_from(ver.len()).unwrap_or(0)]);
        pb.extend_from_slice(ver);
        let mut r = Response::new(ResponseBody::full(Bytes::from(pb)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            ),
        );
        return r;
    }
    crate::service::json_response(
        200,
        &json!({"swagger": "2.0", "info": {"title": "kubeedge-rs", "version": "v1"}, "paths": {}, "definitions": {}}),
    )
}

/// `/openapi/v3`: the index of per-group-version documents.
pub(crate) fn openapi_v3_root(reg: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, vs) in reg.group_versions() {
        for v in vs {
            let p = if g.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{g}/{v}")
            };
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=0")}),
            );
        }
    }
    json!({"paths": paths})
}

/// One group-version document: no paths and no schemas (so clients do not validate fields).
pub(crate) fn openapi_v3_gv(reg: &Registry, gv: &str) -> Option<Value> {
    let known = reg.group_versions().iter().any(|(g, vs)| {
        vs.iter().any(|v| {
            let p = if g.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{g}/{v}")
            };
            p == gv
        })
    });
    known.then(|| json!({"openapi": "3.0.0", "info": {"title": "kubeedge-rs", "version": "v1"}, "paths": {}, "components": {"schemas": {}}}))
}

/// The media type of aggregated discovery (`apidiscovery.k8s.io/v2`).
pub(crate) const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// `true` when the `Accept` header lists aggregated discovery v2 (kubectl 1.30+ does; older
/// clients get the unaggregated documents).
pub(crate) fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
            && params.contains(&"as=APIGroupDiscoveryList")
    })
}

/// Aggregated discovery for the legacy group (`legacy = true`, served at `/api`) or for every
/// named group (served at `/apis`).
pub(crate) fn aggregated(reg: &Registry, legacy: bool) -> Value {
    let mut items = Vec::new();
    for (g, vs) in reg.group_versions() {
        if g.is_empty() != legacy {
            continue;
        }
        let versions: Vec<Value> = vs
            .iter()
            .map(|v| {
                let resources: Vec<Value> = reg
                    .all()
                    .iter()
                    .filter(|r| r.group == g && r.versions.contains(v))
                    .map(|r| {
                        let mut subs = Vec::new();
                        if r.status {
                            subs.push(json!({"subresource": "status", "responseKind": {"group": r.group, "version": v, "kind": r.kind}, "verbs": ["get", "patch", "update"]}));
                        }
                        if r.scale.is_some() {
                            subs.push(json!({"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}, "verbs": ["get", "patch", "update"]}));
                        }
                        let mut res = json!({
                            "resource": r.plural,
                            "responseKind": {"group": r.group, "version": v, "kind": r.kind},
                            "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                            "singularResource": r.singular,
                            "verbs": r.verbs(),
                        });
                        if !r.short_names.is_empty() {
                            res["shortNames"] = json!(r.short_names);
                        }
                        if !r.categories.is_empty() {
                            res["categories"] = json!(r.categories);
                        }
                        if !subs.is_empty() {
                            res["subresources"] = Value::Array(subs);
                        }
                        res
                    })
                    .collect();
                json!({"version": v, "resources": resources, "freshness": "Current"})
            })
            .collect();
        let mut meta = json!({"creationTimestamp": null});
        if !legacy {
            meta["name"] = json!(g);
        }
        items.push(json!({"metadata": meta, "versions": versions}));
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_accept_header() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"));
        assert!(!wants_aggregated("application/json"));
    }

    #[test]
    fn aggregated_lists_subresources() {
        let reg = Registry::new();
        let apis = aggregated(&reg, false);
        let apps = apis["items"]
            .as_array()
            .and_then(|i| i.iter().find(|g| g["metadata"]["name"] == "apps"))
            .cloned()
            .unwrap_or_default();
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["resource"] == "deployments"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(deploy["subresources"][1]["subresource"], "scale");
        let core = aggregated(&reg, true);
        assert_eq!(core["items"].as_array().map(Vec::len), Some(1));
    }
}
