//! The MetaServer "Application" (PROTOCOL.md §4.6): how an edge's local API server asks the
//! cloud's dynamic controller to run a Kubernetes request (get, list, watch, create, update,
//! patch, delete) on its behalf.
//!
//! The request travels as the content of a message with source `metaserver`, group
//! `dynamiccontroller`, resource and operation `null`; the reply is the same Application with
//! `Status` `Approved` (and `RespBody`) or `Rejected` (with `Reason` and `Error`), operation
//! `applicationResponse`, resource `ignore/Application/ignore`.
//!
//! Upstream's Go struct has no JSON tags, so its keys are capitalised, and its `[]byte` fields
//! (`Option`, `ReqBody`, `RespBody`) are standard padded base64 strings (or `null`). Two
//! layouts exist on the wire: v1.12 (with `Token`, `Status`/`Reason` before `Option`) and
//! v1.15 and later (with `Timestamp`, no `Token`, `Status`/`Reason` after `RespBody`).
//! [`Application::timestamp`] selects the layout: `None` writes v1.12's, `Some` the later one,
//! so a reply built from a request keeps the requester's layout.
//!
//! ```
//! use kubeedge_proto::{Application, ApplicationKey, ApplicationVerb};
//!
//! let mut app = Application::new("/core/v1/pods/default/null", ApplicationVerb::List, "edge-1");
//! app.set_option(&serde_json::json!({}))?;
//! let key: ApplicationKey = app.parsed_key()?;
//! assert_eq!(key.resource, "pods");
//! assert_eq!(key.namespace.as_deref(), Some("default"));
//! assert_eq!(key.name, None);
//! let wire = serde_json::to_string(&app)?;
//! let back: Application = serde_json::from_str(&wire)?;
//! assert_eq!(back, app);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use serde::de::DeserializeOwned;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::error::{ApplicationKeyError, ContentError, JsonError};
use crate::names::wire_name;

/// The literal upstream writes for an absent namespace or name in an Application key.
pub const NULL_SEGMENT: &str = "null";

/// Resource of an `applicationResponse` message, edge view.
pub const APPLICATION_RESOURCE: &str = "ignore/Application/ignore";

wire_name! {
    /// `Verb`: what the edge asks the cloud to do.
    ApplicationVerb {
        /// `get`.
        Get => "get",
        /// `list`.
        List => "list",
        /// `watch`: register a watch; later changes arrive as ACK-mode pushes.
        Watch => "watch",
        /// `create`.
        Create => "create",
        /// `delete`.
        Delete => "delete",
        /// `update`.
        Update => "update",
        /// `updatestatus`: update of the `status` subresource.
        UpdateStatus => "updatestatus",
        /// `patch`: `Option` holds a [`PatchInfo`].
        Patch => "patch",
    }
}

wire_name! {
    /// `Status`: where an Application is in its life.
    ApplicationStatus {
        /// `PreApplying`: built, not yet sent.
        PreApplying => "PreApplying",
        /// `InApplying`: sent to the cloud.
        InApplying => "InApplying",
        /// `InProcessing`: the cloud is working on it.
        InProcessing => "InProcessing",
        /// `Approved`: done; `RespBody` holds the result.
        Approved => "Approved",
        /// `Rejected`: refused or failed; see `Reason` and `Error`.
        Rejected => "Rejected",
        /// `Failed`.
        Failed => "Failed",
        /// `Completed`.
        Completed => "Completed",
    }
}

// wire_name! fixes the derives, so no `#[default]` on the variant.
#[allow(clippy::derivable_impls)]
impl Default for ApplicationVerb {
    fn default() -> Self {
        Self::Get
    }
}

// wire_name! fixes the derives, so no `#[default]` on the variant.
#[allow(clippy::derivable_impls)]
impl Default for ApplicationStatus {
    fn default() -> Self {
        Self::PreApplying
    }
}

/// The Kubernetes `metav1.Status` inside an [`StatusError`], with Go's field order and
/// omitempty rules (the zero value is `{"metadata":{}}`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ApiStatus {
    /// `kind` (usually empty here).
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub kind: String,
    /// `apiVersion` (usually empty here).
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub api_version: String,
    /// `metadata` (a ListMeta; always written).
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// `status`: `Success` or `Failure`.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub status: String,
    /// `message`: human-readable description.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub message: String,
    /// `reason`: machine-readable reason (`NotFound`, `AlreadyExists`, ...).
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub reason: String,
    /// `details`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// `code`: the HTTP status code (0 = unset).
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "null_as_default"
    )]
    pub code: i32,
}

/// Go's `apierrors.StatusError`: `{"ErrStatus":{…}}`. Used as `Application.Error` and as the
/// `Err` of the edge controller's `ObjectResp` replies.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatusError {
    /// `ErrStatus`.
    #[serde(rename = "ErrStatus", default, deserialize_with = "null_as_default")]
    pub err_status: ApiStatus,
}

impl StatusError {
    /// A failure status with the given HTTP code, reason and message.
    pub fn failure(code: i32, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            err_status: ApiStatus {
                status: "Failure".to_owned(),
                message: message.into(),
                reason: reason.into(),
                code,
                ..ApiStatus::default()
            },
        }
    }

    /// True for Go's zero value, which the edge reads as "no error".
    pub fn is_empty(&self) -> bool {
        self.err_status == ApiStatus::default()
    }
}

/// The `Option` of a `patch` Application (upstream `PatchInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PatchInfo {
    /// `Name` of the object.
    #[serde(rename = "Name", default, deserialize_with = "null_as_default")]
    pub name: String,
    /// `PatchType`: the content type (`application/merge-patch+json`, ...).
    #[serde(rename = "PatchType", default, deserialize_with = "null_as_default")]
    pub patch_type: String,
    /// `Data`: the patch document (base64 on the wire).
    #[serde(rename = "Data", default, with = "base64_bytes")]
    pub data: Option<Vec<u8>>,
    /// `Options`: a `metav1.PatchOptions`.
    #[serde(rename = "Options", default)]
    pub options: serde_json::Value,
    /// `Subresources`, e.g. `["status"]`.
    #[serde(rename = "Subresources", default)]
    pub subresources: Option<Vec<String>>,
}

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

/// A MetaServer Application, request and reply (see the module docs for the wire layouts).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
// The derived deserializer becomes an inherent fn; the trait impl below only admits objects
// (Go refuses arrays where a struct is expected; serde would read them as tuples).
#[serde(remote = "Self")]
pub struct Application {
    /// `ID`: hex SHA-256 of nodename, key, verb, option, request body and subresource
    /// ([`Application::identifier`]).
    #[serde(rename = "ID", default, deserialize_with = "null_as_default")]
    pub id: String,
    /// `Key`: `/<group|core>/<version>/<resource>/<ns|null>/<name|null>`; see
    /// [`Application::parsed_key`].
    #[serde(rename = "Key", default, deserialize_with = "null_as_default")]
    pub key: String,
    /// `Verb`.
    #[serde(rename = "Verb", default, deserialize_with = "null_as_default")]
    pub verb: ApplicationVerb,
    /// `Nodename`: the asking node.
    #[serde(rename = "Nodename", default, deserialize_with = "null_as_default")]
    pub nodename: String,
    /// `Status`.
    #[serde(rename = "Status", default, deserialize_with = "null_as_default")]
    pub status: ApplicationStatus,
    /// `Reason`: why it was rejected.
    #[serde(rename = "Reason", default, deserialize_with = "null_as_default")]
    pub reason: String,
    /// `Option`: JSON of the verb's options (ListOptions, GetOptions, [`PatchInfo`], ...).
    #[serde(rename = "Option", default, with = "base64_bytes")]
    pub option: Option<Vec<u8>>,
    /// `ReqBody`: JSON of the object to create or update.
    #[serde(rename = "ReqBody", default, with = "base64_bytes")]
    pub req_body: Option<Vec<u8>>,
    /// `RespBody`: JSON of the result (object, list, or nothing).
    #[serde(rename = "RespBody", default, with = "base64_bytes")]
    pub resp_body: Option<Vec<u8>>,
    /// `Subresource`, e.g. `status`.
    #[serde(rename = "Subresource", default, deserialize_with = "null_as_default")]
    pub subresource: String,
    /// `Error`: the Kubernetes error of a rejected Application (zero value otherwise).
    #[serde(rename = "Error", default, deserialize_with = "null_as_default")]
    pub error: StatusError,
    /// `Token`: the bearer token the edge client presented (v1.12 layout only; written in the
    /// later layout only when non-empty).
    #[serde(rename = "Token", default, deserialize_with = "null_as_default")]
    pub token: String,
    /// `Timestamp` (Go `time.Time` text) of the v1.15+ layout; `None` selects the v1.12
    /// layout. The zero time is `0001-01-01T00:00:00Z`.
    #[serde(rename = "Timestamp", default)]
    pub timestamp: Option<String>,
}

/// Go's zero `time.Time`, as the v1.15+ edges send it.
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

impl crate::Message {
    /// The message an edge MetaServer sends the cloud's DynamicController with an
    /// [`Application`] as its content: source `metaserver`, group `dynamiccontroller`,
    /// operation and resource `null` (upstream's `metaserver/kubernetes/storage` route).
    pub fn application(content: crate::Content) -> Self {
        use crate::{Group, Operation, Route, Source};
        Self::new(
            Route::new(
                Source::MetaServer,
                Group::DynamicController,
                Operation::from("null"),
                "null",
            ),
            content,
        )
    }
}

impl Application {
    /// A new `PreApplying` Application in the v1.12 layout with its [`identifier`] computed
    /// (recompute it with [`Application::with_identifier`] after setting option or body).
    ///
    /// [`identifier`]: Application::identifier
    pub fn new(key: impl Into<String>, verb: ApplicationVerb, nodename: impl Into<String>) -> Self {
        let mut app = Self {
            key: key.into(),
            verb,
            nodename: nodename.into(),
            ..Self::default()
        };
        app.id = app.identifier();
        app
    }

    /// Upstream's identifier: hex SHA-256 over nodename, key, verb, option bytes, request
    /// body bytes and subresource, concatenated.
    pub fn identifier(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.nodename.as_bytes());
        h.update(self.key.as_bytes());
        h.update(self.verb.as_str().as_bytes());
        h.update(self.option.as_deref().unwrap_or_default());
        h.update(self.req_body.as_deref().unwrap_or_default());
        h.update(self.subresource.as_bytes());
        hex::encode(h.finalize())
    }

    /// Set `id` to [`Application::identifier`].
    #[must_use]
    pub fn with_identifier(mut self) -> Self {
        self.id = self.identifier();
        self
    }

    /// The parsed `Key`.
    pub fn parsed_key(&self) -> Result<ApplicationKey, ApplicationKeyError> {
        ApplicationKey::parse(&self.key)
    }

    /// Decode `Option` as JSON (`None` when absent or empty).
    pub fn option_json<T: DeserializeOwned>(&self) -> Result<Option<T>, ContentError> {
        decode_opt(self.option.as_deref())
    }

    /// Decode `ReqBody` as JSON (`None` when absent or empty).
    pub fn req_body_json<T: DeserializeOwned>(&self) -> Result<Option<T>, ContentError> {
        decode_opt(self.req_body.as_deref())
    }

    /// Decode `RespBody` as JSON (`None` when absent or empty).
    pub fn resp_body_json<T: DeserializeOwned>(&self) -> Result<Option<T>, ContentError> {
        decode_opt(self.resp_body.as_deref())
    }

    /// Set `Option` to the JSON of `value`.
    pub fn set_option<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ContentError> {
        self.option = Some(encode(value)?);
        Ok(())
    }

    /// Set `ReqBody` to the JSON of `value`.
    pub fn set_req_body<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ContentError> {
        self.req_body = Some(encode(value)?);
        Ok(())
    }

    /// The reply to this request: `Approved` with `resp_body` as the result bytes.
    pub fn approved(&self, resp_body: Option<Vec<u8>>) -> Self {
        Self {
            status: ApplicationStatus::Approved,
            reason: String::new(),
            resp_body,
            error: StatusError::default(),
            ..self.clone()
        }
    }

    /// The reply to this request: `Rejected` with the error (its message also as `Reason`).
    pub fn rejected(&self, error: StatusError) -> Self {
        Self {
            status: ApplicationStatus::Rejected,
            reason: error.err_status.message.clone(),
            resp_body: None,
            error,
            ..self.clone()
        }
    }

    /// True once the cloud approved it.
    pub fn is_approved(&self) -> bool {
        self.status == ApplicationStatus::Approved
    }
}

impl Serialize for Application {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let b64 = |v: &Option<Vec<u8>>| {
            v.as_deref()
                .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
        };
        match &self.timestamp {
            None => {
                let mut st = s.serialize_struct("Application", 12)?;
                st.serialize_field("ID", &self.id)?;
                st.serialize_field("Key", &self.key)?;
                st.serialize_field("Verb", &self.verb)?;
                st.serialize_field("Nodename", &self.nodename)?;
                st.serialize_field("Status", &self.status)?;
                st.serialize_field("Reason", &self.reason)?;
                st.serialize_field("Option", &b64(&self.option))?;
                st.serialize_field("ReqBody", &b64(&self.req_body))?;
                st.serialize_field("RespBody", &b64(&self.resp_body))?;
                st.serialize_field("Subresource", &self.subresource)?;
                st.serialize_field("Error", &self.error)?;
                st.serialize_field("Token", &self.token)?;
                st.end()
            }
            Some(ts) => {
                let n = if self.token.is_empty() { 12 } else { 13 };
                let mut st = s.serialize_struct("Application", n)?;
                st.serialize_field("ID", &self.id)?;
                st.serialize_field("Key", &self.key)?;
                st.serialize_field("Verb", &self.verb)?;
                st.serialize_field("Nodename", &self.nodename)?;
                st.serialize_field("Option", &b64(&self.option))?;
                st.serialize_field("ReqBody", &b64(&self.req_body))?;
                st.serialize_field("Subresource", &self.subresource)?;
                st.serialize_field("RespBody", &b64(&self.resp_body))?;
                st.serialize_field("Status", &self.status)?;
                st.serialize_field("Reason", &self.reason)?;
                st.serialize_field("Error", &self.error)?;
                st.serialize_field("Timestamp", ts)?;
                if !self.token.is_empty() {
                    st.serialize_field("Token", &self.token)?;
                }
                st.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Application {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> serde::de::Visitor<'de> for ObjectOnly {
            type Value = Application;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an Application object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Application, A::Error> {
                Application::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjectOnly)
    }
}

fn decode_opt<T: DeserializeOwned>(bytes: Option<&[u8]>) -> Result<Option<T>, ContentError> {
    match bytes {
        None | Some([]) => Ok(None),
        Some(b) => serde_json::from_slice(b)
            .map(Some)
            .map_err(|e| ContentError::Decode(JsonError::from(e))),
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ContentError> {
    serde_json::to_vec(value).map_err(|e| ContentError::Encode(JsonError::from(e)))
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// Go decodes `null` into a value field as "leave the zero value".
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Go `[]byte`: `null` for nil, otherwise standard padded base64.
mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        let Some(text) = Option::<std::borrow::Cow<'de, str>>::deserialize(d)? else {
            return Ok(None);
        };
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format_args!("invalid base64: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trip_and_errors() {
        for key in [
            "/core/v1/pods/default/null",
            "/core/v1/nodes/null/edge-1",
            "/coordination.k8s.io/v1/leases/kube-node-lease/edge-1",
            "/apps/v1/deployments/null/null",
        ] {
            let k = ApplicationKey::parse(key).expect(key);
            assert_eq!(k.to_string(), key);
        }
        let k = ApplicationKey::parse("/core/v1/pods/default/null").expect("key");
        assert!(k.is_core());
        assert_eq!(k.api_version(), "v1");
        let k = ApplicationKey::parse("/apps/v1/deployments/ns/d").expect("key");
        assert_eq!(k.api_version(), "apps/v1");
        assert_eq!(k.name.as_deref(), Some("d"));
        assert!(matches!(
            ApplicationKey::parse("core/v1/pods/default/null"),
            Err(ApplicationKeyError::NoLeadingSlash(_))
        ));
        assert!(matches!(
            ApplicationKey::parse("/core/v1/pods/default"),
            Err(ApplicationKeyError::SegmentCount { found: 4, .. })
        ));
        assert!(matches!(
            ApplicationKey::parse("/core/v1//default/x"),
            Err(ApplicationKeyError::EmptySegment(_))
        ));
        assert!(ApplicationKey::parse("").is_err());
    }

    #[test]
    fn v1_12_layout_is_exact() {
        let wire = r#"{"ID":"5dbfe7095bdd52a794596bf5309124db93757ffd6d926f48661095b609dbff28","Key":"/core/v1/pods/default/null","Verb":"list","Nodename":"edge-node-1","Status":"InApplying","Reason":"","Option":"e30=","ReqBody":null,"RespBody":null,"Subresource":"","Error":{"ErrStatus":{"metadata":{}}},"Token":""}"#;
        let app: Application = serde_json::from_str(wire).expect("decode");
        assert_eq!(app.verb, ApplicationVerb::List);
        assert_eq!(app.status, ApplicationStatus::InApplying);
        assert_eq!(app.option.as_deref(), Some(&b"{}"[..]));
        assert_eq!(app.timestamp, None);
        assert!(app.error.is_empty());
        assert_eq!(app.identifier(), app.id);
        assert_eq!(serde_json::to_string(&app).expect("encode"), wire);
    }

    #[test]
    fn later_layout_is_exact() {
        let wire = r#"{"ID":"x","Key":"/core/v1/nodes/null/n","Verb":"patch","Nodename":"n","Option":"e30=","ReqBody":null,"Subresource":"status","RespBody":null,"Status":"InApplying","Reason":"","Error":{"ErrStatus":{"metadata":{}}},"Timestamp":"0001-01-01T00:00:00Z"}"#;
        let app: Application = serde_json::from_str(wire).expect("decode");
        assert_eq!(app.timestamp.as_deref(), Some(GO_ZERO_TIME));
        assert_eq!(serde_json::to_string(&app).expect("encode"), wire);
    }

    #[test]
    fn replies_and_errors() {
        let mut app = Application::new("/core/v1/pods/ns/p", ApplicationVerb::Get, "n");
        app.set_option(&serde_json::json!({})).expect("option");
        let app = app.with_identifier();
        let ok = app.approved(Some(b"{\"kind\":\"Pod\"}".to_vec()));
        assert!(ok.is_approved());
        assert_eq!(ok.id, app.id);
        let v: serde_json::Value = ok.resp_body_json().expect("json").expect("some");
        assert_eq!(v["kind"], "Pod");
        let no = app.rejected(StatusError::failure(
            404,
            "NotFound",
            "pods \"p\" not found",
        ));
        assert_eq!(no.status, ApplicationStatus::Rejected);
        assert_eq!(no.reason, "pods \"p\" not found");
        let text = serde_json::to_string(&no.error).expect("encode");
        assert_eq!(
            text,
            r#"{"ErrStatus":{"metadata":{},"status":"Failure","message":"pods \"p\" not found","reason":"NotFound","code":404}}"#
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            r#"{"Option":"not base64!"}"#,
            r#"{"Verb":3}"#,
            r#"[]"#,
            r#"{"Error":"x"}"#,
        ] {
            assert!(serde_json::from_str::<Application>(bad).is_err(), "{bad}");
        }
        // null everywhere is Go's zero value.
        let app: Application = serde_json::from_str(
            r#"{"ID":null,"Key":null,"Verb":null,"Status":null,"Error":null,"Token":null}"#,
        )
        .expect("nulls");
        assert_eq!(app, Application::default());
    }

    #[test]
    fn patch_info_round_trip() {
        let wire = r#"{"Name":"demo-pod","PatchType":"application/merge-patch+json","Data":"e30=","Options":{"kind":"PatchOptions","apiVersion":"meta.k8s.io/v1"},"Subresources":["status"]}"#;
        let p: PatchInfo = serde_json::from_str(wire).expect("decode");
        assert_eq!(p.data.as_deref(), Some(&b"{}"[..]));
        assert_eq!(p.subresources.as_deref(), Some(&["status".to_owned()][..]));
        // Options is a Value (sorted keys), so compare as values.
        let back: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&p).expect("encode")).expect("json");
        let orig: serde_json::Value = serde_json::from_str(wire).expect("json");
        assert_eq!(back, orig);
    }
}
