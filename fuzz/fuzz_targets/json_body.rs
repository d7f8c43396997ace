#![no_main]
//! The API server's JSON body decoder for POST/PUT (`decode_json_object`: syntax, duplicate
//! and unknown fields, Time/MicroTime formats, field types, the `fieldValidation` directive)
//! never panics. The first byte picks the directive and the kind; the rest is the body.
//! What `Strict` accepts decodes under `Warn` with no warning, and what `Ignore` accepts
//! `Warn` accepts too, with the same object.
use kubeedge_apiserver::fuzzing::KINDS;
use kubeedge_apiserver::{decode_json_object, FieldValidation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let directive = match sel & 3 {
        0 => FieldValidation::Strict,
        1 => FieldValidation::Ignore,
        _ => FieldValidation::Warn,
    };
    let kind = KINDS[usize::from(sel >> 2) % KINDS.len()];
    // Every kind the fuzzing module names is served at v1.
    let version = "v1";
    let Ok(decoded) = decode_json_object(body, kind, version, directive) else {
        return;
    };
    let warn = decode_json_object(body, kind, version, FieldValidation::Warn)
        .unwrap_or_else(|e| panic!("{directive:?} accepted a {kind} that Warn refuses: {e}"));
    match directive {
        FieldValidation::Strict => assert!(
            warn.warnings.is_empty(),
            "Strict accepted a {kind} with findings: {:?}",
            warn.warnings
        ),
        FieldValidation::Ignore => assert_eq!(decoded.object, warn.object),
        FieldValidation::Warn => {}
    }
});
