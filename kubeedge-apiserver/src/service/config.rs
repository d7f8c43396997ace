//! [`ApiConfig`]: the settings of the REST layer.

use std::time::Duration;

/// Settings of the REST layer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApiConfig {
    /// The range ClusterIPs are allocated from, as `a.b.c.d/prefix`.
    pub service_cidr: String,
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// How often a watch that asked for bookmarks receives one.
    pub bookmark_interval: Duration,
    /// The `gitVersion` reported by `/version`.
    pub git_version: String,
    /// When set, only these resources (store names such as `core/pods`) are served and
    /// listed in discovery; every other resource path gets 404. `None` serves them all.
    pub resources: Option<Vec<String>>,
    /// Create the default namespaces at start when they are missing.
    pub default_namespaces: bool,
    /// How `pods/log` reaches a pod's node; without one it answers 503.
    pub node_proxy: Option<crate::NodeProxyHandle>,
    /// Authorize authenticated requests with RBAC (after `system:masters`), and create
    /// Kubernetes' default ClusterRoles and bindings at start. Off: every authenticated user
    /// may do everything. In-process callers are trusted either way.
    pub authorization: bool,
    /// The key ServiceAccount tokens are signed with; `None` makes one at start (tokens then
    /// last until a restart).
    pub service_account_key: Option<crate::authz::token::SigningKey>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            service_cidr: "10.96.0.0/12".into(),
            max_body_bytes: 3 * 1024 * 1024,
            bookmark_interval: Duration::from_secs(30),
            git_version: "v1.33.0-kubeedge-rs".into(),
            resources: None,
            default_namespaces: true,
            node_proxy: None,
            authorization: true,
            service_account_key: None,
        }
    }
}
