#![no_main]
//! Protobuf request bodies (`kubectl create <kind>`, `kubectl expose`): never panic; whatever
//! decodes is a JSON object carrying its apiVersion and kind, and goes through the same typed
//! check a create runs without panicking.
use kubeedge_apiserver::fuzzing::{check_object, protobuf_body, FieldValidation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Inputs without the envelope get it, so that mutations spend no time rediscovering it.
    let body = if data.starts_with(b"k8s\0") {
        data.to_vec()
    } else {
        [b"k8s\0".as_slice(), data].concat()
    };
    if let Ok(v) = protobuf_body(&body) {
        let kind = v["kind"]
            .as_str()
            .expect("a decoded body has its kind")
            .to_owned();
        assert!(v["apiVersion"].is_string());
        let _ = check_object(&kind, FieldValidation::Strict, v);
    }
});
