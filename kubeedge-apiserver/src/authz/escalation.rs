//! RBAC's escalation check (`pkg/registry/rbac/validation` and `policy_comparator.go`): a user
//! may write a Role only with rules it holds itself (or the `escalate` verb), and bind a role
//! only if it holds the role's rules (or the `bind` verb). Rules are compared one verb, group,
//! resource and name at a time, as upstream's `Covers`.

use super::rbac::Rule;

fn has(set: &[String], x: &str) -> bool {
    set.iter().any(|s| s == x)
}

/// `BreakdownRule`: one rule per group × resource × verb (× name), and per URL × verb.
fn breakdown(r: &Rule) -> Vec<Rule> {
    let one = |v: &str| vec![v.to_owned()];
    let mut out = Vec::new();
    for g in &r.api_groups {
        for res in &r.resources {
            for v in &r.verbs {
                let names: Vec<Vec<String>> = if r.resource_names.is_empty() {
                    vec![Vec::new()]
                } else {
                    r.resource_names.iter().map(|n| one(n)).collect()
                };
                for n in names {
                    out.push(Rule {
                        verbs: one(v),
                        api_groups: one(g),
                        resources: one(res),
                        resource_names: n,
                        urls: Vec::new(),
                    });
                }
            }
        }
    }
    for u in &r.urls {
        for v in &r.verbs {
            out.push(Rule {
                verbs: one(v),
                api_groups: Vec::new(),
                resources: Vec::new(),
                resource_names: Vec::new(),
                urls: one(u),
            });
        }
    }
    out
}

fn resources_cover(owner: &[String], sub: &[String]) -> bool {
    has(owner, "*")
        || sub.iter().all(|p| {
            has(owner, p)
                || p.split_once('/')
                    .is_some_and(|(_, s)| has(owner, &format!("*/{s}")))
        })
}

fn url_covers(owner: &str, sub: &str) -> bool {
    owner == sub
        || owner
            .strip_suffix('*')
            .is_some_and(|p| sub.starts_with(p.trim_end_matches('*')))
}

/// `ruleCovers`.
fn covers_one(owner: &Rule, sub: &Rule) -> bool {
    let all = |set: &[String], xs: &[String]| has(set, "*") || xs.iter().all(|x| has(set, x));
    let names = if sub.resource_names.is_empty() {
        owner.resource_names.is_empty()
    } else {
        owner.resource_names.is_empty()
            || sub
                .resource_names
                .iter()
                .all(|n| has(&owner.resource_names, n))
    };
    all(&owner.verbs, &sub.verbs)
        && all(&owner.api_groups, &sub.api_groups)
        && resources_cover(&owner.resources, &sub.resources)
        && sub
            .urls
            .iter()
            .all(|u| owner.urls.iter().any(|o| url_covers(o, u)))
        && names
}

/// The parts of `wanted` that `held` does not cover (`Covers`), compacted: parts that differ
/// only in their verb are merged, as `CompactRules` does.
pub(crate) fn uncovered(held: &[Rule], wanted: &[Rule]) -> Vec<Rule> {
    let mut missing: Vec<Rule> = Vec::new();
    for sub in wanted.iter().flat_map(breakdown) {
        if held.iter().any(|o| covers_one(o, &sub)) {
            continue;
        }
        let same = missing.iter_mut().find(|m| {
            m.api_groups == sub.api_groups
                && m.resources == sub.resources
                && m.resource_names == sub.resource_names
                && m.urls == sub.urls
        });
        match same {
            Some(m) => {
                if !m.verbs.contains(&sub.verbs[0]) {
                    m.verbs.push(sub.verbs[0].clone());
                }
            }
            None => missing.push(sub),
        }
    }
    missing
}

/// Go's `%q` of a string slice: `["a" "b"]`.
fn quoted(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", items.join(" "))
}

/// `CompactString`.
fn compact(r: &Rule) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("APIGroups", &r.api_groups),
        ("Resources", &r.resources),
        ("NonResourceURLs", &r.urls),
        ("ResourceNames", &r.resource_names),
        ("Verbs", &r.verbs),
    ] {
        if !v.is_empty() {
            parts.push(format!("{k}:{}", quoted(v)));
        }
    }
    format!("{{{}}}", parts.join(", "))
}

/// Upstream's refusal for `missing` rules.
pub(crate) fn message(user: &str, groups: &[String], missing: &[Rule]) -> String {
    let mut lines: Vec<String> = missing.iter().map(compact).collect();
    lines.sort();
    lines.dedup();
    format!(
        "user {user:?} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        quoted(groups),
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: serde_json::Value) -> Rule {
        Rule::from_value(&v)
    }

    #[test]
    fn covers_as_upstream() {
        let held = [
            rule(
                json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "*/status"]}),
            ),
            rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz/*"]})),
        ];
        let ok = [
            rule(
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods", "services/status"]}),
            ),
            rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz/etcd"]})),
            rule(
                json!({"verbs": ["list"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["p"]}),
            ),
        ];
        assert!(uncovered(&held, &ok).is_empty());
        let more = [rule(
            json!({"verbs": ["get", "delete", "patch"], "apiGroups": ["", "apps"], "resources": ["pods"]}),
        )];
        let missing = uncovered(&held, &more);
        assert_eq!(
            message("alice", &["system:authenticated".into()], &missing),
            "user \"alice\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\" \"patch\"]}\n{APIGroups:[\"apps\"], Resources:[\"pods\"], Verbs:[\"get\" \"delete\" \"patch\"]}"
        );
    }
}
