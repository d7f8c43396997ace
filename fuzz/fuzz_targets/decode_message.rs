#![no_main]
//! Hub frames: never panic; whatever decodes re-encodes to a frame that decodes to the same message.
use kubeedge_proto::{ack_mode, Compat, FrameKind, HubCodec, ResourcePath};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let codec = HubCodec::new(1 << 20);
    for kind in [FrameKind::Text, FrameKind::Binary] {
        if let Ok(msg) = codec.decode(kind, data) {
            let bytes = codec.encode(&msg).expect("a decoded message encodes");
            let back = codec.decode(FrameKind::Text, &bytes).expect("our encoding decodes");
            assert_eq!(back, msg);
            let _ = msg.content.bytes();
            let _ = ResourcePath::parse(&msg.route.resource);
            let _ = ack_mode(&msg, Compat::V1_12);
            let _ = ack_mode(&msg, Compat::Latest);
            let _ = msg.ack();
        }
    }
});
