//! The Application key, `/<group|core>/<version>/<resource>/<namespace|null>/<name|null>`.

use std::fmt;
use std::str::FromStr;

use super::NULL_SEGMENT;
use crate::error::ApplicationKeyError;

/// A parsed Application key: `/<group|core>/<version>/<resource>/<namespace|null>/<name|null>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApplicationKey {
    /// API group; empty for the core group (written `core`).
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Plural resource name, e.g. `pods`.
    pub resource: String,
    /// Namespace; `None` for cluster-scoped resources or all namespaces.
    pub namespace: Option<String>,
    /// Object name; `None` for collections.
    pub name: Option<String>,
}

impl ApplicationKey {
    /// Parse a key. Exactly five non-empty segments after the leading `/` are required.
    pub fn parse(key: &str) -> Result<Self, ApplicationKeyError> {
        let Some(rest) = key.strip_prefix('/') else {
            return Err(ApplicationKeyError::NoLeadingSlash(key.to_owned()));
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let [group, version, resource, namespace, name] = segments.as_slice() else {
            return Err(ApplicationKeyError::SegmentCount {
                key: key.to_owned(),
                found: segments.len(),
            });
        };
        if [group, version, resource, namespace, name]
            .iter()
            .any(|s| s.is_empty())
        {
            return Err(ApplicationKeyError::EmptySegment(key.to_owned()));
        }
        let opt = |s: &str| (s != NULL_SEGMENT).then(|| s.to_owned());
        Ok(Self {
            group: if *group == "core" {
                String::new()
            } else {
                (*group).to_owned()
            },
            version: (*version).to_owned(),
            resource: (*resource).to_owned(),
            namespace: opt(namespace),
            name: opt(name),
        })
    }

    /// `apiVersion` of the objects: `v1` for core, `<group>/<version>` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// True for the core (legacy, `/api`) group.
    pub fn is_core(&self) -> bool {
        self.group.is_empty()
    }
}

impl fmt::Display for ApplicationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(
            f,
            "/{group}/{}/{}/{}/{}",
            self.version,
            self.resource,
            self.namespace.as_deref().unwrap_or(NULL_SEGMENT),
            self.name.as_deref().unwrap_or(NULL_SEGMENT)
        )
    }
}

impl FromStr for ApplicationKey {
    type Err = ApplicationKeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
