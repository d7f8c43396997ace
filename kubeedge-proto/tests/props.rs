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

fn bytes_opt() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))
}

fn application() -> impl Strategy<Value = kubeedge_proto::Application> {
    use kubeedge_proto::{Application, ApplicationStatus, ApplicationVerb, StatusError};
    (
        (
            test_util::segment(true),
            test_util::segment(false),
            proptest::sample::select(ApplicationVerb::KNOWN),
            proptest::sample::select(ApplicationStatus::KNOWN),
            ".*",
        ),
        (bytes_opt(), bytes_opt(), bytes_opt()),
        (
            test_util::segment(true),
            proptest::option::of((400..600i32, ".*")),
            ".*",
            proptest::option::of(Just(kubeedge_proto::GO_ZERO_TIME.to_owned())),
        ),
    )
        .prop_map(
            |(
                (ns, name, verb, status, reason),
                (option, req_body, resp_body),
                (sub, err, token, timestamp),
            )| {
                let key = format!(
                    "/core/v1/pods/{}/{name}",
                    if ns.is_empty() { "null" } else { &ns }
                );
                let mut app = Application::new(key, ApplicationVerb::from(verb), "node-1");
                app.status = ApplicationStatus::from(status);
                app.reason = reason;
                app.option = option;
                app.req_body = req_body;
                app.resp_body = resp_body;
                app.subresource = sub;
                app.error = err.map_or_else(StatusError::default, |(c, m)| {
                    StatusError::failure(c, "Reason", m)
                });
                // The later layout only carries a token when it is set; v1.12's always does.
                app.token = token;
                app.timestamp = timestamp;
                app.with_identifier()
            },
        )
}

proptest! {
    #[test]
    fn application_encode_decode_is_identity(app in application()) {
        let text = serde_json::to_string(&app).unwrap();
        let back: kubeedge_proto::Application = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &app);
        prop_assert_eq!(serde_json::to_string(&back).unwrap(), text);
        let key = app.parsed_key().unwrap();
        prop_assert_eq!(key.to_string(), app.key.clone());
    }

    #[test]
    fn application_decoders_never_panic(s in ".*", key in ".*") {
        let _ = serde_json::from_str::<kubeedge_proto::Application>(&s);
        let _ = kubeedge_proto::ApplicationKey::parse(&key);
    }
}

fn ws_message() -> impl Strategy<Value = kubeedge_proto::ws::WsMessage> {
    use kubeedge_proto::ws::WsMessage;
    let data = || proptest::collection::vec(any::<u8>(), 0..300);
    let control = || proptest::collection::vec(any::<u8>(), 0..120);
    prop_oneof![
        data().prop_map(WsMessage::Text),
        data().prop_map(WsMessage::Binary),
        control().prop_map(WsMessage::Ping),
        control().prop_map(WsMessage::Pong),
        (any::<u16>(), control()).prop_map(|(c, r)| WsMessage::Close(Some(c), r)),
    ]
}

proptest! {
    #[test]
    fn ws_encode_decode_is_identity(
        msgs in proptest::collection::vec(ws_message(), 1..6),
        mask in any::<Option<[u8; 4]>>(),
        split in any::<usize>(),
    ) {
        use kubeedge_proto::ws::{Role, WsCodec};
        let mut wire = bytes::BytesMut::new();
        for m in &msgs {
            WsCodec::encode(m, mask, &mut wire);
        }
        let role = if mask.is_some() { Role::Server } else { Role::Client };
        let mut codec = WsCodec::new(role, 1 << 16);
        // Fed in two pieces, split anywhere.
        let at = split % (wire.len() + 1);
        let rest = wire.split_off(at);
        let mut out = Vec::new();
        while let Some(m) = codec.decode(&mut wire).unwrap() {
            out.push(m);
        }
        wire.extend_from_slice(&rest);
        while let Some(m) = codec.decode(&mut wire).unwrap() {
            out.push(m);
        }
        prop_assert_eq!(out, msgs);
        prop_assert!(wire.is_empty());
    }

    #[test]
    fn ws_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), server in any::<bool>()) {
        use kubeedge_proto::ws::{Role, WsCodec};
        let role = if server { Role::Server } else { Role::Client };
        let mut codec = WsCodec::new(role, 256);
        let mut buf = bytes::BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
    }
}

proptest! {
    #[test]
    fn spdy_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        use kubeedge_proto::spdy::SpdyCodec;
        let mut codec = SpdyCodec::new(256);
        let mut buf = bytes::BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
    }

    #[test]
    fn spdy_frames_round_trip(
        headers in proptest::collection::btree_map("[a-z-]{1,12}", "[ -~]{0,20}", 0..6),
        data in proptest::collection::vec(any::<u8>(), 0..2000),
        id in 1u32..0x7fff_ffff,
        fin in any::<bool>(),
    ) {
        use kubeedge_proto::spdy::{Frame, SpdyCodec};
        let headers: Vec<(String, String)> = headers.into_iter().collect();
        let (mut a, mut b) = (SpdyCodec::new(1 << 16), SpdyCodec::new(1 << 16));
        let frames = vec![
            Frame::SynStream { stream_id: id, associated: 0, priority: 0, fin, headers: headers.clone() },
            Frame::Data { stream_id: id, fin, data },
            Frame::Headers { stream_id: id, fin, headers },
        ];
        let mut wire = bytes::BytesMut::new();
        for f in &frames {
            a.encode(f, &mut wire).unwrap();
        }
        let mut got = Vec::new();
        while let Some(f) = b.decode(&mut wire).unwrap() {
            got.push(f);
        }
        prop_assert_eq!(got, frames);
    }
}
