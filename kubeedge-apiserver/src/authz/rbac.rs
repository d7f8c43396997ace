//! RBAC: Roles, ClusterRoles and their bindings, read into a [`Policy`] that decides requests
//! as kube-apiserver's RBAC authorizer does (`plugin/pkg/auth/authorizer/rbac`).
//!
//! ClusterRoleBindings are visited first, then the RoleBindings of the request's namespace; the
//! first rule that allows the request wins, and its binding is named in the reason. Nothing
//! denies: a request no rule allows gets no opinion. ClusterRoles with an `aggregationRule` hold
//! the rules of every ClusterRole their selectors match (followed to a fixed point, as the
//! aggregation controller's repeated passes reach).

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{Attributes, Decision};
use crate::selector::LabelSelector;

/// One `PolicyRule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) verbs: Vec<String>,
    pub(crate) api_groups: Vec<String>,
    pub(crate) resources: Vec<String>,
    pub(crate) resource_names: Vec<String>,
    pub(crate) urls: Vec<String>,
}

fn strings(v: &Value, k: &str) -> Vec<String> {
    v.get(k)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn has(list: &[String], x: &str) -> bool {
    list.iter().any(|s| s == "*" || s == x)
}

impl Rule {
    pub(crate) fn from_value(v: &Value) -> Self {
        Self {
            verbs: strings(v, "verbs"),
            api_groups: strings(v, "apiGroups"),
            resources: strings(v, "resources"),
            resource_names: strings(v, "resourceNames"),
            urls: strings(v, "nonResourceURLs"),
        }
    }

    pub(crate) fn to_value(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, list) in [
            ("verbs", &self.verbs),
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.urls),
        ] {
            if !list.is_empty() || k == "verbs" {
                m.insert(k.into(), json!(list));
            }
        }
        Value::Object(m)
    }

    /// `RuleAllows`: verb, then group, resource (with `*/sub` and `res/*` forms) and name for a
    /// resource request, or the path (exact, `*`, or a `prefix*`) for a non-resource one.
    pub(crate) fn allows(&self, a: &Attributes) -> bool {
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.urls.iter().any(|u| {
                u == "*"
                    || *u == a.path
                    || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
            });
        }
        let combined = a.full_resource();
        has(&self.api_groups, &a.api_group)
            && self.resources.iter().any(|r| {
                r == "*"
                    || *r == combined
                    || (!a.subresource.is_empty()
                        && (r.strip_prefix("*/") == Some(a.subresource.as_str())
                            || r.strip_suffix("/*") == Some(a.resource.as_str())))
            })
            && (self.resource_names.is_empty() || self.resource_names.contains(&a.name))
    }
}

#[derive(Debug, Clone)]
struct Subject {
    kind: String,
    name: String,
    namespace: String,
}

#[derive(Debug, Clone)]
struct Binding {
    /// `ClusterRoleBinding "n"` or `RoleBinding "n/ns"`, as the allow reason names it.
    describe: String,
    namespace: String,
    role_kind: String,
    role_name: String,
    subjects: Vec<Subject>,
}

impl Binding {
    fn from_value(v: &Value, cluster: bool) -> Self {
        let meta = |k: &str| {
            v.pointer(&format!("/metadata/{k}"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (name, namespace) = (meta("name"), meta("namespace"));
        let s = |o: &Value, k: &str| {
            o.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let role_ref = v.get("roleRef").cloned().unwrap_or(Value::Null);
        Self {
            describe: if cluster {
                format!("ClusterRoleBinding \"{name}\"")
            } else {
                format!("RoleBinding \"{name}/{namespace}\"")
            },
            namespace,
            role_kind: s(&role_ref, "kind"),
            role_name: s(&role_ref, "name"),
            subjects: v
                .get("subjects")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|o| Subject {
                            kind: s(o, "kind"),
                            name: s(o, "name"),
                            namespace: s(o, "namespace"),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The subject that names this user, described as the allow reason does.
    fn applies_to(&self, user: &str, groups: &[String]) -> Option<String> {
        self.subjects.iter().find_map(|s| {
            let hit = match s.kind.as_str() {
                "User" => s.name == user,
                "Group" => groups.contains(&s.name),
                "ServiceAccount" => {
                    let ns = if s.namespace.is_empty() {
                        &self.namespace
                    } else {
                        &s.namespace
                    };
                    user == format!("system:serviceaccount:{ns}:{}", s.name)
                }
                _ => false,
            };
            hit.then(|| match s.kind.as_str() {
                "ServiceAccount" => {
                    let ns = if s.namespace.is_empty() {
                        &self.namespace
                    } else {
                        &s.namespace
                    };
                    format!("ServiceAccount \"{}/{ns}\"", s.name)
                }
                k => format!("{k} \"{}\"", s.name),
            })
        })
    }
}

/// A snapshot of every Role, ClusterRole and binding.
#[derive(Debug, Default)]
pub(crate) struct Policy {
    cluster_roles: HashMap<String, Vec<Rule>>,
    roles: HashMap<(String, String), Vec<Rule>>,
    cluster_bindings: Vec<Binding>,
    bindings: HashMap<String, Vec<Binding>>,
}

fn rules_of(v: &Value) -> Vec<Rule> {
    v.get("rules")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(Rule::from_value).collect())
        .unwrap_or_default()
}

fn name_of(v: &Value, k: &str) -> String {
    v.pointer(&format!("/metadata/{k}"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The rules of each aggregated ClusterRole (by name), computed from the others' labels and
/// followed to a fixed point. Roles without an `aggregationRule` are not in the map.
pub(crate) fn aggregate(cluster_roles: &[Value]) -> HashMap<String, Vec<Rule>> {
    let mut rules: HashMap<String, Vec<Rule>> = cluster_roles
        .iter()
        .map(|r| (name_of(r, "name"), rules_of(r)))
        .collect();
    let aggregated: Vec<(String, Vec<LabelSelector>)> = cluster_roles
        .iter()
        .filter_map(|r| {
            let sels = r
                .pointer("/aggregationRule/clusterRoleSelectors")?
                .as_array()?;
            Some((
                name_of(r, "name"),
                sels.iter().map(LabelSelector::from_object).collect(),
            ))
        })
        .collect();
    let mut sorted: Vec<&Value> = cluster_roles.iter().collect();
    sorted.sort_by_key(|r| name_of(r, "name"));
    // Each pass can carry rules one aggregation level further; the depth is bounded by the
    // number of aggregated roles.
    for _ in 0..=aggregated.len() {
        let mut changed = false;
        for (name, sels) in &aggregated {
            let mut merged: Vec<Rule> = Vec::new();
            for r in &sorted {
                let other = name_of(r, "name");
                if other == *name || !sels.iter().any(|s| s.matches(r)) {
                    continue;
                }
                for rule in rules.get(&other).into_iter().flatten() {
                    if !merged.contains(rule) {
                        merged.push(rule.clone());
                    }
                }
            }
            if rules.get(name) != Some(&merged) {
                rules.insert(name.clone(), merged);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    rules.retain(|n, _| aggregated.iter().any(|(a, _)| a == n));
    rules
}

impl Policy {
    /// Builds a snapshot from the stored objects of the four kinds.
    pub(crate) fn new(
        cluster_roles: &[Value],
        roles: &[Value],
        cluster_bindings: &[Value],
        bindings: &[Value],
    ) -> Self {
        let mut cr: HashMap<String, Vec<Rule>> = cluster_roles
            .iter()
            .map(|r| (name_of(r, "name"), rules_of(r)))
            .collect();
        cr.extend(aggregate(cluster_roles));
        let mut by_ns: HashMap<String, Vec<Binding>> = HashMap::new();
        for b in bindings {
            let b = Binding::from_value(b, false);
            by_ns.entry(b.namespace.clone()).or_default().push(b);
        }
        Self {
            cluster_roles: cr,
            roles: roles
                .iter()
                .map(|r| ((name_of(r, "namespace"), name_of(r, "name")), rules_of(r)))
                .collect(),
            cluster_bindings: cluster_bindings
                .iter()
                .map(|b| Binding::from_value(b, true))
                .collect(),
            bindings: by_ns,
        }
    }

    fn role_rules(&self, b: &Binding) -> &[Rule] {
        let rules = match b.role_kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&b.role_name),
            "Role" => self.roles.get(&(b.namespace.clone(), b.role_name.clone())),
            _ => None,
        };
        rules.map(Vec::as_slice).unwrap_or_default()
    }

    /// The bindings that apply in `namespace` (cluster bindings first), with the subject each
    /// matched for this user.
    fn visit<'a>(
        &'a self,
        user: &'a str,
        groups: &'a [String],
        namespace: &'a str,
    ) -> impl Iterator<Item = (&'a Binding, String)> + 'a {
        let local = if namespace.is_empty() {
            None
        } else {
            self.bindings.get(namespace)
        };
        self.cluster_bindings
            .iter()
            .chain(local.into_iter().flatten())
            .filter_map(move |b| b.applies_to(user, groups).map(|s| (b, s)))
    }

    /// The rules of the role a binding refers to; `None` when it does not exist.
    pub(crate) fn referenced(&self, kind: &str, namespace: &str, name: &str) -> Option<&[Rule]> {
        let rules = match kind {
            "ClusterRole" => self.cluster_roles.get(name),
            "Role" => self.roles.get(&(namespace.to_owned(), name.to_owned())),
            _ => None,
        };
        rules.map(Vec::as_slice)
    }

    /// RBAC's decision: allow with the binding that grants it, or no opinion.
    pub(crate) fn authorize(&self, a: &Attributes) -> (Decision, String) {
        for (b, subject) in self.visit(&a.user, &a.groups, &a.namespace) {
            if self.role_rules(b).iter().any(|r| r.allows(a)) {
                return (
                    Decision::Allow,
                    format!(
                        "RBAC: allowed by {} of {} \"{}\" to {subject}",
                        b.describe, b.role_kind, b.role_name
                    ),
                );
            }
        }
        (Decision::NoOpinion, String::new())
    }

    /// Every rule that applies to the user in `namespace` (for SelfSubjectRulesReview).
    pub(crate) fn rules_for(&self, user: &str, groups: &[String], namespace: &str) -> Vec<Rule> {
        let mut out: Vec<Rule> = Vec::new();
        for (b, _) in self.visit(user, groups, namespace) {
            for r in self.role_rules(b) {
                if !out.contains(r) {
                    out.push(r.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(user: &str, groups: &[&str], verb: &str, ns: &str, res: &str) -> Attributes {
        Attributes {
            user: user.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            verb: verb.into(),
            resource_request: true,
            resource: res.into(),
            namespace: ns.into(),
            ..Attributes::default()
        }
    }

    #[test]
    fn bindings_grant_roles_in_their_scope() {
        let view = json!({"metadata": {"name": "view"}, "rules": [
            {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]});
        let role = json!({"metadata": {"name": "cm", "namespace": "a"}, "rules": [
            {"verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["one"]}]});
        let rb = json!({"metadata": {"name": "rb", "namespace": "a"},
            "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "bot"}]});
        let rb2 = json!({"metadata": {"name": "rb2", "namespace": "a"},
            "roleRef": {"kind": "Role", "name": "cm"},
            "subjects": [{"kind": "Group", "name": "team"}]});
        let p = Policy::new(&[view], &[role], &[], &[rb, rb2]);
        let (d, why) = p.authorize(&attrs("alice", &[], "list", "a", "pods"));
        assert_eq!(d, Decision::Allow);
        assert_eq!(
            why,
            "RBAC: allowed by RoleBinding \"rb/a\" of ClusterRole \"view\" to User \"alice\""
        );
        assert_eq!(
            p.authorize(&attrs("alice", &[], "list", "b", "pods")).0,
            Decision::NoOpinion
        );
        assert_eq!(
            p.authorize(&attrs("alice", &[], "delete", "a", "pods")).0,
            Decision::NoOpinion
        );
        let (d, why) = p.authorize(&attrs(
            "system:serviceaccount:a:bot",
            &[],
            "get",
            "a",
            "pods",
        ));
        assert_eq!(d, Decision::Allow);
        assert!(why.ends_with("to ServiceAccount \"bot/a\""), "{why}");
        let mut cm = attrs("x", &["team"], "update", "a", "configmaps");
        assert_eq!(p.authorize(&cm).0, Decision::NoOpinion);
        cm.name = "one".into();
        assert_eq!(p.authorize(&cm).0, Decision::Allow);
    }

    #[test]
    fn aggregation_follows_labels_to_a_fixed_point() {
        let admin = json!({"metadata": {"name": "admin"}, "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {"to-admin": "true"}}]}});
        let edit = json!({"metadata": {"name": "edit", "labels": {"to-admin": "true"}},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"to-edit": "true"}}]}});
        let piece = json!({"metadata": {"name": "piece", "labels": {"to-edit": "true"}}, "rules": [
            {"verbs": ["create"], "apiGroups": [""], "resources": ["pods"]}]});
        let agg = aggregate(&[admin, edit, piece]);
        assert_eq!(agg["admin"], agg["edit"]);
        assert_eq!(agg["admin"].len(), 1);
        assert!(!agg.contains_key("piece"));
    }

    #[test]
    fn subresource_and_url_wildcards() {
        let r = Rule::from_value(
            &json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*/status"],
            "nonResourceURLs": []}),
        );
        let mut a = attrs("u", &[], "get", "", "pods");
        assert!(!r.allows(&a));
        a.subresource = "status".into();
        assert!(r.allows(&a));
        let u = Rule::from_value(&json!({"verbs": ["get"], "nonResourceURLs": ["/healthz/*"]}));
        let mut p = Attributes {
            verb: "get".into(),
            path: "/healthz/etcd".into(),
            ..Attributes::default()
        };
        assert!(u.allows(&p));
        p.path = "/metrics".into();
        assert!(!u.allows(&p));
    }
}
