//! Request bodies of POST and PUT decoded through [`crate::validation`], and the
//! `fieldValidation` warnings they produce.

use serde_json::Value;

use super::*;
use crate::validation;

impl Ctx {
    pub(super) fn directive(&self) -> FieldValidation {
        self.field_validation.clone().unwrap_or_default()
    }

    pub(super) fn warn(&self, found: Vec<String>) {
        if let Ok(mut w) = self.warnings.lock() {
            w.extend(found);
        }
    }
}

/// Decodes a POST or PUT body of the target's kind as upstream's decoder does: JSON through
/// [`validation::decode_json_object`]'s steps (duplicates, unknown fields per
/// `fieldValidation`, Time/MicroTime formats), YAML likewise without duplicates (the YAML
/// parser refuses them), protobuf as it comes.
pub(super) fn decode_body(t: &Target, ctx: &Ctx, b: &[u8]) -> Result<Value, ApiError> {
    let json = !ctx.content_type.contains("protobuf") && !ctx.content_type.contains("yaml");
    let (mut v, duplicates) = if json {
        let (v, d) = validation::parse_json(b)
            .map_err(|e| ApiError::bad_request(format!("invalid json body: {e}")))?;
        if !v.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a json object",
            ));
        }
        (v, d)
    } else {
        (parse_body(ctx, b)?, Vec::new())
    };
    if ctx.content_type.contains("protobuf") {
        return Ok(v);
    }
    let (kind, version) = (&t.def.kind, &t.version);
    let found = validation::check_object(kind, t.def.builtin, &mut v, duplicates)
        .map_err(|why| ApiError::bad_request(validation::cannot_handle(kind, version, &why)))?;
    let warnings = validation::apply_directive(kind, version, ctx.directive(), found)
        .map_err(ApiError::bad_request)?;
    ctx.warn(warnings);
    Ok(v)
}
