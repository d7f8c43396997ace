//! The table of served resources: built-in types plus those added by CustomResourceDefinitions.

use std::sync::{Arc, RwLock};

use serde_json::Value;

/// How `as=Table` renders a resource.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Printer {
    Pod,
    Node,
    Namespace,
    Service,
    Deployment,
    ReplicaSet,
    DaemonSet,
    ConfigMap,
    Secret,
    Endpoints,
    Event,
    Lease,
    Crd,
    /// Custom columns from a CRD: `(name, type, jsonPath, priority)`.
    Custom(Vec<(String, String, String, i64)>),
    Default,
}

/// One served resource.
#[derive(Debug, Clone)]
pub(crate) struct ResourceDef {
    pub(crate) group: String,
    pub(crate) versions: Vec<String>,
    pub(crate) plural: String,
    pub(crate) singular: String,
    pub(crate) kind: String,
    pub(crate) namespaced: bool,
    pub(crate) short_names: Vec<String>,
    pub(crate) categories: Vec<String>,
    pub(crate) status: bool,
    /// JSON pointers of spec replicas, status replicas and the label selector for `/scale`.
    pub(crate) scale: Option<(String, String, Option<String>)>,
    pub(crate) printer: Printer,
    /// Strategic merge patch is served (built-in types only).
    pub(crate) builtin: bool,
    /// `openAPIV3Schema` per served version (custom resources only).
    pub(crate) schemas: Vec<(String, Value)>,
    /// A create-only review (SelfSubjectReview, SelfSubjectAccessReview): answered, never stored.
    pub(crate) review: bool,
    /// A `metrics.k8s.io` resource: read from the nodes' kubelets, never stored.
    pub(crate) metrics: bool,
}

impl ResourceDef {
    /// The store's resource key: `<group>/<plural>` with `core` for the legacy group.
    pub(crate) fn store_resource(&self) -> String {
        let g = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        format!("{g}/{}", self.plural)
    }

    /// The verbs discovery lists.
    pub(crate) fn verbs(&self) -> &'static [&'static str] {
        if self.review {
            &["create"]
        } else if self.metrics {
            &["get", "list"]
        } else {
            &crate::discovery::VERBS
        }
    }

    pub(crate) fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    pub(crate) fn schema(&self, version: &str) -> Option<&Value> {
        self.schemas
            .iter()
            .find(|(v, _)| v == version)
            .map(|(_, s)| s)
    }

    pub(crate) fn has_generation(&self) -> bool {
        !matches!(
            self.kind.as_str(),
            "Pod"
                | "ConfigMap"
                | "Secret"
                | "Endpoints"
                | "Event"
                | "Node"
                | "Namespace"
                | "ServiceAccount"
                | "Lease"
                | "Service"
                | "Role"
                | "ClusterRole"
                | "RoleBinding"
                | "ClusterRoleBinding"
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
    printer: Printer,
) -> ResourceDef {
    ResourceDef {
        group: group.into(),
        versions: vec![version.into()],
        plural: plural.into(),
        singular: kind.to_ascii_lowercase(),
        kind: kind.into(),
        namespaced,
        short_names: short.iter().map(|s| (*s).to_owned()).collect(),
        categories: Vec::new(),
        status,
        scale: None,
        printer,
        builtin: true,
        schemas: Vec::new(),
        review: false,
        metrics: false,
    }
}

fn builtins() -> Vec<ResourceDef> {
    let scale = Some((
        "/spec/replicas".to_owned(),
        "/status/replicas".to_owned(),
        Some("/spec/selector".to_owned()),
    ));
    let mut v = vec![
        builtin(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            true,
            Printer::Namespace,
        ),
        builtin(
            "",
            "v1",
            "nodes",
            "Node",
            false,
            &["no"],
            true,
            Printer::Node,
        ),
        builtin("", "v1", "pods", "Pod", true, &["po"], true, Printer::Pod),
        builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            false,
            Printer::ConfigMap,
        ),
        builtin(
            "",
            "v1",
            "secrets",
            "Secret",
            true,
            &[],
            false,
            Printer::Secret,
        ),
        builtin(
            "",
            "v1",
            "services",
            "Service",
            true,
            &["svc"],
            true,
            Printer::Service,
        ),
        builtin(
            "",
            "v1",
            "endpoints",
            "Endpoints",
            true,
            &["ep"],
            false,
            Printer::Endpoints,
        ),
        builtin(
            "",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            false,
            Printer::Event,
        ),
        builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            false,
            Printer::Default,
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            false,
            Printer::Lease,
        ),
        builtin(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            true,
            Printer::Deployment,
        ),
        builtin(
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            true,
            &["rs"],
            true,
            Printer::ReplicaSet,
        ),
        builtin(
            "apps",
            "v1",
            "daemonsets",
            "DaemonSet",
            true,
            &["ds"],
            true,
            Printer::DaemonSet,
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
            Printer::Crd,
        ),
    ];
    for (plural, kind, namespaced) in [
        ("roles", "Role", true),
        ("clusterroles", "ClusterRole", false),
        ("rolebindings", "RoleBinding", true),
        ("clusterrolebindings", "ClusterRoleBinding", false),
    ] {
        v.push(builtin(
            "rbac.authorization.k8s.io",
            "v1",
            plural,
            kind,
            namespaced,
            &[],
            false,
            Printer::Default,
        ));
    }
    let authz = "authorization.k8s.io";
    for (group, plural, kind, namespaced) in [
        (
            "authentication.k8s.io",
            "selfsubjectreviews",
            "SelfSubjectReview",
            false,
        ),
        (
            authz,
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            false,
        ),
        (authz, "subjectaccessreviews", "SubjectAccessReview", false),
        (
            authz,
            "localsubjectaccessreviews",
            "LocalSubjectAccessReview",
            true,
        ),
        (
            authz,
            "selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
            false,
        ),
    ] {
        let mut r = builtin(
            group,
            "v1",
            plural,
            kind,
            namespaced,
            &[],
            false,
            Printer::Default,
        );
        r.review = true;
        v.push(r);
    }
    for (plural, kind, namespaced) in [
        ("nodes", "NodeMetrics", false),
        ("pods", "PodMetrics", true),
    ] {
        let mut r = builtin(
            "metrics.k8s.io",
            "v1beta1",
            plural,
            kind,
            namespaced,
            &[],
            false,
            Printer::Default,
        );
        r.metrics = true;
        v.push(r);
    }
    for r in &mut v {
        if matches!(r.kind.as_str(), "Deployment" | "ReplicaSet") {
            r.scale = scale.clone();
        }
        if matches!(
            r.kind.as_str(),
            "Pod"
                | "Service"
                | "Deployment"
                | "ReplicaSet"
                | "DaemonSet"
                | "ConfigMap"
                | "Secret"
                | "ServiceAccount"
                | "Endpoints"
        ) {
            r.categories = vec!["all".into()];
        }
        if r.kind == "ConfigMap"
            || r.kind == "Secret"
            || r.kind == "ServiceAccount"
            || r.kind == "Endpoints"
        {
            r.categories.clear();
        }
    }
    v
}

/// Whether `kind` is one of the built-in kinds served here (with a typed form).
pub(crate) fn is_builtin_kind(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace"
            | "Node"
            | "Pod"
            | "ConfigMap"
            | "Secret"
            | "Service"
            | "Endpoints"
            | "Event"
            | "ServiceAccount"
            | "Lease"
            | "Deployment"
            | "ReplicaSet"
            | "DaemonSet"
            | "CustomResourceDefinition"
            | "Role"
            | "ClusterRole"
            | "RoleBinding"
            | "ClusterRoleBinding"
    )
}

/// Builds the resource definitions a CRD object declares; `None` if it is malformed.
pub(crate) fn from_crd(crd: &Value) -> Option<ResourceDef> {
    let spec = crd.get("spec")?;
    let names = spec.get("names")?;
    let plural = names.get("plural")?.as_str()?.to_owned();
    let kind = names.get("kind")?.as_str()?.to_owned();
    let group = spec.get("group")?.as_str()?.to_owned();
    let str_list = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let versions_v = spec.get("versions")?.as_array()?;
    let mut versions = Vec::new();
    let mut status = false;
    let mut scale = None;
    let mut columns = Vec::new();
    let mut schemas = Vec::new();
    for ver in versions_v {
        if ver.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let Some(name) = ver.get("name").and_then(Value::as_str) else {
            continue;
        };
        // The storage version is listed first so that it is the preferred version.
        if ver.get("storage").and_then(Value::as_bool) == Some(true) {
            versions.insert(0, name.to_owned());
        } else {
            versions.push(name.to_owned());
        }
        if let Some(sch) = ver.pointer("/schema/openAPIV3Schema") {
            schemas.push((name.to_owned(), sch.clone()));
        }
        if let Some(sub) = ver.get("subresources") {
            status |= sub.get("status").is_some();
            if let Some(sc) = sub.get("scale") {
                let p = |k: &str| {
                    sc.get(k)
                        .and_then(Value::as_str)
                        .map(|s| s.trim_start_matches('.').replace('.', "/"))
                        .map(|s| format!("/{s}"))
                };
                if let (Some(spec_p), Some(status_p)) =
                    (p("specReplicasPath"), p("statusReplicasPath"))
                {
                    scale = Some((spec_p, status_p, p("labelSelectorPath")));
                }
            }
        }
        if columns.is_empty() {
            if let Some(cols) = ver
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
            {
                for c in cols {
                    let n = c.get("name").and_then(Value::as_str).unwrap_or_default();
                    let t = c.get("type").and_then(Value::as_str).unwrap_or("string");
                    let j = c
                        .get("jsonPath")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let pr = c.get("priority").and_then(Value::as_i64).unwrap_or(0);
                    columns.push((n.to_owned(), t.to_owned(), j.to_owned(), pr));
                }
            }
        }
    }
    if versions.is_empty() {
        return None;
    }
    Some(ResourceDef {
        group,
        versions,
        singular: names
            .get("singular")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| kind.to_ascii_lowercase()),
        plural,
        kind,
        namespaced: spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
        short_names: str_list(names.get("shortNames")),
        categories: str_list(names.get("categories")),
        status,
        scale,
        printer: if columns.is_empty() {
            Printer::Default
        } else {
            Printer::Custom(columns)
        },
        builtin: false,
        schemas,
        review: false,
        metrics: false,
    })
}

/// The resource table, shared by every clone of the service.
#[derive(Debug)]
pub(crate) struct Registry {
    builtin: Vec<Arc<ResourceDef>>,
    custom: RwLock<Vec<Arc<ResourceDef>>>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Self {
            builtin: builtins().into_iter().map(Arc::new).collect(),
            custom: RwLock::new(Vec::new()),
        }
    }

    /// Only the built-in resources whose store names (`core/pods`) are in `only`; no CRDs.
    pub(crate) fn only(only: &[String]) -> Self {
        Self {
            builtin: builtins()
                .into_iter()
                .filter(|d| only.contains(&d.store_resource()))
                .map(Arc::new)
                .collect(),
            custom: RwLock::new(Vec::new()),
        }
    }

    pub(crate) fn all(&self) -> Vec<Arc<ResourceDef>> {
        let mut out = self.builtin.clone();
        if let Ok(c) = self.custom.read() {
            out.extend(c.iter().cloned());
        }
        out
    }

    /// Finds the resource served at `<group>/<version>/<plural>`.
    pub(crate) fn find(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<Arc<ResourceDef>> {
        self.all().into_iter().find(|r| {
            r.group == group && r.plural == plural && r.versions.iter().any(|v| v == version)
        })
    }

    /// Replaces the definition registered for the CRD named `crd_name` (`<plural>.<group>`).
    pub(crate) fn set_custom(&self, crd_name: &str, def: Option<ResourceDef>) {
        if let Ok(mut c) = self.custom.write() {
            c.retain(|r| format!("{}.{}", r.plural, r.group) != crd_name);
            if let Some(d) = def {
                c.push(Arc::new(d));
            }
        }
    }

    /// Every served `(group, version)`, legacy group first, in a stable order.
    pub(crate) fn group_versions(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in self.all() {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, vs)) => {
                    for v in &r.versions {
                        if !vs.contains(v) {
                            vs.push(v.clone());
                        }
                    }
                }
                None => out.push((r.group.clone(), r.versions.clone())),
            }
        }
        out
    }
}
