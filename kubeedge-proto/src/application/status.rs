//! The Kubernetes errors an Application reply carries: `metav1.Status` and Go's
//! `apierrors.StatusError`.

use serde::{Deserialize, Serialize};

use super::is_zero;
use crate::gojson::null_as_default;

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
