//! Property tests: every codec and parser round-trips, and never panics on arbitrary input.

use kubeedge_proto::test_util;
use kubeedge_proto::{
    ack_mode, Compat, FrameKind, HubCodec, JoinToken, Jwt, Message, ResourcePath, Topic,
    TunnelFrame,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn message_encode_decode_is_identity(msg in test_util::message()) {
        let codec = HubCodec::default();
        let bytes = codec.encode(&msg).unwrap();
        prop_assert_eq!(bytes.last(), Some(&b'\n'));
        let back = codec.decode(FrameKind::Text, &bytes).unwrap();
        prop_assert_eq!(&back, &msg);
        prop_assert_eq!(codec.encode(&back).unwrap(), bytes);
        // Content typing and bytes survive.
        prop_assert_eq!(back.content.is_string(), msg.content.is_string());
        prop_assert_eq!(back.content.bytes(), msg.content.bytes());
    }

    #[test]
    fn resource_path_format_parse_is_identity(s in test_util::resource_string()) {
        let p = ResourcePath::parse(&s);
        prop_assert_eq!(p.to_string(), s.clone());
        prop_assert_eq!(ResourcePath::parse(&p.to_string()), p);
    }

    #[test]
    fn canonical_paths_parse_back(p in test_util::resource_path()) {
        prop_assert_eq!(ResourcePath::parse(&p.to_string()), p.clone());
        if let Some(node) = p.node() {
            let edge = p.to_edge_view();
            prop_assert_eq!(edge.to_cloud_view(node).unwrap(), p);
        }
    }

    #[test]
    fn topic_parse_format_is_identity(t in test_util::topic()) {
        let s = t.to_string();
        prop_assert_eq!(Topic::parse(&s).unwrap(), t.clone());
        prop_assert_eq!(Topic::from_bus_resource(&t.to_bus_resource()), Some(t));
    }

    #[test]
    fn any_topic_string_round_trips_or_errors(s in any::<String>()) {
        if let Ok(t) = Topic::parse(&s) {
            prop_assert_eq!(t.to_string(), s);
        }
    }

    #[test]
    fn tunnel_frame_encode_decode_is_identity(f in test_util::tunnel_frame()) {
        prop_assert_eq!(TunnelFrame::decode(&f.encode()).unwrap(), f);
    }

    #[test]
    fn tunnel_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(f) = TunnelFrame::decode(&bytes) {
            // Go's encoder is canonical only for minimal varints; data always survives.
            prop_assert!(bytes.ends_with(&f.data));
        }
    }

    #[test]
    fn frame_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let codec = HubCodec::new(128);
        let _ = codec.decode(FrameKind::Text, &bytes);
        let _ = codec.decode(FrameKind::Binary, &bytes);
    }

    #[test]
    fn ack_mode_is_total(msg in test_util::message()) {
        let _ = ack_mode(&msg, Compat::V1_12);
        let _ = ack_mode(&msg, Compat::Latest);
        let ack = msg.ack();
        prop_assert_eq!(ack.parent_id(), Some(msg.id()));
        prop_assert!(ack.is_ok_response());
    }

    #[test]
    fn token_issue_parse_verify(ca in proptest::collection::vec(any::<u8>(), 1..64),
                                key in proptest::collection::vec(any::<u8>(), 1..128),
                                exp in 0i64..4_000_000_000) {
        let t = JoinToken::issue(&ca, &key, exp).unwrap();
        let parsed: JoinToken = t.to_string().parse().unwrap();
        prop_assert_eq!(&parsed, &t);
        parsed.verify_ca(&ca).unwrap();
        prop_assert_eq!(parsed.jwt().verify(&key, exp).unwrap().exp, exp);
    }

    #[test]
    fn token_parse_never_panics(s in any::<String>(), key in proptest::collection::vec(any::<u8>(), 0..8)) {
        let _ = s.parse::<JoinToken>();
        if let Ok(j) = s.parse::<Jwt>() {
            let _ = j.verify(&key, 0);
        }
    }

    #[test]
    fn message_from_arbitrary_json_never_panics(v in test_util::content()) {
        let _ = Message::from_json(v.raw_json().as_bytes());
    }
}
