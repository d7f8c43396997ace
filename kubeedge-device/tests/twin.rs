//! The twin's rules, on captured upstream payloads and as properties.

use std::collections::BTreeMap;

use kubeedge_device::twin::{Effect, Input, TwinState};
use kubeedge_proto::twin::{
    MembershipUpdate, MsgTwin, TwinUpdate, TwinValue, TwinVersion, TypeMetadata,
};
use kubeedge_proto::{DeviceEvent, Message, Topic};
use proptest::prelude::*;

fn capture(file: &str) -> serde_json::Value {
    let path = format!("{}/../testdata/captures/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("capture")).expect("json")
}

fn captured_message(file: &str) -> Message {
    let v = capture(file);
    let m = if v.get("message").is_some() {
        &v["message"]
    } else {
        &v["exchange"][0]["message"]
    };
    Message::from_json(serde_json::to_string(m).expect("json").as_bytes()).expect("message")
}

fn publishes(effects: &[Effect]) -> Vec<(Topic, serde_json::Value)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish { topic, payload } => Some((
                topic.clone(),
                serde_json::from_slice(payload).unwrap_or_default(),
            )),
            _ => None,
        })
        .collect()
}

fn to_cloud(effects: &[Effect]) -> Vec<Message> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToCloud(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn captured_membership_cloud_update_and_mapper_report() {
    let mut twin = TwinState::new();
    // v1.12.1: the device joins with desired switch=ON (cloud version 251).
    let membership: MembershipUpdate =
        captured_message("v1.12.1/17-device-membership-update-downstream.json")
            .content
            .decode()
            .unwrap();
    let fx = twin.apply(Input::Membership(membership));
    assert!(fx.contains(&Effect::Persist("thermometer-1".into())));
    let delta = publishes(&fx);
    assert_eq!(
        delta[0].0.to_string(),
        "$hw/events/device/thermometer-1/twin/update/delta"
    );
    assert_eq!(delta[0].1["delta"]["switch"], "ON");

    // The desired value changes to OFF (version 259).
    let cloud: TwinUpdate = captured_message("v1.12.1/20-twin-cloud-updated-downstream.json")
        .content
        .decode()
        .unwrap();
    let fx = twin.apply(Input::CloudUpdated {
        device: "thermometer-1".into(),
        update: cloud.clone(),
    });
    assert_eq!(publishes(&fx)[0].1["delta"]["switch"], "OFF");
    // The same push again is a no-op: versions never go backwards or repeat.
    assert!(twin
        .apply(Input::CloudUpdated {
            device: "thermometer-1".into(),
            update: cloud
        })
        .is_empty());

    // A mapper reports switch=OFF the way upstream mappers do.
    let report = br#"{"event_id":"e1","timestamp":1795617327761,"twin":{"switch":{"actual":{"value":"OFF","metadata":{"timestamp":1795617327761}},"metadata":{"type":"string"}}}}"#;
    let fx = twin.apply(Input::EdgeUpdate {
        device: "thermometer-1".into(),
        payload: report.to_vec(),
        now_ms: 1,
    });
    let up = to_cloud(&fx);
    assert_eq!(up.len(), 1);
    let expected = captured_message("v1.12.1/21-twin-edge-updated-upstream.json");
    assert_eq!(
        up[0].route, expected.route,
        "same route as upstream's edge_updated"
    );
    let ours: TwinUpdate = up[0].content.decode().unwrap();
    let theirs: TwinUpdate = expected.content.decode().unwrap();
    let (o, t) = (
        ours.twin.unwrap()["switch"].clone().unwrap(),
        theirs.twin.unwrap()["switch"].clone().unwrap(),
    );
    assert_eq!(o.actual, t.actual);
    assert_eq!(
        o.actual_version, t.actual_version,
        "edge version 1 as upstream"
    );
    assert_eq!(o.optional, t.optional);
    // The result echoes the request.
    assert_eq!(
        publishes(&fx)[0].0.to_string(),
        "$hw/events/device/thermometer-1/twin/update/result"
    );
    // Reporting the same value again is a no-op towards the cloud.
    let again = twin.apply(Input::EdgeUpdate {
        device: "thermometer-1".into(),
        payload: report.to_vec(),
        now_ms: 2,
    });
    assert!(to_cloud(&again).is_empty());
}

#[test]
fn namespaced_devices_and_state() {
    let mut twin = TwinState::new();
    let membership: MembershipUpdate =
        captured_message("v1.22.2/17-device-membership-update-downstream.json")
            .content
            .decode()
            .unwrap();
    twin.apply(Input::Membership(membership));
    let id = "default/thermometer-edge-node-122";
    assert!(twin.device(id).is_some());
    let fx = twin.apply(Input::StateUpdate {
        device: id.into(),
        payload: br#"{"event_id":"s1","timestamp":1,"state":"online"}"#.to_vec(),
        now_ms: 5,
        now_text: "2026-11-25 14:40:12".into(),
    });
    let p = publishes(&fx);
    assert_eq!(
        p[0].0.to_string(),
        "$hw/events/device/default/thermometer-edge-node-122/state/update/result"
    );
    assert_eq!(p[0].1["device"]["state"], "online");
    let up = to_cloud(&fx);
    assert!(
        up[0].content.is_string(),
        "upstream sends the state as a string"
    );
    assert_eq!(up[0].route.resource, format!("device/{id}/state/update"));
    // Unknown states are ignored.
    assert!(twin
        .apply(Input::StateUpdate {
            device: id.into(),
            payload: br#"{"state":"dancing"}"#.to_vec(),
            now_ms: 6,
            now_text: String::new()
        })
        .is_empty());
}

#[test]
fn bad_input_gets_error_results_and_changes_nothing() {
    let mut twin = TwinState::new();
    let m = MembershipUpdate {
        added_devices: Some(vec![kubeedge_proto::twin::Device {
            id: "d".into(),
            name: "d".into(),
            twin: Some(BTreeMap::from([(
                "t".to_owned(),
                Some(MsgTwin {
                    metadata: Some(TypeMetadata {
                        value_type: "int".into(),
                    }),
                    expected: Some(TwinValue {
                        value: Some("1".into()),
                        metadata: None,
                    }),
                    expected_version: Some(TwinVersion { cloud: 1, edge: 0 }),
                    ..MsgTwin::default()
                }),
            )])),
            ..Default::default()
        }]),
        ..MembershipUpdate::default()
    };
    twin.apply(Input::Membership(m));
    let before = twin.clone();
    for (device, payload, code) in [
        ("d", b"{not json".to_vec(), 400),
        ("nope", br#"{"event_id":"x","twin":{}}"#.to_vec(), 404),
        (
            "d",
            br#"{"event_id":"x","twin":{"t":{"actual":{"value":"abc"}}}}"#.to_vec(),
            400,
        ),
        (
            "d",
            format!(
                r#"{{"event_id":"x","twin":{{"t":{{"actual":{{"value":"{}"}}}}}}}}"#,
                "9".repeat(600)
            )
            .into_bytes(),
            400,
        ),
    ] {
        let fx = twin.apply(Input::EdgeUpdate {
            device: device.into(),
            payload,
            now_ms: 1,
        });
        let p = publishes(&fx);
        assert_eq!(p.len(), 1, "{fx:?}");
        assert_eq!(p[0].1["code"], code);
        assert!(matches!(
            &p[0].0,
            Topic::Device {
                event: DeviceEvent::TwinUpdateResult,
                ..
            }
        ));
        assert!(to_cloud(&fx).is_empty());
        assert_eq!(twin, before, "unchanged");
    }
    let fx = twin.apply(Input::Get {
        device: "nope".into(),
        payload: br#"{"event_id":"g"}"#.to_vec(),
        now_ms: 1,
    });
    assert_eq!(publishes(&fx)[0].1["code"], 404);
}

fn seeded() -> TwinState {
    let mut twin = TwinState::new();
    let m = MembershipUpdate {
        added_devices: Some(vec![kubeedge_proto::twin::Device {
            id: "d".into(),
            name: "d".into(),
            ..Default::default()
        }]),
        ..MembershipUpdate::default()
    };
    twin.apply(Input::Membership(m));
    twin
}

#[derive(Debug, Clone)]
enum Op {
    Cloud { value: u8, version: i64 },
    Edge { value: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4, 0i64..20).prop_map(|(value, version)| Op::Cloud { value, version }),
        (0u8..4).prop_map(|value| Op::Edge { value }),
    ]
}

fn run(twin: &mut TwinState, op: &Op, t: i64) -> Vec<Effect> {
    match op {
        Op::Cloud { value, version } => {
            let mut twins = BTreeMap::new();
            twins.insert(
                "p".to_owned(),
                Some(MsgTwin {
                    expected: Some(TwinValue {
                        value: Some(value.to_string()),
                        metadata: None,
                    }),
                    expected_version: Some(TwinVersion {
                        cloud: *version,
                        edge: 0,
                    }),
                    // The cloud may even send an actual value: it must never land.
                    actual: Some(TwinValue {
                        value: Some("cloud-says".into()),
                        metadata: None,
                    }),
                    ..MsgTwin::default()
                }),
            );
            twin.apply(Input::CloudUpdated {
                device: "d".into(),
                update: TwinUpdate {
                    event_id: String::new(),
                    timestamp: t,
                    twin: Some(twins),
                },
            })
        }
        Op::Edge { value } => {
            let payload = format!(
                r#"{{"event_id":"e","timestamp":{t},"twin":{{"p":{{"actual":{{"value":"{value}"}}}}}}}}"#
            );
            twin.apply(Input::EdgeUpdate {
                device: "d".into(),
                payload: payload.into_bytes(),
                now_ms: t,
            })
        }
    }
}

proptest! {
    #[test]
    fn versions_are_monotonic_and_ownership_holds(ops in proptest::collection::vec(op(), 1..40)) {
        let mut twin = seeded();
        let mut last_cloud = i64::MIN;
        let mut last_edge = 0;
        let mut last_actual: Option<String> = None;
        for (t, op) in ops.iter().enumerate() {
            run(&mut twin, op, t as i64);
            let p = twin.device("d").and_then(|d| d.twins.get("p")).cloned().unwrap_or_default();
            let cloud_v = p.expected_version.map_or(i64::MIN, |v| v.cloud);
            let edge_v = p.actual_version.map_or(0, |v| v.edge);
            prop_assert!(cloud_v >= last_cloud, "cloud version went back");
            prop_assert!(edge_v >= last_edge, "edge version went back");
            let actual = p.actual.as_ref().and_then(|a| a.value.clone());
            if matches!(op, Op::Cloud { .. }) {
                prop_assert_eq!(&actual, &last_actual, "the cloud changed a reported value");
            }
            prop_assert_ne!(actual.as_deref(), Some("cloud-says"));
            last_cloud = cloud_v;
            last_edge = edge_v;
            last_actual = actual;
        }
    }

    #[test]
    fn a_repeated_update_is_a_no_op(first in op(), repeat in 1usize..4) {
        let mut twin = seeded();
        run(&mut twin, &first, 1);
        let after_first = twin.clone();
        for i in 0..repeat {
            let fx = run(&mut twin, &first, 2 + i as i64);
            prop_assert!(to_cloud(&fx).is_empty());
            prop_assert!(!fx.iter().any(|e| matches!(e, Effect::Persist(_))));
            prop_assert_eq!(&twin, &after_first);
        }
    }
}
