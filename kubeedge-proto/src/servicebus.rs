//! The HTTP messages the cloud's Router and the edge's ServiceBus exchange (upstream
//! `common/types/http.go`): a request to an app on the edge, and its answer. Header maps are
//! Go's `http.Header` (name → values) and bodies are Go `[]byte`, so base64 strings in JSON.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Go `[]byte` in JSON: a base64 string, `null` for none.
mod go_bytes {
    use super::*;

    pub(super) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if b.is_empty() {
            return s.serialize_none();
        }
        s.serialize_str(&STANDARD.encode(b))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s {
            None => Ok(Vec::new()),
            Some(s) => STANDARD.decode(s).map_err(serde::de::Error::custom),
        }
    }
}

/// Go's `nil` map: `null` in JSON, read as empty.
fn null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A request for an app on the edge (`types.HTTPRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// Header name → values.
    #[serde(default, deserialize_with = "null_default")]
    pub header: BTreeMap<String, Vec<String>>,
    /// The body.
    #[serde(default, with = "go_bytes")]
    pub body: Vec<u8>,
    /// The HTTP method.
    #[serde(default)]
    pub method: String,
    /// Unused by upstream (the target is in the message's resource).
    #[serde(default)]
    pub url: String,
}

/// An app's answer (`types.HTTPResponse`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    /// Header name → values.
    #[serde(default, deserialize_with = "null_default")]
    pub header: BTreeMap<String, Vec<String>>,
    /// The status code.
    #[serde(default)]
    pub status_code: u16,
    /// The body.
    #[serde(default, with = "go_bytes")]
    pub body: Vec<u8>,
}

/// Where a ServiceBus request goes on the edge: the message resource `<port>:<path>` (path
/// with its query), read as upstream does (exactly one `:`).
pub fn split_target(resource: &str) -> Option<(u16, &str)> {
    let (port, path) = resource.split_once(':')?;
    if path.contains(':') {
        return None;
    }
    Some((port.parse().ok()?, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_base64_and_headers_lists_as_in_go() {
        let r = HttpResponse {
            header: [("Content-Type".to_owned(), vec!["text/plain".to_owned()])].into(),
            status_code: 200,
            body: b"hi".to_vec(),
        };
        let j = serde_json::to_string(&r).expect("json");
        assert_eq!(
            j,
            r#"{"header":{"Content-Type":["text/plain"]},"status_code":200,"body":"aGk="}"#
        );
        let back: HttpResponse = serde_json::from_str(&j).expect("back");
        assert_eq!(back, r);
        let req: HttpRequest =
            serde_json::from_str(r#"{"header":null,"body":null,"method":"GET","url":""}"#)
                .expect("req");
        assert_eq!(req.method, "GET");
        assert_eq!(split_target("8080:/a/b?x=1"), Some((8080, "/a/b?x=1")));
        assert_eq!(split_target("8080:/a:b"), None);
        assert_eq!(split_target("x:/a"), None);
    }
}
