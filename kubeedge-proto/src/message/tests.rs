use super::*;

#[test]
fn keepalive_json_is_exact() {
    let text = r#"{"header":{"msg_id":"8f5bd05b-7bac-4b42-a5d5-f690d43f44cf","timestamp":1795617216869},"route":{"source":"websocket","group":"resource","operation":"keepalive","resource":"node"},"content":"ping"}"#;
    let msg = Message::from_json(text.as_bytes()).unwrap();
    assert_eq!(msg.route.operation, Some(Operation::Keepalive));
    assert_eq!(msg.content.as_str().as_deref(), Some("ping"));
    assert_eq!(String::from_utf8(msg.to_json()).unwrap(), text);
}

#[test]
fn missing_content_is_null_and_emitted() {
    let msg = Message::from_json(br#"{"header":{"msg_id":"","timestamp":0},"route":{}}"#).unwrap();
    assert!(msg.content.is_null());
    assert_eq!(
        String::from_utf8(msg.to_json()).unwrap(),
        r#"{"header":{"msg_id":"","timestamp":0},"route":{},"content":null}"#
    );
}

#[test]
fn content_bytes_follow_get_content_data() {
    let s = Content::string("{\"a\":1}");
    assert_eq!(&*s.bytes(), b"{\"a\":1}");
    let o = Content::from_json_text("{ \"a\" : [1, 2] }".into()).unwrap();
    assert_eq!(&*o.bytes(), b"{\"a\":[1,2]}");
    assert_eq!(o.raw_json(), "{ \"a\" : [1, 2] }");
    let escaped = Content::string("line\n\"q\"");
    assert_eq!(&*escaped.bytes(), b"line\n\"q\"");
    #[derive(Deserialize)]
    struct A {
        a: i32,
    }
    assert_eq!(s.decode::<A>().unwrap().a, 1);
}

#[test]
fn reply_and_error_reply_follow_upstream() {
    let req = Message::new(
        Route::new("edgecontroller", "resource", "insert", "default/pod/nginx"),
        Content::null(),
    )
    .with_parent("p0".into());
    let ack = req.ack();
    assert_eq!(ack.parent_id(), Some(req.id()));
    assert_eq!(ack.route.source, Some(Source::EdgeController));
    assert_eq!(ack.route.group, Some(Group::Resource));
    assert_eq!(ack.route.operation, Some(Operation::Response));
    assert_eq!(ack.route.resource, "default/pod/nginx");
    assert!(ack.is_ok_response());
    assert_ne!(ack.id(), req.id());

    let e12 = req.error_reply("boom", Compat::V1_12);
    assert_eq!(e12.parent_id().map(MessageId::as_str), Some("p0"));
    let e = req.error_reply("boom", Compat::Latest);
    assert_eq!(e.parent_id(), Some(req.id()));
    assert_eq!(e.route.operation, Some(Operation::Error));
    assert_eq!(e.content.as_str().as_deref(), Some("boom"));

    let dev = Message::new(
        Route::new("devicecontroller", "resource", "insert", "default/device/d"),
        Content::null(),
    );
    let dack = dev.ack();
    assert_eq!(dack.route.source, Some(Source::Meta));
    assert_eq!(dack.route.group, Some(Group::Twin));
}

#[test]
fn nulls_decode_as_zero_values() {
    let m = Message::from_json(
        br#"{"header":{"msg_id":null,"timestamp":null,"parent_msg_id":""},"route":null,"content":null,"extra":1}"#,
    )
    .unwrap();
    assert!(m.header.id.is_empty());
    assert!(m.header.parent_id.is_none());
}
