//! Decoding a request body as kube-apiserver's strict decoder does: duplicate and unknown
//! fields (reported per `fieldValidation`), type errors and the Time/MicroTime formats.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::times;

/// The `fieldValidation` query parameter: what to do with unknown and duplicate fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and answer with one `Warning` header each (the default).
    #[default]
    Warn,
    /// Refuse the request with 400.
    Strict,
}

impl FieldValidation {
    /// Parses the parameter as upstream does: absent or empty is `Warn`; anything but
    /// `Ignore`, `Warn` and `Strict` (case-sensitive) is refused with the field error text.
    pub fn parse(param: Option<&str>) -> Result<Self, String> {
        match param.unwrap_or_default() {
            "" | "Warn" => Ok(Self::Warn),
            "Ignore" => Ok(Self::Ignore),
            "Strict" => Ok(Self::Strict),
            other => Err(format!(
                "fieldValidation: Unsupported value: \"{}\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\"",
                other.replace('\\', "\\\\").replace('"', "\\\"")
            )),
        }
    }
}

/// A body decoded into an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The object, unknown fields removed and times in their stored form.
    pub object: Value,
    /// The strict-decoding findings to send as `Warning` headers (under `Warn`).
    pub warnings: Vec<String>,
}

/// A body refused by the decoder: kube-apiserver answers 400 BadRequest with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// The `message` of the 400 Status.
    pub message: String,
}

/// Builds a `Value` while recording every key that appears twice in one object.
struct DupSeed<'a> {
    path: String,
    found: &'a RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for DupSeed<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DupSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(DupSeed {
            path: format!("{}[{}]", self.path, out.len()),
            found: self.found,
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                k.clone()
            } else {
                format!("{}.{k}", self.path)
            };
            let v = map.next_value_seed(DupSeed {
                path: path.clone(),
                found: self.found,
            })?;
            if out.insert(k, v).is_some() {
                self.found
                    .borrow_mut()
                    .push(format!("duplicate field \"{path}\""));
            }
        }
        Ok(Value::Object(out))
    }
}

/// Parses JSON keeping the last of duplicate keys (as Go does) and listing the duplicates.
pub(crate) fn parse_json(body: &[u8]) -> Result<(Value, Vec<String>), serde_json::Error> {
    let found = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = DupSeed {
        path: String::new(),
        found: &found,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok((v, found.into_inner()))
}

/// The decode error upstream's create and update handlers answer (`transformDecodeError`).
pub(crate) fn cannot_handle(kind: &str, version: &str, why: &str) -> String {
    format!("{kind} in version \"{version}\" cannot be handled as a {kind}: {why}")
}

/// Checks an already parsed object of `kind` in place: Time/MicroTime formats and field types
/// are fatal (`Err`), unknown fields are pruned and returned with `duplicates` as the strict
/// findings (`Ok`). `builtin` is false for custom resources (no typed form, no times).
pub(crate) fn check_object(
    kind: &str,
    builtin: bool,
    obj: &mut Value,
    duplicates: Vec<String>,
) -> Result<Vec<String>, String> {
    let mut findings = duplicates;
    if builtin {
        times::normalize(kind, obj)?;
        let unknown = crate::objects::check_builtin(kind, obj)?;
        findings.extend(unknown.iter().map(|u| format!("unknown field \"{u}\"")));
    }
    Ok(findings)
}

/// Applies `fieldValidation` to the strict findings: `Err` is the 400 message under Strict,
/// `Ok` the warnings to send (empty under Ignore).
pub(crate) fn apply_directive(
    kind: &str,
    version: &str,
    directive: FieldValidation,
    findings: Vec<String>,
) -> Result<Vec<String>, String> {
    if findings.is_empty() {
        return Ok(findings);
    }
    match directive {
        FieldValidation::Strict => Err(cannot_handle(
            kind,
            version,
            &format!("strict decoding error: {}", findings.join(", ")),
        )),
        FieldValidation::Warn => Ok(findings),
        FieldValidation::Ignore => Ok(Vec::new()),
    }
}

/// Decodes a JSON request body for a built-in `kind` at `version` as kube-apiserver's create
/// and update handlers do, under the `fieldValidation` directive.
///
/// This is the whole decode step of POST and PUT for JSON bodies (the entry point to fuzz):
/// syntax errors, a non-object body, a Time or MicroTime in the wrong form, a field of the
/// wrong type, and (under `Strict`) duplicate or unknown fields give a [`DecodeError`] whose
/// message is the 400 Status message; otherwise the object comes back with unknown fields
/// removed, times in their stored form, and the warnings `Warn` sends. Kinds without a typed
/// form here (custom resources) get only the syntax and duplicate-field checks.
pub fn decode_json_object(
    body: &[u8],
    kind: &str,
    version: &str,
    directive: FieldValidation,
) -> Result<Decoded, DecodeError> {
    let err = |message: String| DecodeError { message };
    let (mut object, duplicates) =
        parse_json(body).map_err(|e| err(format!("invalid json body: {e}")))?;
    if !object.is_object() {
        return Err(err("the request body must be a json object".into()));
    }
    let builtin = crate::registry::is_builtin_kind(kind);
    let findings = check_object(kind, builtin, &mut object, duplicates)
        .map_err(|why| err(cannot_handle(kind, version, &why)))?;
    let warnings = apply_directive(kind, version, directive, findings).map_err(err)?;
    Ok(Decoded { object, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_found_with_their_path() {
        let (v, d) = parse_json(br#"{"a": 1, "b": {"c": [{"x": 1, "x": 2}]}, "a": 3}"#).unwrap();
        assert_eq!(v["a"], 3);
        assert_eq!(v["b"]["c"][0]["x"], 2);
        assert_eq!(
            d,
            vec![
                "duplicate field \"b.c[0].x\"".to_owned(),
                "duplicate field \"a\"".to_owned()
            ]
        );
    }

    #[test]
    fn directive_parse() {
        assert_eq!(FieldValidation::parse(None), Ok(FieldValidation::Warn));
        assert_eq!(
            FieldValidation::parse(Some("Strict")),
            Ok(FieldValidation::Strict)
        );
        assert!(FieldValidation::parse(Some("strict")).is_err());
    }

    #[test]
    fn strict_decoding_message() {
        let body = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","name":"b"},"dta":{}}"#;
        let e = decode_json_object(body, "ConfigMap", "v1", FieldValidation::Strict).unwrap_err();
        assert_eq!(
            e.message,
            "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: duplicate field \"metadata.name\", unknown field \"dta\""
        );
        let ok = decode_json_object(body, "ConfigMap", "v1", FieldValidation::Warn).unwrap();
        assert_eq!(ok.warnings.len(), 2);
        assert_eq!(ok.object["metadata"]["name"], "b");
        assert!(ok.object.get("dta").is_none());
    }
}
