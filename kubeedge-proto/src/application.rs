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
use crate::gojson::null_as_default;
use crate::names::wire_name;

mod key;
mod status;

pub use key::ApplicationKey;
pub use status::{ApiStatus, StatusError};

/// The literal upstream writes for an absent namespace or name in an Application key.
pub const NULL_SEGMENT: &str = "null";

/// Resource of an `applicationResponse` message, edge view.
pub const APPLICATION_RESOURCE: &str = "ignore/Application/ignore";

/// Resource (suffix) of a watch sync message: an edge's whole list of watch Applications
/// (upstream `metaserver.WatchAppSync`, v1.15 and later).
pub const WATCH_APP_SYNC: &str = "watchapp/sync";

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
mod tests;
