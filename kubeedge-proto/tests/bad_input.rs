//! Hostile input: every case gets a typed error that says what was wrong, and nothing panics.

use kubeedge_proto::twin::TwinUpdate;
use kubeedge_proto::{
    Content, FrameError, FrameKind, HubCodec, JoinToken, JsonErrorKind, Jwt, StreamConnect,
    TokenError, Topic, TopicError, TunnelError, TunnelFrame, MAX_TUNNEL_FRAME,
};

const GOOD: &str = r#"{"header":{"msg_id":"m","timestamp":1795617216869},"route":{"source":"websocket","group":"resource","operation":"keepalive","resource":"node"},"content":"ping"}"#;

fn json_err(payload: &[u8]) -> kubeedge_proto::JsonError {
    match HubCodec::default().decode(FrameKind::Text, payload) {
        Err(FrameError::Json(e)) => e,
        other => panic!("expected a json error, got {other:?}"),
    }
}

#[test]
fn truncated_json_at_every_length() {
    for cut in 1..GOOD.len() {
        let e = json_err(&GOOD.as_bytes()[..cut]);
        assert!(
            matches!(e.kind, JsonErrorKind::Truncated | JsonErrorKind::Syntax),
            "cut {cut}: {e}"
        );
    }
    let e = json_err(&GOOD.as_bytes()[..50]);
    assert!(
        e.to_string().starts_with("truncated json at line 1 column"),
        "{e}"
    );
}

#[test]
fn wrong_types_and_huge_numbers() {
    for (bad, what) in [
        (
            r#"{"header":{"msg_id":1},"route":{},"content":null}"#,
            "invalid type",
        ),
        (
            r#"{"header":{"timestamp":"1"},"route":{},"content":null}"#,
            "invalid type",
        ),
        (
            r#"{"header":{"timestamp":1.5},"route":{},"content":null}"#,
            "invalid type",
        ),
        (
            r#"{"header":{"timestamp":92233720368547758070},"route":{},"content":null}"#,
            "i64",
        ),
        (
            r#"{"header":{},"route":{"operation":[]},"content":null}"#,
            "invalid type",
        ),
        (
            r#"{"header":{},"route":"x","content":null}"#,
            "invalid type",
        ),
        (
            r#"{"header":{},"route":{},"content":null,"content":1}"#,
            "duplicate field",
        ),
        (r#"[]"#, "invalid type"),
    ] {
        let e = json_err(bad.as_bytes());
        assert_eq!(e.kind, JsonErrorKind::Data, "{bad}: {e}");
        assert!(e.to_string().contains(what), "{bad}: {e}");
    }
    // Huge numbers inside content are opaque text and survive exactly.
    let big = r#"{"header":{},"route":{},"content":{"n":123456789012345678901234567890e999}}"#;
    let m = HubCodec::default()
        .decode(FrameKind::Text, big.as_bytes())
        .unwrap();
    assert_eq!(
        m.content.raw_json(),
        r#"{"n":123456789012345678901234567890e999}"#
    );
}

#[test]
fn unknown_keys_are_ignored_like_go() {
    let with_extra = r#"{"header":{"msg_id":"m","timestamp":1,"extra":{"deep":[1,2]}},"route":{"source":"twin","x":1},"content":null,"router":{}}"#;
    let m = HubCodec::default()
        .decode(FrameKind::Text, with_extra.as_bytes())
        .unwrap();
    assert_eq!(m.header.id.as_str(), "m");
    assert_eq!(m.route.source_str(), "twin");
}

#[test]
fn non_utf8_text_frames() {
    let mut bad = GOOD.as_bytes().to_vec();
    bad[60] = 0xff;
    assert_eq!(
        HubCodec::default().decode(FrameKind::Text, &bad),
        Err(FrameError::InvalidUtf8 { valid_up_to: 60 })
    );
    // In a binary frame the same bytes are a JSON error, not a panic.
    assert!(matches!(
        HubCodec::default().decode(FrameKind::Binary, &bad),
        Err(FrameError::Json(_))
    ));
}

#[test]
fn hundred_megabyte_frame_is_refused_before_parsing() {
    let huge = vec![b'['; 100 * 1024 * 1024];
    let e = HubCodec::default()
        .decode(FrameKind::Text, &huge)
        .unwrap_err();
    assert_eq!(
        e,
        FrameError::TooLarge {
            size: 100 * 1024 * 1024,
            max: HubCodec::DEFAULT_MAX_FRAME_SIZE
        }
    );
    assert_eq!(
        e.to_string(),
        "frame of 104857600 bytes exceeds the maximum of 16777216 bytes"
    );
    assert!(matches!(
        TunnelFrame::decode(&huge),
        Err(TunnelError::TooLarge { .. })
    ));
}

#[test]
fn deeply_nested_json() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    // In the envelope: an array where an object belongs is refused at once.
    let e = json_err(format!(r#"{{"header":{}}}"#, deep(10_000)).as_bytes());
    assert!(e.detail.contains("expected a json object or null"), "{e}");
    // Under an unknown key: skipped iteratively (no recursion), bounded by the frame size.
    let frame = format!(r#"{{"header":{{"x":{}}}}}"#, deep(1_000_000));
    assert!(HubCodec::default()
        .decode(FrameKind::Text, frame.as_bytes())
        .is_ok());
    // In the content: kept as raw text and bounded by the frame size; decoding it into a type
    // hits the recursion limit instead of the stack.
    let frame = format!(
        r#"{{"header":{{}},"route":{{}},"content":{}}}"#,
        deep(10_000)
    );
    let m = HubCodec::default()
        .decode(FrameKind::Text, frame.as_bytes())
        .unwrap();
    let e = m.content.decode::<serde_json::Value>().unwrap_err();
    assert!(e.to_string().contains("invalid message content"), "{e}");
    let source = std::error::Error::source(&e)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(source.contains("recursion limit"), "{source}");
    let content = Content::string(&deep(100_000));
    assert!(content.decode::<TwinUpdate>().is_err());
}

#[test]
fn bad_varints() {
    assert_eq!(
        TunnelFrame::decode(&[0x80, 0x80]),
        Err(TunnelError::Truncated {
            field: "connect id"
        })
    );
    assert_eq!(
        TunnelFrame::decode(&[0xff; 12]),
        Err(TunnelError::VarintOverflow {
            field: "connect id"
        })
    );
    assert_eq!(
        TunnelFrame::decode(&[0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
        Err(TunnelError::VarintOverflow {
            field: "message type"
        })
    );
    assert_eq!(
        TunnelError::VarintOverflow {
            field: "connect id"
        }
        .to_string(),
        "tunnel frame connect id varint overflows 64 bits"
    );
    let ok = TunnelFrame::decode(&vec![0u8; MAX_TUNNEL_FRAME]).unwrap();
    assert_eq!(ok.data.len(), MAX_TUNNEL_FRAME - 2);
    assert!(matches!(
        StreamConnect::decode(b"{\"MessID\":\"x\"}"),
        Err(TunnelError::Payload(_))
    ));
}

#[test]
fn bad_tokens() {
    let hash = "a".repeat(64);
    for (t, want) in [
        (
            "",
            TokenError::PartCount {
                found: 1,
                expected: 4,
            },
        ),
        (
            "a.b",
            TokenError::PartCount {
                found: 2,
                expected: 4,
            },
        ),
        (
            "a.b.c.d.e",
            TokenError::PartCount {
                found: 5,
                expected: 4,
            },
        ),
        ("xyz.b.c.d", TokenError::MalformedCaHash),
    ] {
        assert_eq!(t.parse::<JoinToken>().unwrap_err(), want, "{t:?}");
    }
    let upper = format!("{}.a.b.c", "A".repeat(64));
    assert_eq!(
        upper.parse::<JoinToken>().unwrap_err(),
        TokenError::MalformedCaHash
    );
    let t: JoinToken = format!("{hash}.%%%.e30.x").parse().unwrap();
    let e = t.jwt().verify(b"k", 0).unwrap_err();
    assert_eq!(e, TokenError::Base64 { part: "header" });
    assert_eq!(e.to_string(), "jwt header is not valid base64url");
    let j: Jwt = "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.x".parse().unwrap();
    assert!(matches!(
        j.verify(b"k", 0),
        Err(TokenError::Json { part: "claims", .. })
    ));
    let j: Jwt = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.***".parse().unwrap();
    assert_eq!(
        j.verify(b"k", 0),
        Err(TokenError::Base64 { part: "signature" })
    );
    assert!(matches!(
        "a".repeat(10_000).parse::<Jwt>(),
        Err(TokenError::TooLong { .. })
    ));
}

#[test]
fn bad_topics() {
    assert_eq!(
        Topic::parse("$hw/events/device/#"),
        Err(TopicError::ForbiddenChar('#'))
    );
    assert_eq!(Topic::parse("a\0b"), Err(TopicError::ForbiddenChar('\0')));
    assert_eq!(
        Topic::parse(&"a".repeat(70_000)),
        Err(TopicError::TooLong(70_000))
    );
}

#[test]
fn bad_twin_payloads() {
    for bad in [
        r#"{"event_id":1}"#,
        r#"{"twin":{"p":{"actual":{"value":5}}}}"#,
        r#"{"twin":{"p":{"expected_version":{"cloud":"x"}}}}"#,
        r#"{"timestamp":1e400}"#,
        "[",
    ] {
        assert!(
            Content::string(bad).decode::<TwinUpdate>().is_err(),
            "{bad}"
        );
    }
}
