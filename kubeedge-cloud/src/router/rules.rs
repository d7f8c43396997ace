//! Rules as the Router reads them: `rules.kubeedge.io/v1` Rule and RuleEndpoint, and which
//! rule a REST path `/{namespace}/{path…}` matches.

use std::collections::BTreeMap;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::Value;

/// One endpoint (`RuleEndpoint.spec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) kind: String,
    pub(crate) properties: BTreeMap<String, String>,
}

/// A rule with its endpoints resolved.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) source: Endpoint,
    pub(crate) source_resource: BTreeMap<String, String>,
    /// The target endpoint's name, and the endpoint when it exists.
    pub(crate) target_name: String,
    pub(crate) target: Option<Endpoint>,
    pub(crate) target_resource: BTreeMap<String, String>,
}

pub(crate) fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("rules.kubeedge.io", "v1", kind),
        plural,
    )
}

/// The Rule API in `namespace`.
pub(crate) fn rules_api(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &resource("Rule", "rules"))
}

fn map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn spec_str(o: &DynamicObject, k: &str) -> String {
    o.data
        .pointer(&format!("/spec/{k}"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Every rule of `namespace` whose source endpoint exists (a missing target is reported when
/// a call matches the rule).
pub(crate) async fn load(
    client: &kube::Client,
    namespace: &str,
) -> Result<Vec<Resolved>, kube::Error> {
    let eps: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &resource("RuleEndpoint", "ruleendpoints"),
    );
    let endpoints: BTreeMap<String, Endpoint> = eps
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|e| {
            let name = e.metadata.name.clone()?;
            Some((
                name,
                Endpoint {
                    kind: spec_str(&e, "ruleEndpointType"),
                    properties: map(e.data.pointer("/spec/properties")),
                },
            ))
        })
        .collect();
    let rules = rules_api(client, namespace)
        .list(&ListParams::default())
        .await?;
    Ok(rules
        .items
        .into_iter()
        .filter_map(|r| {
            Some(Resolved {
                name: r.metadata.name.clone()?,
                namespace: namespace.to_owned(),
                source: endpoints.get(&spec_str(&r, "source"))?.clone(),
                source_resource: map(r.data.pointer("/spec/sourceResource")),
                target_name: spec_str(&r, "target"),
                target: endpoints.get(&spec_str(&r, "target")).cloned(),
                target_resource: map(r.data.pointer("/spec/targetResource")),
            })
        })
        .collect())
}

fn segments(p: &str) -> Vec<&str> {
    p.split('/').filter(|s| !s.is_empty()).collect()
}

/// The REST-source rule for `path` (the request path after `/{node}/{namespace}`), with the
/// rest of the path (the `param` upstream appends to the target). Segments match one by one,
/// `{x}` matching any; the rule with the longest path wins.
pub(crate) fn matching<'a>(rules: &'a [Resolved], path: &str) -> Option<(&'a Resolved, String)> {
    let req = segments(path);
    rules
        .iter()
        .filter(|r| r.source.kind == "rest")
        .filter_map(|r| {
            let key = segments(r.source_resource.get("path").map_or("", String::as_str));
            let hit = !key.is_empty()
                && key.len() <= req.len()
                && key
                    .iter()
                    .zip(&req)
                    .all(|(k, s)| k == s || (k.starts_with('{') && k.ends_with('}')));
            hit.then_some((r, key.len()))
        })
        .max_by_key(|(_, n)| *n)
        .map(|(r, n)| {
            let rest = req[n..].join("/");
            let param = if rest.is_empty() {
                String::new()
            } else {
                format!("/{rest}")
            };
            (r, param)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, path: &str) -> Resolved {
        let ep = |k: &str| Endpoint {
            kind: k.into(),
            properties: BTreeMap::new(),
        };
        Resolved {
            name: name.into(),
            namespace: "default".into(),
            source: ep("rest"),
            source_resource: [("path".to_owned(), path.to_owned())].into(),
            target_name: "t".into(),
            target: Some(ep("servicebus")),
            target_resource: BTreeMap::new(),
        }
    }

    #[test]
    fn the_longest_rule_path_wins_and_the_rest_is_the_param() {
        let rules = [rule("a", "/a"), rule("ab", "/a/b/"), rule("any", "/x/{id}")];
        let (r, p) = matching(&rules, "/a/b/c/d").expect("match");
        assert_eq!((r.name.as_str(), p.as_str()), ("ab", "/c/d"));
        let (r, p) = matching(&rules, "/a").expect("match");
        assert_eq!((r.name.as_str(), p.as_str()), ("a", ""));
        let (r, _) = matching(&rules, "/x/42/y").expect("match");
        assert_eq!(r.name, "any");
        assert!(matching(&rules, "/b").is_none());
        assert!(matching(&rules, "/ab").is_none());
    }
}
