#![no_main]
//! JSON and YAML object bodies under every `fieldValidation`: never panic. The first byte picks
//! the format, the validation and the kind; the rest is the body. Whatever is accepted checks
//! again without an error, and no unknown field appears that the first check did not report.
//!
//! This target found that an unknown field whose name holds `.` or `[` was reported but kept
//! (pruning split the reported path); pruning now walks the structure (regression test
//! `objects::typed_tests::unknown_fields_with_dots_or_brackets_in_their_names_are_pruned_too`).
use kubeedge_apiserver::fuzzing::{check_object, object_body, BodyFormat, FieldValidation, KINDS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let format = if sel & 1 == 0 {
        BodyFormat::Json
    } else {
        BodyFormat::Yaml
    };
    let validation = match (sel >> 1) & 3 {
        0 => FieldValidation::Strict,
        1 => FieldValidation::Ignore,
        _ => FieldValidation::Warn,
    };
    let kind = KINDS[usize::from(sel >> 3) % KINDS.len()];
    // The decode step: point this at the request path's body decoder.
    let Ok(v) = object_body(format, body) else {
        return;
    };
    if let Ok(checked) = check_object(kind, validation, v.clone()) {
        let again = check_object(kind, FieldValidation::Warn, checked.object.clone())
            .unwrap_or_else(|e| panic!("a checked {kind} checks again: {e}: {}", checked.object));
        let first = check_object(kind, FieldValidation::Warn, v).expect("it checked once");
        for w in &again.warnings {
            assert!(
                first.warnings.contains(w),
                "{w} appeared after pruning a {kind}"
            );
        }
    }
});
