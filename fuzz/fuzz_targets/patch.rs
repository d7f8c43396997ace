#![no_main]
//! PATCH bodies (JSON patch, merge patch, apply YAML, strategic merge): never panic. The first
//! byte picks the patch type; the rest is `current NUL patch` (current is a Deployment when it
//! is missing or not JSON). A merge patch applied twice changes nothing the second time.
use kubeedge_apiserver::fuzzing::{apply_patch, PatchType};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let patch_type = match sel & 3 {
        0 => PatchType::Json,
        1 => PatchType::Merge,
        2 => PatchType::ApplyYaml,
        _ => PatchType::StrategicMerge,
    };
    let (current, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (
            serde_json::from_slice::<Value>(&rest[..i]).ok(),
            &rest[i + 1..],
        ),
        None => (None, rest),
    };
    let current = current.unwrap_or_else(|| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d",
            "labels": {"app": "d"}, "finalizers": ["a"]},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                "template": {"spec": {"containers": [{"name": "c", "image": "i:1",
                    "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80}]}]}}}})
    });
    if let Ok(once) = apply_patch(patch_type, &current, body) {
        let _ = serde_json::to_vec(&once).expect("a patched object serializes");
        if patch_type == PatchType::Merge {
            let twice = apply_patch(patch_type, &once, body).expect("the patch applied once");
            assert_eq!(twice, once, "a merge patch is idempotent");
        }
    }
});
