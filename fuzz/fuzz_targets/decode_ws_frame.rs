#![no_main]
//! The stream tunnel's WebSocket framing, both ends: never panic; a decoded message re-encodes
//! and decodes to itself.
use bytes::BytesMut;
use kubeedge_proto::ws::{Role, WsCodec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for role in [Role::Server, Role::Client] {
        let mut codec = WsCodec::new(role, 1 << 16);
        let mut buf = BytesMut::from(data);
        while let Ok(Some(msg)) = codec.decode(&mut buf) {
            let mask = (role == Role::Server).then_some([1, 2, 3, 4]);
            let mut wire = BytesMut::new();
            WsCodec::encode(&msg, mask, &mut wire);
            let again = WsCodec::new(role, 1 << 16)
                .decode(&mut wire)
                .expect("our encoding decodes")
                .expect("complete");
            assert_eq!(again, msg);
        }
    }
});
